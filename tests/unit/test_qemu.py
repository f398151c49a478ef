"""lab.vm.qemu.command_line: the QEMU command lines of the source and the destination."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lab.vm.qemu import BINARY, KERNEL_APPEND, MachineSpec, command_line, destination_redirector, source_filter

MAC = "52:54:00:12:34:56"


SOURCE = MachineSpec(name="primary", accel="tcg", memory_mb=256, mac=MAC,
                     filters=(source_filter("filter-mirror", "nfcl-secondary", 9000),))


def source(**overrides: str) -> list[str]:
    return command_line(replace(SOURCE, **overrides))


def destination() -> list[str]:
    return command_line(MachineSpec(name="secondary", accel="kvm", memory_mb=512, mac=MAC,
                                    filters=(destination_redirector(9001),), incoming=True))


def values(argv: list[str], flag: str) -> list[str]:
    """Every value given to ``flag``, in order."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]


def with_id(argv: list[str], flag: str, ident: str) -> list[str]:
    """The values of ``flag`` that make the object ``ident`` (``id=`` first after the backend)."""
    return [v for v in values(argv, flag) if f",id={ident}," in f",{v},"]


def test_starts_with_the_binary_and_names_the_machine() -> None:
    argv = source()
    assert argv[0] == BINARY
    assert values(argv, "-name") == ["primary"]


def test_accel_is_in_machine() -> None:
    assert values(source(), "-machine") == ["pc,accel=tcg"]
    assert values(destination(), "-machine") == ["pc,accel=kvm"]


def test_memory() -> None:
    assert values(destination(), "-m") == ["512"]


def test_tap_netdev() -> None:
    assert values(source(), "-netdev") == ["tap,id=n0,ifname=lab-tap0,script=no,downscript=no"]


def test_virtio_net_without_rom_and_with_the_mac() -> None:
    nics = [d for d in values(source(mac="52:54:00:aa:bb:cc"), "-device") if d.startswith("virtio-net-pci")]
    assert nics == ["virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:aa:bb:cc"]


def test_source_chardev_reconnects_to_the_secondary() -> None:
    assert with_id(source(), "-chardev", "mirror0") == [
        "socket,id=mirror0,host=nfcl-secondary,port=9000,reconnect-ms=100"]


def test_source_filter_object_sends_tx_out() -> None:
    assert values(source(), "-object") == [
        "filter-mirror,id=f0,netdev=n0,queue=tx,outdev=mirror0,vnet_hdr_support=on"]


def test_source_filter_type_is_the_one_under_test() -> None:
    spec = MachineSpec(name="primary", accel="tcg", memory_mb=256, mac=MAC,
                       filters=(source_filter("filter-redirector", "peer", 1),))
    assert values(command_line(spec), "-object")[0].startswith("filter-redirector,id=f0,")


def test_source_has_no_incoming() -> None:
    assert "-incoming" not in source()


def test_destination_chardev_is_a_server_that_does_not_wait() -> None:
    assert with_id(destination(), "-chardev", "mirror0") == [
        "socket,id=mirror0,host=127.0.0.1,port=9001,server=on,wait=off"]


def test_destination_redirector_object_injects_into_rx() -> None:
    assert values(destination(), "-object") == [
        "filter-redirector,id=r0,netdev=n0,queue=rx,indev=mirror0,vnet_hdr_support=on"]


def test_destination_listens_for_the_migration_last() -> None:
    assert destination()[-2:] == ["-incoming", "tcp:0.0.0.0:4444"]
    assert values(destination(), "-incoming") == ["tcp:0.0.0.0:4444"]


def test_serial_console_and_qmp_stay_first() -> None:
    argv = source()
    assert values(argv, "-chardev")[0] == ("socket,id=serial0,path=/run/lab/console.sock,server=on,wait=off,"
                                           "logfile=/run/lab/console.log")
    assert values(argv, "-serial") == ["chardev:serial0"]
    assert values(argv, "-qmp") == ["unix:/run/lab/qmp.sock,server=on,wait=off"]


def test_a_machine_without_nic_has_no_virtio_net() -> None:
    spec = MachineSpec(name="primary", accel="tcg", memory_mb=256, mac=MAC, nic=False)
    assert not [d for d in values(command_line(spec), "-device") if d.startswith("virtio-net-pci")]


def test_filter_chardev_comes_before_its_object() -> None:
    argv = source()
    assert argv.index("-object") == argv.index("socket,id=mirror0,host=nfcl-secondary,port=9000,reconnect-ms=100") + 1


def test_extra_properties_are_appended() -> None:
    f = source_filter("filter-mirror", "peer", 9000, properties=(("position", "head"), ("insert", "before")))
    spec = MachineSpec(name="primary", accel="tcg", memory_mb=256, mac=MAC, filters=(f,))
    assert values(command_line(spec), "-object") == [
        "filter-mirror,id=f0,netdev=n0,queue=tx,outdev=mirror0,vnet_hdr_support=on,position=head,insert=before"]


def test_no_filters_means_no_object() -> None:
    argv = command_line(MachineSpec(name="plain", accel="tcg", memory_mb=256, mac=MAC))
    assert "-object" not in argv
    assert [c.split(",")[1] for c in values(argv, "-chardev")] == ["id=serial0", "id=labrx"]


def test_the_upstream_scenario_sets_enable_when_stopped_on_the_source_filter() -> None:
    from lab.config import load

    cfg = load(Path(__file__).resolve().parents[2] / "lab.yaml")
    sc = cfg.scenarios["redirector-when-stopped"]
    argv = command_line(MachineSpec(name="primary", accel="tcg", memory_mb=256, mac="52:54:00:12:34:56",
                                    filters=(source_filter(sc.filter, "nfcl-secondary", 9000, sc.properties),)))
    [obj] = [argv[i + 1] for i, a in enumerate(argv) if a == "-object"]
    assert obj.startswith("filter-redirector,id=f0,netdev=n0,queue=tx,outdev=")
    assert obj.endswith(",enable_when_stopped=on")


RECEIVER_ARGS = ["-device", "virtio-serial-pci,id=vser0",
                 "-chardev", "socket,id=labrx,path=/run/lab/rx.sock,server=on,wait=off",
                 "-device", "virtserialport,bus=vser0.0,chardev=labrx,name=lab.rx"]


def contains(argv: list[str], part: list[str]) -> bool:
    return any(argv[i:i + len(part)] == part for i in range(len(argv) - len(part) + 1))


def test_every_machine_has_the_receiver_port_as_a_socket_that_does_not_wait() -> None:
    for argv in (source(), destination(), command_line(MachineSpec(name="p", accel="tcg", memory_mb=256, mac=MAC))):
        assert contains(argv, RECEIVER_ARGS), argv


def test_source_and_destination_have_the_same_devices() -> None:
    # A migration needs the same device set on both sides.
    assert values(source(), "-device") == values(destination(), "-device")


def test_the_receiver_port_comes_after_the_nic() -> None:
    # The NIC keeps the PCI slot it had before the port existed.
    devices = values(source(), "-device")
    assert devices[0].startswith("virtio-net-pci,")
    assert devices[1:] == ["virtio-serial-pci,id=vser0", "virtserialport,bus=vser0.0,chardev=labrx,name=lab.rx"]


def test_no_dirtier_by_default() -> None:
    assert values(source(), "-append") == [KERNEL_APPEND]
    assert "lab.dirty_mb_s" not in " ".join(destination())


def test_dirty_rate_goes_on_the_kernel_command_line() -> None:
    argv = command_line(replace(SOURCE, dirty_mb_s=20))
    assert values(argv, "-append") == [KERNEL_APPEND + " lab.dirty_mb_s=20"]


def test_without_tls_no_credentials_and_no_global() -> None:
    for argv in (source(), destination()):
        assert "tls-creds" not in " ".join(argv) and not values(argv, "-global")


def test_a_split_cells_destination_listens_with_tls_from_its_command_line() -> None:
    argv = command_line(MachineSpec(name="secondary", accel="tcg", memory_mb=256, mac=MAC,
                                    filters=(destination_redirector(9001),), incoming=True, tls=True))
    assert with_id(argv, "-object", "mig0") == ["tls-creds-psk,id=mig0,endpoint=server,dir=/run/lab/tls"]
    assert values(argv, "-global") == ["migration.tls-creds=mig0"]
    # Both before -incoming: the listener QEMU opens there takes TLS from its first connection.
    assert argv.index("-global") < argv.index("-incoming") and argv[-2:] == ["-incoming", "tcp:127.0.0.1:4445"]


def test_a_split_cells_source_has_client_credentials_and_leaves_its_restore_plain() -> None:
    argv = command_line(replace(SOURCE, tls=True, restore="/run/lab/guest.state"))
    assert with_id(argv, "-object", "mig0") == ["tls-creds-psk,id=mig0,endpoint=client,dir=/run/lab/tls"]
    # The saved guest comes in through a file, which TLS refuses: the source is told over QMP later.
    assert not values(argv, "-global") and values(argv, "-incoming") == ["file:/run/lab/guest.state"]

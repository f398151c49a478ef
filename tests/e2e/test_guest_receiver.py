"""The capture point inside the guest, on a real guest: the receiver records the generator's frames
with the guest kernel's receive times, answers clock probes, and survives its memory dirtier."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from lab.config import LabConfig
from lab.engine import LabHosts
from lab.host import Host
from lab.vm.accel import AccelChoice
from lab.vm.guest import RECORD_FILE, measure_offset, read_record
from lab.vm.qemu import CONSOLE_SOCKET, MachineSpec, Qemu
from lab.vm.traffic import Generator
from lab.waiting import pause, wait_until

pytestmark = pytest.mark.e2e

RATE = 1000


@contextmanager
def guest(host: Host, accel: AccelChoice, cfg: LabConfig, dirty_mb_s: int = 0) -> Iterator[Qemu]:
    spec = MachineSpec(name=host.role, accel=accel.accel, memory_mb=cfg.guest.memory_mb, mac=cfg.guest.mac,
                       dirty_mb_s=dirty_mb_s)
    with Qemu(host, spec) as qemu:
        qemu.launch(cfg.timeouts.boot_s)
        qemu.wait_guest_ready(cfg.timeouts.boot_s)
        yield qemu


def test_the_guest_records_the_generators_frames_on_a_clock_the_probes_relate_to_the_hosts(
        lab_hosts: LabHosts, lab_accel: AccelChoice, lab_config: LabConfig) -> None:
    host = lab_hosts.primary
    with guest(host, lab_accel, lab_config) as qemu:
        offset = measure_offset(host, lab_config.guest.mac, timeout=30)
        assert offset is not None, "no clock probe was answered"
        assert offset.samples > 0

        generator = Generator(host, lab_config.guest.mac, RATE)
        generator.start(max_seconds=30)
        pause(1.0)
        sent = generator.stop()
        pause(0.5)  # frames still on their way through the tap and QEMU
        started = time.monotonic()
        record = read_record(host, timeout=30)
        dump_s = time.monotonic() - started
        after = measure_offset(host, lab_config.guest.mac, timeout=30)
        assert after is not None, "no clock probe was answered after the traffic"
        assert "LAB-RX-ERROR" not in qemu.console()

    assert host.own(RECORD_FILE).read_text().startswith("LAB-RX 1 ")
    assert len(sent.frames) >= 0.8 * RATE
    mine = record.of_run(sent.run_id)
    assert len(mine) == len(record.frames), "frames of another run in a fresh guest"
    seqs = [f.seq for f in mine]
    assert len(seqs) == len(set(seqs)), "a frame recorded twice"
    assert len(seqs) >= 0.99 * len(sent.frames), f"{len(seqs)} of {len(sent.frames)} frames recorded"
    assert record.socket_drops == 0
    times = [f.time for f in mine]
    assert seqs == sorted(seqs) and times == sorted(times), "frames recorded out of order"
    assert record.guest_now >= times[-1]

    # On the host's clock, no frame reached the guest before the generator sent it. The generator
    # stamps a frame after its send returns, late by however long it was preempted there; it sent the
    # frame after it stamped the one before, the bound used here. How soon after the stamp frames
    # arrive, and how close the offset is, are figures of this machine's load: printed here, and in
    # `lab bench`'s bench.json for the guest cells it runs.
    # The guest's clock may run at a rate a little off the host's (a TCG guest calibrates it at boot, on
    # a loaded machine): what the offset moved by between the probes before and after is in the margin.
    send_time = {f.seq: f.time for f in sent.frames}
    drift = abs(after.offset_s - offset.offset_s)
    margin = max(offset.uncertainty_s, after.uncertainty_s) + drift + 0.005
    latencies = [f.time + offset.offset_s - send_time[f.seq] for f in mine]
    early = [f.time + offset.offset_s - send_time[f.seq - 1] for f in mine if f.seq - 1 in send_time]
    assert min(early) > -margin, f"a frame arrived {-min(early) * 1000:.1f} ms before the one before it was sent"
    print(f"\noffset {offset.offset_s:+.6f} s +- {offset.uncertainty_s * 1e3:.3f} ms ({offset.samples} samples), "
          f"{drift * 1e3:.3f} ms apart from the one after; "
          f"{len(mine)} of {len(sent.frames)} frames; latency min {min(latencies) * 1e3:.2f} ms, max "
          f"{max(latencies) * 1e3:.2f} ms; dump {dump_s:.3f} s")


def test_the_receiver_lives_on_beside_its_memory_dirtier(lab_hosts: LabHosts, lab_accel: AccelChoice,
                                                        lab_config: LabConfig) -> None:
    host = lab_hosts.primary
    with guest(host, lab_accel, lab_config, dirty_mb_s=50) as qemu:
        assert dirty_rate(qemu) > 10, "the guest does not dirty its memory"
        assert qemu.qmp.cmd("query-status")["status"] == "running"
        assert receivers(host) == 2, "the receiver and its dirtier"
        offset = measure_offset(host, lab_config.guest.mac, timeout=30)
        assert offset is not None and offset.samples > 0
        record = read_record(host, timeout=30)
        assert record.frames == ()
        assert "LAB-RX-ERROR" not in qemu.console()


def dirty_rate(qemu: Qemu) -> float:
    """The guest's dirty rate in MB/s, as QEMU samples it over a second."""
    qemu.qmp.cmd("calc-dirty-rate", **{"calc-time": 1})

    def measured() -> float | None:
        result = qemu.qmp.cmd("query-dirty-rate")
        return float(result["dirty-rate"]) if result["status"] == "measured" else None

    return wait_until("QEMU's dirty rate measurement", measured, 10)


def receivers(host: Host) -> int:
    """How many receiver processes the guest runs, asked on its serial console."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as console:
        console.connect(str(host.socket(CONSOLE_SOCKET)))
        console.sendall(b"\necho RX-PROCS $(pidof receiver | wc -w)\n")

        def counted() -> int | None:
            found = re.findall(r"RX-PROCS (\d+)", host.read_text("console.log"))
            return int(found[-1]) if found else None

        return wait_until("the guest's answer on its console", counted, 10)

"""The lab hosts, checked from inside with testinfra through both backends: docker:// and paramiko://.

One kept lab (`lab up`) serves the module; it is removed afterwards (`lab down`).
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from collections.abc import Iterator

import docker
import paramiko
import pytest
import testinfra
from testinfra.host import Host

from lab import images, kept
from lab.config import LabConfig
from lab.engine import Engine, resources, ssh
from lab.host import TAP
from lab.runner import Cell, Runner
from lab.vm.qemu import BINARY

pytestmark = pytest.mark.e2e

ROLES = ("primary", "secondary")
BACKENDS = ("docker", "paramiko")


@pytest.fixture(scope="module")
def kept_lab(lab_runner: Runner, lab_docker: docker.DockerClient, lab_config: LabConfig,
             lab_images: dict[str, images.ImageSet]) -> Iterator[kept.KeptLab]:
    profile = lab_config.profiles[next(iter(lab_images))]
    scenario = next(iter(lab_config.scenarios.values()))
    lab = lab_runner.up(Cell(profile, scenario), "infra")
    try:
        yield lab
    finally:
        kept.down(Engine(lab_docker), lab_config, lab.name)


@pytest.fixture(params=[(r, b) for r in ROLES for b in BACKENDS], ids=lambda p: f"{p[0]}-{p[1]}")
def host(request: pytest.FixtureRequest, kept_lab: kept.KeptLab) -> Host:
    role, backend = request.param
    if backend == "docker":
        return testinfra.get_host(f"docker://{kept_lab.containers[role]}")
    return testinfra.get_host(f"paramiko://root@{role}", ssh_config=kept_lab.ssh_config)


def test_qemu_matches_the_image_provenance(host: Host, kept_lab: kept.KeptLab,
                                           lab_docker: docker.DockerClient) -> None:
    label = lab_docker.images.get(kept_lab.image).labels["io.nfcl.qemu.version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", label), f"the image's qemu.version label is {label!r}"
    assert host.file(BINARY).is_file and host.file(BINARY).mode & 0o111
    version = host.check_output(f"{BINARY} --version")
    found = re.search(r"QEMU emulator version (\d+\.\d+\.\d+)", version)
    assert found is not None and found.group(1) == label, version


def test_tun_is_usable_and_the_tap_is_up_and_attached(host: Host) -> None:
    assert host.run("test -c /dev/net/tun").rc == 0
    assert host.run("python3 -c \"open('/dev/net/tun', 'r+b', buffering=0).close()\"").rc == 0, "tun cannot be opened"
    assert host.interface(TAP).exists
    flags = int(host.file(f"/sys/class/net/{TAP}/flags").content_string.strip(), 16)
    assert flags & 0x1, "the tap is not up"
    # A tap has carrier only while a process (QEMU) holds it open.
    assert host.file(f"/sys/class/net/{TAP}/carrier").content_string.strip() == "1"
    assert host.run(f"{BINARY} --version").rc == 0


def test_tools_are_there(host: Host) -> None:
    assert host.exists("tcpdump") and host.exists("ip") and host.exists("python3")
    assert host.run("python3 -c 'import lab.agents.generator, lab.agents.recorder'").rc == 0


def test_sshd_runs_key_only_on_loopback(host: Host) -> None:
    assert host.process.filter(comm="sshd")
    effective = host.check_output("sshd -T")
    assert "passwordauthentication no" in effective and "kbdinteractiveauthentication no" in effective
    assert "listenaddress 127.0.0.1:22" in effective
    assert host.socket("tcp://127.0.0.1:22").is_listening
    assert not host.socket("tcp://0.0.0.0:22").is_listening


def test_the_host_is_only_on_the_lab_network(host: Host, kept_lab: kept.KeptLab, lab_docker: docker.DockerClient,
                                             lab_config: LabConfig) -> None:
    """Its one link off the host is eth0, on the lab's internal network (Docker drops what would leave it)."""
    [network] = lab_docker.networks.list(filters={"label": f"{resources.RUN}={kept_lab.name}"})
    network.reload()
    [subnet] = [c["Subnet"] for c in network.attrs["IPAM"]["Config"]]
    links = set(host.check_output("ls /sys/class/net").split())
    assert links == {"lo", "eth0", TAP}, links
    assert f" {subnet} " in " " + host.check_output("ip -4 route show dev eth0 scope link") + " "


def test_the_lab_network_is_internal(kept_lab: kept.KeptLab, lab_docker: docker.DockerClient,
                                     lab_config: LabConfig) -> None:
    [network] = lab_docker.networks.list(filters={"label": f"{resources.RUN}={kept_lab.name}"})
    assert network.attrs["Internal"] is True
    network.reload()
    attached = {c["Name"] for c in (network.attrs.get("Containers") or {}).values()}
    assert attached == set(kept_lab.containers.values())


@pytest.mark.parametrize("role", ROLES)
def test_sshd_refuses_passwords(role: str, kept_lab: kept.KeptLab) -> None:
    transport = paramiko.Transport(paramiko.ProxyCommand(ssh.proxy_command(kept_lab.containers[role])))
    try:
        transport.start_client(timeout=15)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_password("root", "root")
        assert refused.value.allowed_types == ["publickey"]
    finally:
        transport.close()


def test_lab_commands_reach_the_kept_lab(kept_lab: kept.KeptLab, lab_config: LabConfig) -> None:
    assert kept.qmp(kept_lab, "primary", "query-status", {})["status"] == "running"
    assert kept.qmp(kept_lab, "secondary", "query-status", {})["status"] == "inmigrate"
    client = ssh.connect(kept_lab.containers["secondary"], kept.keys(lab_config, kept_lab.name))
    try:
        assert ssh.run(client, "hostname").stdout.strip() == "secondary"
    finally:
        client.close()
    assert "LAB-GUEST-READY" in kept_lab.console("primary").read_text()


@pytest.mark.parametrize("role", ["primary"])
def test_the_guest_console_takes_commands(role: str, kept_lab: kept.KeptLab) -> None:
    """What `lab console` attaches to: the serial console socket, with a shell behind it."""
    relay = subprocess.Popen(["docker", "exec", "-i", kept_lab.containers[role], "python3", "-m",
                              "lab.agents.relay", "unix", "/run/lab/console.sock"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert relay.stdin is not None and relay.stdout is not None
    seen = b""
    try:
        # Input stays open while the guest answers: closing it would close the console connection.
        relay.stdin.write(b"\necho LAB-$((40+2)) $(cat /sys/class/net/eth0/operstate)\n")
        relay.stdin.flush()
        deadline = time.monotonic() + 15
        while b"LAB-42 up" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([relay.stdout], [], [], 0.5)
            if ready:
                seen += os.read(relay.stdout.fileno(), 4096)
    finally:
        relay.kill()
        relay.wait(timeout=10)
    assert b"LAB-42 up" in seen, seen[-500:]
    assert "LAB-GUEST-READY" in kept_lab.console(role).read_text()

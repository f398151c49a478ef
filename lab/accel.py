"""Which accelerator the guests get: KVM when a bounded probe boot proves it works, else TCG.

A /dev/kvm that opens is not enough: on some machines a KVM guest hangs. The probe boots the lab's
own guest under KVM in a throwaway host and waits, bounded, for its ready line.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from lab import resources
from lab.errors import LabError
from lab.hosts import TAP, Host
from lab.qemu import READY_LINE, MachineSpec, command_line

KVM = "/dev/kvm"


@dataclass(frozen=True)
class AccelChoice:
    accel: str
    reason: str


def choose(client: docker.DockerClient, image: str, mode: str, lab: str, timeout: float,
           cache: Path | None = None) -> AccelChoice:
    """``cache``: where a probe's outcome is kept for the rest of this boot of the machine (whether a
    KVM guest runs does not change until the kernel or its modules do); None probes every time."""
    if mode == "tcg":
        return AccelChoice("tcg", "TCG asked for in lab.yaml (lab.accel)")
    problem = kvm_device_problem()
    if problem is None:
        ok, detail = _cached_probe(client, image, lab, timeout, cache)
        if ok:
            return AccelChoice("kvm", f"KVM probe: {detail}")
        problem = f"KVM probe: {detail}"
    if mode == "kvm":
        raise LabError(f"lab.accel is kvm but KVM is not usable here: {problem}; use auto or tcg")
    return AccelChoice("tcg", f"{problem}; using TCG")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _cached_probe(client: docker.DockerClient, image: str, lab: str, timeout: float,
                  cache: Path | None) -> tuple[bool, str]:
    boot = _boot_id()
    if cache is not None and boot and cache.exists():
        try:
            seen = json.loads(cache.read_text())
            if seen.get("boot_id") == boot:
                return bool(seen["ok"]), f"{seen['detail']} (probed at {seen['when']}, this boot)"
        except (ValueError, KeyError):
            pass  # unreadable: probe again
    ok, detail = probe(client, image, lab, timeout)
    if cache is not None and boot:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"boot_id": boot, "ok": ok, "detail": detail,
                                     "when": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    return ok, detail


def kvm_device_problem() -> str | None:
    if not os.path.exists(KVM):
        return f"{KVM} does not exist"
    if not os.access(KVM, os.R_OK | os.W_OK):
        return f"{KVM} is not readable and writable by this user"
    return None


def probe(client: docker.DockerClient, image: str, lab: str, timeout: float) -> tuple[bool, str]:
    """Boots the guest under KVM; (True, how long) when its ready line came within ``timeout``."""
    argv = command_line(MachineSpec(name="kvm-probe", accel="kvm", memory_mb=128, mac="52:54:00:00:00:01"))
    try:
        with resources.uninterrupted():
            container = client.containers.run(
                image, name=f"{lab}-kvm-probe", detach=True, init=True, network_mode="none",
                cap_add=["NET_ADMIN"], devices=[f"{d}:{d}:rwm" for d in ("/dev/net/tun", KVM)],
                tmpfs={"/run/lab": ""}, labels=resources.labels(lab, role="kvm-probe"))
    except docker.errors.APIError as exc:
        return False, f"cannot start a probe host: {exc.explanation}"
    try:
        host = Host(container, "kvm-probe", rundir=None)  # a tmpfs run folder: read through exec
        host.check(["ip", "tuntap", "add", "dev", TAP, "mode", "tap"])
        container.exec_run(["sh", "-c", 'exec "$@" > /run/lab/qemu.log 2>&1', "sh", *argv], detach=True)
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            console = host.run(["cat", "/run/lab/console.log"], timeout=5).stdout
            if READY_LINE in console:
                return True, f"a KVM guest booted in {time.monotonic() - start:.1f} s"
            time.sleep(0.25)
        output = host.run(["cat", "/run/lab/qemu.log"], timeout=5).stdout.strip()
        return False, (f"a KVM guest did not boot within {timeout:.0f} s"
                       + (f" (QEMU said: {output.splitlines()[-1]})" if output else ""))
    finally:
        container.remove(force=True)

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

from lab.config import LabConfig
from lab.engine import KVM, TUN, Engine
from lab.errors import LabError, ScenarioError
from lab.namespace import Namespace, boot_id
from lab.vm.qemu import MachineSpec, Qemu

CACHE_NAME = "accel.json"


@dataclass(frozen=True)
class AccelChoice:
    accel: str
    reason: str


@dataclass(frozen=True)
class ProbeOutcome:
    ok: bool
    detail: str
    definite: bool  # a guest booted, or QEMU ran and the guest did not: not a passing hiccup


def choose(engine: Engine, image: str, mode: str, ns: Namespace, timeout: float,
           cache: Path | None = None) -> AccelChoice:
    """``cache``: where a definite probe outcome is kept for the rest of this boot of the machine
    (whether a KVM guest runs does not change until the kernel or its modules do); None probes."""
    if mode == "tcg":
        return AccelChoice("tcg", "TCG asked for in lab.yaml (lab.vm.accel)")
    problem = kvm_device_problem()
    if problem is None:
        outcome = _cached_probe(engine, image, ns, timeout, cache)
        if outcome.ok:
            return AccelChoice("kvm", f"KVM probe: {outcome.detail}")
        problem = f"KVM probe: {outcome.detail}"
    if mode == "kvm":
        raise LabError(f"lab.vm.accel is kvm but KVM is not usable here: {problem}; use auto or tcg")
    return AccelChoice("tcg", f"{problem}; using TCG")


def cached(cache: Path) -> ProbeOutcome | None:
    """The outcome kept for this boot, if any (an unreadable or older file counts as none)."""
    boot = boot_id()
    try:
        seen = json.loads(cache.read_text())
        if boot and seen.get("boot_id") == boot:
            return ProbeOutcome(bool(seen["ok"]), f"{seen['detail']} (probed at {seen['when']}, this boot)", True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _cached_probe(engine: Engine, image: str, ns: Namespace, timeout: float, cache: Path | None) -> ProbeOutcome:
    if cache is not None:
        seen = cached(cache)
        if seen is not None:
            return seen
    outcome = probe(engine, image, ns, timeout)
    if cache is not None:
        remember(cache, outcome)
    return outcome


def remember(cache: Path, outcome: ProbeOutcome) -> bool:
    """Keeps a definite outcome for this boot; a passing failure (no probe host) is not kept."""
    boot = boot_id()
    if not (boot and outcome.definite):
        return False
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"boot_id": boot, "ok": outcome.ok, "detail": outcome.detail,
                                 "when": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    return True


def kvm_device_problem() -> str | None:
    if not os.path.exists(KVM):
        return f"{KVM} does not exist"
    if not os.access(KVM, os.R_OK | os.W_OK):
        return f"{KVM} is not readable and writable by this user"
    return None


def probe(engine: Engine, image: str, ns: Namespace, timeout: float) -> ProbeOutcome:
    """Boots the guest under KVM in a throwaway host; ok when its ready line comes within ``timeout``."""
    spec = MachineSpec(name="kvm-probe", accel="kvm", memory_mb=128, mac="52:54:00:00:00:01")
    try:
        with engine.throwaway(image, "kvm-probe", ns, devices=(TUN, KVM)) as host:
            host.add_tap()
            with Qemu(host, spec) as qemu:
                started = time.monotonic()
                try:
                    qemu.launch(timeout)
                    qemu.wait_guest_ready(timeout)
                except ScenarioError as exc:
                    # QEMU ran: whether it refused KVM or its guest hung, that is how KVM is here.
                    return ProbeOutcome(False, f"a KVM guest did not boot within {timeout:g} s "
                                               f"({str(exc).splitlines()[0]})", definite=True)
                return ProbeOutcome(True, f"a KVM guest booted in {time.monotonic() - started:.1f} s", True)
    except (LabError, ScenarioError) as exc:
        return ProbeOutcome(False, f"cannot start a probe host: {exc}", definite=False)


def forget(cfg: LabConfig) -> None:
    """What this machine's probe found is probed again next time (`lab clean`)."""
    (cfg.state_root / CACHE_NAME).unlink(missing_ok=True)

"""`lab doctor`: can this machine run the lab? Each check says exactly what is missing."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from lab import apt
from lab.config import EngineSpec, LabConfig
from lab.engine import Engine, resources
from lab.errors import LabError
from lab.namespace import Namespace
from lab.vm import accel

TUN = "/dev/net/tun"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run(cfg: LabConfig) -> list[Check]:
    checks = []
    engine = None
    try:
        engine = Engine.connect()
        info = engine.info()
        checks.append(Check("docker", True, f"daemon {info.get('ServerVersion')} ({info.get('Driver')})"))
    except LabError as exc:
        checks.append(Check("docker", False, str(exc)))
    checks.append(_tun())
    checks.append(_disk(engine, cfg.images.min_free_gb))
    if cfg.images.base == "debootstrap":
        found = shutil.which("debootstrap")
        checks.append(Check("debootstrap", bool(found), found or "missing: apt-get install debootstrap"))
    try:
        mirror = cfg.images.mirror if cfg.images.mirror != "auto" else apt.debian_mirror()
        checks.append(Check("debian mirror", True, mirror))
    except LabError as exc:
        checks.append(Check("debian mirror", False, str(exc)))
    checks.append(_kvm(cfg, engine))
    checks += [_engine(cfg, spec) for spec in cfg.engines.values()]
    return checks


def _engine(cfg: LabConfig, spec: EngineSpec) -> Check:
    """Whether a lab.yaml engine answers, and how its hosts get their run folders."""
    name, where = f"engine {spec.name}", f"{spec.url}: " if spec.url else ""
    try:
        engine = Engine.connect(spec)
    except LabError as exc:
        return Check(name, False, str(exc))
    try:
        version = engine.version()
        runtime = _any_runtime_image(engine)
        if runtime is None:
            return Check(name, True, f"{where}daemon {version}; no lab image there yet, so how its hosts get "
                                     "their run folders is found at the first run")
        shared = engine.shares_files(runtime, Namespace.new_run(cfg.name))
    except LabError as exc:
        return Check(name, False, f"{where}{exc}")
    finally:
        engine.close()
    folders = ("run folders shared (bind mounts)" if shared else
               "run folders copied through its API: it does not see this machine's files")
    return Check(name, True, f"{where}daemon {version}; {folders}")


def _tun() -> Check:
    ok = os.path.exists(TUN)
    return Check(TUN, ok, "present" if ok else "missing: the hosts' taps need it (modprobe tun, as root)")


def require_tun() -> None:
    check = _tun()
    if not check.ok:
        raise LabError(f"{check.name} is {check.detail}")


def _disk(engine: Engine | None, need_gb: float) -> Check:
    free_gb, where = engine.free_gb() if engine is not None else resources.free_gb(None)
    ok = free_gb >= need_gb
    short = "" if ok else f"; the images need {need_gb:.0f} GB (images.min_free_gb)"
    return Check("disk", ok, f"{free_gb:.0f} GB free at {where}{short}")


def _kvm(cfg: LabConfig, engine: Engine | None) -> Check:
    if cfg.accel == "tcg":
        return Check("accelerator", True, "tcg (lab.vm.accel)")
    problem = accel.kvm_device_problem()
    if problem:
        return Check("accelerator", True, f"tcg: {problem}")
    runtime = _any_runtime_image(engine)
    if engine is None or runtime is None:
        return Check("accelerator", True, "KVM present but not probed (build the images first: lab build); "
                                          "runs fall back to tcg if the probe fails")
    # Afresh, not from the cache: a doctor is asked when something changed.
    choice = accel.choose(engine, runtime, "auto", Namespace.new_run(cfg.name), cfg.timeouts.kvm_probe_s)
    return Check("accelerator", True, f"{choice.accel}: {choice.reason}")


def _any_runtime_image(engine: Engine | None) -> str | None:
    if engine is None:
        return None
    found = engine.images(label=f"{resources.IMAGE}=runtime")
    return found[0].tags[0] if found and found[0].tags else None

"""One scenario on one build: boot, migrate with a hold, capture, analyse.

The sequence, every wait bounded by lab.yaml's timeouts:

1. hosts: primary and secondary containers on the lab's internal network, a tap in each;
2. secondary: QEMU with ``-incoming`` and a filter-redirector that takes frames from its indev,
   the stream recorder in front of that indev, tcpdump on its tap;
3. primary: QEMU with the filter under test (queue=tx, outdev to the recorder), guest boots until
   it prints its ready line;
4. the generator sends frames into the primary's tap; migration starts; the source reaches
   pre-switchover (its VM stopped); the hold; the generator stops; migrate-continue; completion;
5. the destination's tap drains; both captures are analysed over first frame .. migrate-continue.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from lab import capabilities, timeline
from lab.analysis import ERROR, UNSUPPORTED, Analysis, StopWindow, analyse
from lab.capture import INDEV_PORT, RECORDER_PORT, SecondaryCapture
from lab.config import LabConfig, Profile, Scenario, Timeouts
from lab.errors import ScenarioError
from lab.hosts import HostSpec, LabHosts
from lab.migration import Migration
from lab.qemu import MIGRATION_PORT, Filter, MachineSpec, Qemu, destination_redirector, source_filter
from lab.traffic import Generator


@dataclass
class ScenarioResult:
    profile: str
    scenario: str
    filter: str
    expected: str
    verdict: str
    accel: str
    qemu_version: str = ""
    analysis: Analysis | None = None
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    artefacts: str = ""
    kept: LabHosts | None = None  # left running for a person (lab run --keep)

    @property
    def match(self) -> bool:
        return self.verdict == self.expected

    def to_json(self) -> dict[str, Any]:
        a = self.analysis
        counts = {k: getattr(a, k) if a else None for k in (
            "frames_sent", "frames_captured", "frames_delivered", "lost", "duplicates", "reordered",
            "frames_during_stop", "max_gap_ms", "stopped_window_ms")}
        return {"profile": self.profile, "scenario": self.scenario, "filter": self.filter,
                "expected": self.expected, "verdict": self.verdict, "match": self.match, **counts,
                "reasons": (a.reasons if a else [self.error]), "accel": self.accel,
                "qemu_version": self.qemu_version, "timings": self.timings, "artefacts": self.artefacts}


def run(client: docker.DockerClient, cfg: LabConfig, profile: Profile, scenario: Scenario,
        image: str, accel: str, out: Path, properties: dict[str, list[str]] | None = None,
        keep_ssh_key: str = "", on_phase: PhaseHook | None = None) -> ScenarioResult:
    """Runs one scenario; a scenario that cannot finish gives verdict ``error`` with its reason.

    ``properties`` (what the build's netfilters offer, see lab.capabilities) is checked first: a
    scenario setting a property the build lacks is ``unsupported`` and starts nothing.
    Artefacts are written in a short temporary folder (QMP's unix socket path must stay under
    108 bytes) and moved to ``out`` at the end, whatever happened. With ``keep_ssh_key``, a scenario
    whose verdict is not the expected one is left running instead (hosts with sshd taking that key,
    QEMUs, run folder: ``result.kept``) and its artefacts are copied to ``out``. ``on_phase`` is
    called as each phase begins (see ``PHASES``), for tests that inject faults.
    """
    result = ScenarioResult(profile=profile.name, scenario=scenario.name, filter=scenario.filter,
                            expected=scenario.expect[profile.name], verdict=ERROR, accel=accel)
    if properties is not None:
        lacking = capabilities.unsupported(properties, scenario.filter, scenario.properties)
        if lacking:
            result.verdict = UNSUPPORTED
            result.error = (f"{scenario.filter} of profile {profile.name} has no property {', '.join(lacking)} "
                            f"(it has: {', '.join(properties.get(scenario.filter, []))})")
            return result
    rundir = Path(tempfile.mkdtemp(prefix=f"{cfg.name}-"))
    devices = ("/dev/net/tun", "/dev/kvm") if accel == "kvm" else ("/dev/net/tun",)
    t0 = time.monotonic()
    hosts = LabHosts(client, HostSpec(image=image, lab=cfg.name, devices=devices, ssh_key=keep_ssh_key), rundir,
                     cfg.timeouts.host_start_s)
    keep = bool(keep_ssh_key)
    try:
        phases = Phases(rundir, hosts, on_phase)
        phases("hosts")
        with hosts.kept_if(lambda: keep and not result.match):
            _drive(cfg, scenario, hosts, accel, result, keep, phases)
    except ScenarioError as exc:
        result.error = str(exc)
    finally:
        result.timings["total"] = round(time.monotonic() - t0, 2)
        if hosts.hosts:  # still there: kept for a person to look at
            result.kept = hosts
            result.artefacts = str(_copy_artefacts(rundir, out))
        else:
            result.artefacts = str(_keep_artefacts(rundir, out))
        (out / "result.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result


@dataclass
class Booted:
    """Both QEMUs of a scenario and the secondary's capture: what `lab up` leaves running."""

    source: Qemu
    destination: Qemu
    capture: SecondaryCapture

    @classmethod
    def create(cls, cfg: LabConfig, scenario: Scenario, hosts: LabHosts, accel: str) -> Booted:
        def machine(name: str, filt: Filter, incoming: bool) -> MachineSpec:
            return MachineSpec(name=name, accel=accel, memory_mb=cfg.guest.memory_mb, mac=cfg.guest.mac,
                               filters=(filt,), incoming=incoming)

        return cls(
            source=Qemu(hosts.primary, machine("primary", source_filter(
                scenario.filter, hosts.secondary.name, RECORDER_PORT, scenario.properties), incoming=False)),
            destination=Qemu(hosts.secondary, machine("secondary", destination_redirector(INDEV_PORT), incoming=True)),
            capture=SecondaryCapture(hosts.secondary))

    def start(self, t: Timeouts) -> None:
        """The destination first (its indev server), the recorder in front of it, then the source."""
        self.destination.launch(t.boot_s)
        self.capture.start(t.host_start_s)
        self.source.launch(t.boot_s)
        self.source.wait_guest_ready(t.boot_s)


PHASES = ("hosts", "boot", "traffic", "migrate", "hold", "drain", "analysis")
PhaseHook = Callable[[str, LabHosts], None]


@dataclass
class Phases:
    """Says which phase a scenario is in: in ``<run folder>/phase``, for people and tools, and to a hook."""

    rundir: Path
    hosts: LabHosts
    hook: PhaseHook | None = None

    def __call__(self, name: str) -> None:
        assert name in PHASES, name
        (self.rundir / "phase").write_text(name + "\n")
        if self.hook is not None:
            self.hook(name, self.hosts)


def _drive(cfg: LabConfig, scenario: Scenario, hosts: LabHosts, accel: str, result: ScenarioResult,
           keep: bool, phases: Phases) -> None:
    t = cfg.timeouts
    t_start = time.monotonic()
    booted = Booted.create(cfg, scenario, hosts, accel)
    src, dest, capture = booted.source, booted.destination, booted.capture
    # Kept unless the scenario ends as expected: an error on the way leaves them for a look too.
    src.keep = dest.keep = keep
    with dest, src:
        phases("boot")
        booted.start(t)
        result.timings["boot"] = round(time.monotonic() - t_start, 2)
        result.qemu_version = _version(src)

        migration = Migration(src.qmp, dest.qmp, f"tcp:{hosts.secondary.name}:{MIGRATION_PORT}")
        migration.prepare()
        generator = Generator(hosts.primary, cfg.guest.mac, cfg.traffic.rate)
        phases("traffic")
        generator.start(max_seconds=cfg.traffic.warmup_s + t.pre_switchover_s + cfg.migration.hold_s + 30)
        time.sleep(cfg.traffic.warmup_s)

        phases("migrate")
        migration.start()
        migration.wait_pre_switchover(t.pre_switchover_s)
        result.timings["migrate"] = round(migration.times.pre_switchover - migration.times.started, 2)
        phases("hold")
        time.sleep(cfg.migration.hold_s)
        sent = generator.stop()
        time.sleep(cfg.migration.settle_s)
        migration.resume()
        result.timings["hold"] = round(migration.times.continued - migration.times.pre_switchover, 2)
        phases("drain")
        migration.wait_completed(t.completion_s)

        stream = capture.stream(generator.run_id)
        expected = len({f.seq for f in stream if f.time <= migration.times.continued})
        drained = capture.drain(generator.run_id, expected, t.drain_s)
        result.timings["drain"] = round(migration.times.completed - migration.times.continued + drained, 2)
        phases("analysis")
        capture.stop()
        # A verdict speaks of QEMU only when the lab's own stream path held for the whole window.
        capture.check_stream(sent.frames[0].time if sent.frames else migration.times.started,
                             migration.times.continued)
        stream = capture.stream(generator.run_id)
        window = StopWindow(stop=migration.times.stopped, resume=migration.times.continued)
        result.analysis = analyse(sent, stream, capture.delivered(generator.run_id), window)
        result.verdict = result.analysis.verdict
        src.keep = dest.keep = keep and not result.match
        timeline.draw(hosts.rundir / "timeline.png", f"{result.profile} x {result.scenario} ({result.filter})",
                      sent, stream, window, result.analysis)


def _version(qemu: Qemu) -> str:
    v = qemu.qmp.cmd("query-version")
    q = v.get("qemu", {})
    return f"{q.get('major')}.{q.get('minor')}.{q.get('micro')}{v.get('package', '')}"


def _copy_artefacts(rundir: Path, out: Path) -> Path:
    """A kept lab's files as they are now; the run folder itself stays with the running lab."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(rundir, out, ignore=shutil.ignore_patterns("*.sock", "authorized_keys"))
    return out


def _keep_artefacts(rundir: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    for sock in rundir.rglob("*.sock"):
        sock.unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    shutil.move(str(rundir), str(out))
    return out

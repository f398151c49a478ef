"""One scenario on one build, on two hosts it is given: boot, migrate with a hold, capture, analyse.

The sequence, every wait bounded by lab.yaml's timeouts:

1. secondary: QEMU with ``-incoming`` and a filter-redirector that takes frames from its indev,
   the stream recorder in front of that indev, tcpdump on its tap;
2. primary: QEMU with the filter under test (queue=tx, outdev to the recorder), guest boots until
   it prints its ready line;
3. the generator sends frames into the primary's tap; migration starts; the source reaches
   pre-switchover (its VM stopped); the hold; the generator stops; migrate-continue; completion;
4. the destination's tap drains; both captures are analysed over first frame .. migrate-continue.

The scenario knows hosts only through lab.host's interface, and returns data: writing files and
drawing pictures belong to lab.artefacts, deciding what to keep to lab.runner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.analysis import ERROR, Analysis, Frame, Sent, StopWindow, analyse
from lab.capture import INDEV_PORT, RECORDER_PORT, SecondaryCapture
from lab.config import LabConfig, ScenarioSpec, Timeouts
from lab.errors import ScenarioError
from lab.host import Host
from lab.migration import Migration, MigrationTimes
from lab.qemu import MIGRATION_PORT, Filter, MachineSpec, Qemu, destination_redirector, source_filter
from lab.traffic import Generator
from lab.waiting import pause

PHASES = ("hosts", "boot", "traffic", "migrate", "hold", "drain", "analysis")
# What the primary's QEMU opens on the secondary: the recorder (the mirror stream) and the migration.
SECONDARY_PORTS = (RECORDER_PORT, MIGRATION_PORT)
PhaseHook = Callable[[str], None]


@dataclass(frozen=True)
class Captured:
    """What the analysis saw, kept for the picture: sent frames, the stream, the stopped window."""

    sent: Sent
    stream: list[Frame]
    window: StopWindow


@dataclass
class Outcome:
    """What a scenario found; lab.report turns it into a report row."""

    verdict: str = ERROR
    error: str = ""
    qemu_version: str = ""
    analysis: Analysis | None = None
    captured: Captured | None = None
    migration: MigrationTimes | None = None
    timings: dict[str, float] = field(default_factory=dict)


def unsupported_reason(scenario: ScenarioSpec, profile: str, properties: dict[str, list[str]]) -> str:
    """Why the build cannot run the scenario (a property its filter lacks), or ""."""
    offered = properties.get(scenario.filter, [])
    lacking = [name for name, _value in scenario.properties if name not in offered]
    if not lacking:
        return ""
    return (f"{scenario.filter} of profile {profile} has no property {', '.join(lacking)} "
            f"(it has: {', '.join(properties.get(scenario.filter, []))})")


@dataclass
class Booted:
    """Both QEMUs of a scenario and the secondary's capture: what `lab up` leaves running."""

    source: Qemu
    destination: Qemu
    capture: SecondaryCapture

    @classmethod
    def create(cls, cfg: LabConfig, scenario: ScenarioSpec, primary: Host, secondary: Host, accel: str) -> Booted:
        def machine(name: str, filt: Filter, incoming: bool) -> MachineSpec:
            return MachineSpec(name=name, accel=accel, memory_mb=cfg.guest.memory_mb, mac=cfg.guest.mac,
                               filters=(filt,), incoming=incoming)

        stream_host, stream_port = secondary.reach(RECORDER_PORT)
        return cls(
            source=Qemu(primary, machine("primary", source_filter(
                scenario.filter, stream_host, stream_port, scenario.properties), incoming=False)),
            destination=Qemu(secondary, machine("secondary", destination_redirector(INDEV_PORT), incoming=True)),
            capture=SecondaryCapture(secondary))

    def start(self, t: Timeouts) -> None:
        """The destination first (its indev server), the recorder in front of it, then the source."""
        self.destination.launch(t.boot_s)
        self.capture.start(t.host_start_s)
        self.source.launch(t.boot_s)
        self.source.wait_guest_ready(t.boot_s)


def run(cfg: LabConfig, scenario: ScenarioSpec, primary: Host, secondary: Host, accel: str,
        on_phase: PhaseHook, keep: Callable[[Outcome], bool] = lambda o: False) -> Outcome:
    """Runs the scenario on the hosts; one that cannot finish gives verdict ``error`` with its reason.

    ``keep(outcome)`` true leaves both QEMUs running at the end (for a person to look at).
    """
    outcome = Outcome()
    try:
        # The hosts' cancel flag (Ctrl-C on their run) cuts the scenario's own waits short too.
        _drive(cfg, scenario, primary, secondary, accel, outcome, on_phase, keep, primary.cancel)
    except ScenarioError as exc:
        outcome.verdict, outcome.error = ERROR, str(exc)
    return outcome


def _drive(cfg: LabConfig, scenario: ScenarioSpec, primary: Host, secondary: Host, accel: str, outcome: Outcome,
           phase: PhaseHook, keep: Callable[[Outcome], bool], cancel: threading.Event | None) -> None:
    t = cfg.timeouts
    t_start = time.monotonic()
    booted = Booted.create(cfg, scenario, primary, secondary, accel)
    src, dest, capture = booted.source, booted.destination, booted.capture
    try:
        phase("boot")
        booted.start(t)
        outcome.timings["boot"] = round(time.monotonic() - t_start, 2)
        outcome.qemu_version = _version(src)

        host, port = secondary.reach(MIGRATION_PORT)
        migration = Migration(src.qmp, dest.qmp, f"tcp:{host}:{port}", cancel)
        outcome.migration = migration.times
        migration.prepare()
        generator = Generator(primary, cfg.guest.mac, cfg.traffic.rate)
        phase("traffic")
        generator.start(max_seconds=cfg.traffic.warmup_s + t.pre_switchover_s + cfg.migration.hold_s + 30)
        pause(cfg.traffic.warmup_s, cancel, "the warm-up")

        phase("migrate")
        migration.start(t.pre_switchover_s)
        migration.wait_pre_switchover(t.pre_switchover_s)
        times = migration.times
        outcome.timings["migrate"] = round(times.pre_switchover - times.started, 2)
        phase("hold")
        pause(cfg.migration.hold_s, cancel, "the hold")
        sent = generator.stop()
        pause(cfg.migration.settle_s, cancel, "the settle")
        migration.resume(t.completion_s)
        outcome.timings["hold"] = round(times.continued - times.pre_switchover, 2)
        phase("drain")
        migration.wait_completed(t.completion_s)

        stream = capture.stream(generator.run_id)
        expected = len({f.seq for f in stream if f.time <= times.continued})
        drained = capture.drain(generator.run_id, expected, t.drain_s)
        outcome.timings["drain"] = round(times.completed - times.continued + drained, 2)
        phase("analysis")
        capture.stop()
        # A verdict speaks of QEMU only when the lab's own stream path held for the whole window.
        capture.check_stream(sent.frames[0].time if sent.frames else times.started, times.continued)
        stream = capture.stream(generator.run_id)
        window = StopWindow(stop=times.stopped, resume=times.continued)
        outcome.analysis = analyse(sent, stream, capture.delivered(generator.run_id), window)
        outcome.verdict = outcome.analysis.verdict
        outcome.captured = Captured(sent, stream, window)
    finally:
        # Kept unless the scenario ends as expected: an error on the way leaves them for a look too.
        src.keep = dest.keep = keep(outcome)
        src.close()
        dest.close()


def _version(qemu: Qemu) -> str:
    v = qemu.qmp.cmd("query-version")
    q = v.get("qemu", {})
    return f"{q.get('major')}.{q.get('minor')}.{q.get('micro')}{v.get('package', '')}"

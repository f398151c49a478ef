"""One scenario on one build, on two hosts it is given: boot, migrate with a hold, capture, analyse.

The sequence, every wait bounded by lab.yaml's timeouts:

1. secondary: QEMU with ``-incoming`` and a filter-redirector that takes frames from its indev,
   the stream recorder in front of that indev, tcpdump on its tap;
2. primary: QEMU with the filter under test (queue=tx, outdev to the recorder), guest boots until
   it prints its ready line;
3. the generator sends frames into the primary's tap (the source guest's clock is probed
   meanwhile); migration starts; the source reaches pre-switchover (its VM stopped); the hold; the
   generator stops; migrate-continue; completion;
4. the destination's tap drains, the destination guest's clock is probed and its receiver's record
   read; the captures are analysed over first frame .. migrate-continue.

On the guest's path (``path: guest``) the destination's redirector hands what the stream brings to
its guest instead of its tap, the verdict is the guest's, and the filter under test may start
switched off, to be switched on over QMP at the source's STOP or just before ``migrate``.

The scenario knows hosts only through lab.host's interface, and returns data: writing files and
drawing pictures belong to lab.results.artefacts, deciding what to keep to lab.runner.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lab import guard
from lab.config import NO_FILTER, LabConfig, ScenarioSpec, Timeouts
from lab.errors import ScenarioError
from lab.guard import CellKeys
from lab.host import Host
from lab.results.analysis import (
    Analysis,
    Frame,
    GuestAnalysis,
    Sent,
    StopWindow,
    analyse,
    analyse_guest,
)
from lab.results.verdict import Verdict
from lab.vm.capture import (
    CUT,
    INDEV_PORT,
    RECORDER_PORT,
    SENDER_PORT,
    Drained,
    SecondaryCapture,
    start_gate,
    start_sender,
)
from lab.vm.guest import ClockOffset, GuestRecord, measure_offset, read_record
from lab.vm.migration import Migration, MigrationTimes
from lab.vm.qemu import (
    MIGRATION_INNER_PORT,
    MIGRATION_PORT,
    MIGRATION_SENDER_PORT,
    SOURCE_FILTER_ID,
    Qemu,
    destination_redirector,
    guest_machine,
    source_filter,
)
from lab.vm.traffic import Generator
from lab.waiting import Deadline, pause

PHASES = ("hosts", "boot", "traffic", "migrate", "hold", "drain", "analysis")
# What the primary's QEMU opens on the secondary: the recorder (the mirror stream) and the migration.
SECONDARY_PORTS = (RECORDER_PORT, MIGRATION_PORT)
PhaseHook = Callable[[str], None]
PROBE_S = 10.0  # bound of one clock probe of the guest: it answers within milliseconds, but the probe
# is a process started in its host, which took over 3 s with 12 cells on 2 cores
RECORD_S = 10.0  # bound of reading the guest's record


@dataclass(frozen=True)
class Captured:
    """What the analysis saw, kept for the picture: sent frames, the stream, the stopped window, and
    the frames as the guest got them (on the hosts' clock)."""

    sent: Sent
    stream: list[Frame]
    window: StopWindow
    guest: list[Frame] = field(default_factory=list)
    resumed: float | None = None  # the destination's RESUME
    view: str = "stream"  # the capture point the verdict looks at


@dataclass
class Outcome:
    """What a scenario found; lab.results.report turns it into a report row."""

    verdict: Verdict = Verdict.ERROR
    error: str = ""
    qemu_version: str = ""
    analysis: Analysis | None = None
    guest: GuestAnalysis | None = None
    captured: Captured | None = None
    migration: MigrationTimes | None = None
    figures: dict[str, float | None] = field(default_factory=dict)  # QEMU's own: downtime, RAM passes, timeline
    lost_at: dict[str, int] | None = None
    generator_fps: float | None = None
    switched_on: float | None = None  # when the lab switched the filter under test on
    load: dict[str, Any] | None = None  # what says whether the measurement had the machine (Load.figures)
    reasons: list[str] = field(default_factory=list)  # what the verdict rests on
    timings: dict[str, float] = field(default_factory=dict)


def unsupported_reason(scenario: ScenarioSpec, profile: str, properties: dict[str, list[str]]) -> str:
    """Why the build cannot run the scenario (a property its filter lacks), or ""."""
    if scenario.filter == NO_FILTER:
        return ""
    wanted = [name for name, _value in scenario.properties]
    if scenario.switch_on != "start":
        wanted.append("status")
    offered = properties.get(scenario.filter, [])
    lacking = [name for name in wanted if name not in offered]
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
    keys: CellKeys | None = None  # a split cell's: its published ports take only who holds them

    @classmethod
    def create(cls, cfg: LabConfig, scenario: ScenarioSpec, primary: Host, secondary: Host, accel: str,
               restore: str = "", keys: CellKeys | None = None) -> Booted:
        """``restore``: a saved guest (lab.vm.snapshot) the source starts from instead of booting;
        ``keys``: the cell's key and token (lab.guard), when the secondary's ports are published."""
        # Guarded, the filter reaches the recorder through the sender on its own host.
        stream_host, stream_port = ("127.0.0.1", SENDER_PORT) if keys else secondary.reach(RECORDER_PORT)
        under_test = () if scenario.filter == NO_FILTER else (source_filter(
            scenario.filter, stream_host, stream_port, scenario.properties, on=scenario.switch_on == "start"),)
        to_guest = scenario.path == "guest"
        tls = keys is not None
        return cls(
            source=Qemu(primary, guest_machine(cfg.guest, accel, "primary", under_test, restore=restore, tls=tls)),
            destination=Qemu(secondary, guest_machine(cfg.guest, accel, "secondary",
                                                      (destination_redirector(INDEV_PORT, to_guest),),
                                                      incoming=True, tls=tls)),
            capture=SecondaryCapture(secondary, guarded=tls), keys=keys)

    def start(self, t: Timeouts) -> None:
        """The destination first (its indev server), the recorder in front of it, then the source,
        whose filter must find the recorder listening: through a published port (split placement)
        Docker's proxy takes the connection even when nothing listens behind it, and a filter whose
        chardev only ever writes does not notice that it was hung up on until it sends."""
        if self.keys is not None:
            for qemu in (self.destination, self.source):
                self.keys.place(qemu.host)
        self.destination.launch(t.boot_s)
        self.capture.start(t.host_start_s)
        if self.keys is not None:
            start_gate(self.destination.host, MIGRATION_PORT, MIGRATION_INNER_PORT, t.host_start_s)
            start_sender(self.source.host, self.destination.host.reach(RECORDER_PORT), t.host_start_s)
            start_sender(self.source.host, self.destination.host.reach(MIGRATION_PORT), t.host_start_s,
                         MIGRATION_SENDER_PORT, "migration-sender", ("the source QEMU", "the destination's gate"))
        self._start_source(t)
        if self.source.spec.filters:
            self.capture.wait_connected(t.host_start_s)

    def withdraw_keys(self) -> None:
        """The key and token out of both run folders: once the migration's handshake is done no one
        needs them, and none may leave with the artefacts."""
        if self.keys is not None:
            for qemu in (self.source, self.destination):
                # A host gone takes them along; what came back from it anyway the runner removes.
                with contextlib.suppress(ScenarioError):
                    guard.withdraw(qemu.host)

    def _start_source(self, t: Timeouts) -> None:
        self.source.launch(t.boot_s)
        if not self.source.spec.restore:
            self.source.wait_guest_ready(t.boot_s)
            return
        self.source.wait_restored(t.boot_s)
        # Ready as booted: the receiver answers on its port (it listens on eth0 only once eth0 is up).
        record = read_record(self.source.host, t.boot_s)
        if record.frames:
            raise ScenarioError(f"{self.source.host.role}: the restored guest already holds {len(record.frames)} "
                                f"frames (from {self.source.spec.restore})")


def run(cfg: LabConfig, scenario: ScenarioSpec, primary: Host, secondary: Host, accel: str,
        on_phase: PhaseHook, keep: Callable[[Outcome], bool] = lambda o: False, restore: str = "",
        keys: CellKeys | None = None) -> Outcome:
    """Runs the scenario on the hosts; one that cannot finish gives verdict ``error`` with its reason.

    ``keep(outcome)`` true leaves both QEMUs running at the end (for a person to look at);
    ``restore``: the saved guest the source starts from (lab.vm.snapshot), instead of a boot;
    ``keys``: the migration and the stream guarded with them (a split cell's published ports).
    """
    outcome = Outcome()
    try:
        # The hosts' cancel flag (Ctrl-C on their run) cuts the scenario's own waits short too.
        booted = Booted.create(cfg, scenario, primary, secondary, accel, restore, keys)
        _drive(cfg, scenario, booted, outcome, on_phase, keep, primary.cancel)
    except ScenarioError as exc:
        outcome.verdict, outcome.error = Verdict.ERROR, str(exc)
        outcome.reasons = [str(exc)]
    return outcome


def _drive(cfg: LabConfig, scenario: ScenarioSpec, booted: Booted, outcome: Outcome, phase: PhaseHook,
           keep: Callable[[Outcome], bool], cancel: threading.Event | None) -> None:
    t = cfg.timeouts
    t_start = time.monotonic()
    src, dest, capture = booted.source, booted.destination, booted.capture
    primary, secondary = src.host, dest.host
    try:
        phase("boot")
        booted.start(t)
        outcome.timings["boot"] = round(time.monotonic() - t_start, 2)
        outcome.qemu_version = _version(src)

        # Guarded, the source migrates through its sender, which presents the token to the gate.
        host, port = ("127.0.0.1", MIGRATION_SENDER_PORT) if booted.keys else secondary.reach(MIGRATION_PORT)
        migration = Migration(src.qmp, dest.qmp, f"tcp:{host}:{port}", cancel,
                              tls_creds=guard.CREDS_ID if booted.keys else "")
        outcome.migration = migration.times
        migration.prepare()
        generator = Generator(primary, cfg.guest.mac, cfg.traffic.rate)
        phase("traffic")
        generator.start(max_seconds=cfg.traffic.warmup_s + t.pre_switchover_s + cfg.migration.hold_s + 30)
        # The source guest's clock, probed while the warm-up runs: no time of its own on the way.
        with ThreadPoolExecutor(1, thread_name_prefix="lab-probe") as probing:
            source_clock = probing.submit(measure_offset, primary, cfg.guest.mac, PROBE_S)
            pause(cfg.traffic.warmup_s, cancel, "the warm-up")
            on_source = source_clock.result()
        if scenario.switch_on == "before-migrate":
            _switch_on(src, outcome)

        phase("migrate")
        migration.start(t.pre_switchover_s)
        if scenario.switch_on == "at-stop":
            migration.wait_stopped(t.pre_switchover_s)
            if scenario.switch_after_ms:
                pause(scenario.switch_after_ms / 1000, cancel, "the wait before the switch")
            _switch_on(src, outcome)
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
        booted.withdraw_keys()
        drain_start = time.monotonic()
        drained: Drained | None = None
        if scenario.path == "stream":
            stream = capture.stream(generator.run_id)
            expected = len({f.seq for f in stream if f.time <= times.continued})
            drained = capture.drain(generator.run_id, expected, t.drain_s)
        record = _settled_record(secondary, t.drain_s, cancel)
        # Once the guest has taken what the destination held for it: a guest still reading thousands
        # of frames answered no probe within the probe's bound on a loaded machine.
        on_destination = measure_offset(secondary, cfg.guest.mac, PROBE_S)
        outcome.timings["drain"] = round(times.completed - times.continued + time.monotonic() - drain_start, 2)
        phase("analysis")
        analysis_start = time.monotonic()
        capture.stop()
        _conclude(scenario, outcome, capture, sent, times, _GuestView(record, on_source, on_destination))
        load = Load(cfg.traffic.rate, sent.achieved_fps, _largest_send_gap(sent),
                    cfg.migration.hold_s + cfg.migration.settle_s, times.continued - times.pre_switchover,
                    drained.ended if drained else "", _late(drained, outcome.analysis), capture.tap_dropped(),
                    _queued(scenario, capture.stream(sent.run_id), times))
        outcome.load = load.figures(outcome.verdict)
        why = starvation(load)
        if why:  # the machine, not QEMU, decided what was measured: no verdict about QEMU
            outcome.verdict, outcome.error = Verdict.ERROR, why
            outcome.reasons = [why, *outcome.reasons]
        outcome.figures = migration.figures() | _timeline(sent, times, outcome.switched_on)
        outcome.timings["analysis"] = round(time.monotonic() - analysis_start, 2)
    finally:
        booted.withdraw_keys()
        # Kept unless the scenario ends as expected: an error on the way leaves them for a look too.
        src.keep = dest.keep = keep(outcome)
        src.close()
        dest.close()


@dataclass(frozen=True)
class _GuestView:
    """What the guest gave: its receiver's record, and its clock on each side of the migration."""

    record: GuestRecord
    source: ClockOffset | None
    destination: ClockOffset | None


def _conclude(scenario: ScenarioSpec, outcome: Outcome, capture: SecondaryCapture, sent: Sent,
              times: MigrationTimes, seen: _GuestView) -> None:
    """The captures analysed, over first frame .. migrate-continue, into the outcome's verdict."""
    if scenario.filter != NO_FILTER:
        # A verdict speaks of QEMU only when the lab's own stream path held for the whole window.
        capture.check_stream(sent.frames[0].time if sent.frames else times.started, times.continued)
    stream = capture.stream(sent.run_id)
    window = StopWindow(stop=times.stopped, resume=times.continued)
    analysis = analyse(sent, stream, capture.delivered(sent.run_id), window)
    got = [Frame(f.seq, f.time) for f in seen.record.of_run(sent.run_id)]
    guest = analyse_guest(sent, got, times.stopped, seen.source, seen.destination, seen.record.socket_drops)
    outcome.analysis, outcome.guest = analysis, guest
    outcome.lost_at = _lost_at(scenario, sent, analysis, stream, guest, got)
    outcome.verdict, outcome.reasons = judge(scenario, guest if scenario.path == "guest" else analysis,
                                             outcome.lost_at)
    outcome.generator_fps = sent.achieved_fps
    outcome.captured = Captured(sent, stream, window, guest.arrivals, times.resumed, scenario.path)


# Starved when the generator kept less than this share of its rate, paused for more than this share
# of the hold (a pause as long as the stop would leave no frame to arrive while stopped), or the hold
# lasted more than this many times its length. Measured with 12 cells on 2 cores: the generator kept
# 983-1036 of 1000 frames/s, and cells that gave their right verdict paused up to 1518 ms and held up
# to 14.1 s of 3.3 s; none of these made a wrong verdict, the net queue did (MAX_QUEUED).
MIN_RATE_SHARE = 0.5
MAX_SEND_GAP_SHARE = 0.5
MAX_HOLD_FACTOR = 5
# QEMU's per-client net queue (net/queue.c): a peer that cannot receive, as the destination's guest
# before it runs, is given at most this many packets and the rest are dropped. A run that lasted long
# enough to fill it lost frames to the machine's slowness, whatever the filter did; starved short of
# the limit itself, since the queue holds a few packets of the destination's own (9980 test frames
# delivered of 10741 held, measured).
NET_QUEUE_PACKETS = 10000
MAX_QUEUED = NET_QUEUE_PACKETS * 95 // 100


@dataclass(frozen=True)
class Load:
    """What says whether a cell's measurement had the machine it needed."""

    rate: int  # frames/s asked of the generator
    achieved_fps: float | None  # what it kept
    send_gap_s: float  # its longest pause between two frames
    hold_s: float  # the hold and settle asked for
    held_s: float  # pre-switchover to migrate-continue, as it happened
    drain: str  # how the destination tap's drain ended (lab.vm.capture: ALL, QUIET, BOUND, CUT; "": none)
    late: int | None  # frames the tap delivered after the drain had ended
    tap_dropped: int | None  # frames the kernel dropped before tcpdump read them
    queued: int | None  # frames the destination held for its VM before it ran (None: its losses are accepted)

    @property
    def drain_cut(self) -> bool:
        return self.drain == CUT

    def figures(self, judged: str) -> dict[str, Any]:
        """report.json's ``load``, with the verdict the figures alone gave (``judged``)."""
        return {"send_gap_ms": round(self.send_gap_s * 1000, 1), "held_s": round(self.held_s, 2),
                "drain": self.drain, "late": self.late, "tap_dropped": self.tap_dropped, "queued": self.queued,
                "judged": judged}


def _queued(scenario: ScenarioSpec, stream: list[Frame], times: MigrationTimes) -> int | None:
    """Frames the destination QEMU had to hold before its VM ran: what reached it up to migrate-continue."""
    if "destination" in scenario.accept_loss:
        return None
    return len({f.seq for f in stream if f.time <= times.continued})


def _late(drained: Drained | None, analysis: Analysis | None) -> int | None:
    if drained is None or analysis is None:
        return None
    return max(0, analysis.frames_delivered - drained.delivered)


def starvation(load: Load) -> str:
    """Why the measurement was starved ("" when it was not): frames a starved lab did not send,
    wait for or hold for would read as frames QEMU lost."""
    if load.queued is not None and load.queued > MAX_QUEUED:
        return (f"starved: the destination held {load.queued} frames for its VM before it ran, more than QEMU's "
                f"net queue takes ({NET_QUEUE_PACKETS}): the run took that long on an overloaded machine; run fewer "
                "cells at once")
    if load.drain_cut:
        return ("starved: the destination tap still delivered frames when the drain's bound (timeouts.drain_s) "
                "ran out; the machine is overloaded, run fewer cells at once")
    if load.achieved_fps is not None and load.achieved_fps < load.rate * MIN_RATE_SHARE:
        return (f"starved: the generator kept {load.achieved_fps:.0f} of {load.rate} frames/s; the machine is "
                "overloaded, run fewer cells at once")
    if load.send_gap_s > load.hold_s * MAX_SEND_GAP_SHARE:
        return (f"starved: the generator paused {load.send_gap_s * 1000:.0f} ms between two frames; the machine is "
                "overloaded, run fewer cells at once")
    if load.held_s > MAX_HOLD_FACTOR * load.hold_s:
        return (f"starved: the hold lasted {load.held_s:.1f} s of {load.hold_s:.1f} s; the machine is overloaded, "
                "run fewer cells at once")
    return ""


def _largest_send_gap(sent: Sent) -> float:
    times = [f.time for f in sent.frames]
    return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def judge(scenario: ScenarioSpec, judged: Analysis | GuestAnalysis,
          lost_at: dict[str, int]) -> tuple[Verdict, list[str]]:
    """The verdict and its reasons: the capture point's own, unless every frame it lacks was lost
    where the scenario accepts losses (``accept_loss``) and nothing else is wrong."""
    if judged.verdict != Verdict.GAP or not scenario.accept_loss:
        return judged.verdict, list(judged.reasons)
    where = [point for point, count in lost_at.items() if count]
    if judged.faults or not set(where) <= set(scenario.accept_loss):
        return judged.verdict, list(judged.reasons)
    return Verdict.CONTINUOUS, [f"accepted, lost at {', '.join(where)}: {r}" for r in judged.reasons]


def _switch_on(src: Qemu, outcome: Outcome) -> None:
    """The filter under test on, over QMP (it started with status=off)."""
    src.qmp.cmd("qom-set", path=SOURCE_FILTER_ID, property="status", value="on")
    outcome.switched_on = time.time()


def _settled_record(host: Host, timeout: float, cancel: threading.Event | None) -> GuestRecord:
    """The guest's record once it stops growing: the destination hands the guest what it held while
    the source was stopped only when it runs, and the guest takes a while to read it all."""
    deadline = Deadline("the guest's record to settle", timeout, cancel)
    record = read_record(host, RECORD_S)
    while not deadline.expired():
        deadline.sleep(0.15)
        again = read_record(host, RECORD_S)
        if len(again.frames) == len(record.frames):
            return again
        record = again
    return record


def _timeline(sent: Sent, times: MigrationTimes, switched_on: float | None) -> dict[str, float | None]:
    """QEMU's event times on the timeline picture's axis: seconds since the first frame was sent."""
    t0 = sent.frames[0].time if sent.frames else times.started

    def at(t: float | None) -> float | None:
        return None if t is None else round(t - t0, 4)

    return {"stop_at": at(times.stopped), "pre_switchover_at": at(times.pre_switchover),
            "resume_at": at(times.resumed), "switched_on_at": at(switched_on)}


def _lost_at(scenario: ScenarioSpec, sent: Sent, analysis: Analysis, stream: list[Frame], guest: GuestAnalysis,
             got: list[Frame]) -> dict[str, int]:
    """Where the frames that did not arrive were lost, along the scenario's path.

    stream path: the generator (not sent), the stream (never on it), the destination (on the stream,
    never out of the destination's tap). guest path: the generator, the stream (neither taken by the
    source's guest nor put on the stream), the destination (on the stream, never to its guest), the
    guest (its kernel dropped them before the receiver read them).
    """
    if scenario.path == "stream":
        return {"generator": sent.send_errors, "stream": analysis.lost, "destination": analysis.undelivered}
    sent_seqs = {f.seq for f in sent.frames}
    on_stream = {f.seq for f in stream} & sent_seqs
    reached = {f.seq for f in got} & sent_seqs
    before_stop = reached - on_stream
    not_passed_on = len(sent_seqs - before_stop - on_stream)
    held = max(0, len(on_stream - reached) - guest.socket_drops)
    return {"generator": sent.send_errors, "stream": not_passed_on, "destination": held,
            "guest": guest.socket_drops}
def _version(qemu: Qemu) -> str:
    v = qemu.qmp.cmd("query-version")
    q = v.get("qemu", {})
    return f"{q.get('major')}.{q.get('minor')}.{q.get('micro')}{v.get('package', '')}"

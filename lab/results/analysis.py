"""From captures to a verdict.

Inputs: the generator's record (what was sent, when), the mirror stream as it reached the secondary
host (what arrived, when), the secondary tap (what the destination QEMU delivered), and the stopped
window from QMP (source STOP event to migrate-continue). The analysis window runs from the first frame
sent to migrate-continue.

The guest's own record (``analyse_guest``) is the third view: what reached the guest, on its own
clock, brought onto the hosts' clock with the offsets the lab measured on each side of the migration.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lab import pcap
from lab.agents import frames
from lab.results.verdict import Verdict


@dataclass(frozen=True)
class Frame:
    seq: int
    time: float


@dataclass(frozen=True)
class Sent:
    run_id: int
    frames: tuple[Frame, ...]
    send_errors: int = 0

    @property
    def achieved_fps(self) -> float | None:
        """The rate the generator kept, from its own send times."""
        if len(self.frames) < 2:
            return None
        span = self.frames[-1].time - self.frames[0].time
        return round((len(self.frames) - 1) / span, 1) if span > 0 else None

    @classmethod
    def load(cls, path: Path) -> Sent:
        data = json.loads(path.read_text())
        return cls(run_id=data["run_id"], send_errors=data.get("send_errors", 0),
                   frames=tuple(Frame(seq, t) for seq, t in data["sent"]))


@dataclass(frozen=True)
class StopWindow:
    stop: float | None  # the source's STOP event; None when it never stopped
    resume: float  # migrate-continue sent


@dataclass
class Analysis:
    frames_sent: int
    frames_captured: int
    frames_delivered: int
    lost: int
    duplicates: int
    reordered: int
    frames_during_stop: int
    max_gap_ms: float
    stopped_window_ms: float
    undelivered: int
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    lost_seqs: list[int] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)  # the reasons no accepted loss excuses


@dataclass
class _Reasons:
    """Why a verdict is gap: frames lost somewhere (an expectation may accept losses at a point), and
    faults no accepted loss excuses (duplicates, reordering, a source that never stopped)."""

    reasons: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)

    def loss(self, text: str) -> None:
        self.reasons.append(text)

    def fault(self, text: str) -> None:
        self.reasons.append(text)
        self.faults.append(text)


def read_pcap(path: Path, run_id: int) -> list[Frame]:
    """The lab's test frames of one run in a pcap, in capture order (none when nothing was captured)."""
    if not path.exists():
        return []
    tagged = ((frames.parse(r.data), r.time) for r in pcap.records(path))
    return [Frame(tag.seq, t) for tag, t in tagged if tag is not None and tag.run_id == run_id]


def analyse(sent: Sent, stream: list[Frame], delivered: list[Frame], window: StopWindow) -> Analysis:
    end = window.resume
    captured = [f for f in stream if f.time <= end]
    seen, duplicates, reordered = _ordering(captured)
    sent_seqs = {f.seq for f in sent.frames}
    lost_seqs = sorted(sent_seqs - seen)
    # Counted apart: a frame the record does not name is neither captured of what was sent nor lost.
    unexpected = len(seen - sent_seqs)
    delivered_seqs = {f.seq for f in delivered}
    undelivered = len(seen - delivered_seqs)

    during_stop = 0
    stopped_ms = 0.0
    if window.stop is not None:
        during_stop = len({f.seq for f in captured if window.stop <= f.time <= end})
        stopped_ms = (end - window.stop) * 1000

    max_gap_ms = _max_gap_ms(sent, captured)

    found = _Reasons()
    if not captured:
        found.loss("no frame reached the secondary")
    if lost_seqs:
        found.loss(f"{len(lost_seqs)} of {len(sent_seqs)} frames lost")
    if unexpected:
        found.fault(f"{unexpected} captured frames were never sent (not in the generator's record)")
    if duplicates:
        found.fault(f"{duplicates} duplicates")
    if reordered:
        found.fault(f"{reordered} frames out of order")
    if window.stop is None:
        found.fault("the source never reported STOP")
    elif not during_stop:
        found.fault("no frame arrived while the source was stopped")  # late is not lost: no loss excuses it
    if undelivered:
        found.loss(f"{undelivered} captured frames were not delivered by the secondary QEMU")
    reasons, faults = found.reasons, found.faults
    return Analysis(
        frames_sent=len(sent_seqs), frames_captured=len(seen) - unexpected, frames_delivered=len(delivered_seqs),
        lost=len(lost_seqs), duplicates=duplicates, reordered=reordered, frames_during_stop=during_stop,
        max_gap_ms=round(max_gap_ms, 1), stopped_window_ms=round(stopped_ms, 1), undelivered=undelivered,
        verdict=Verdict.GAP if reasons else Verdict.CONTINUOUS, reasons=reasons, lost_seqs=lost_seqs, faults=faults)


def _ordering(frames: Sequence[Frame]) -> tuple[set[int], int, int]:
    """The sequence numbers seen, how many came again, and how many came after a later one."""
    seen: set[int] = set()
    duplicates = reordered = 0
    highest: int | None = None
    for f in frames:
        if f.seq in seen:
            duplicates += 1
            continue
        seen.add(f.seq)
        if highest is not None and f.seq < highest:
            reordered += 1
        highest = f.seq if highest is None else max(highest, f.seq)
    return seen, duplicates, reordered


def _max_gap_ms(sent: Sent, captured: list[Frame]) -> float:
    """The longest silence on the stream while frames were being sent.

    Bounded by the first and last send, so that a stream which dies early shows its silence up to
    the last frame the generator sent.
    """
    if not sent.frames:
        return 0.0
    first, last = sent.frames[0].time, sent.frames[-1].time
    times = [first] + sorted(f.time for f in captured if f.time >= first) + [last]
    times = sorted(times)
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0) * 1000


class Clock(Protocol):
    """A guest clock's offset as measured by probes: host time = guest time + ``offset_s``."""

    @property
    def offset_s(self) -> float: ...

    @property
    def uncertainty_s(self) -> float: ...


@dataclass
class GuestAnalysis:
    """The frames of the sent record as the guest received them, on the hosts' clock."""

    received: int
    lost: int
    duplicates: int
    reordered: int
    max_gap_ms: float | None  # None: the destination's clock offset is unknown
    frames_after_resume: int  # received on the destination
    latency_ms: dict[str, float] | None  # p50, p99, max
    socket_drops: int
    clock: dict[str, dict[str, float] | None]  # per side: offset_s, uncertainty_ms
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    lost_seqs: list[int] = field(default_factory=list)
    arrivals: list[Frame] = field(default_factory=list)  # on the hosts' clock, for the picture
    faults: list[str] = field(default_factory=list)  # the reasons no accepted loss excuses


def analyse_guest(sent: Sent, received: Sequence[Frame], stop: float | None, source: Clock | None,
                  destination: Clock | None, socket_drops: int = 0) -> GuestAnalysis:
    """``received``: this run's frames in the order the guest took them, with its own clock's times;
    ``stop``: the source's STOP event (hosts' clock).

    The guest's clock does not move while its VM is stopped, so guest time alone cannot say on which
    side a frame arrived; the source's offset can: a frame the guest took before the source's STOP
    (brought onto the hosts' clock) arrived on the source, any later one on the destination.
    """
    boundary = (stop - source.offset_s) if (source is not None and stop is not None) else None
    arrivals: list[Frame] = []
    after_resume = 0
    for f in received:
        on_source = boundary is not None and f.time <= boundary
        clock = source if on_source else destination
        if not on_source:
            after_resume += 1
        if clock is not None:
            arrivals.append(Frame(f.seq, f.time + clock.offset_s))
    seen, duplicates, reordered = _ordering(received)
    sent_times = {f.seq: f.time for f in sent.frames}
    lost_seqs = sorted(set(sent_times) - seen)
    complete = len(arrivals) == len(received)
    latencies = sorted((f.time - sent_times[f.seq]) * 1000 for f in arrivals if f.seq in sent_times)
    found = _Reasons()
    if lost_seqs:
        found.loss(f"{len(lost_seqs)} of {len(sent_times)} frames never reached the guest")
    if duplicates:
        found.fault(f"the guest received {duplicates} frames twice")
    if reordered:
        found.fault(f"the guest received {reordered} frames out of order")
    if socket_drops:
        found.loss(f"the guest's kernel dropped {socket_drops} frames before its receiver read them")
    reasons = found.reasons
    return GuestAnalysis(
        received=len(seen), lost=len(lost_seqs), duplicates=duplicates, reordered=reordered,
        max_gap_ms=round(_guest_gap_ms(sent, arrivals), 1) if complete else None,
        frames_after_resume=after_resume, latency_ms=_percentiles(latencies) if complete else None,
        socket_drops=socket_drops,
        clock={"source": _clock(source), "destination": _clock(destination)},
        verdict=Verdict.GAP if reasons else Verdict.CONTINUOUS, reasons=reasons, lost_seqs=lost_seqs, arrivals=arrivals,
        faults=found.faults)


def _guest_gap_ms(sent: Sent, arrivals: list[Frame]) -> float:
    """The longest the guest went without a frame, from the first send on; frames held while the
    guest was stopped arrive after the generator stopped, so the silence runs to the last arrival or
    the last send, whichever is later."""
    if not sent.frames:
        return 0.0
    first, last = sent.frames[0].time, sent.frames[-1].time
    times = sorted([first] + [f.time for f in arrivals if f.time >= first])
    if times[-1] < last:
        times.append(last)
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0) * 1000


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    if len(values) == 1:
        return {"p50": round(values[0], 2), "p99": round(values[0], 2), "max": round(values[0], 2)}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 2), "p99": round(cuts[98], 2), "max": round(values[-1], 2)}


def _clock(clock: Clock | None) -> dict[str, float] | None:
    if clock is None:
        return None
    return {"offset_s": round(clock.offset_s, 6), "uncertainty_ms": round(clock.uncertainty_s * 1000, 3)}

"""From captures to a verdict.

Inputs: the generator's record (what was sent, when), the mirror stream as it reached the secondary
host (what arrived, when), the secondary tap (what the destination QEMU delivered), and the stopped
window from QMP (source STOP event to migrate-continue). The analysis window runs from the first frame
sent to migrate-continue.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from lab.agents import frames

CONTINUOUS = "continuous"
GAP = "gap"
ERROR = "error"
UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class Frame:
    seq: int
    time: float


@dataclass(frozen=True)
class Sent:
    run_id: int
    frames: tuple[Frame, ...]
    send_errors: int = 0

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
    verdict: str
    reasons: list[str] = field(default_factory=list)
    lost_seqs: list[int] = field(default_factory=list)


def read_pcap(path: Path, run_id: int) -> list[Frame]:
    """The lab's test frames of one run in a pcap, in capture order."""
    from scapy.utils import RawPcapReader  # scapy is slow to import; only analysis needs it

    out: list[Frame] = []
    if not path.exists() or path.stat().st_size < 24:
        return out
    with RawPcapReader(str(path)) as reader:
        for data, meta in reader:
            tag = frames.parse(bytes(data))
            if tag is not None and tag.run_id == run_id:
                out.append(Frame(tag.seq, meta.sec + meta.usec / 1e6))
    return out


def analyse(sent: Sent, stream: list[Frame], delivered: list[Frame], window: StopWindow) -> Analysis:
    end = window.resume
    captured = [f for f in stream if f.time <= end]
    seen: set[int] = set()
    duplicates = reordered = 0
    highest: int | None = None
    for f in captured:
        if f.seq in seen:
            duplicates += 1
            continue
        seen.add(f.seq)
        if highest is not None and f.seq < highest:
            reordered += 1
        highest = f.seq if highest is None else max(highest, f.seq)
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

    reasons = []
    if not captured:
        reasons.append("no frame reached the secondary")
    if lost_seqs:
        reasons.append(f"{len(lost_seqs)} of {len(sent_seqs)} frames lost")
    if unexpected:
        reasons.append(f"{unexpected} captured frames were never sent (not in the generator's record)")
    if duplicates:
        reasons.append(f"{duplicates} duplicates")
    if reordered:
        reasons.append(f"{reordered} frames out of order")
    if window.stop is None:
        reasons.append("the source never reported STOP")
    elif not during_stop:
        reasons.append("no frame arrived while the source was stopped")
    if undelivered:
        reasons.append(f"{undelivered} captured frames were not delivered by the secondary QEMU")
    return Analysis(
        frames_sent=len(sent_seqs), frames_captured=len(seen) - unexpected, frames_delivered=len(delivered_seqs),
        lost=len(lost_seqs), duplicates=duplicates, reordered=reordered, frames_during_stop=during_stop,
        max_gap_ms=round(max_gap_ms, 1), stopped_window_ms=round(stopped_ms, 1), undelivered=undelivered,
        verdict=GAP if reasons else CONTINUOUS, reasons=reasons, lost_seqs=lost_seqs)


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

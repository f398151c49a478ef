"""lab.results.analysis.analyse_guest: the sent record and the guest's own record to the guest's view.

The synthetic run: 100 frames sent 1 ms apart from T0; the source stops at T0+40 ms and its guest
clock is frozen from then until the destination resumes it at T0+150 ms. The source guest's clock
runs 2 s behind the hosts' clock, so the destination's runs 2.110 s behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.results.analysis import Frame, Sent, analyse_guest
from lab.results.verdict import Verdict

T0 = 1_700_000_000.0
STOP = T0 + 0.040
RESUME = T0 + 0.150
SENT = Sent(run_id=7, frames=tuple(Frame(seq, T0 + seq * 0.001) for seq in range(100)))


@dataclass(frozen=True)
class Offset:
    offset_s: float
    uncertainty_s: float = 0.0001


SOURCE = Offset(2.0)
DESTINATION = Offset(2.110)


def on_source(seqs: range, latency: float = 0.0005) -> list[Frame]:
    return [Frame(s, T0 + s * 0.001 + latency - SOURCE.offset_s) for s in seqs]


def on_destination(seqs: range, spacing: float = 0.0001) -> list[Frame]:
    """Frames queued while the source was stopped, taken by the guest one after another at resume."""
    return [Frame(s, RESUME + 0.001 + i * spacing - DESTINATION.offset_s) for i, s in enumerate(seqs)]


def test_every_frame_reaching_the_guest_is_continuous_with_the_stop_as_its_gap() -> None:
    g = analyse_guest(SENT, on_source(range(40)) + on_destination(range(40, 100)), STOP, SOURCE, DESTINATION)
    assert g.verdict == Verdict.CONTINUOUS and g.reasons == []
    assert (g.received, g.lost, g.duplicates, g.reordered) == (100, 0, 0, 0)
    assert g.frames_after_resume == 60
    # The guest saw nothing from seq 39's arrival (39.5 ms) until the destination ran (151 ms).
    assert g.max_gap_ms == 111.5


def test_latency_is_arrival_on_the_hosts_clock_minus_send_time() -> None:
    g = analyse_guest(SENT, on_source(range(40)) + on_destination(range(40, 100)), STOP, SOURCE, DESTINATION)
    assert g.latency_ms is not None
    # seq 40, sent at 40 ms, reached the destination's guest at 151 ms; seq 99, sent at 99 ms, at
    # 156.9 ms; seq 0..39 0.5 ms after they were sent.
    assert g.latency_ms["max"] == 111.0
    assert 0.5 < g.latency_ms["p50"] < 111.0
    g = analyse_guest(SENT, on_source(range(100)), T0 + 1, SOURCE, DESTINATION)
    assert g.latency_ms == {"p50": 0.5, "p99": 0.5, "max": 0.5}


def test_frames_sent_while_stopped_and_never_delivered_are_lost() -> None:
    g = analyse_guest(SENT, on_source(range(40)), STOP, SOURCE, DESTINATION)
    assert g.verdict == Verdict.GAP
    assert (g.lost, g.frames_after_resume) == (60, 0)
    assert g.lost_seqs == list(range(40, 100))
    assert g.reasons == ["60 of 100 frames never reached the guest"]
    assert g.max_gap_ms == 59.5  # from seq 39's arrival to the last frame sent


def test_without_a_source_offset_every_frame_counts_as_delivered_on_the_destination() -> None:
    # A filter that redirects every frame away from the source guest also takes the probes.
    g = analyse_guest(SENT, on_destination(range(100)), STOP, None, DESTINATION)
    assert (g.received, g.frames_after_resume) == (100, 100)
    assert g.clock["source"] is None
    assert g.clock["destination"] == {"offset_s": 2.11, "uncertainty_ms": 0.1}


def test_without_a_destination_offset_the_times_are_not_invented() -> None:
    g = analyse_guest(SENT, on_source(range(40)) + on_destination(range(40, 100)), STOP, SOURCE, None)
    assert g.received == 100
    assert g.max_gap_ms is None and g.latency_ms is None


def test_duplicates_reorders_and_socket_drops_are_each_a_reason() -> None:
    frames = on_source(range(40))
    frames[10], frames[11] = frames[11], frames[10]
    frames.append(frames[5])
    g = analyse_guest(SENT, frames + on_destination(range(40, 100)), STOP, SOURCE, DESTINATION, socket_drops=3)
    assert (g.duplicates, g.reordered, g.socket_drops) == (1, 1, 3)
    assert g.verdict == Verdict.GAP and len(g.reasons) == 3


def test_nothing_received_is_a_gap_with_no_latency() -> None:
    g = analyse_guest(SENT, [], STOP, SOURCE, DESTINATION)
    assert (g.received, g.lost, g.verdict) == (0, 100, Verdict.GAP)
    assert g.latency_ms is None

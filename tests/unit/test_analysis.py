"""lab.results.analysis.analyse: from a sent record, a stream capture and a tap capture to a verdict.

The synthetic run: 100 frames sent 1 ms apart from T0; the source stops at T0+40 ms and
migrate-continue is sent at T0+150 ms. On the stream a frame arrives 0.5 ms after it was sent.
"""

from __future__ import annotations

import pytest

from lab.results.analysis import Frame, Sent, StopWindow, analyse
from lab.results.verdict import Verdict

T0 = 1_700_000_000.0
COUNT = 100
STOP = T0 + 0.040
RESUME = T0 + 0.150
WINDOW = StopWindow(stop=STOP, resume=RESUME)
LATENCY = 0.0005


def sent_at(seq: int) -> float:
    return T0 + seq * 0.001


SENT = Sent(run_id=7, frames=tuple(Frame(seq, sent_at(seq)) for seq in range(COUNT)))


def arrivals(seqs: list[int] | range) -> list[Frame]:
    return [Frame(seq, sent_at(seq) + LATENCY) for seq in seqs]


CONTINUOUS_STREAM = arrivals(range(COUNT))
# Frames sent before the stop arrive; then the stream is silent.
BROKEN_STREAM = arrivals(range(40))


def test_continuous_stream_is_continuous() -> None:
    result = analyse(SENT, CONTINUOUS_STREAM, CONTINUOUS_STREAM, WINDOW)
    assert result.verdict == Verdict.CONTINUOUS
    assert result.reasons == []


def test_continuous_stream_counts() -> None:
    result = analyse(SENT, CONTINUOUS_STREAM, CONTINUOUS_STREAM, WINDOW)
    assert (result.frames_sent, result.frames_captured, result.frames_delivered) == (100, 100, 100)
    assert (result.lost, result.duplicates, result.reordered, result.undelivered) == (0, 0, 0, 0)
    assert result.lost_seqs == []


def test_continuous_stream_counts_frames_during_stop() -> None:
    # seq 40 arrives at 40.5 ms, after the stop; seq 39 at 39.5 ms, before it.
    result = analyse(SENT, CONTINUOUS_STREAM, CONTINUOUS_STREAM, WINDOW)
    assert result.frames_during_stop == 60


def test_continuous_stream_timings() -> None:
    result = analyse(SENT, CONTINUOUS_STREAM, CONTINUOUS_STREAM, WINDOW)
    assert result.max_gap_ms == 1.0
    assert result.stopped_window_ms == 110.0


def test_silent_stream_during_stop_is_a_gap() -> None:
    result = analyse(SENT, BROKEN_STREAM, BROKEN_STREAM, WINDOW)
    assert result.verdict == Verdict.GAP
    assert result.reasons == ["60 of 100 frames lost", "no frame arrived while the source was stopped"]


def test_silent_stream_counts() -> None:
    result = analyse(SENT, BROKEN_STREAM, BROKEN_STREAM, WINDOW)
    assert (result.frames_sent, result.frames_captured, result.frames_delivered) == (100, 40, 40)
    assert result.lost == 60
    assert result.lost_seqs == list(range(40, 100))
    assert result.frames_during_stop == 0
    assert (result.duplicates, result.reordered, result.undelivered) == (0, 0, 0)
    assert result.stopped_window_ms == 110.0


def test_silent_stream_max_gap_runs_to_the_last_send() -> None:
    # Last arrival at 39.5 ms; the generator sent its last frame at 99 ms.
    result = analyse(SENT, BROKEN_STREAM, BROKEN_STREAM, WINDOW)
    assert result.max_gap_ms == 59.5


def test_max_gap_finds_a_hole_in_the_middle() -> None:
    stream = arrivals([s for s in range(COUNT) if not 10 <= s < 30])
    result = analyse(SENT, stream, stream, WINDOW)
    assert result.max_gap_ms == 21.0
    assert result.lost == 20
    assert result.frames_during_stop == 60


def test_frames_arriving_after_resume_are_not_captured() -> None:
    late = [Frame(seq, RESUME + 0.010) for seq in range(40, COUNT)]
    stream = BROKEN_STREAM + late
    result = analyse(SENT, stream, stream, WINDOW)
    assert result.frames_captured == 40
    assert result.lost == 60
    assert result.frames_during_stop == 0
    assert result.verdict == Verdict.GAP


def test_a_frame_arriving_exactly_at_resume_is_captured_during_stop() -> None:
    stream = BROKEN_STREAM + [Frame(40, RESUME)]
    result = analyse(SENT, stream, stream, WINDOW)
    assert result.frames_captured == 41
    assert result.frames_during_stop == 1


def test_a_frame_arriving_exactly_at_stop_is_during_stop() -> None:
    stream = arrivals(range(39)) + [Frame(39, STOP)]
    result = analyse(SENT, stream, stream, WINDOW)
    assert result.frames_during_stop == 1


def test_duplicates_are_counted_once_as_captured() -> None:
    stream = CONTINUOUS_STREAM[:11] + [Frame(10, sent_at(10) + 0.0007)] + CONTINUOUS_STREAM[11:]
    result = analyse(SENT, stream, CONTINUOUS_STREAM, WINDOW)
    assert result.duplicates == 1
    assert result.frames_captured == 100
    assert result.lost == 0
    assert result.reordered == 0


def test_duplicates_make_a_gap_verdict() -> None:
    stream = CONTINUOUS_STREAM + [Frame(50, RESUME)]
    result = analyse(SENT, stream, CONTINUOUS_STREAM, WINDOW)
    assert result.verdict == Verdict.GAP
    assert result.reasons == ["1 duplicates"]


def test_reordering_is_counted() -> None:
    stream = list(CONTINUOUS_STREAM)
    stream[10], stream[11] = stream[11], stream[10]
    stream[50], stream[53] = stream[53], stream[50]
    result = analyse(SENT, stream, CONTINUOUS_STREAM, WINDOW)
    # 10 after 11; 51, 52 and 50 after 53.
    assert result.reordered == 4
    assert result.duplicates == 0
    assert result.lost == 0
    assert result.frames_captured == 100


def test_reordering_makes_a_gap_verdict() -> None:
    stream = list(CONTINUOUS_STREAM)
    stream[10], stream[11] = stream[11], stream[10]
    result = analyse(SENT, stream, CONTINUOUS_STREAM, WINDOW)
    assert result.verdict == Verdict.GAP
    assert result.reasons == ["1 frames out of order"]


def test_a_late_duplicate_is_not_also_reordered() -> None:
    stream = CONTINUOUS_STREAM + [Frame(5, sent_at(99) + 0.001)]
    result = analyse(SENT, stream, CONTINUOUS_STREAM, WINDOW)
    assert result.duplicates == 1
    assert result.reordered == 0


def test_captured_frames_missing_on_the_tap_are_undelivered() -> None:
    delivered = [f for f in CONTINUOUS_STREAM if f.seq not in (3, 50, 97)]
    result = analyse(SENT, CONTINUOUS_STREAM, delivered, WINDOW)
    assert result.undelivered == 3
    assert result.frames_delivered == 97
    assert result.frames_captured == 100
    assert result.verdict == Verdict.GAP
    assert result.reasons == ["3 captured frames were not delivered by the secondary QEMU"]


def test_lost_frames_are_not_also_undelivered() -> None:
    result = analyse(SENT, BROKEN_STREAM, BROKEN_STREAM, WINDOW)
    assert result.undelivered == 0


def test_delivered_counts_distinct_seqs() -> None:
    delivered = CONTINUOUS_STREAM + CONTINUOUS_STREAM[:5]
    assert analyse(SENT, CONTINUOUS_STREAM, delivered, WINDOW).frames_delivered == 100


def test_no_stop_event_is_a_gap() -> None:
    window = StopWindow(stop=None, resume=RESUME)
    result = analyse(SENT, CONTINUOUS_STREAM, CONTINUOUS_STREAM, window)
    assert result.verdict == Verdict.GAP
    assert result.reasons == ["the source never reported STOP"]
    assert result.frames_during_stop == 0
    assert result.stopped_window_ms == 0.0
    assert result.frames_captured == 100


def test_empty_stream_says_nothing_reached_the_secondary() -> None:
    result = analyse(SENT, [], [], WINDOW)
    assert result.verdict == Verdict.GAP
    assert result.reasons[0] == "no frame reached the secondary"
    assert "100 of 100 frames lost" in result.reasons
    assert result.frames_captured == 0
    assert result.lost == 100
    assert result.max_gap_ms == 99.0


def test_nothing_sent_is_no_evidence_of_continuity() -> None:
    result = analyse(Sent(run_id=7, frames=()), [], [], WINDOW)
    assert result.frames_sent == 0 and result.max_gap_ms == 0.0
    assert result.verdict == Verdict.GAP
    assert "no frame arrived while the source was stopped" in result.reasons


@pytest.mark.parametrize("stop_ms, expected", [(40, 110.0), (149.9, 0.1), (150, 0.0)])
def test_stopped_window_runs_from_stop_to_resume(stop_ms: float, expected: float) -> None:
    window = StopWindow(stop=T0 + stop_ms / 1000, resume=RESUME)
    assert analyse(SENT, CONTINUOUS_STREAM, CONTINUOUS_STREAM, window).stopped_window_ms == expected


def test_a_frame_never_sent_is_neither_captured_nor_lost_and_no_continuity() -> None:
    stream = CONTINUOUS_STREAM + [Frame(COUNT + 5, RESUME - 0.001)]
    result = analyse(SENT, stream, stream, WINDOW)
    assert (result.frames_sent, result.frames_captured, result.lost) == (COUNT, COUNT, 0)
    assert result.verdict == Verdict.GAP
    assert result.reasons == ["1 captured frames were never sent (not in the generator's record)"]


def test_the_first_frame_is_never_out_of_order_whatever_its_number() -> None:
    stream = [Frame(-1, sent_at(0) + LATENCY)]
    assert analyse(Sent(run_id=7, frames=()), stream, stream, WINDOW).reordered == 0

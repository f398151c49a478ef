"""lab.scenario.judge: a verdict may accept losses at named points, and nothing else."""

from __future__ import annotations

import dataclasses

from lab.config import ScenarioSpec
from lab.results.analysis import Frame, Sent, StopWindow, analyse
from lab.results.verdict import Verdict
from lab.scenario import Load, judge, starvation

T0 = 1_700_000_000.0
SENT = Sent(run_id=1, frames=tuple(Frame(s, T0 + s * 0.001) for s in range(100)))
STREAM = [Frame(s, T0 + s * 0.001 + 0.0005) for s in range(100)]
WINDOW = StopWindow(stop=T0 + 0.040, resume=T0 + 0.150)
# The destination's queue held 70 of them: the rest never came out of its tap.
HELD = STREAM[:70]
SCENARIO = ScenarioSpec("redirector", "filter-redirector", {"baseline": "continuous"})


def test_a_gap_stays_a_gap_without_accepted_losses() -> None:
    a = analyse(SENT, STREAM, HELD, WINDOW)
    assert judge(SCENARIO, a, {"generator": 0, "stream": 0, "destination": 30}) == (Verdict.GAP, a.reasons)


def test_losses_only_where_accepted_make_it_continuous_and_say_so() -> None:
    a = analyse(SENT, STREAM, HELD, WINDOW)
    verdict, reasons = judge(dataclasses.replace(SCENARIO, accept_loss=("destination",)), a,
                             {"generator": 0, "stream": 0, "destination": 30})
    assert verdict == Verdict.CONTINUOUS
    assert reasons == ["accepted, lost at destination: 30 captured frames were not delivered by the secondary QEMU"]


def test_a_loss_elsewhere_or_a_fault_is_not_excused() -> None:
    accepting = dataclasses.replace(SCENARIO, accept_loss=("destination",))
    lossy = analyse(SENT, STREAM[:90], HELD, WINDOW)
    assert judge(accepting, lossy, {"generator": 0, "stream": 10, "destination": 20})[0] == Verdict.GAP
    reordered = analyse(SENT, [STREAM[1], STREAM[0], *STREAM[2:]], HELD, WINDOW)
    assert reordered.faults == ["1 frames out of order"]
    assert judge(accepting, reordered, {"generator": 0, "stream": 0, "destination": 30})[0] == Verdict.GAP


def test_a_starved_measurement_is_named_and_a_fed_one_is_not() -> None:
    fed = Load(rate=1000, achieved_fps=999.0, send_gap_s=0.025, hold_s=3.3, held_s=3.6, drain_cut=False)
    assert starvation(fed) == ""
    assert "drain's bound" in starvation(dataclasses.replace(fed, drain_cut=True))
    assert "kept 300 of 1000 frames/s" in starvation(dataclasses.replace(fed, achieved_fps=300.0))
    assert "paused 1200 ms" in starvation(dataclasses.replace(fed, send_gap_s=1.2))
    assert "the hold lasted 9.0 s of 3.3 s" in starvation(dataclasses.replace(fed, held_s=9.0))
    assert all(starvation(dataclasses.replace(fed, **{k: v})).startswith("starved: ")
               for k, v in (("drain_cut", True), ("achieved_fps", 1.0), ("send_gap_s", 9.0), ("held_s", 99.0)))

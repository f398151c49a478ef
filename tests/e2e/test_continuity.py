"""Every profile x scenario of lab.yaml, for real: QEMU guests in Docker, a migration, captures."""

from __future__ import annotations

import pytest

from lab import config
from lab.config import LabConfig
from lab.pytest_plugin import RunScenario, config_path
from lab.results.verdict import Verdict

pytestmark = pytest.mark.e2e


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "profile" in metafunc.fixturenames:
        cfg = config.load(config_path(metafunc.config))
        profiles = cfg.select_profiles(metafunc.config.getoption("--lab-profile"))
        cases = [(p.name, s) for p in profiles for s in cfg.scenarios]
        metafunc.parametrize(("profile", "scenario_name"), cases, ids=[f"{p}-{s}" for p, s in cases])


def test_verdict_matches_expectation(profile: str, scenario_name: str,
                                     run_scenario: RunScenario, lab_config: LabConfig) -> None:
    result = run_scenario(profile, scenario_name)  # its verdict and figures go to the JUnit XML
    if result.expected == Verdict.UNSUPPORTED:
        # The build must lack a property the scenario sets, and the lab must say which, booting nothing.
        assert result.verdict == Verdict.UNSUPPORTED, \
            f"{profile} x {scenario_name}: {result.verdict}, expected {Verdict.UNSUPPORTED}"
        assert "has no property" in result.why and not result.artefacts
        return
    where = f"artefacts: {result.artefacts}"
    assert result.verdict != Verdict.ERROR, f"the scenario did not run to its end: {result.why}\n{where}"
    # Whatever the verdict, the lab must have seen traffic flow before the stop: otherwise a "gap"
    # would only say that the lab itself was broken.
    assert result.frames_sent and result.frames_sent > 0, where
    scenario = lab_config.scenarios[scenario_name]
    if scenario.path == "stream":
        assert result.frames_captured, f"no frame reached the secondary at all; {where}"
    else:
        # Before the source stops (and before any switch), frames reach the guest as they would anyway.
        assert result.guest_received, f"no frame reached the guest at all; {where}"
    assert result.stopped_window_ms and result.stopped_window_ms > 0, where
    # Every row has the guest's view and the three downtime figures, whichever view the verdict uses.
    assert None not in (result.guest_received, result.guest_lost, result.guest_max_gap_ms, result.max_gap_ms,
                        result.qemu_downtime_ms), where
    assert result.guest_clock and result.guest_clock["destination"], f"the destination's guest clock: {where}"
    assert result.stop_at is not None and result.resume_at is not None and result.resume_at > result.stop_at
    # Where frames were lost adds up to what the verdict's capture point lost.
    assert result.lost_at is not None, where
    if scenario.path == "guest":
        assert result.lost_at["stream"] + result.lost_at["destination"] + result.lost_at["guest"] == result.guest_lost
    else:
        assert result.lost_at["stream"] == result.lost, where
    if scenario.switch_on in ("at-stop", "before-migrate"):
        assert result.switched_on_at is not None, where
        assert (result.switched_on_at >= result.stop_at) == (scenario.switch_on == "at-stop"), where
    assert result.verdict == result.expected, (
        f"{profile} x {scenario_name}: verdict {result.verdict}, expected {result.expected} "
        f"({result.why or 'continuous'}); {where}")

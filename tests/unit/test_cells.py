"""lab.runner.select_cells: which profile x scenario cells a run has, and `--to`'s pairs of builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import config
from lab.errors import ConfigError
from lab.runner import select_cells

REPO_CONFIG = Path(__file__).resolve().parents[2] / "lab.yaml"


@pytest.fixture
def cfg() -> config.LabConfig:
    return config.load(REPO_CONFIG)


def test_a_plain_run_keeps_each_guest_on_its_build(cfg: config.LabConfig) -> None:
    cells = select_cells(cfg, ["baseline"], ["mirror"])
    [cell] = cells
    assert (cell.profile.name, cell.to.name, cell.name, cell.expected) == ("baseline", "baseline", "baseline-mirror",
                                                                           "gap")


def test_to_migrates_each_selected_build_to_one(cfg: config.LabConfig) -> None:
    [cell] = select_cells(cfg, ["baseline"], ["mirror"], to="control")
    assert (cell.profile.name, cell.to.name, cell.name) == ("baseline", "control", "baseline-to-control-mirror")
    assert [p.name for p in cell.profiles] == ["baseline", "control"]
    assert cell.expected == cfg.scenarios["mirror"].expect["baseline->control"]
    assert cell.row("gap", "tcg").builds == "baseline->control"


def test_to_without_profiles_takes_every_default_build_to_it(cfg: config.LabConfig) -> None:
    cells = select_cells(cfg, None, ["redirector"], to="baseline")
    assert [(c.profile.name, c.to.name) for c in cells] == [("baseline", "baseline"), ("control", "baseline"),
                                                            ("series-491379-offline", "baseline")]
    # Migrating to the same build is the plain cell.
    assert cells[0].name == "baseline-redirector"


def test_to_an_unknown_profile_is_named(cfg: config.LabConfig) -> None:
    with pytest.raises(ConfigError) as info:
        select_cells(cfg, None, None, to="nope")
    assert info.value.where == "--to" and "nope" in info.value.problem

"""What `lab run` prints while its cells run: lines that name their cell, whatever order they finish in."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from lab import cli, config
from lab.report import Row
from lab.runner import Cell, CellFinished, CellStarted, select_cells
from tests.unit.test_report import ran

REPO_CONFIG = Path(__file__).resolve().parents[2] / "lab.yaml"


@pytest.fixture
def cells() -> list[Cell]:
    return select_cells(config.load(REPO_CONFIG), ["baseline", "control"], ["redirector", "guest-plain"])


def log_console(width: int = 80) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return cli.make_console(out, width), out


def finished(cell: Cell, index: int, verdict: str, sent: int) -> CellFinished:
    """A row whose stream got all but one frame and whose guest got 1000 fewer: each view tells apart."""
    figures = {"frames_sent": sent, "frames_captured": sent - 1, "guest_received": sent - 1000,
               "guest_lost": 1000, "guest_max_gap_ms": 3012.5}
    row = Row(**(ran().to_json() | figures | {"profile": cell.profile.name, "scenario": cell.scenario.name,
                                              "destination_profile": cell.to.name, "verdict": verdict,
                                              "view": cell.scenario.path}))
    return CellFinished(cell, row, index)


def test_each_result_line_names_its_cell_whatever_order_they_finish_in(cells: list[Cell]) -> None:
    console, out = log_console()
    # Two at a time: the second cell started finishes first, then the first.
    events = [CellStarted(cells[0], 1, 4), CellStarted(cells[1], 2, 4),
              finished(cells[1], 1, "gap", 4702), finished(cells[0], 0, "continuous", 4725),
              CellStarted(cells[2], 3, 4), CellStarted(cells[3], 4, 4),
              finished(cells[3], 3, "gap", 4600), finished(cells[2], 2, "continuous", 4500)]
    for event in events:
        cli._show(console, event)
    results = [line for line in out.getvalue().splitlines() if "started" not in line]
    assert results[0].startswith("baseline x guest-plain: gap ") and "guest got 3702/4702, lost 1000" in results[0]
    assert results[1].startswith("baseline x redirector: continuous ") and "stream got 4724/4725" in results[1]
    assert results[2].startswith("control x guest-plain: gap ") and "guest got 3600/4600" in results[2]
    assert results[3].startswith("control x redirector: continuous ") and "stream got 4499/4500" in results[3]


def test_a_start_line_names_its_cell_and_place(cells: list[Cell]) -> None:
    console, out = log_console()
    cli._show(console, CellStarted(cells[1], 2, 4))
    assert out.getvalue() == "[2/4] baseline x guest-plain (none) started\n"


def test_a_result_line_is_one_line_at_80_columns_in_a_log(cells: list[Cell]) -> None:
    console, out = log_console(80)
    cli._show(console, finished(cells[0], 0, "continuous", 4725))
    [line] = out.getvalue().splitlines()
    assert len(line) > 80, "the line is long enough to test that it is not wrapped"

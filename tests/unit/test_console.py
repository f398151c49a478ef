"""What `lab run` prints while its cells run: lines that name their cell, whatever order they finish in."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from lab import cli, config
from lab.results.report import Row
from lab.runner import Cell, CellFinished, CellStarted, Pace, PhaseChanged, select_cells
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
    assert results[0].startswith("baseline x guest-plain: gap (ok); guest: got 3702/4702, lost 1000, max gap 3012.5")
    assert results[1].startswith("baseline x redirector: continuous (ok); stream: got 4724/4725, lost 0")
    assert results[2].startswith("control x guest-plain: gap (ok); guest: got 3600/4600")
    assert results[3].startswith("control x redirector: continuous (ok); stream: got 4499/4500")


def test_a_start_line_names_its_cell_and_place(cells: list[Cell]) -> None:
    console, out = log_console()
    cli._show(console, CellStarted(cells[1], 2, 4))
    assert out.getvalue() == "[2/4] baseline x guest-plain (none) started\n"


def test_a_result_line_is_one_line_at_80_columns_in_a_log(cells: list[Cell]) -> None:
    console, out = log_console(80)
    cli._show(console, finished(cells[0], 0, "continuous", 4725))
    [line] = out.getvalue().splitlines()
    assert len(line) > 80, "the line is long enough to test that it is not wrapped"


class Clock:
    """A clock the test moves: the display's times are the test's, never the machine's."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_pace_gives_done_running_and_an_eta_from_the_cells_done(cells: list[Cell]) -> None:
    pace = Pace(total=4, started=100.0)
    assert pace.eta_s(110.0) is None, "no ETA before a cell is done"
    for event in (CellStarted(cells[0], 1, 4), CellStarted(cells[1], 2, 4), PhaseChanged(cells[0], "migrate"),
                  PhaseChanged(cells[1], "boot"), finished(cells[1], 1, "gap", 10)):
        pace.note(event)
    assert (pace.done, list(pace.running.values()), pace.phases) == (1, [cells[0]], {0: "migrate"})
    assert pace.eta_s(130.0) == 90.0  # 30 s a cell so far, 3 to go
    assert cli.status_lines(pace, 130.0) == ["cells 1/4 done, 1 running, 0:30 elapsed, ETA 1:30",
                                             "  baseline x redirector: migrate"]


def test_without_a_terminal_the_run_prints_plain_lines(cells: list[Cell]) -> None:
    console, out = log_console()
    with cli.RunDisplay(console, 2, Clock()) as display:
        display(CellStarted(cells[0], 1, 2))
        display(finished(cells[0], 0, "continuous", 4725))
    assert "\x1b" not in out.getvalue(), "no cursor control nor colour in a log"
    assert out.getvalue().splitlines()[0] == "[1/2] baseline x redirector (filter-redirector) started"
    assert "done" not in out.getvalue(), "the status line is for a terminal"


def test_on_a_terminal_the_run_shows_its_progress_live(cells: list[Cell]) -> None:
    out = io.StringIO()
    console = Console(file=out, width=60, force_terminal=True, highlight=False, soft_wrap=True)
    clock = Clock()
    with cli.RunDisplay(console, 2, clock) as display:
        display(CellStarted(cells[0], 1, 2))
        display(CellStarted(cells[1], 2, 2))
        display(PhaseChanged(cells[1], "hold"))
        clock.now += 40
        display(finished(cells[1], 1, "gap", 4702))
    text = out.getvalue()
    assert "cells 0/2 done, 2 running, 0:00 elapsed, ETA ?" in text
    assert "  baseline x redirector: starting\n  baseline x guest-plain: hold" in text, "each running cell whole"
    assert "cells 1/2 done, 1 running, 0:40 elapsed, ETA 0:40" in text
    assert "baseline x guest-plain: gap" in text and "\x1b[" in text


def test_a_cell_without_figures_names_itself_and_says_why(cells: list[Cell]) -> None:
    console, out = log_console()
    row = cells[0].row("error", "tcg", error="migration failed: broken pipe")
    cli._show(console, CellFinished(cells[0], row, 0))
    assert out.getvalue() == ("baseline x redirector: error (expected continuous): migration failed: broken pipe"
                              " [0.0 s]\n")

"""Report rows: one schema for report.json, the table, the CI summary and the README."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lab import cli, config
from lab.results.analysis import Sent, StopWindow, analyse, analyse_guest
from lab.results.report import GUEST_VIEW, ROW_FIELDS, STREAM, Report, Row, markdown, rows_of
from lab.results.verdict import Verdict
from lab.runner import select_cells
from tests.unit.test_analysis import CONTINUOUS_STREAM, SENT, WINDOW
from tests.unit.test_guest_analysis import DESTINATION, SOURCE, STOP, on_destination, on_source
from tests.unit.test_guest_analysis import SENT as GUEST_SENT

ROOT = Path(__file__).resolve().parents[2]


def ran(verdict_expected: str = "continuous") -> Row:
    analysis = analyse(SENT, CONTINUOUS_STREAM, CONTINUOUS_STREAM, WINDOW)
    return Row.of(profile="baseline", scenario="redirector", filter="filter-redirector", expected=verdict_expected,
                  verdict=analysis.verdict, accel="tcg", analysis=analysis, qemu_version="10.2.2",
                  timings={"total": 9.5}, artefacts="/tmp/x")


def test_a_row_that_ran_carries_the_analysis() -> None:
    row = ran()
    assert (row.verdict, row.match, row.lost, row.frames_sent) == ("continuous", True, 0, len(SENT.frames))
    assert ran("gap").match is False


def test_an_error_row_has_no_counts_and_says_why() -> None:
    row = Row.of(profile="baseline", scenario="mirror", filter="filter-mirror", expected="gap", verdict=Verdict.ERROR,
                 accel="tcg", error="migration failed on the way to completed: broken pipe")
    assert row.match is False and row.why.startswith("migration failed")
    assert all(getattr(row, k) is None for k in ("frames_sent", "lost", "max_gap_ms", "stopped_window_ms"))


def test_an_unsupported_row_matches_when_unsupported_was_expected() -> None:
    row = Row.of(profile="baseline", scenario="redirector-when-stopped", filter="filter-redirector",
                 expected=Verdict.UNSUPPORTED, verdict=Verdict.UNSUPPORTED, accel="tcg",
                 error="has no property enable_when_stopped")
    assert row.match and row.artefacts == "" and row.frames_captured is None


def test_report_json_round_trips_every_field(tmp_path: Path) -> None:
    report = Report(config="lab.yaml", accel="tcg", rows=[ran()])
    data = json.loads(report.write(tmp_path).read_text())
    assert list(data["results"][0]) == list(ROW_FIELDS)
    assert rows_of(data) == [ran()]


def test_cells_not_run_are_in_the_report_as_such(tmp_path: Path) -> None:
    pending = [Row.of(profile="control", scenario="mirror", filter="filter-mirror", expected="continuous",
                      verdict=Verdict.NOT_RUN, accel="tcg")]
    report = Report(config="lab.yaml", accel="tcg", rows=[ran(), *pending])
    data = json.loads(report.write(tmp_path).read_text())
    assert [r["verdict"] for r in data["results"]] == ["continuous", Verdict.NOT_RUN]
    assert not report.all_match and data["results"][1]["match"] is False
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"], "a temporary file was left"


def test_an_empty_report_does_not_pass() -> None:
    assert not Report(config="lab.yaml").all_match


def test_the_readme_lists_the_row_fields() -> None:
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"one entry per profile x scenario:(.*?);\n- `lab\.builds`", readme, re.S)
    assert section is not None, "the README no longer describes report.json's rows"
    # A field's own parts are in parentheses after it: `timings` (seconds: `boot`, ...).
    listed = re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", section.group(1)))
    assert listed == list(ROW_FIELDS)


def test_the_ci_summary_comes_from_the_same_columns(tmp_path: Path) -> None:
    nothing = analyse(SENT, [], [], StopWindow(stop=None, resume=WINDOW.resume))
    gap = Row.of(profile="baseline", scenario="mirror", filter="filter-mirror", expected="continuous",
                 verdict="gap", accel="tcg", analysis=nothing)
    path = Report(config="lab.yaml", accel="tcg", rows=[ran(), gap]).write(tmp_path)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "report-summary"), str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == markdown(json.loads(path.read_text()))
    lines = out.strip().splitlines()
    assert lines[2].count("|") == lines[4].count("|") == lines[5].count("|")
    assert "| baseline | mirror | stream | continuous | gap | **NO** | 0/100 | 100 |" in out


def test_the_ci_summary_without_a_report_says_so(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "report-summary"), str(tmp_path / "none.json")],
                         capture_output=True, text=True, check=True).stdout
    assert "did not get as far" in out


def test_nothing_sent_is_no_reason_for_a_row_to_crash() -> None:
    analysis = analyse(Sent(run_id=1, frames=()), [], [], WINDOW)
    row = Row.of(profile="p", scenario="s", filter="filter-mirror", expected="gap", verdict=analysis.verdict,
                 accel="tcg", analysis=analysis)
    assert row.frames_sent == 0


def test_a_migration_between_builds_without_an_expectation_is_reported_not_judged() -> None:
    analysis = analyse(SENT, CONTINUOUS_STREAM, CONTINUOUS_STREAM, WINDOW)
    row = Row.of(profile="baseline", scenario="redirector", filter="filter-redirector", expected="",
                 verdict=analysis.verdict, accel="tcg", analysis=analysis, destination_profile="control")
    assert (row.source_profile, row.destination_profile, row.builds) == ("baseline", "control", "baseline->control")
    assert row.match is None
    report = Report(config="lab.yaml", accel="tcg", rows=[row, ran()])
    assert report.all_match, "a row with nothing expected fails nothing"
    assert not Report(config="lab.yaml", accel="tcg", rows=[row, ran("gap")]).all_match
    summary = markdown(report.to_json())
    assert "| baseline->control | redirector | stream |  | continuous | - |" in summary


def test_a_row_gives_the_guests_view_and_qemus_figures() -> None:
    guest = analyse_guest(GUEST_SENT, on_source(range(40)) + on_destination(range(40, 100)), STOP, SOURCE,
                          DESTINATION)
    row = Row.of(profile="baseline", scenario="guest-redirect-early", filter="filter-redirector",
                 expected="continuous", verdict=guest.verdict, accel="tcg", guest=guest,
                 migration={"stop_at": 0.04, "resume_at": 0.15, "qemu_downtime_ms": 110, "ram_iterations": 3},
                 lost_at={"generator": 0, "stream": 0, "destination": 0, "guest": 0})
    assert (row.guest_received, row.guest_lost, row.guest_frames_after_resume) == (100, 0, 60)
    assert row.guest_max_gap_ms == 111.5 and row.guest_latency_ms is not None
    assert (row.stop_at, row.resume_at, row.qemu_downtime_ms, row.ram_iterations) == (0.04, 0.15, 110, 3)
    assert row.pre_switchover_at is None and row.dirty_rate_mb_s is None  # absent, not invented
    assert row.match is True


def guest_cell(received: int, lost: int) -> Row:
    """A guest-path cell whose stream got every frame (4739/4739) while its guest got ``received``."""
    stream = dataclasses.replace(ran(), frames_sent=4739, frames_captured=4739, lost=0, max_gap_ms=1.0)
    return dataclasses.replace(stream, scenario="guest-plain", view=GUEST_VIEW, verdict="gap", expected="gap",
                               match=True, guest_received=received, guest_lost=lost, guest_max_gap_ms=3012.5)


def test_a_guest_cell_shows_what_the_guest_got_not_the_stream(tmp_path: Path) -> None:
    row = guest_cell(1654, 3085)
    assert (row.figures.received_of_sent, row.figures.lost, row.figures.max_gap_ms) == ("1654/4739", 3085, 3012.5)
    assert ran().figures.received_of_sent == "100/100" and ran().view == STREAM
    report = Report(config="lab.yaml", accel="tcg", rows=[ran(), row])
    summary = markdown(json.loads(report.write(tmp_path).read_text()))
    assert "| baseline | guest-plain | guest | gap | gap | yes | 1654/4739 | 3085 | - | 3012.5 |" in summary
    assert "4739/4739" not in summary, "the stream's figures of a guest cell are not the verdict's"
    table = render(report.table())
    assert "1654/4739" in table and "4739/4739" not in table
    ab = Report(config="lab.yaml", accel="tcg",
                rows=[row, dataclasses.replace(row, profile="control", destination_profile="control")])
    assert "gap (ok) 1654/4739" in render(ab.ab_table())


def test_a_cell_of_the_guest_path_says_so_in_its_row() -> None:
    cfg = config.load(ROOT / "lab.yaml")
    [stream_cell, guest] = select_cells(cfg, ["baseline"], ["redirector", "guest-plain"])
    assert (stream_cell.row("gap", "tcg").view, guest.row("gap", "tcg").view) == (STREAM, GUEST_VIEW)


def test_a_report_from_before_views_reads_as_the_streams() -> None:
    data = Report(config="lab.yaml", accel="tcg", rows=[ran()]).to_json()
    del data["results"][0]["view"]
    assert rows_of(data)[0].view == STREAM


def render(table: Table, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=False)
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]


def every_cell() -> Report:
    """Every profile x scenario of the repository's lab.yaml, and a migration between two builds."""
    cfg = config.load(ROOT / "lab.yaml")
    cells = select_cells(cfg, list(cfg.profiles)) + select_cells(cfg, ["baseline"], None, to=list(cfg.profiles)[-1])
    figures = dataclasses.asdict(guest_cell(1654, 3085).figures)
    rows = [dataclasses.replace(c.row("gap", "tcg"), frames_sent=figures["sent"], frames_captured=4739,
                                guest_received=1654, lost=0, guest_lost=3085, max_gap_ms=1.5, qemu_downtime_ms=110.25)
            for c in cells]
    return Report(config="lab.yaml", accel="tcg", rows=rows)


def at_80_columns(report: Report) -> str:
    console = cli.make_console(io.StringIO(), 80)
    report.print(console)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_the_tables_are_readable_at_80_columns() -> None:
    report = every_cell()
    out = at_80_columns(report)
    assert "…" not in out and all(len(line) <= 80 for line in out.splitlines())
    for row in report.rows:
        for name in (row.builds, row.profile, row.scenario):
            assert re.search(rf"(?<![\w>-]){re.escape(name)}(?![\w-])", out), f"{name} is not whole"
        assert f"{row.builds} x {row.scenario}: gap" in out


def test_at_80_columns_each_cell_is_a_block_with_its_views_figures() -> None:
    out = at_80_columns(every_cell())
    assert "baseline x guest-plain: gap (ok)\n    guest: got 1654/4739, lost 3085, downtime 110.25 ms\n" in out
    assert "baseline x mirror: gap (ok)\n    stream: got 4739/4739, lost 0, max gap 1.5 ms, downtime 110.25 ms\n" in out
    assert "baseline x redirector: gap (expected continuous)\n" in out


def test_a_console_wide_enough_gets_the_tables() -> None:
    out = render(every_cell().table(), width=400)
    assert "got/sent" in out.splitlines()[2] and "guest-redirect-early" in out

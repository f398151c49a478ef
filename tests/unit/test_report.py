"""Report rows: one schema for report.json, the table, the CI summary and the README."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from lab.analysis import ERROR, UNSUPPORTED, Sent, StopWindow, analyse
from lab.report import NOT_RUN, ROW_FIELDS, Report, Row, markdown, rows_of
from tests.unit.test_analysis import CONTINUOUS_STREAM, SENT, WINDOW

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
    row = Row.of(profile="baseline", scenario="mirror", filter="filter-mirror", expected="gap", verdict=ERROR,
                 accel="tcg", error="migration failed on the way to completed: broken pipe")
    assert row.match is False and row.why.startswith("migration failed")
    assert all(getattr(row, k) is None for k in ("frames_sent", "lost", "max_gap_ms", "stopped_window_ms"))


def test_an_unsupported_row_matches_when_unsupported_was_expected() -> None:
    row = Row.of(profile="baseline", scenario="redirector-when-stopped", filter="filter-redirector",
                 expected=UNSUPPORTED, verdict=UNSUPPORTED, accel="tcg", error="has no property enable_when_stopped")
    assert row.match and row.artefacts == "" and row.frames_captured is None


def test_report_json_round_trips_every_field(tmp_path: Path) -> None:
    report = Report(config="lab.yaml", accel="tcg", rows=[ran()])
    data = json.loads(report.write(tmp_path).read_text())
    assert list(data["results"][0]) == list(ROW_FIELDS)
    assert rows_of(data) == [ran()]


def test_cells_not_run_are_in_the_report_as_such(tmp_path: Path) -> None:
    pending = [Row.of(profile="control", scenario="mirror", filter="filter-mirror", expected="continuous",
                      verdict=NOT_RUN, accel="tcg")]
    report = Report(config="lab.yaml", accel="tcg", rows=[ran(), *pending])
    data = json.loads(report.write(tmp_path).read_text())
    assert [r["verdict"] for r in data["results"]] == ["continuous", NOT_RUN]
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
    assert "| baseline | mirror | continuous | gap | **NO** |" in out


def test_the_ci_summary_without_a_report_says_so(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "report-summary"), str(tmp_path / "none.json")],
                         capture_output=True, text=True, check=True).stdout
    assert "did not get as far" in out


def test_nothing_sent_is_no_reason_for_a_row_to_crash() -> None:
    analysis = analyse(Sent(run_id=1, frames=()), [], [], WINDOW)
    row = Row.of(profile="p", scenario="s", filter="filter-mirror", expected="gap", verdict=analysis.verdict,
                 accel="tcg", analysis=analysis)
    assert row.frames_sent == 0

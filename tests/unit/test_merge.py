"""lab report merge: the parts of a sharded run made one report, refused when they are not one matrix."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lab import cli
from lab.results.report import Report, Row, rows_of
from lab.results.verdict import Verdict
from tests.unit.test_report import ran


def row(scenario: str, expected: str = "continuous", verdict: str = "", profile: str = "baseline") -> Row:
    return dataclasses.replace(ran(expected), scenario=scenario, profile=profile, source_profile=profile,
                               destination_profile=profile, artefacts="",
                               **({"verdict": verdict, "match": verdict == expected} if verdict else {}))


def part(folder: Path, rows: list[Row], config: str = "lab-ci.yaml", run: str = "r1",
         image: str = "nfcl/runtime:baseline-1") -> Path:
    report = Report(config=config, run=run, accel="tcg", builds={"baseline": {"runtime_image": image}}, rows=rows)
    return report.write(folder)


def test_the_merged_report_has_every_row_of_every_part_in_order(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    one = part(tmp_path / "1", [row("mirror"), row("redirector")], run="r1")
    two = part(tmp_path / "2", [row("guest-plain")], run="r2")
    rc = cli.main(["report", "merge", str(one), str(two.parent), "--out", str(tmp_path / "all")])
    merged = json.loads((tmp_path / "all" / "report.json").read_text())
    assert [r.scenario for r in rows_of(merged)] == ["mirror", "redirector", "guest-plain"]
    assert rows_of(merged) == rows_of(json.loads(one.read_text())) + rows_of(json.loads(two.read_text()))
    assert merged["lab"]["run"] == "r1, r2" and merged["lab"]["config"] == "lab-ci.yaml"
    assert (tmp_path / "all" / "report.html").is_file()
    out = capsys.readouterr().out
    assert "guest-plain" in out and str(tmp_path / "all" / "report.json") in out
    assert rc == 0


@pytest.mark.parametrize(("verdict", "status"), [("gap", cli.EXIT_MISMATCH), (Verdict.ERROR, cli.EXIT_MISMATCH),
                                                 (Verdict.NOT_RUN, cli.EXIT_MISMATCH), ("continuous", 0)])
def test_the_exit_status_is_lab_runs(tmp_path: Path, verdict: str, status: int) -> None:
    one = part(tmp_path / "1", [row("mirror")])
    two = part(tmp_path / "2", [row("redirector", verdict=verdict)])
    assert cli.main(["report", "merge", str(one), str(two), "--out", str(tmp_path / "all")]) == status


def test_the_cells_folders_come_along_from_where_the_parts_were_downloaded(tmp_path: Path) -> None:
    # The run wrote /somewhere/else/baseline-mirror; the artefact was downloaded beside its report.
    cell = dataclasses.replace(row("mirror"), artefacts="/somewhere/else/baseline-mirror")
    one = part(tmp_path / "1", [cell])
    (tmp_path / "1" / "baseline-mirror").mkdir()
    (tmp_path / "1" / "baseline-mirror" / "timeline.png").write_bytes(b"png")
    assert cli.main(["report", "merge", str(one), "--out", str(tmp_path / "all")]) == 0
    [merged] = rows_of(json.loads((tmp_path / "all" / "report.json").read_text()))
    assert merged.artefacts == str(tmp_path / "all" / "baseline-mirror")
    assert (tmp_path / "all" / "baseline-mirror" / "timeline.png").read_bytes() == b"png"
    assert 'src="baseline-mirror/timeline.png"' in (tmp_path / "all" / "report.html").read_text()


def refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], *paths: Path) -> str:
    rc = cli.main(["report", "merge", *map(str, paths), "--out", str(tmp_path / "all")])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_LAB_ERROR and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "all" / "report.json").exists()
    return err


def test_reports_of_different_configs_are_refused_in_one_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    one = part(tmp_path / "1", [row("mirror")], config="lab-ci.yaml")
    two = part(tmp_path / "2", [row("redirector")], config="other.yaml")
    err = refused(tmp_path, capsys, one, two)
    assert "of config 'other.yaml'" in err and "'lab-ci.yaml'" in err


def test_the_same_profile_built_differently_is_another_config(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    one = part(tmp_path / "1", [row("mirror")], image="nfcl/runtime:baseline-1")
    two = part(tmp_path / "2", [row("redirector")], image="nfcl/runtime:baseline-2")
    assert "ran baseline as nfcl/runtime:baseline-2" in refused(tmp_path, capsys, one, two)


def test_a_cell_in_two_parts_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = part(tmp_path / "1", [row("mirror")])
    two = part(tmp_path / "2", [row("mirror")])
    assert "baseline x mirror is in both" in refused(tmp_path, capsys, one, two)


def test_missing_and_broken_reports_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no such report" in refused(tmp_path, capsys, tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    assert "not a readable report.json" in refused(tmp_path, capsys, tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    assert "not a lab report" in refused(tmp_path, capsys, tmp_path / "list.json")


def test_merge_needs_an_out_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = part(tmp_path / "1", [row("mirror")])
    assert cli.main(["report", "merge", str(one)]) == cli.EXIT_LAB_ERROR
    assert "--out" in capsys.readouterr().err

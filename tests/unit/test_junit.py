"""JUnit XML of a run: a testcase per cell, its figures as properties; mismatch, error, not run."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab import cli
from lab.results import junit
from lab.results.report import Report
from lab.results.verdict import Verdict
from tests.unit.test_merge import part, row


def parsed(path: Path) -> ET.Element:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return suite


def test_each_outcome_is_its_junit_kind(tmp_path: Path) -> None:
    error = dataclasses.replace(row("guest-plain", verdict=Verdict.ERROR), reasons=["QMP on qmp.sock: timed out"])
    rows = [row("mirror"), row("redirector", verdict="gap"), error, row("guest-redirect-qmp", verdict=Verdict.NOT_RUN),
            dataclasses.replace(row("guest-when-stopped"), expected="", match=None)]
    suite = parsed(junit.write(rows, tmp_path / "junit.xml"))
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == \
        ("5", "1", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["mirror", "redirector", "guest-plain", "guest-redirect-qmp", "guest-when-stopped"]
    assert [child.tag for child in cases["mirror"]] == ["properties"]
    failure = cases["redirector"].find("failure")
    assert failure is not None and failure.get("message") == "expected continuous, got gap"
    error_element = cases["guest-plain"].find("error")
    assert error_element is not None and error_element.get("message") == "QMP on qmp.sock: timed out"
    assert cases["guest-redirect-qmp"].find("skipped") is not None
    assert [child.tag for child in cases["guest-when-stopped"]] == ["properties"]  # nothing expected: passes
    assert cases["mirror"].get("classname") == "netfilter-continuity.baseline"
    assert cases["mirror"].get("time") == "9.500"


def test_the_figures_are_properties(tmp_path: Path) -> None:
    r = row("mirror")
    suite = parsed(junit.write([r], tmp_path / "junit.xml"))
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["verdict"] == "continuous" and props["expected"] == "continuous"
    assert props["frames_sent"] == str(r.frames_sent) and props["lost"] == "0"
    assert props["timings.total"] == "9.5" and props["accel"] == "tcg"
    assert "artefacts" not in props and "profile" not in props


def test_merge_writes_the_junit_of_every_part(tmp_path: Path) -> None:
    one = part(tmp_path / "1", [row("mirror")])
    two = part(tmp_path / "2", [row("redirector", verdict="gap")])
    rc = cli.main(["report", "merge", str(one), str(two), "--out", str(tmp_path / "all"),
                   "--junit", str(tmp_path / "junit.xml")])
    suite = parsed(tmp_path / "junit.xml")
    assert rc == cli.EXIT_MISMATCH
    assert [c.get("name") for c in suite.iter("testcase")] == ["mirror", "redirector"]
    assert suite.get("failures") == "1"


@pytest.mark.parametrize("rows", [[], [row("mirror")]])
def test_the_xml_is_well_formed_for_any_number_of_cells(tmp_path: Path, rows: list) -> None:
    report = Report(config="lab.yaml", rows=rows)
    suite = parsed(junit.write(report.rows, tmp_path / "sub" / "junit.xml"))
    assert suite.get("tests") == str(len(rows))

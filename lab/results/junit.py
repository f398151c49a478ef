"""JUnit XML of a run: one testcase per cell, so a CI system shows the matrix as tests.

A verdict other than the expected one is a failure, ``error`` an error, a cell the run did not get
to is skipped; a cell with nothing expected passes. The cell's figures are its properties.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from lab.results.report import Row, figures_text
from lab.results.verdict import Verdict

SUITE = "netfilter-continuity"
# Row fields that are not figures (said elsewhere in the testcase, or paths of this machine).
NOT_PROPERTIES = ("profile", "scenario", "reasons", "artefacts")


def properties(row: Row) -> list[tuple[str, str]]:
    """The row's values as name/value pairs: nested ones (timings, latency) as NAME.KEY; none left out."""
    pairs: list[tuple[str, str]] = []
    for name, value in row.to_json().items():
        if name in NOT_PROPERTIES or value is None:
            continue
        if isinstance(value, dict):
            pairs += [(f"{name}.{k}", str(v)) for k, v in value.items() if v is not None and not isinstance(v, dict)]
        else:
            pairs.append((name, str(value)))
    return pairs


def testcase(row: Row) -> ET.Element:
    case = ET.Element("testcase", classname=f"{SUITE}.{row.builds}", name=row.scenario,
                      time=f"{row.timings.get('total', 0.0):.3f}")
    props = ET.SubElement(case, "properties")
    for name, value in properties(row):
        ET.SubElement(props, "property", name=name, value=value)
    if row.verdict == Verdict.NOT_RUN:
        ET.SubElement(case, "skipped", message="not run: the run stopped before this cell")
    elif row.verdict == Verdict.ERROR:
        ET.SubElement(case, "error", message=row.why or "the cell gave no verdict").text = row.why
    elif row.match is False:
        failure = ET.SubElement(case, "failure", message=f"expected {row.expected}, got {row.verdict}")
        failure.text = "; ".join(filter(None, (figures_text(row), row.why)))
    return case


def document(rows: list[Row]) -> ET.Element:
    cases = [testcase(r) for r in rows]

    def count(tag: str) -> str:
        return str(sum(1 for c in cases if c.find(tag) is not None))

    total = sum(r.timings.get("total", 0.0) for r in rows)
    suite = ET.Element("testsuite", name=SUITE, tests=str(len(cases)), failures=count("failure"),
                       errors=count("error"), skipped=count("skipped"), time=f"{total:.3f}")
    suite.extend(cases)
    suites = ET.Element("testsuites", name="lab", tests=suite.get("tests", "0"))
    suites.append(suite)
    return suites


def write(rows: list[Row], path: Path) -> Path:
    """The XML file, atomically (a CI step reading it never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tree = ET.ElementTree(document(rows))
    ET.indent(tree)
    fd, tmp = tempfile.mkstemp(prefix=".junit-", suffix=".xml", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        tree.write(f, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)
    return path

"""A matrix run in two parts, for real, and the parts merged: what the CI's e2e shards and its
report job do."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab import cli, images
from lab.config import LabConfig
from lab.results.report import rows_of

pytestmark = pytest.mark.e2e

MATRIX = ["--profile", "baseline", "--scenario", "redirector", "--scenario", "mirror", "--jobs", "1"]


def test_two_shards_merged_are_the_matrix(lab_config: LabConfig, lab_images: dict[str, images.ImageSet],
                                          lab_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if "baseline" not in lab_images:
        pytest.skip("the baseline profile is not selected (--lab-profile)")
    statuses = [cli.main(["run", "--config", str(lab_config.path), *MATRIX, "--shard", f"{i}/2",
                          "--out", str(lab_out / f"part-{i}"), "--junit", str(lab_out / f"part-{i}.xml")])
                for i in (1, 2)]
    parts = [rows_of(json.loads((lab_out / f"part-{i}" / "report.json").read_text())) for i in (1, 2)]
    # The configured order (mirror before redirector in lab.yaml), one cell each.
    assert [[r.scenario for r in rows] for rows in parts] == [["mirror"], ["redirector"]]
    rc = cli.main(["report", "merge", str(lab_out / "part-1"), str(lab_out / "part-2" / "report.json"),
                   "--out", str(lab_out / "merged"), "--junit", str(lab_out / "merged.xml")])
    out = capsys.readouterr().out
    merged = rows_of(json.loads((lab_out / "merged" / "report.json").read_text()))
    assert [(r.scenario, r.verdict, r.frames_sent) for r in merged] == \
        [(r.scenario, r.verdict, r.frames_sent) for r in parts[0] + parts[1]]
    assert rc == (0 if statuses == [0, 0] else cli.EXIT_MISMATCH)
    assert all(r.match for r in merged), [r.reasons for r in merged]
    assert "redirector" in out and "mirror" in out
    for folder in ("baseline-mirror", "baseline-redirector"):
        assert (lab_out / "merged" / folder / "timeline.png").is_file(), folder
    for xml, names in ((lab_out / "part-1.xml", ["mirror"]), (lab_out / "part-2.xml", ["redirector"]),
                       (lab_out / "merged.xml", ["mirror", "redirector"])):
        suite = ET.parse(xml).getroot().find("testsuite")
        assert suite is not None and [c.get("name") for c in suite.iter("testcase")] == names
        assert suite.get("failures") == suite.get("errors") == suite.get("skipped") == "0"

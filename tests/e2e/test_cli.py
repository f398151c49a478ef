"""`lab run` itself, end to end: its exit status, its table and the report.json contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import cli, images
from lab.config import LabConfig
from lab.results.report import ROW_FIELDS, TIMINGS
from tests.e2e.rundirs import config_copy

pytestmark = pytest.mark.e2e


def test_lab_run_reports_one_scenario(lab_config: LabConfig, lab_images: dict[str, images.ImageSet],
                                      lab_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = next(iter(lab_images))
    rc = cli.main(["run", "--config", str(lab_config.path), "--profile", profile,
                   "--scenario", "redirector", "--out", str(lab_out)])
    out = capsys.readouterr().out
    report = json.loads((lab_out / "report.json").read_text())
    [result] = report["results"]
    assert list(result) == list(ROW_FIELDS)
    assert set(TIMINGS) <= set(result["timings"])
    assert (result["profile"], result["scenario"], result["filter"]) == (profile, "redirector", "filter-redirector")
    # The measured expectation of lab.yaml, and the exit status that says so.
    assert result["expected"] == lab_config.scenarios["redirector"].expect[profile]
    assert result["verdict"] == result["expected"], result["reasons"]
    assert rc == 0
    assert result["accel"] in ("kvm", "tcg") and report["lab"]["accel"] == result["accel"]
    assert result["qemu_version"].startswith(lab_config.profiles[profile].qemu.upstream_version)
    assert "redirector" in out and str(lab_out / "report.json") in out
    for artefact in ("primary/qemu.log", "primary/console.log", "primary/qmp.jsonl", "primary/generator.json",
                     "secondary/stream.pcap", "secondary/tap.pcap", "secondary/qmp.jsonl", "timeline.png",
                     "result.json"):
        assert (lab_out / f"{profile}-redirector" / artefact).is_file(), artefact
    # The run's page beside the report, its picture linked relatively.
    assert f'src="{profile}-redirector/timeline.png"' in (lab_out / "report.html").read_text()
    # QEMU's own events gave the times: the transcript has the source's STOP and MIGRATION statuses.
    events = [json.loads(line).get("event", {}).get("event")
              for line in (lab_out / f"{profile}-redirector" / "primary" / "qmp.jsonl").read_text().splitlines()]
    assert "STOP" in events and "MIGRATION" in events


def test_a_mismatch_exits_1(lab_config: LabConfig, lab_images: dict[str, images.ImageSet], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """The same cell with its expectation turned around: the verdict no longer matches, exit 1."""
    profile = next(iter(lab_images))
    text = lab_config.path.read_text()
    flipped = text.replace(f"      {profile}: continuous   # measured on 10.2.2: the stream keeps flowing",
                           f"      {profile}: gap   # turned around for this test", 1)
    assert flipped != text, "lab.yaml's redirector expectation is not where this test looks for it"
    path = config_copy(lab_config.path, tmp_path, flipped)
    rc = cli.main(["run", "--config", str(path), "--profile", profile, "--scenario", "redirector",
                   "--out", str(tmp_path / "run")])
    [row] = json.loads((tmp_path / "run" / "report.json").read_text())["results"]
    assert (row["verdict"], row["expected"], row["match"]) == ("continuous", "gap", False)
    assert rc == cli.EXIT_MISMATCH, capsys.readouterr()

"""`lab run` itself, end to end: its exit status, its table and the report.json contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import cli, images
from lab.config import LabConfig

pytestmark = pytest.mark.e2e

RESULT_FIELDS = {"profile", "scenario", "filter", "expected", "verdict", "match", "frames_sent", "frames_captured",
                 "frames_delivered", "lost", "duplicates", "reordered", "frames_during_stop", "max_gap_ms",
                 "stopped_window_ms", "accel", "qemu_version", "timings"}
TIMINGS = {"boot", "migrate", "hold", "drain", "total"}


def test_lab_run_reports_one_scenario(lab_config: LabConfig, lab_images: dict[str, images.ImageSet],
                                      lab_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = next(iter(lab_images))
    rc = cli.main(["run", "--config", str(lab_config.path), "--profile", profile,
                   "--scenario", "redirector", "--out", str(lab_out)])
    out = capsys.readouterr().out
    report = json.loads((lab_out / "report.json").read_text())
    [result] = report["results"]
    assert RESULT_FIELDS <= set(result), f"missing: {RESULT_FIELDS - set(result)}"
    assert TIMINGS <= set(result["timings"])
    assert (result["profile"], result["scenario"], result["filter"]) == (profile, "redirector", "filter-redirector")
    assert result["match"] == (result["verdict"] == result["expected"])
    assert rc == (0 if result["match"] else cli.EXIT_MISMATCH)
    assert result["accel"] in ("kvm", "tcg") and report["lab"]["accel"] == result["accel"]
    assert result["qemu_version"].startswith(lab_config.profiles[profile].qemu.upstream_version)
    assert "redirector" in out and str(lab_out / "report.json") in out
    for artefact in ("primary/qemu.log", "primary/console.log", "primary/qmp.jsonl", "primary/generator.json",
                     "secondary/stream.pcap", "secondary/tap.pcap", "secondary/qmp.jsonl", "timeline.png"):
        assert (lab_out / f"{profile}-redirector" / artefact).is_file(), artefact

"""Many labs at once on one engine: every run, kept lab and test in a namespace of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from lab import cli, images, kept
from lab.config import LabConfig
from lab.engine import Engine, resources
from lab.pytest_plugin import RunScenario
from lab.runner import Cell, Runner

pytestmark = pytest.mark.e2e


def test_a_kept_lab_survives_other_runs(lab_runner: Runner, lab_config: LabConfig, lab_docker: docker.DockerClient,
                                        lab_images: dict[str, images.ImageSet], run_scenario: RunScenario) -> None:
    profile = next(iter(lab_images))
    lab = lab_runner.up(Cell(lab_config.profiles[profile], lab_config.scenarios["redirector"]), "survivor")
    try:
        row = run_scenario(profile, "mirror")
        assert row.verdict == lab_config.scenarios["mirror"].expect[profile], row.reasons
        for container in lab.containers.values():
            assert lab_docker.containers.get(container).status == "running", container
        assert kept.qmp(lab, "primary", "query-status", {})["status"] == "running"
        assert "survivor" in kept.names(lab_config)
        assert not resources.dead_runs(lab_docker, lab_config.name).get("survivor"), "a kept lab is no leftover"
    finally:
        kept.down(Engine(lab_docker), lab_config, lab.name)
    assert not resources.find(lab_docker, lab_config.name, ns=kept.namespace(lab_config, "survivor"))


def test_two_runs_at_once_on_one_engine(lab_config: LabConfig, lab_images: dict[str, images.ImageSet],
                                        tmp_path: Path) -> None:
    profile = next(iter(lab_images))
    runs = {}
    for scenario in ("mirror", "redirector"):
        runs[scenario] = subprocess.Popen(
            [sys.executable, "-m", "lab", "run", "--config", str(lab_config.path), "--profile", profile,
             "--scenario", scenario, "--out", str(tmp_path / scenario)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for scenario, proc in runs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (scenario, out[-2000:], err[-2000:])
        [row] = json.loads((tmp_path / scenario / "report.json").read_text())["results"]
        assert row["verdict"] == lab_config.scenarios[scenario].expect[profile], row["reasons"]


def test_jobs_2_overlaps_cells_and_keeps_the_configured_order(lab_config: LabConfig,
                                                              lab_images: dict[str, images.ImageSet],
                                                              tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    profile = next(iter(lab_images))
    started = time.monotonic()
    rc = cli.main(["run", "--config", str(lab_config.path), "--profile", profile, "--jobs", "2",
                   "--out", str(tmp_path / "run")])
    wall = time.monotonic() - started
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "run" / "report.json").read_text())["results"]
    assert rc == 0, out[-3000:]
    assert [r["scenario"] for r in rows] == list(lab_config.scenarios)
    assert all(r["verdict"] == r["expected"] for r in rows), [(r["scenario"], r["verdict"]) for r in rows]
    # From the cells' own recorded spans: two were running at one moment, and never more than two.
    spans = sorted((r["started_at"], r["ended_at"]) for r in rows if r["started_at"] is not None)
    assert len(spans) >= 2, rows
    running = [sum(1 for start, end in spans if start <= moment < end) for moment, _ in spans]
    assert max(running) == 2, f"cells running at each cell's start: {running}; spans {spans}"
    print(f"--jobs 2: {len(rows)} cells in {wall:.1f} s; {len(spans)} ran, at most {max(running)} at once")

"""`lab run --keep`: a scenario that does not end as expected is left running for a person."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest
import yaml

from lab import cli, config, images, kept
from lab.engine import Engine, resources, ssh
from tests.e2e.rundirs import config_copy

pytestmark = pytest.mark.e2e


def flipped_config(src: Path, dest: Path, profile: str, scenario: str) -> Path:
    """lab.yaml with one expectation turned around, so that the scenario cannot end as expected."""
    data = yaml.safe_load(src.read_text())
    expect = data["scenarios"][scenario]["expect"]
    expect[profile] = {"gap": "continuous", "continuous": "gap"}[expect[profile]]
    return config_copy(src, dest.parent, yaml.safe_dump(data, sort_keys=False))


def test_a_mismatch_is_kept_and_can_be_entered(lab_images: dict[str, images.ImageSet],
                                               lab_config: config.LabConfig, lab_docker: docker.DockerClient,
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = next(iter(lab_images))
    path = flipped_config(lab_config.path, tmp_path / "lab.yaml", profile, "mirror")
    cfg = config.load(path)
    try:
        rc = cli.main(["run", "--config", str(path), "--profile", profile, "--scenario", "mirror",
                       "--scenario", "redirector", "--keep", "--out", str(tmp_path / "run")])
        out = capsys.readouterr().out
        assert rc == cli.EXIT_MISMATCH
        assert "lab ssh --lab " in out and "lab down " in out
        lab = kept.load(cfg)
        assert lab.scenario == "mirror"
        row = json.loads((tmp_path / "run" / "report.json").read_text())["results"][0]
        assert row["verdict"] == "gap", row["reasons"]  # kept because it ran to a verdict not expected
        # The run stopped at the kept scenario: redirector did not run over it.
        assert not (tmp_path / "run" / f"{profile}-redirector").exists()
        assert (tmp_path / "run" / f"{profile}-mirror" / "timeline.png").is_file()
        assert kept.qmp(lab, "secondary", "query-status", {})["status"] == "running"  # migrated there
        client = ssh.connect(lab.containers["primary"], kept.keys(cfg, lab.name))
        try:
            assert "lab-tap0" in ssh.run(client, "ip -br link").stdout
        finally:
            client.close()
        assert cli.main(["down", "--config", str(path), lab.name]) == 0
        assert not resources.find(lab_docker, cfg.name, ns=kept.namespace(cfg, lab.name))
        assert not Path(lab.rundir).exists()
    finally:
        for name in kept.names(cfg):
            kept.down(Engine(lab_docker), cfg, name)

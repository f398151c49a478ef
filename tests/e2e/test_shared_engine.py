"""An engine shared by several machines: `lab clean` removes only this machine's dead runs, and
lists the others' with their owner (it cannot tell whether their processes run)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import docker
import pytest

from lab import cli
from lab.config import LabConfig
from lab.engine import resources
from lab.namespace import Namespace, boot_id, machine_id
from tests.e2e.rundirs import config_copy

pytestmark = pytest.mark.e2e

LAB = "nfcl-shared-test"  # a lab name of this test's own: `lab clean` touches no other lab's resources


def test_lab_clean_removes_this_machines_dead_runs_and_lists_the_others(
        lab_config: LabConfig, lab_docker: docker.DockerClient, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = config_copy(lab_config.path, tmp_path, lab_config.path.read_text().replace(
        "  name: nfcl ", f"  name: {LAB} ", 1))
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has now
    mine = Namespace(LAB, "dead01", pid=gone.pid)
    assert mine.machine == machine_id() and mine.boot == boot_id()
    other = Namespace(LAB, "other1", pid=1, boot="another-boot", machine="0" * 32)
    legacy = dataclasses.replace(Namespace(LAB, "old001", pid=1, boot="another-boot"), machine="")
    made = [lab_docker.networks.create(ns.name("net"), labels=resources.labels(LAB, ns))
            for ns in (mine, other, legacy)]
    try:
        assert cli.main(["clean", "--config", str(path)]) == 0
        out = capsys.readouterr().out
        left = {n.name for n in lab_docker.networks.list(filters={"label": f"{resources.LAB}={LAB}"})}
        assert left == {other.name("net"), legacy.name("net")}, out
        assert f"not removed: run other1 of machine {'0' * 32}, pid 1" in out, out
        assert "not removed: run old001 of machine (not recorded), pid 1" in out, out
    finally:
        for network in made:
            try:
                network.remove()
            except docker.errors.NotFound:
                pass

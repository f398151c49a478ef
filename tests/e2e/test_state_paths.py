"""Paths read from the lab's state files are removed only when they are the lab's own: an edited
state.json or snapshot index cannot make `lab down` or `lab clean` delete anything else."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from lab import config, kept
from lab.config import LabConfig
from lab.engine import Engine
from lab.results import artefacts
from lab.vm import snapshot
from tests.e2e.rundirs import config_copy

pytestmark = pytest.mark.e2e


@pytest.fixture
def cfg(lab_config: LabConfig, tmp_path: Path) -> LabConfig:
    return config.load(config_copy(lab_config.path, tmp_path / "checkout"))


def kept_state(cfg: LabConfig, name: str, rundir: Path) -> None:
    folder = kept.state_dir(cfg, name)
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({
        "name": name, "profile": "baseline", "scenario": "mirror", "image": "none", "accel": "tcg",
        "rundir": str(rundir), "containers": {}, "ssh_config": "", "started": 0.0}))


def victim(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "precious.txt").write_text("not the lab's")
    return folder


@pytest.mark.parametrize("where", ["elsewhere", "marked for another lab", "symlink into the temporary folder"])
def test_lab_down_removes_no_folder_but_its_own_run_folder(where: str, cfg: LabConfig, lab_docker: docker.DockerClient,
                                                           tmp_path: Path) -> None:
    target = victim(tmp_path / "home")
    if where == "marked for another lab":  # a real run folder, of another kept lab
        target = artefacts.new_rundir(kept.namespace(cfg, "other"))
        (target / "precious.txt").write_text("the other lab's")
    elif where == "symlink into the temporary folder":
        link = Path(artefacts.new_rundir(kept.namespace(cfg, "mine")))
        (link / artefacts.MARKER).rename(target / artefacts.MARKER)  # the marker, but in the victim
        link.rmdir()
        link.symlink_to(target)
        target = link
    kept_state(cfg, "mine", target)
    try:
        kept.down(Engine(lab_docker), cfg, "mine")
        assert (target / "precious.txt").exists(), f"lab down removed {target}"
        assert not (kept.state_dir(cfg, "mine") / "state.json").exists()
    finally:
        if target.is_symlink():
            target.unlink()
        elif str(target).startswith("/tmp/"):
            artefacts.move_to(target, tmp_path / "moved")


def test_lab_down_removes_its_own_run_folder(cfg: LabConfig, lab_docker: docker.DockerClient) -> None:
    rundir = artefacts.new_rundir(kept.namespace(cfg, "mine"))
    kept_state(cfg, "mine", rundir)
    kept.down(Engine(lab_docker), cfg, "mine")
    assert not rundir.exists()


def test_a_snapshot_index_naming_another_path_removes_nothing_there(cfg: LabConfig, lab_docker: docker.DockerClient,
                                                                    tmp_path: Path) -> None:
    folder = cfg.state_root / snapshot.FOLDER
    folder.mkdir(parents=True)
    precious = victim(tmp_path / "home") / "precious.txt"
    saved = folder / "0123456789abcdef.state"
    saved.write_bytes(b"guest")
    gone = "sha256:" + "0" * 64  # no image has this id
    (folder / snapshot.INDEX).write_text(json.dumps({saved.name: gone, f"../../../../home/{precious.name}": gone,
                                                     str(precious): gone}))
    assert snapshot.prune(Engine(lab_docker), cfg) == 3
    assert precious.exists(), "lab clean removed a file the index named outside its folder"
    assert not saved.exists()

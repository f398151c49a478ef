"""The lab for a user who is not root but a member of the docker group (GitHub's hosted runner is
one): QEMU runs as root in its hosts, and what it makes in the run folders (QMP, console and record
sockets, logs, captures, the saved guest) is that user's to use, read and remove. `lab` runs here as
that user (tests.e2e.users): as root, as the user nfcl-runner; as any other user, as itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from lab import images
from lab.config import LabConfig
from lab.engine import resources
from lab.namespace import Namespace
from lab.pytest_plugin import need
from lab.results import artefacts
from tests.e2e.rundirs import MARKER, config_copy
from tests.e2e.users import User, docker_member, with_lab

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def user(lab_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[User]:
    found, why = docker_member()
    if found is None:
        need(why)
    assert found is not None
    folder = found.folder(tmp_path_factory.mktemp("user"))
    ready, why = with_lab(found, lab_wheel, folder / "venv")
    if ready is None:
        need(why)
    assert ready is not None
    yield ready
    removed = ready.run(["rm", "-rf", str(folder)], cwd=Path("/"), timeout=120)
    assert removed.returncode == 0, removed.stderr


@pytest.fixture
def workdir(user: User, lab_config: LabConfig, tmp_path: Path) -> Iterator[Path]:
    """The user's folder with a copy of lab.yaml: its results (reports, saved guests, kept labs) go there."""
    folder = user.folder(tmp_path)
    config_copy(lab_config.path, folder, copy_series=True)
    user.give(folder)
    yield folder
    # Whatever the lab left there, the user removes (an assertion of its own: nothing is root's alone).
    removed = user.run(["rm", "-rf", str(folder)], cwd=Path("/"), timeout=120)
    assert removed.returncode == 0 and not folder.exists(), removed.stderr


def not_the_users(user: User, folder: Path) -> list[str]:
    """What the user cannot read or cannot remove (its folder's not writable) under ``folder``, and
    what it does not own."""
    unreadable = user.run(["find", str(folder), "!", "-readable", "-o", "-type", "d", "!", "-writable"],
                          cwd=Path("/"), timeout=60)
    assert unreadable.returncode == 0, unreadable.stderr
    foreign = [str(p) for p in folder.rglob("*") if p.lstat().st_uid != user.uid]
    return unreadable.stdout.split() + foreign


def run_folders(user: User, lab: str, since: float) -> list[Path]:
    """The run folders the user's `lab` made in the temporary folder since ``since``."""
    return [d for d in Path(tempfile.gettempdir()).glob(f"{lab}-*")
            if d.is_dir() and d.lstat().st_uid == user.uid and d.stat().st_mtime >= since]


def started_by(rundir: Path, proc: subprocess.Popen[bytes]) -> int:
    """The pid of the `lab` that made ``rundir`` when ``proc`` is that `lab` or runuser in front of it, else 0
    (other runs of the same user may share the machine)."""
    try:
        pid = int(json.loads((rundir / MARKER).read_text())["owner.pid"])
        parent = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, KeyError, IndexError):
        return 0
    return pid if proc.pid in (pid, parent) else 0


def test_a_stream_cell_and_a_guest_cell(user: User, workdir: Path, lab_config: LabConfig,
                                        lab_images: dict[str, images.ImageSet]) -> None:
    """The first run of a fresh state folder: the guest is saved (by QEMU, as root) and restored."""
    profile = next(iter(lab_images))
    started = time.time()
    run = user.run([*user.lab, "run", "--profile", profile, "--scenario", "redirector", "--scenario",
                    "guest-redirect-early", "--jobs", "1", "--out", "run"], cwd=workdir)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads((workdir / "run" / "report.json").read_text())
    assert [(r["scenario"], r["match"]) for r in report["results"]] == [
        ("redirector", True), ("guest-redirect-early", True)], [r["reasons"] for r in report["results"]]
    for artefact in ("primary/qmp.jsonl", "primary/qemu.log", "primary/console.log", "secondary/stream.pcap",
                     "secondary/tap.pcap", "timeline.png"):
        assert (workdir / "run" / f"{profile}-redirector" / artefact).is_file(), artefact
    assert list((workdir / "lab-results" / ".labs" / "snapshots").glob("*.state")), "no guest was saved"
    assert not not_the_users(user, workdir)
    assert not run_folders(user, lab_config.name, started), "run folders were left in the temporary folder"


def test_a_kept_lab(user: User, workdir: Path, lab_images: dict[str, images.ImageSet]) -> None:
    profile = next(iter(lab_images))
    up = user.run([*user.lab, "up", "--name", "users", "--profile", profile, "--scenario", "redirector"], cwd=workdir)
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        state = json.loads((workdir / "lab-results" / ".labs" / "users" / "state.json").read_text())
        # QMP straight to the socket QEMU made (as root) in the run folder.
        qmp = user.run([*user.lab, "qmp", "primary", "query-status"], cwd=workdir, timeout=60)
        assert qmp.returncode == 0 and '"running"' in qmp.stdout, qmp.stdout + qmp.stderr
        inside = user.run([*user.lab, "ssh", "primary", "--", "ip", "-br", "link"], cwd=workdir, timeout=60)
        assert inside.returncode == 0 and "lab-tap0" in inside.stdout, inside.stdout + inside.stderr
        console = user.run([*user.lab, "console", "primary", "--log"], cwd=workdir, timeout=60)
        assert console.returncode == 0 and console.stdout.strip(), console.stderr
        status = user.run([*user.lab, "status"], cwd=workdir, timeout=60)
        assert status.returncode == 0 and "running" in status.stdout, status.stdout + status.stderr
    finally:
        down = user.run([*user.lab, "down", "users"], cwd=workdir, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not Path(state["rundir"]).exists(), "lab down left the kept lab's run folder"
    assert not not_the_users(user, workdir)


def test_clean_removes_what_a_killed_run_left(user: User, workdir: Path, lab_config: LabConfig,
                                              lab_images: dict[str, images.ImageSet],
                                              lab_docker: docker.DockerClient) -> None:
    """A run killed in the middle of its cell leaves hosts and a run folder with QEMU's files in it;
    the user's `lab clean` removes them all."""
    profile = next(iter(lab_images))
    started = time.time()
    proc = user.popen([*user.lab, "run", "--profile", profile, "--scenario", "redirector", "--out", "run"], cwd=workdir)
    rundir = None
    try:
        deadline = time.monotonic() + lab_config.timeouts.kvm_probe_s + 2 * lab_config.timeouts.boot_s + 30
        while time.monotonic() < deadline and proc.poll() is None and rundir is None:
            rundir = next((d for d in run_folders(user, lab_config.name, started) if started_by(d, proc)
                           and (d / "phase").exists() and (d / "phase").read_text().strip() == "traffic"), None)
            time.sleep(0.05)
        assert rundir is not None, "the run did not reach its traffic phase"
        marker = json.loads((rundir / MARKER).read_text())
        lab = started_by(rundir, proc)
        assert lab > 0, "the run ended before it could be killed"
        os.kill(lab, signal.SIGKILL)  # the lab itself, not runuser: no chance to clean up
        proc.wait(timeout=30)  # runuser, once it has reaped the lab: a zombie would still look alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    dead = Namespace(marker["lab"], marker["run"])
    assert resources.find(lab_docker, lab_config.name, ns=dead), "a killed run leaves its hosts"
    assert list(rundir.rglob("qemu.log")), "the killed run's hosts wrote nothing in its run folder"
    # A live run's folder (this process's: root's, when the lab runs as another user) is left alone.
    live = artefacts.new_rundir(Namespace.new_run(lab_config.name))
    try:
        cleaned = user.run([*user.lab, "clean"], cwd=workdir, timeout=180)
        assert live.exists()
    finally:
        shutil.rmtree(live)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert not resources.find(lab_docker, lab_config.name, ns=dead)
    assert not rundir.exists(), "lab clean left the killed run's folder"


def test_a_first_run_with_the_temporary_folder_on_a_tmpfs(lab_config: LabConfig,
                                                          lab_images: dict[str, images.ImageSet],
                                                          tmp_path: Path) -> None:
    """Run folders in a tmpfs, results on another filesystem (Debian 13's /tmp): the guest is saved
    in the temporary folder and moved into the state folder, the run folder into the results."""
    shm = Path("/dev/shm")
    mounts = Path("/proc/mounts").read_text().split("\n")
    if not any(line.split()[1:3] == [str(shm), "tmpfs"] for line in mounts if line.strip()):
        need(f"{shm} is not a tmpfs here")
    tmpdir = Path(tempfile.mkdtemp(prefix="nfcl-tmpfs-", dir=shm))
    try:
        assert tmpdir.stat().st_dev != tmp_path.stat().st_dev
        config = config_copy(lab_config.path, tmp_path / "lab")  # a state folder of its own: no guest saved yet
        profile = next(iter(lab_images))
        argv = [sys.executable, "-m", "lab", "run", "--config", str(config), "--profile", profile,
                "--scenario", "redirector", "--jobs", "1", "--out", str(tmp_path / "run")]
        run = subprocess.run(argv, env=os.environ | {"TMPDIR": str(tmpdir)}, capture_output=True, text=True,
                             timeout=600, check=False)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        [row] = json.loads((tmp_path / "run" / "report.json").read_text())["results"]
        assert row["match"], row["reasons"]
        assert list((tmp_path / "lab" / "lab-results" / ".labs" / "snapshots").glob("*.state"))
        assert (tmp_path / "run" / f"{profile}-redirector" / "secondary" / "stream.pcap").is_file()
        assert not list(tmpdir.iterdir()), "the run left files in the temporary folder"
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


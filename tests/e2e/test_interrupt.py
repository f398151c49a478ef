"""Ctrl-C or SIGTERM in the middle of a scenario: `lab run` stops and leaves nothing behind."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import yaml

from lab import images
from lab.config import LabConfig
from lab.engine import resources
from lab.scenario import PHASES
from tests.e2e.rundirs import newest_rundir, run_of

pytestmark = pytest.mark.e2e

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def rundir_in_phase(proc: subprocess.Popen[Any], lab_config: LabConfig, started: float, phase: str) -> Path | None:
    """The run folder of ``proc``'s cell once it is in ``phase`` (None if it never got there), bounded."""
    deadline = time.monotonic() + lab_config.timeouts.kvm_probe_s + lab_config.timeouts.boot_s + 30
    while time.monotonic() < deadline and proc.poll() is None:
        rundir = newest_rundir(lab_config.name, started, proc.pid)
        marker = rundir / "phase" if rundir is not None else None
        if marker is not None and marker.exists() and marker.read_text().strip() == phase:
            return rundir
        time.sleep(0.05)
    return None


@pytest.mark.parametrize(("signo", "phase"), [(SIGNALS[i % 2], p) for i, p in enumerate(PHASES)],
                         ids=[f"{SIGNALS[i % 2].name.lower()}-{p}" for i, p in enumerate(PHASES)])
def test_interrupted_run_removes_everything(signo: signal.Signals, phase: str, lab_config: LabConfig,
                                            lab_images: dict[str, images.ImageSet], lab_docker: docker.DockerClient,
                                            tmp_path: Path) -> None:
    profile = next(iter(lab_images))
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "lab", "run", "--config", str(lab_config.path), "--profile",
                             profile, "--scenario", "redirector", "--out", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + lab_config.timeouts.kvm_probe_s + lab_config.timeouts.boot_s + 30
        marker = None
        while time.monotonic() < deadline and proc.poll() is None:
            rundir = newest_rundir(lab_config.name, started, proc.pid)
            phase_file = rundir / "phase" if rundir is not None else None
            if phase_file is not None and phase_file.exists() and phase_file.read_text().strip() == phase:
                marker = phase_file
                break
            time.sleep(0.05)
        assert marker is not None, f"the run never reached {phase}: {proc.communicate(timeout=30)}"
        run = run_of(marker.parent)
        proc.send_signal(signo)
        signalled = time.monotonic()
        out, err = proc.communicate(timeout=30)
        stopped_in = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    print(f"stopped {stopped_in:.1f} s after {signo.name} in phase {phase}")
    assert "interrupted" in err
    left = resources.find(lab_docker, lab_config.name, ns=run)
    assert not left, f"left behind: {left.describe()}"
    assert not newest_rundir(lab_config.name, started, proc.pid), "the run folder was not moved to --out"
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [r["verdict"] for r in report["results"]] in (["not-run"], ["error"]), report["results"]


def test_interrupted_image_build_leaves_nothing(lab_config: LabConfig, lab_images: dict[str, images.ImageSet],
                                                lab_docker: docker.DockerClient, tmp_path: Path) -> None:
    """Ctrl-C while a series image builds: its build container is removed, nothing is tagged."""
    control = Path(lab_config.path).parent / "series" / "control"
    series_dir = tmp_path / "series"
    series_dir.mkdir()
    for patch in control.glob("*.patch"):
        # A commit message of its own makes the build context new, so the build cannot come from cache.
        text = patch.read_text().replace("Signed-off-by:", f"Interrupt-test: {time.time()}\n\nSigned-off-by:", 1)
        (series_dir / patch.name).write_text(text)
    data = yaml.safe_load(Path(lab_config.path).read_text())
    base = next(iter(lab_images))
    data["profiles"] = {base: data["profiles"][base],
                        "interrupted": {**data["profiles"][base], "series": {"mbox": str(series_dir)}}}
    data["profiles"]["interrupted"].pop("default", None)
    for sc in data["scenarios"].values():
        sc["expect"] = {base: sc["expect"][base], "interrupted": sc["expect"][base]}
    config_path = tmp_path / "lab.yaml"
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))

    proc = subprocess.Popen([sys.executable, "-m", "lab", "build", "--config", str(config_path), "--profile",
                             "interrupted"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        seen = ""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
            if "apply-series /src/qemu" in line:
                time.sleep(1)  # inside the build: applying, or ninja recompiling
                proc.send_signal(signal.SIGINT)
                break
        assert "apply-series /src/qemu" in seen, seen[-2000:]
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    [log] = (tmp_path / "lab-results" / "build-logs").glob("*qemu-series*interrupted*.log")
    # The series builds in a container of the builder (its log names it): gone, with anything else of
    # its run; other runs' containers are theirs.
    named = re.findall(r"^build container (\S+) \(([0-9a-f]{12})\)$", log.read_text(), re.MULTILINE)
    assert named, "the log names no build container: nothing was tested"
    [(name, short_id)] = named
    assert not [c for c in lab_docker.containers.list(all=True) if c.id[:12] == short_id or c.name == name]
    assert not lab_docker.images.list(filters={"label": "io.nfcl.profile=interrupted"})
    # Nor a layer it committed before the interrupt, if it got as far as the series image: the build
    # log names each, read as the lab reads the build's own stream.
    reading = images.BuildStream("qemu-series", "interrupted", log)
    for _event in reading.events({"stream": line + "\n"} for line in log.read_text().splitlines()):
        pass
    left = []
    for layer in reading.created:
        try:
            left.append(lab_docker.images.get(layer).id)
        except docker.errors.ImageNotFound:
            pass
    assert not left, f"layers of the interrupted build left: {left}"


def test_after_sigkill_the_next_command_names_the_leftovers_and_clean_removes_them(
        lab_config: LabConfig, lab_images: dict[str, images.ImageSet], lab_docker: docker.DockerClient,
        tmp_path: Path) -> None:
    profile = next(iter(lab_images))
    argv = [sys.executable, "-m", "lab", "run", "--config", str(lab_config.path), "--profile", profile,
            "--scenario", "redirector", "--out", str(tmp_path / "run")]
    started = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rundir = None
    try:
        deadline = time.monotonic() + lab_config.timeouts.kvm_probe_s + lab_config.timeouts.boot_s + 30
        while time.monotonic() < deadline and proc.poll() is None:
            rundir = newest_rundir(lab_config.name, started, proc.pid)
            phase = rundir / "phase" if rundir is not None else None
            if phase is not None and phase.exists() and phase.read_text().strip() == "traffic":
                break
            time.sleep(0.05)
        proc.kill()  # no chance to clean up
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rundir is not None
    dead = run_of(rundir)
    assert resources.find(lab_docker, lab_config.name, ns=dead), "a SIGKILLed run leaves its hosts"
    # The next run names what the dead one left, removes none of it, and runs in a namespace of its own.
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert f"run {dead.id}" in again.stderr and "lab clean" in again.stderr
    assert resources.find(lab_docker, lab_config.name, ns=dead), "a leftover check removed something"
    cleaned = subprocess.run([sys.executable, "-m", "lab", "clean", "--config", str(lab_config.path)],
                             capture_output=True, text=True, timeout=120, check=False)
    assert cleaned.returncode == 0, cleaned.stderr
    assert not resources.find(lab_docker, lab_config.name, ns=dead)
    assert not rundir.exists(), "the killed run's folder is still there"


def test_a_hangup_cleans_up_like_ctrl_c_and_more_ctrl_c_does_not_cut_the_cleanup_short(
        lab_config: LabConfig, lab_images: dict[str, images.ImageSet], lab_docker: docker.DockerClient,
        tmp_path: Path) -> None:
    """The terminal goes (SIGHUP) while a cell sends traffic; an impatient user then presses Ctrl-C
    twice while the lab removes what it made."""
    profile = next(iter(lab_images))
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "lab", "run", "--config", str(lab_config.path), "--profile",
                             profile, "--scenario", "redirector", "--jobs", "1", "--out", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rundir = rundir_in_phase(proc, lab_config, started, "traffic")
        assert rundir is not None, proc.communicate(timeout=30)
        run = run_of(rundir)
        proc.send_signal(signal.SIGHUP)
        for _ in range(2):
            time.sleep(0.3)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err, err
    assert "Traceback" not in err, err
    assert "cleaning up, please wait" in err, err  # the Ctrl-C came while it cleaned up, and was told so
    left = resources.find(lab_docker, lab_config.name, ns=run)
    assert not left, f"left behind: {left.describe()}"
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [r["verdict"] for r in report["results"]] in (["not-run"], ["error"]), report["results"]

"""Ctrl-C or SIGTERM in the middle of a scenario: `lab run` stops and leaves nothing behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import pytest

from lab import images, resources
from lab.config import LabConfig
from lab.scenario import PHASES

pytestmark = pytest.mark.e2e

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def newest_rundir(lab: str, after: float) -> Path | None:
    dirs = [d for d in Path(tempfile.gettempdir()).glob(f"{lab}-*") if d.is_dir() and d.stat().st_mtime >= after]
    return max(dirs, key=lambda d: d.stat().st_mtime) if dirs else None


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
            rundir = newest_rundir(lab_config.name, started)
            phase_file = rundir / "phase" if rundir is not None else None
            if phase_file is not None and phase_file.exists() and phase_file.read_text().strip() == phase:
                marker = phase_file
                break
            time.sleep(0.05)
        assert marker is not None, f"the run never reached {phase}: {proc.communicate(timeout=30)}"
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
    left = resources.find(lab_docker, lab_config.name)
    assert not left, f"left behind: {left.describe()}"
    assert not newest_rundir(lab_config.name, started), "the run folder was not moved to --out"

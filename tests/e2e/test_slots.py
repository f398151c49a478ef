"""Runs on one engine share its capacity: with every slot of the engine held (as other runs' cells
hold them), a `lab run` says it waits, starts no cell, and runs once a slot is free."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from lab import images
from lab.config import LabConfig
from lab.engine import Engine
from lab.slots import Slots
from tests.e2e.rundirs import newest_rundir

pytestmark = pytest.mark.e2e


def test_a_run_waits_for_a_free_slot_and_says_so(lab_config: LabConfig, lab_engine: Engine,
                                                  lab_docker: docker.DockerClient,
                                                  lab_images: dict[str, images.ImageSet], tmp_path: Path) -> None:
    slots = Slots.of(lab_engine.name, lab_engine.key(), lab_engine.capacity())
    slots.folder.mkdir(parents=True, exist_ok=True)
    held = []
    for number in range(slots.size):  # what other runs' cells hold; a held one is waited for too
        fd = os.open(slots.folder / f"{number}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.append(fd)
    log = tmp_path / "lab.log"
    started = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lab", "run", "--config", str(lab_config.path), "--profile",
                                 next(iter(lab_images)), "--scenario", "mirror", "--jobs", "1",
                                 "--out", str(tmp_path / "run")], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "COLUMNS": "400"})  # a log line unwrapped
    try:
        deadline = time.monotonic() + 120
        while "waiting for a free one" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        text = log.read_text()
        assert "slots are taken by other cells; waiting for a free one" in text, text[-2000:]
        assert text.count("waiting for a free one") == 1, text[-2000:]  # one line, not one per poll
        time.sleep(2)
        assert proc.poll() is None and newest_rundir(lab_config.name, started, proc.pid) is None, "a cell started"
    finally:
        for fd in held:
            os.close(fd)
    try:
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()

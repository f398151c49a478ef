"""A lab host that is this machine, its run folder a local folder: the Host interface without an
engine, for tests of the layers above it with the lab's real in-host agents."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from lab.host import RUNDIR, ExecResult, Host

AGENTS_ROOT = Path(__file__).resolve().parents[2]  # where `python3 -m lab.agents...` finds the agents


class FolderHost(Host):
    def __init__(self, folder: Path, role: str = "secondary") -> None:
        self.folder = folder
        self.role = role
        self.started: list[subprocess.Popen[bytes]] = []

    @property
    def name(self) -> str:
        return "127.0.0.1"

    def path(self, name: str) -> Path:
        return self.folder / name

    def _local(self, argv: list[str]) -> list[str]:
        argv = [a.replace(RUNDIR, str(self.folder)) for a in argv]
        return [sys.executable if a == "python3" else a for a in argv]

    def run(self, argv: list[str], timeout: float = 30.0) -> ExecResult:
        proc = subprocess.run(self._local(argv), capture_output=True, text=True, timeout=timeout, check=False)
        return ExecResult(shlex.join(argv), proc.returncode, proc.stdout, proc.stderr)

    def start(self, argv: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(AGENTS_ROOT)}
        self.started.append(subprocess.Popen(self._local(argv), env=env, start_new_session=True))

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)

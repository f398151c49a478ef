"""Test traffic, lab side: starts the in-host generator on the primary and collects its record."""

from __future__ import annotations

import random
import signal
from dataclasses import dataclass, field

from lab.errors import ScenarioError
from lab.host import RUNDIR, TAP, Host, Process
from lab.results.analysis import Sent

RECORD = "generator.json"


def new_run_id() -> int:
    """Tells this run's frames from any other's; 32 bits, as the frame carries it."""
    return random.SystemRandom().getrandbits(32)


@dataclass
class Generator:
    host: Host
    dst_mac: str
    rate: int
    run_id: int = field(default_factory=new_run_id)
    process: Process | None = None

    def start(self, max_seconds: float) -> None:
        self.process = self.host.spawn("generator", [
            "python3", "-m", "lab.agents.generator", "--ifname", TAP, "--dst", self.dst_mac,
            "--rate", str(self.rate), "--run-id", str(self.run_id),
            "--record", f"{RUNDIR}/{RECORD}", "--max-seconds", str(max_seconds)])

    def stop(self, timeout: float = 10.0) -> Sent:
        if self.process is None:
            raise ScenarioError("the generator was not started")
        rc = self.process.stop(timeout=timeout, signo=signal.SIGTERM)
        record = self.host.path(RECORD)
        if rc != 0 or not record.exists():
            raise ScenarioError(f"the generator failed (exit {rc}): {self.process.tail(5)}")
        return Sent.load(record)

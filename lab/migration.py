"""Live migration with a hold in pre-switchover: the window in which the source VM is stopped.

With the ``pause-before-switchover`` capability the source stops its VM, sends the last state and
then waits in ``pre-switchover`` until ``migrate-continue``. That wait is the stop the netfilters must
survive, and the lab controls its length.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from lab.errors import ScenarioError, Timeout
from lab.qmp import Monitor

POLL_S = 0.02


@dataclass
class MigrationTimes:
    """Epoch seconds of each step (QEMU's own STOP timestamp for ``stopped``)."""

    started: float = 0.0
    pre_switchover: float = 0.0
    stopped: float | None = None
    continued: float = 0.0
    completed: float = 0.0


class Migration:
    def __init__(self, source: Monitor, destination: Monitor, uri: str) -> None:
        self.source = source
        self.destination = destination
        self.uri = uri
        self.times = MigrationTimes()

    def prepare(self) -> None:
        caps = [{"capability": "pause-before-switchover", "state": True}]
        for monitor in (self.source, self.destination):
            monitor.cmd("migrate-set-capabilities", capabilities=caps)

    def start(self) -> None:
        self.times.started = time.time()
        self.source.cmd("migrate", uri=self.uri)

    def wait_pre_switchover(self, timeout: float) -> None:
        self._wait_status("pre-switchover", timeout)
        self.times.pre_switchover = time.time()
        self.times.stopped = self.source.event_time("STOP", after=self.times.started - 1)

    def resume(self) -> None:
        self.times.continued = time.time()
        self.source.cmd("migrate-continue", state="pre-switchover")

    def wait_completed(self, timeout: float) -> None:
        self._wait_status("completed", timeout)
        self.times.completed = time.time()

    def _wait_status(self, wanted: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        status = "(none)"
        while time.monotonic() < deadline:
            info = self.source.cmd("query-migrate")
            status = info.get("status", "(none)")
            if status == wanted:
                return
            if status in ("failed", "cancelled"):
                raise ScenarioError(f"migration {status}: {info.get('error-desc', 'no reason given')}")
            time.sleep(POLL_S)
        raise Timeout(f"migration did not reach {wanted} within {timeout:.0f} s (last status: {status})")

"""Live migration with a hold in pre-switchover: the window in which the source VM is stopped.

With the ``pause-before-switchover`` capability the source stops its VM, sends the last state and
then waits in ``pre-switchover`` until ``migrate-continue``. That wait is the stop the netfilters must
survive, and the lab controls its length. With the ``events`` capability QEMU announces each status
in a MIGRATION event; every time here is QEMU's own timestamp of an event.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from lab.errors import ScenarioError
from lab.vm.qmp import Event, Monitor, QMPCommandError, event_time

FAILED = ("failed", "cancelled")
MIB = 1 << 20


@dataclass
class MigrationTimes:
    """Epoch seconds, from QEMU's events: MIGRATION statuses of the source, its STOP, and the
    destination's RESUME."""

    started: float = 0.0  # MIGRATION setup
    stopped: float | None = None  # STOP on the source
    pre_switchover: float = 0.0  # MIGRATION pre-switchover
    continued: float = 0.0  # MIGRATION device: migrate-continue taken
    completed: float = 0.0  # MIGRATION completed
    resumed: float | None = None  # RESUME on the destination


class Migration:
    def __init__(self, source: Monitor, destination: Monitor, uri: str,
                 cancel: threading.Event | None = None, tls_creds: str = "") -> None:
        self.source = source
        self.destination = destination
        self.uri = uri
        self.cancel = cancel
        self.tls_creds = tls_creds  # the source's credentials object: the stream goes over TLS
        self.times = MigrationTimes()
        self.at_switchover: dict[str, Any] = {}

    def prepare(self) -> None:
        caps = [{"capability": "pause-before-switchover", "state": True}, {"capability": "events", "state": True}]
        for monitor in (self.source, self.destination):
            monitor.cmd("migrate-set-capabilities", capabilities=caps)
        if self.tls_creds:  # the destination has its own from its command line (lab.vm.qemu.tls_args)
            self.source.cmd("migrate-set-parameters", **{"tls-creds": self.tls_creds})

    def start(self, timeout: float) -> None:
        self.source.cmd("migrate", uri=self.uri)
        self.times.started = event_time(self._status("setup", timeout))

    def wait_stopped(self, timeout: float) -> float:
        """Returns at the source's STOP event (QEMU's time of it): the moment to act while stopped."""
        if self.times.stopped is None:
            stop = self.source.event_wait("STOP", timeout, after=self.times.started, cancel=self.cancel,
                                          what="the source to stop its VM")
            self.times.stopped = event_time(stop)
        return self.times.stopped

    def wait_pre_switchover(self, timeout: float) -> None:
        self.times.pre_switchover = event_time(self._status("pre-switchover", timeout))
        # The source stops its VM before it reaches pre-switchover: the event is already there.
        self.wait_stopped(1.0)
        # The dirty rate as of the last pass while the guest ran: the final sync, over the stopped
        # window, would say nothing of the guest.
        self.at_switchover = self.source.cmd("query-migrate")

    def resume(self, timeout: float) -> None:
        self.source.cmd("migrate-continue", state="pre-switchover")
        self.times.continued = event_time(self._status("device", timeout, after=self.times.pre_switchover))

    def wait_completed(self, timeout: float) -> None:
        self.times.completed = event_time(self._status("completed", timeout, after=self.times.continued))
        try:
            resumed = self.destination.event_wait("RESUME", 5.0, after=self.times.started, cancel=self.cancel)
            self.times.resumed = event_time(resumed)
        except ScenarioError:
            self.times.resumed = None  # the destination stays paused: the figure is absent, not invented

    def figures(self) -> dict[str, float | None]:
        """What QEMU says of the finished migration: its downtime, RAM passes and dirty rate."""
        info = self.source.cmd("query-migrate")
        ram = info.get("ram", {})
        rate = self.at_switchover.get("ram", {}).get("dirty-pages-rate")
        return {"qemu_downtime_ms": info.get("downtime"), "ram_iterations": ram.get("dirty-sync-count"),
                "dirty_rate_mb_s": round(rate * ram.get("page-size", 4096) / MIB, 1) if rate is not None else None}

    def _status(self, wanted: str, timeout: float, after: float = 0.0) -> Event:
        """Waits for the source's MIGRATION event ``wanted``; a failed migration says why."""
        def status(event: Event) -> bool:
            return event.get("data", {}).get("status") in (wanted, *FAILED)

        event = self.source.event_wait("MIGRATION", timeout, match=status, after=after, cancel=self.cancel,
                                         what=f"migration to reach {wanted}")
        got = event.get("data", {}).get("status")
        if got in FAILED:
            raise ScenarioError(f"migration {got} on the way to {wanted}: {self._why()}")
        return event

    def _why(self) -> str:
        try:
            return str(self.source.cmd("query-migrate").get("error-desc", "no reason given"))
        except QMPCommandError as exc:
            return f"no reason given ({exc})"

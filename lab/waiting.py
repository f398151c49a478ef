"""Bounded waits: every wait in the lab goes through here, and every one that runs out says what it
waited for, for how long, and the last state it saw."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from lab.errors import Cancelled, Timeout

T = TypeVar("T")


class Deadline:
    """A bound on one wait, optionally cut short by a cancel flag (Ctrl-C, a sibling cell's abort)."""

    def __init__(self, what: str, timeout: float, cancel: threading.Event | None = None) -> None:
        self.what = what
        self.timeout = timeout
        self.cancel = cancel
        self._end = time.monotonic() + timeout

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self._end

    def sleep(self, seconds: float) -> None:
        """Sleeps, but never past the deadline; raises Cancelled as soon as the run is cancelled."""
        pause = min(seconds, self.remaining())
        if self.cancel is None:
            time.sleep(pause)
        elif self.cancel.wait(pause):
            raise Cancelled(f"cancelled while waiting for {self.what}")

    def fail(self, last: str = "") -> Timeout:
        return Timeout(f"{self.what}: not within {self.timeout:g} s" + (f" (last seen: {last})" if last else ""))


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.05,
               last: Callable[[], str] | None = None, cancel: threading.Event | None = None) -> T:
    """Calls ``probe`` until it returns something other than None; ``probe`` may raise to give up
    early (a process that died will not come up). The Timeout names ``what`` and ``last()``."""
    deadline = Deadline(what, timeout, cancel)
    while True:
        found = probe()
        if found is not None:
            return found
        if deadline.expired():
            raise deadline.fail(last() if last is not None else "")
        deadline.sleep(interval)


def pause(seconds: float, cancel: threading.Event | None = None, what: str = "a pause") -> None:
    """A deliberate wait (the hold, the warm-up) that Ctrl-C still cuts short."""
    Deadline(what, seconds, cancel).sleep(seconds)

"""QMP to a QEMU, over the unix socket its host made in its run folder.

qemu.qmp's QMPClient runs on an event loop of its own thread, so that QEMU's events are read the
moment they come, whatever the caller is doing; callers get a synchronous API with bounds:
``cmd()`` for a command, ``event_wait()`` for an event. Events keep QEMU's own timestamps (the host
clock, the one the captures use). Every command, reply and event goes to a transcript with times.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError, Runstate

from lab.errors import QemuExited, ScenarioError, excerpt
from lab.waiting import Deadline, wait_until

log = logging.getLogger(__name__)

T = TypeVar("T")
Event = dict[str, Any]


class QMPCommandError(ScenarioError):
    """A command QEMU refused or did not answer; keeps the command and the cause."""

    def __init__(self, who: str, command: str, cause: BaseException | str) -> None:
        self.command = command
        self.cause = cause
        # One line whatever the cause says: qemu.qmp quotes a malformed reply whole, over lines.
        super().__init__(f"{who}: QMP {command} failed: {excerpt(str(cause), 300)}")


class QMPDisconnected(ScenarioError):
    """The monitor's connection ended (QEMU exited, or closed it) while the lab waited on it."""


def event_time(event: Event) -> float:
    """QEMU's timestamp of an event, in epoch seconds."""
    ts = event.get("timestamp", {})
    return float(ts.get("seconds", 0)) + float(ts.get("microseconds", 0)) / 1e6


class Monitor:
    """One QMP connection: ``connect``, ``cmd``, ``event_wait``, ``close`` (or use it as a context)."""

    def __init__(self, who: str, socket_path: Path, transcript: Path, timeout: float = 10.0) -> None:
        self.who = who
        self.socket_path = socket_path
        self.timeout = timeout
        self.events: list[Event] = []
        self._changed = threading.Condition()
        self._log = transcript.open("a")
        self._log_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"qmp-{who}", daemon=True)
        self._thread.start()
        self._pump: asyncio.Task[None] | None = None
        try:
            self._client: QMPClient = self._call(self._make_client(), self.timeout)
        except BaseException:
            self._release()  # no client, no monitor: its loop thread and transcript go now
            raise

    async def _make_client(self) -> QMPClient:
        return QMPClient(self.who)  # made on its loop: its locks and queues belong there

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self._loop)
        try:
            return future.result(timeout + 1.0)
        except (TimeoutError, concurrent.futures.TimeoutError) as exc:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g} s") from exc

    @property
    def connected(self) -> bool:
        return self._client.runstate == Runstate.RUNNING

    def connect(self, timeout: float, alive: Callable[[], bool] | None = None,
                cancel: threading.Event | None = None) -> None:
        """Connects once QEMU has made its socket; ``alive()`` false means QEMU died: stop waiting."""
        last: list[str] = []

        def attempt() -> bool | None:
            if alive is not None and not alive():
                raise QemuExited(f"{self.who}: QEMU exited before its QMP socket answered")
            if not self.socket_path.exists():
                last[:] = ["no socket yet"]
                return None
            try:
                self._call(self._client.connect(str(self.socket_path)), self.timeout)
            except (QMPError, OSError, TimeoutError) as exc:
                last[:] = [str(exc) or type(exc).__name__]
                return None
            return True

        wait_until(f"{self.who}: QMP on {self.socket_path.name}", attempt, timeout, last=lambda: "".join(last),
                   cancel=cancel)
        self._record("connected", {})
        self._call(self._start_pump(), self.timeout)

    async def _start_pump(self) -> None:
        self._pump = asyncio.get_running_loop().create_task(self._read_events())

    async def _stop_pump(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump

    async def _read_events(self) -> None:
        listener = EventListener()
        with self._client.listen(listener):
            async for event in listener:
                self._record("event", dict(event))
                with self._changed:
                    self.events.append(dict(event))
                    self._changed.notify_all()

    def cmd(self, command: str, **args: Any) -> Any:
        if not self.connected:
            raise QMPDisconnected(f"{self.who}: QMP is not connected (QEMU gone?); cannot run {command}")
        self._record("command", {"execute": command, "arguments": args})
        log.debug("%s: QMP %s %s", self.who, command, json.dumps(args) if args else "")
        try:
            reply = self._call(self._client.execute(command, args), self.timeout)
        except ExecuteError as exc:
            self._record("error", {"execute": command, "error": str(exc)})
            raise QMPCommandError(self.who, command, exc) from exc
        except TimeoutError as exc:
            self._record("error", {"execute": command, "error": "timeout"})
            raise QMPCommandError(self.who, command, f"no answer within {self.timeout:g} s") from exc
        except (QMPError, OSError, EOFError, ValueError) as exc:
            self._record("error", {"execute": command, "error": repr(exc)})
            raise QMPCommandError(self.who, command, str(exc) or type(exc).__name__) from exc
        self._record("return", {"execute": command, "return": reply})
        return reply

    def event_wait(self, name: str, timeout: float, match: Callable[[Event], bool] | None = None,
                   after: float = 0.0, cancel: threading.Event | None = None, what: str = "") -> Event:
        """The first event ``name`` stamped at or after ``after`` (epoch) for which ``match`` holds;
        events that came before the call count too, so a wait begun late does not miss one."""
        deadline = Deadline(f"{self.who}: {what or name} (QMP event {name})", timeout, cancel)
        seen = 0
        with self._changed:
            while True:
                for event in self.events[seen:]:
                    if event.get("event") == name and event_time(event) >= after and (match is None or match(event)):
                        return event
                seen = len(self.events)
                if not self.connected:
                    raise QMPDisconnected(f"{self.who}: the QMP connection closed while waiting for {name} "
                                          f"(QEMU exited?)")
                if deadline.expired():
                    last = self.events[-1].get("event", "?") if self.events else "no event"
                    raise deadline.fail(f"last event {last}")
                if cancel is not None and cancel.is_set():
                    deadline.sleep(0)
                self._changed.wait(min(0.1, deadline.remaining()))

    def event_times(self, name: str) -> list[float]:
        with self._changed:
            return [event_time(e) for e in self.events if e.get("event") == name]

    def _record(self, kind: str, data: dict[str, Any]) -> None:
        with self._log_lock:
            if not self._log.closed:
                self._log.write(json.dumps({"time": time.time(), "who": self.who, kind: data}, default=str) + "\n")
                self._log.flush()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self._client.disconnect(), self.timeout)
        except (QMPError, OSError, EOFError, TimeoutError, RuntimeError, ValueError):
            # disconnect() re-raises what ended the connection (EOFError when QEMU is gone,
            # which is what happens to a destination whose source died; ValueError when it sent
            # what is no QMP, undecodable or a line past the reader's limit): nothing left to close.
            pass
        with contextlib.suppress(TimeoutError):
            self._call(self._stop_pump(), self.timeout)
        self._release()

    def _release(self) -> None:
        """The loop stopped, its thread joined, the transcript closed."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self._loop.close()
        with self._log_lock:
            self._log.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

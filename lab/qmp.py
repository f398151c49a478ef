"""QMP to a host's QEMU, over the unix socket in the host's run directory.

A synchronous layer over qemu.qmp's QMPClient (on a private event loop) that bounds every exchange,
keeps every event (QEMU stamps them with its own clock, which is the clock the captures use), and
writes a transcript of commands, replies and events with times.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from qemu.qmp import ExecuteError, QMPClient, QMPError

from lab.errors import ScenarioError, Timeout


class QMPCommandError(ScenarioError):
    def __init__(self, who: str, command: str, cause: BaseException | str) -> None:
        self.command = command
        super().__init__(f"{who}: QMP {command} failed: {cause}")


class Monitor:
    def __init__(self, who: str, socket_path: Path, transcript: Path, timeout: float = 10.0) -> None:
        self.who = who
        self.socket_path = socket_path
        self.transcript = transcript
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient(who)
        self._connected = False
        self._log = transcript.open("a")

    def _run(self, coro: Any, timeout: float) -> Any:
        return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def connect(self, deadline_s: float, alive: Any = None) -> None:
        """Connects once QEMU has created its socket; ``alive()`` false means QEMU died: stop waiting."""
        deadline = time.monotonic() + deadline_s
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if alive is not None and not alive():
                break
            if self.socket_path.exists():
                try:
                    self._run(self._client.connect(str(self.socket_path)), self.timeout)
                    self._connected = True
                    self._record("connected", {})
                    return
                except (QMPError, OSError, TimeoutError) as exc:
                    last = exc
            time.sleep(0.05)
        raise Timeout(f"{self.who}: QMP did not answer on {self.socket_path.name} within {deadline_s:.0f} s"
                      + (f" (last error: {last})" if last else ""))

    def cmd(self, command: str, **args: Any) -> Any:
        if not self._connected:
            raise ScenarioError(f"{self.who}: QMP is not connected")
        self._record("command", {"execute": command, "arguments": args})
        try:
            reply = self._run(self._client.execute(command, args), self.timeout)
        except ExecuteError as exc:
            self._record("error", {"execute": command, "error": str(exc)})
            raise QMPCommandError(self.who, command, exc) from exc
        except TimeoutError as exc:
            self._record("error", {"execute": command, "error": "timeout"})
            raise QMPCommandError(self.who, command, f"no answer within {self.timeout:.0f} s") from exc
        except (QMPError, OSError) as exc:
            self._record("error", {"execute": command, "error": repr(exc)})
            raise QMPCommandError(self.who, command, repr(exc) if not str(exc) else exc) from exc
        self._record("return", {"execute": command, "return": reply})
        self.poll_events()
        return reply

    def poll_events(self) -> list[dict[str, Any]]:
        # Events are read off the socket only while the loop runs.
        self._run(asyncio.sleep(0), self.timeout)
        new = [dict(ev) for ev in self._client.events.clear()]
        for ev in new:
            self._record("event", ev)
        self.events.extend(new)
        return new

    def event_time(self, name: str, after: float = 0.0) -> float | None:
        """QEMU's timestamp of the first ``name`` event at or after ``after`` (epoch seconds)."""
        for ev in self.events:
            ts = ev.get("timestamp", {})
            when = ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6
            if ev.get("event") == name and when >= after:
                return when
        return None

    def _record(self, kind: str, data: dict[str, Any]) -> None:
        self._log.write(json.dumps({"time": time.time(), "who": self.who, kind: data}, default=str) + "\n")
        self._log.flush()

    def close(self) -> None:
        if self._connected:
            try:
                self._run(self._client.disconnect(), self.timeout)
            except (QMPError, OSError, EOFError, TimeoutError, RuntimeError):
                # disconnect() re-raises what ended the connection (EOFError when QEMU is gone,
                # which is what happens to a destination whose source died): nothing left to close.
                pass
            self._connected = False
        self._loop.close()
        self._log.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

"""A QMP server for tests: QEMU's greeting, capabilities negotiation, commands answered with
``return`` or ``error`` exactly as QEMU frames them, and events with QEMU's timestamps. It plays a
migration source (or destination) far enough for the lab's migration driver."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

GREETING = {"QMP": {"version": {"qemu": {"micro": 2, "minor": 2, "major": 10}, "package": ""}, "capabilities": []}}


class FakeQMP:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[dict[str, Any]] = []
        self.handlers: dict[str, Callable[[dict[str, Any]], Any]] = {"query-status": lambda a: {"status": "running"}}
        self.migrate_status = "none"
        self.error_desc = ""
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(1)
        self._conn: socket.socket | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def send(self, message: dict[str, Any]) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.sendall(json.dumps(message).encode() + b"\r\n")

    def event(self, name: str, data: dict[str, Any] | None = None, at: float | None = None) -> None:
        when = time.time() if at is None else at
        self.send({"event": name, "data": data or {},
                   "timestamp": {"seconds": int(when), "microseconds": int(round(when % 1 * 1e6)) % 1000000}})

    def migration(self, status: str) -> None:
        self.migrate_status = status
        self.event("MIGRATION", {"status": status})

    def hang_up(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.shutdown(socket.SHUT_RDWR)  # the peer sees EOF, as when QEMU exits
                self._conn.close()
                self._conn = None

    def close(self) -> None:
        self.hang_up()
        # Woken first, then closed: a thread still blocked in accept() on a closed socket goes on
        # waiting on its file descriptor number, and takes the connections of whatever socket gets
        # that number next (a test's HTTP server, then answered with a QMP greeting).
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        try:
            conn, _ = self._server.accept()
        except OSError:
            return
        with self._lock:
            self._conn = conn
        self.send(GREETING)
        # QEMU parses a stream of JSON values, not lines: clients need not end one with a newline.
        decoder, buf = json.JSONDecoder(), ""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk.decode()
            while buf.strip():
                try:
                    msg, end = decoder.raw_decode(buf.lstrip())
                except ValueError:
                    break  # an incomplete value: wait for the rest
                buf = buf.lstrip()[end:]
                self._answer(msg)

    def _answer(self, msg: dict[str, Any]) -> None:
        self.received.append(msg)
        name, args, ident = msg.get("execute"), msg.get("arguments", {}), msg.get("id")
        if name == "qmp_capabilities":
            result: Any = {}
        elif name == "query-migrate":
            result = {"status": self.migrate_status, **({"error-desc": self.error_desc} if self.error_desc else {})}
        elif name in self.handlers:
            result = self.handlers[name](args)
        else:
            self.send({"error": {"class": "CommandNotFound", "desc": f"The command {name} has not been found"},
                       **({"id": ident} if "id" in msg else {})})
            return
        self.send({"return": result, **({"id": ident} if "id" in msg else {})})


def migration_source(path: Path, destination: FakeQMP | None = None, fail_at: str = "") -> FakeQMP:
    """A source that goes setup -> STOP + pre-switchover on migrate, and device -> completed on
    migrate-continue (the destination, when given, then RESUMEs); ``fail_at`` a status: fails there."""
    qmp = FakeQMP(path)

    def later(*steps: Callable[[], None]) -> None:
        def run() -> None:
            for step in steps:
                time.sleep(0.02)
                step()
        threading.Thread(target=run, daemon=True).start()

    def status(s: str) -> Callable[[], None]:
        def step() -> None:
            if fail_at and qmp.migrate_status in ("failed",):
                return
            if s == fail_at:
                qmp.error_desc = f"failed on the way to {s}"
                qmp.migration("failed")
            else:
                qmp.migration(s)
        return step

    def migrate(args: dict[str, Any]) -> dict[str, Any]:
        later(status("setup"), status("active"), lambda: qmp.event("STOP"), status("pre-switchover"))
        return {}

    def migrate_continue(args: dict[str, Any]) -> dict[str, Any]:
        steps = [status("device"), status("completed")]
        if destination is not None:
            steps.append(lambda: destination.event("RESUME"))
        later(*steps)
        return {}

    qmp.handlers.update({"migrate-set-capabilities": lambda a: {}, "migrate": migrate,
                         "migrate-continue": migrate_continue, "quit": lambda a: {}})
    return qmp

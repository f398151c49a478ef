"""In-host helpers: run inside the lab's host containers with Debian's python3, standard library only."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any


class StopFlag:
    """Set by SIGTERM or SIGINT: the helpers finish their loop and write their records."""

    def __init__(self) -> None:
        self.set = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, _signo: int, _frame: object) -> None:
        self.set = True


def write_record(path: str, record: dict[str, Any]) -> None:
    """The helper's JSON record, renamed into place so that a reader never sees half of it."""
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)


class EventLog:
    """A helper's events, a JSON line each with its time, on disk as they happen."""

    def __init__(self, path: str) -> None:
        self.f = open(path, "a")

    def __call__(self, kind: str, **data: object) -> None:
        self.f.write(json.dumps({"time": time.time(), "event": kind, **data}) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as a socket address."""
    host, _, port = text.rpartition(":")
    return host, int(port)


def read_token(path: str) -> bytes:
    """A token, from its file (hex): never from the command line, which any process of the host reads."""
    with open(path) as f:
        return bytes.fromhex(f.read().strip())


def accept_until_stopped(listen: str, event: EventLog, stop: StopFlag,
                         take: Callable[[socket.socket, str], None]) -> None:
    """Listens on ``listen`` and hands each connection, with its peer, to ``take`` until the helper is
    stopped; says ``listening`` once it does, and ``stopped`` at the end (its log then closed)."""
    server = socket.create_server(address(listen))
    server.settimeout(0.2)
    event("listening", address=listen)
    while not stop.set:
        try:
            conn, peer = server.accept()
        except TimeoutError:
            continue
        take(conn, f"{peer[0]}:{peer[1]}")
    event("stopped")
    event.close()

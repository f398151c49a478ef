"""The migration gate (lab.agents.gate) in front of a split cell's destination QEMU: only a connection
that presents the cell's token reaches QEMU; a silent one, a wrong one and garbage never do, and the
real one still gets through after them."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_until_seen(path: Path, kind: str, count: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in events(path) if e["event"] == kind]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{count} {kind} events not within {timeout} s: {events(path)}")


@pytest.fixture
def qemu() -> Iterator[socket.socket]:
    """What stands for the destination QEMU's -incoming: a listener on the loopback."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)
        yield server


@pytest.fixture
def gate(tmp_path: Path, qemu: socket.socket) -> Iterator[tuple[int, bytes]]:
    token = secrets.token_bytes(32)
    (tmp_path / "stream.token").write_text(token.hex())
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lab.agents.gate", "--listen", f"127.0.0.1:{port}",
                             "--to", f"127.0.0.1:{qemu.getsockname()[1]}", "--token-file",
                             str(tmp_path / "stream.token"), "--events", str(tmp_path / "gate.jsonl")], cwd=ROOT)
    try:
        wait_until_seen(tmp_path / "gate.jsonl", "listening")
        yield port, token
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_only_the_token_reaches_qemu_and_the_bytes_pass_both_ways(tmp_path: Path, qemu: socket.socket,
                                                                 gate: tuple[int, bytes]) -> None:
    port, token = gate
    silent = socket.create_connection(("127.0.0.1", port))  # connects first and says nothing
    with socket.create_connection(("127.0.0.1", port)) as garbage:
        garbage.sendall(b"QEVM\x00\x00\x00\x03" + b"x" * 64)  # a migration stream's header, without the token
    with socket.create_connection(("127.0.0.1", port)) as wrong:
        wrong.sendall(secrets.token_bytes(32))
    source = socket.create_connection(("127.0.0.1", port), timeout=10)
    source.sendall(token + b"migration stream")
    incoming, _ = qemu.accept()
    with incoming, source:
        incoming.settimeout(10)
        got = b""
        while len(got) < len(b"migration stream"):
            piece = incoming.recv(64)
            assert piece, f"the gate closed QEMU's side after {got!r}"
            got += piece
        assert got == b"migration stream"  # the token itself is not passed on
        incoming.sendall(b"back")
        assert source.recv(4) == b"back"
    refused = wait_until_seen(tmp_path / "gate.jsonl", "refused", 3)
    silent.close()
    assert sorted(e["reason"] for e in refused) == ["no whole token within 2 s", "wrong token", "wrong token"]
    # Only the one that presented the token was ever passed to QEMU.
    qemu.settimeout(0.5)
    with pytest.raises(TimeoutError):
        qemu.accept()
    assert len([e for e in events(tmp_path / "gate.jsonl") if e["event"] == "admitted"]) == 1

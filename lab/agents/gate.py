"""Migration gate: in front of a split cell's destination QEMU, on the port its engine publishes.

The destination's ``-incoming`` listens on its host's loopback only. This agent listens on the
published port and admits a connection once its first bytes are the cell's token (the sender
agent on the primary presents it for the source QEMU): then it connects to QEMU and passes the bytes
on both ways, unchanged. Anything else (a wrong token, none within ``TOKEN_WAIT_S``, a connection
that only listens) is closed and reported as ``refused``: QEMU never sees it. Without the gate, a
connection that sends nothing would hold QEMU's one incoming migration until it gave up.
"""

from __future__ import annotations

import argparse
import hmac
import socket
import threading
import time

from lab.agents import EventLog, StopFlag, accept_until_stopped, address, read_token
from lab.agents.sender import CONNECT_S, splice

TOKEN_WAIT_S = 2.0  # for a connection's token: the sender presents it at once
MAX_UNPROVEN = 8  # connections owing their token at once; past it a new one is closed at once


def read_exactly(conn: socket.socket, size: int, within: float) -> bytes:
    """Up to ``size`` bytes, as many as came within ``within`` seconds (fewer: closed or too slow)."""
    got = b""
    deadline = time.monotonic() + within
    while len(got) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        conn.settimeout(left)
        try:
            data = conn.recv(size - len(got))
        except (TimeoutError, OSError):
            break
        if not data:
            break
        got += data
    return got


class Gate:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.token = read_token(args.token_file)
        self.event = EventLog(args.events)
        self.unproven = threading.BoundedSemaphore(MAX_UNPROVEN)

    def run(self, stop: StopFlag) -> None:
        def take(conn: socket.socket, peer: str) -> None:
            if not self.unproven.acquire(blocking=False):
                self.event("refused", peer=peer, reason="too many connections owing their token")
                conn.close()
                return
            threading.Thread(target=self.serve, args=(conn, peer, stop), daemon=True).start()

        accept_until_stopped(self.args.listen, self.event, stop, take)

    def serve(self, conn: socket.socket, peer: str, stop: StopFlag) -> None:
        with conn:
            try:
                got = read_exactly(conn, len(self.token), TOKEN_WAIT_S)
            finally:
                self.unproven.release()
            if len(got) < len(self.token):
                self.event("refused", peer=peer, reason=f"no whole token within {TOKEN_WAIT_S:g} s")
                return
            if not hmac.compare_digest(got, self.token):
                self.event("refused", peer=peer, reason="wrong token")
                return
            try:
                qemu = socket.create_connection(address(self.args.to), timeout=CONNECT_S)
            except OSError as exc:
                self.event("connect-failed", peer=peer, error=str(exc))
                return
            with qemu:
                self.event("admitted", peer=peer)
                self.event("disconnected", peer=peer, reason=splice(conn, qemu, stop, ("the source", "QEMU")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listen", required=True, help="HOST:PORT published on the engine's address")
    ap.add_argument("--to", required=True, help="HOST:PORT of the destination QEMU's -incoming, on the loopback")
    ap.add_argument("--token-file", required=True, help="a file holding the token (hex) to present first")
    ap.add_argument("--events", required=True, help="JSON lines: connections admitted and refused")
    args = ap.parse_args()
    stop = StopFlag()
    Gate(args).run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

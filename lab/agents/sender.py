"""Stream sender: between the primary's netfilter outdev and a recorder that wants a token first
(and, the same way, between the source QEMU's migration and the destination's gate, lab.agents.gate).

A split cell's recorder listens on a port published on its engine's address, and admits a
connection only once it has presented the cell's token (lab.agents.recorder). The filter's chardev
cannot present one: it connects here, on the primary's loopback, and this agent connects to the
recorder, presents the token, then passes the bytes on both ways, unchanged, until either end
closes. It then closes the other end too, so that the chardev reconnects (reconnect-ms) and
finds a fresh connection to the recorder.
"""

from __future__ import annotations

import argparse
import selectors
import socket

from lab.agents import EventLog, StopFlag, accept_until_stopped, address, read_token

CONNECT_S = 5.0


class Sender:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.token = read_token(args.token_file)
        self.event = EventLog(args.events)

    def run(self, stop: StopFlag) -> None:
        def take(conn: socket.socket, _peer: str) -> None:
            with conn:
                self.serve(conn, stop)

        accept_until_stopped(self.args.listen, self.event, stop, take)

    def serve(self, conn: socket.socket, stop: StopFlag) -> None:
        try:
            far = socket.create_connection(address(self.args.to), timeout=CONNECT_S)
            far.sendall(self.token)
        except OSError as exc:
            self.event("connect-failed", error=str(exc))
            return
        with far:
            far.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.event("connected", to=self.args.to)
            self.event("disconnected", reason=splice(conn, far, stop, (self.args.near, self.args.far)))


def splice(near: socket.socket, far: socket.socket, stop: StopFlag,
           names: tuple[str, str] = ("the near end", "the far end")) -> str:
    """Bytes both ways until an end closes (or the agent stops): which one did, by ``names``."""
    near.settimeout(None)
    far.settimeout(None)
    ends = {near: (far, names[0]), far: (near, names[1])}
    with selectors.DefaultSelector() as sel:
        for sock in ends:
            sel.register(sock, selectors.EVENT_READ)
        while not stop.set:
            for key, _mask in sel.select(timeout=0.2):
                to, name = ends[key.fileobj]  # type: ignore[index]
                try:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return f"{name} closed"
                    to.sendall(data)
                except OSError as exc:
                    return f"{name}: {exc}"
    return "sender stopped"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listen", required=True, help="HOST:PORT the filter's outdev connects to")
    ap.add_argument("--to", required=True, help="HOST:PORT of the recorder")
    ap.add_argument("--token-file", required=True, help="a file holding the token (hex) the recorder wants first")
    ap.add_argument("--events", required=True, help="JSON lines: connections and their ends")
    ap.add_argument("--near", default="the filter's chardev", help="what connects here, as events name it")
    ap.add_argument("--far", default="the recorder", help="what this connects to, as events name it")
    args = ap.parse_args()
    stop = StopFlag()
    Sender(args).run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

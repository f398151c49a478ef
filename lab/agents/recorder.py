"""Stream recorder: sits between the primary's netfilter outdev and the secondary QEMU's indev.

It accepts the primary's chardev connection, forwards every byte to the secondary QEMU's chardev
server, and records each mirrored frame with its arrival time in a pcap file. The destination QEMU
releases injected frames only when it starts running, so this stream is where arrival times are true.

Bytes go on to the destination without blocking the reads: what it does not take yet waits in a
queue, and a growing queue is reported as ``backpressure`` events (and counted in ``stopped``).

With ``--token-file`` (a split cell, whose recorder port is published on its engine's address) a
connection counts only once it has presented the token first: anything else within ``TOKEN_WAIT_S``
is closed, reported as ``refused`` and leaves the stream it did not present a token for untouched.

Stream format (net/filter-mirror.c, vnet_hdr_support=on): a 4-byte length, a 4-byte vnet header
length, then that many bytes: the vnet header followed by the Ethernet frame. All big-endian.
"""

from __future__ import annotations

import argparse
import hmac
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from lab.agents import EventLog, StopFlag, address, read_token

MAX_PACKET = 256 * 1024
MAX_QUEUED = 256 * 1024 * 1024
TOKEN_WAIT_S = 2.0  # for a connection's token: the sender presents it at once
MAX_UNPROVEN = 8  # connections still owing their token; past it the oldest is closed


class PcapWriter:
    """Classic pcap, microsecond timestamps, Ethernet link type; flushed per frame."""

    def __init__(self, path: str) -> None:
        self.f: BinaryIO = open(path, "wb")
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        self.f.flush()

    def write(self, ts: float, frame: bytes) -> None:
        sec = int(ts)
        usec = int(round((ts - sec) * 1e6))
        if usec >= 1000000:
            sec, usec = sec + 1, usec - 1000000
        self.f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class StreamParser:
    """Splits the filter stream into frames; keeps partial records across reads."""

    def __init__(self, vnet_hdr: bool) -> None:
        self.vnet_hdr = vnet_hdr
        self.buf = bytearray()
        self.error = ""

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        head = 8 if self.vnet_hdr else 4
        while len(self.buf) >= head:
            size = struct.unpack_from("!I", self.buf, 0)[0]
            vnet_len = struct.unpack_from("!I", self.buf, 4)[0] if self.vnet_hdr else 0
            if size > MAX_PACKET or vnet_len > size:
                # The frames before the corruption are good; hand them over first.
                self.error = f"corrupt stream: length {size}, vnet header length {vnet_len}"
                break
            if len(self.buf) < head + size:
                break
            out.append(bytes(self.buf[head + vnet_len:head + size]))
            del self.buf[:head + size]
        return out


class Outbox:
    """Bytes for one socket, sent without blocking: what the peer does not take yet waits here.

    The recorder stamps a frame when it reads it; a destination that reads slowly (a QEMU that holds
    injected frames until it runs) must not delay that read, nor stop the recorder.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.pending = bytearray()

    def push(self, data: bytes) -> None:
        self.pending += data
        self.flush()

    def flush(self) -> None:
        """Sends what the socket takes now; OSError (the peer is gone) goes to the caller."""
        while self.pending:
            try:
                sent = self.sock.send(self.pending)
            except BlockingIOError:
                return
            del self.pending[:sent]


class Backpressure:
    """Reports a growing queue towards the destination: an event each time it doubles past 64 KiB."""

    FIRST = 64 * 1024

    def __init__(self, event: Callable[..., None]) -> None:
        self.event = event
        self.next_report = self.FIRST
        self.reports = 0
        self.max_queued = 0

    def observe(self, queued: int) -> None:
        self.max_queued = max(self.max_queued, queued)
        if queued >= self.next_report:
            self.reports += 1
            self.event("backpressure", queued_bytes=queued)
            while self.next_report <= queued:
                self.next_report *= 2
        elif queued == 0:
            self.next_report = self.FIRST


class Pair:
    """One primary connection and the destination connection its bytes go to."""

    def __init__(self, up: socket.socket, down: socket.socket, vnet_hdr: bool) -> None:
        self.up, self.down = Outbox(up), Outbox(down)
        self.parser = StreamParser(vnet_hdr)
        self.closing = ""  # the primary has closed: why, once what it sent has been forwarded

    def masks(self) -> dict[socket.socket, int]:
        """What to wait for: reads from a side that is open, writability where bytes wait."""
        up = (0 if self.closing else selectors.EVENT_READ) | (selectors.EVENT_WRITE if self.up.pending else 0)
        down = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.down.pending else 0)
        return {self.up.sock: up, self.down.sock: down}

    def close(self) -> None:
        self.up.sock.close()
        self.down.sock.close()


@dataclass
class Unproven:
    """A connection that has not presented its token yet: what it sent of it, and until when it may."""

    sock: socket.socket
    peer: str
    deadline: float
    got: bytes = b""


class Gate:
    """Admits a connection once its first bytes are the token; never reads past the token, so what
    follows it is the stream's."""

    def __init__(self, token: bytes) -> None:
        self.token = token
        self.waiting: dict[socket.socket, Unproven] = {}

    def enter(self, sock: socket.socket, peer: str, now: float) -> list[Unproven]:
        """Takes ``sock`` in; returns the connections it pushed out (the oldest, past MAX_UNPROVEN)."""
        self.waiting[sock] = Unproven(sock, peer, now + TOKEN_WAIT_S)
        excess = list(self.waiting.values())[:-MAX_UNPROVEN]
        for old in excess:
            del self.waiting[old.sock]
        return excess

    def read(self, sock: socket.socket) -> tuple[bool, str]:
        """Reads what is owed of the token: (admitted, why refused); (False, "") while it is incomplete."""
        waiting = self.waiting[sock]
        try:
            data = sock.recv(len(self.token) - len(waiting.got))
        except BlockingIOError:
            return False, ""
        except OSError as exc:
            return self._out(sock, f"unreadable: {exc}")
        if not data:
            return self._out(sock, "closed before its token")
        waiting.got += data
        if len(waiting.got) < len(self.token):
            return False, ""
        if not hmac.compare_digest(waiting.got, self.token):
            return self._out(sock, "wrong token")
        del self.waiting[sock]
        return True, ""

    def expired(self, now: float) -> list[Unproven]:
        late = [w for w in self.waiting.values() if now >= w.deadline]
        for w in late:
            del self.waiting[w.sock]
        return late

    def _out(self, sock: socket.socket, why: str) -> tuple[bool, str]:
        del self.waiting[sock]
        return False, why


class Recorder:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.event = EventLog(args.events)
        self.pcap = PcapWriter(args.pcap)
        self.sel = selectors.DefaultSelector()
        self.pair: Pair | None = None
        self.pressure = Backpressure(self.event)
        self.frames_seen = 0
        self.gate = Gate(read_token(args.token_file)) if args.token_file else None

    def run(self, stop: StopFlag) -> None:
        server = socket.create_server(address(self.args.listen), reuse_port=False)
        self.sel.register(server, selectors.EVENT_READ, "accept")
        self.event("listening", address=self.args.listen)
        while not stop.set:
            for key, mask in self.sel.select(timeout=0.2):
                if key.data == "accept":
                    self.accept(server)
                elif key.data == "unproven":
                    self.prove(key.fileobj)  # type: ignore[arg-type]
                elif self.pair is not None and key.fileobj in (self.pair.up.sock, self.pair.down.sock):
                    try:
                        reason = self.upstream(mask) if key.data == "up" else self.downstream(mask)
                    except OSError as exc:
                        reason = f"{'primary connection' if key.data == 'up' else 'secondary QEMU chardev'}: {exc}"
                    if not reason and self.pair.closing and not self.pair.down.pending:
                        reason = self.pair.closing
                    if reason:
                        self.drop(reason)
                    else:
                        self.watch()
            if self.gate is not None:
                for late in self.gate.expired(time.monotonic()):
                    self.refuse(late, f"no token within {TOKEN_WAIT_S:g} s")
        if self.pair is not None:
            self.drop("recorder stopped")
        self.pcap.close()
        self.event("stopped", frames=self.frames_seen, backpressure=self.pressure.reports,
                   max_queued_bytes=self.pressure.max_queued)
        self.event.close()

    def accept(self, server: socket.socket) -> None:
        conn, peer = server.accept()
        if self.gate is None:
            self.admit(conn, f"{peer[0]}:{peer[1]}")
            return
        conn.setblocking(False)
        self.sel.register(conn, selectors.EVENT_READ, "unproven")
        for pushed in self.gate.enter(conn, f"{peer[0]}:{peer[1]}", time.monotonic()):
            self.refuse(pushed, "too many connections owing their token")

    def prove(self, conn: socket.socket) -> None:
        """A connection owing its token has sent something: admitted, refused, or still owing."""
        assert self.gate is not None
        peer = self.gate.waiting[conn].peer
        admitted, why = self.gate.read(conn)
        if admitted:
            self.sel.unregister(conn)
            self.admit(conn, peer)
        elif why:
            self.refuse(Unproven(conn, peer, 0.0), why)

    def refuse(self, unproven: Unproven, why: str) -> None:
        """Closed, and said so; what it sent is never written anywhere."""
        if unproven.sock in self.sel.get_map():
            self.sel.unregister(unproven.sock)
        unproven.sock.close()
        self.event("refused", peer=unproven.peer, reason=why)

    def admit(self, conn: socket.socket, peer: str) -> None:
        """``conn`` is the primary's stream from now on (a new one replaces the last: the filter's
        chardev reconnects after a break)."""
        if self.pair is not None:
            self.drop("replaced by a new connection")
        try:
            forward = socket.create_connection(address(self.args.forward), timeout=5)
        except OSError as exc:
            self.event("forward-failed", error=str(exc))
            conn.close()
            return
        forward.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pair = Pair(conn, forward, vnet_hdr=not self.args.no_vnet_hdr)
        self.event("connected", peer=peer, forward=self.args.forward)
        self.watch()

    def upstream(self, mask: int) -> str:
        """The primary's side: stamp what arrives, hand it to the destination's outbox. A reason to
        drop the pair, or ""."""
        assert self.pair is not None
        if mask & selectors.EVENT_WRITE:
            self.pair.up.flush()
        if not mask & selectors.EVENT_READ:
            return ""
        data = self.pair.up.sock.recv(65536)
        now = time.time()  # the arrival time, whatever the destination does with the bytes
        if not data:
            self.pair.closing = "primary closed the stream"
            return ""
        frames = self.pair.parser.feed(data)
        for frame in frames:
            self.pcap.write(now, frame)
        self.frames_seen += len(frames)
        if self.pair.parser.error:
            self.event("parse-error", error=self.pair.parser.error)
            return "corrupt stream"
        self.pair.down.push(data)
        queued = len(self.pair.down.pending)
        self.pressure.observe(queued)
        if queued > self.args.max_queued_bytes:
            # Bounded memory: a destination this far behind has stopped; the stream is broken.
            return f"the secondary QEMU has not taken {queued} bytes queued for it"
        return ""

    def downstream(self, mask: int) -> str:
        """The destination's side: send what waits for it; what it sends goes back to the primary."""
        assert self.pair is not None
        if mask & selectors.EVENT_WRITE:
            self.pair.down.flush()
            self.pressure.observe(len(self.pair.down.pending))
        if not mask & selectors.EVENT_READ:
            return ""
        data = self.pair.down.sock.recv(65536)
        if not data:
            return "secondary QEMU closed its chardev"
        if not self.pair.closing:
            self.pair.up.push(data)
        return ""

    def watch(self) -> None:
        assert self.pair is not None
        for sock, mask in self.pair.masks().items():
            role = "up" if sock is self.pair.up.sock else "down"
            key = self.sel.get_map().get(sock)
            if key is None and mask:
                self.sel.register(sock, mask, role)
            elif key is not None and not mask:
                self.sel.unregister(sock)
            elif key is not None and key.events != mask:
                self.sel.modify(sock, mask, role)

    def drop(self, reason: str) -> None:
        assert self.pair is not None
        for sock in (self.pair.up.sock, self.pair.down.sock):
            if sock in self.sel.get_map():
                self.sel.unregister(sock)
        self.pair.close()
        self.pair = None
        self.event("disconnected", reason=reason, frames=self.frames_seen)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listen", required=True, help="HOST:PORT the primary's outdev connects to")
    ap.add_argument("--forward", required=True, help="HOST:PORT of the secondary QEMU's indev server")
    ap.add_argument("--pcap", required=True)
    ap.add_argument("--events", required=True, help="JSON lines: connections, errors, back-pressure")
    ap.add_argument("--no-vnet-hdr", action="store_true")
    ap.add_argument("--token-file", help="a file holding the token (hex) a connection must present first")
    ap.add_argument("--max-queued-bytes", type=int, default=MAX_QUEUED,
                    help="bytes waiting for the destination before the stream counts as broken")
    args = ap.parse_args()
    stop = StopFlag()
    Recorder(args).run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

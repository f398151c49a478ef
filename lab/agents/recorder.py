"""Stream recorder: sits between the primary's netfilter outdev and the secondary QEMU's indev.

It accepts the primary's chardev connection, forwards every byte to the secondary QEMU's chardev
server, and records each mirrored frame with its arrival time in a pcap file. The destination QEMU
releases injected frames only when it starts running, so this stream is where arrival times are true.

Stream format (net/filter-mirror.c, vnet_hdr_support=on): a 4-byte length, a 4-byte vnet header
length, then that many bytes: the vnet header followed by the Ethernet frame. All big-endian.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import struct
import time
from typing import BinaryIO

from lab.agents import StopFlag

MAX_PACKET = 256 * 1024


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


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listen", required=True, help="HOST:PORT the primary's outdev connects to")
    ap.add_argument("--forward", required=True, help="HOST:PORT of the secondary QEMU's indev server")
    ap.add_argument("--pcap", required=True)
    ap.add_argument("--events", required=True, help="JSON lines: connections, errors")
    ap.add_argument("--no-vnet-hdr", action="store_true")
    args = ap.parse_args()

    stop = StopFlag()
    events = open(args.events, "a")

    def event(kind: str, **data: object) -> None:
        events.write(json.dumps({"time": time.time(), "event": kind, **data}) + "\n")
        events.flush()

    pcap = PcapWriter(args.pcap)
    server = socket.create_server(_addr(args.listen), reuse_port=False)
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ, "accept")
    event("listening", address=args.listen)
    upstream: socket.socket | None = None
    downstream: socket.socket | None = None
    parser = StreamParser(vnet_hdr=not args.no_vnet_hdr)
    frames_seen = 0

    def drop_pair(reason: str) -> None:
        nonlocal upstream, downstream
        for s in (upstream, downstream):
            if s is not None:
                sel.unregister(s)
                s.close()
        upstream = downstream = None
        event("disconnected", reason=reason, frames=frames_seen)

    while not stop.set:
        for key, _mask in sel.select(timeout=0.2):
            if key.data == "accept":
                conn, peer = server.accept()
                if upstream is not None:
                    drop_pair("replaced by a new connection")
                try:
                    downstream = socket.create_connection(_addr(args.forward), timeout=5)
                except OSError as exc:
                    event("forward-failed", error=str(exc))
                    conn.close()
                    continue
                downstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                upstream = conn
                parser = StreamParser(vnet_hdr=not args.no_vnet_hdr)
                sel.register(upstream, selectors.EVENT_READ, "up")
                sel.register(downstream, selectors.EVENT_READ, "down")
                event("connected", peer=f"{peer[0]}:{peer[1]}", forward=args.forward)
            elif key.data == "up":
                assert upstream is not None and downstream is not None
                data = upstream.recv(65536)
                now = time.time()
                if not data:
                    drop_pair("primary closed the stream")
                    continue
                downstream.sendall(data)
                for frame in parser.feed(data):
                    pcap.write(now, frame)
                    frames_seen += 1
                if parser.error:
                    event("parse-error", error=parser.error)
                    drop_pair("corrupt stream")
            elif key.data == "down":
                assert upstream is not None and downstream is not None
                data = downstream.recv(65536)
                if not data:
                    drop_pair("secondary QEMU closed its chardev")
                    continue
                upstream.sendall(data)
    if upstream is not None:
        drop_pair("recorder stopped")
    pcap.close()
    event("stopped", frames=frames_seen)
    events.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

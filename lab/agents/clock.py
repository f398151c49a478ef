"""Clock probe: how the guest's clock stands against this host's, measured over the tap.

Sends probes (lab.agents.frames, magic NFCQ) to the guest's MAC a few milliseconds apart; the guest's
receiver answers each at once with its kernel receive time of the probe. Replies are stamped by this
host's kernel as they come off the tap. The sample with the shortest round trip bounds the offset
best: the guest stamped the probe somewhere between its send and its reply's arrival, so the midpoint
is off by at most half that round trip. Writes every sample and the best one as JSON; no reply at
all (a filter that redirects everything away from the guest) is a record with no samples, not an error.
"""

from __future__ import annotations

import argparse
import random
import select
import socket
import struct
import time
from collections.abc import Iterable
from typing import NamedTuple

from lab.agents import StopFlag, frames, write_record

# Not every Python names it; the value is Linux's on every architecture the lab runs on.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")


class Sample(NamedTuple):
    host_send_ns: int
    guest_rx_ns: int
    host_recv_ns: int

    @property
    def rtt_ns(self) -> int:
        return self.host_recv_ns - self.host_send_ns

    @property
    def offset_ns(self) -> int:
        """Host time minus guest time, NTP-style (integers: float seconds would lose the nanoseconds)."""
        return (self.host_send_ns + self.host_recv_ns) // 2 - self.guest_rx_ns


def best(samples: Iterable[Sample]) -> Sample | None:
    """The sample with the shortest round trip: the tightest bound on the offset."""
    return min(samples, key=lambda s: s.rtt_ns, default=None)


def kernel_time_ns(ancdata: list[tuple[int, int, bytes]]) -> int:
    """The kernel's receive stamp of a frame, or now when it gave none."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return int(sec) * 1_000_000_000 + int(nsec)
    return time.time_ns()


def collect(sock: socket.socket, sent: dict[int, int], samples: dict[int, Sample], until: float) -> None:
    """Takes replies to the probes in ``sent`` (id -> send ns) until the monotonic time ``until``."""
    while len(samples) < len(sent):
        left = until - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            return
        data, ancdata, _flags, _addr = sock.recvmsg(2048, socket.CMSG_SPACE(_TIMESPEC.size))
        received = kernel_time_ns(ancdata)
        reply = frames.parse_reply(data)
        # Our own probes come back on this socket as outgoing frames; parse_reply drops them.
        if reply is None or sent.get(reply.probe_id) != reply.host_send_ns or reply.probe_id in samples:
            continue
        samples[reply.probe_id] = Sample(reply.host_send_ns, reply.guest_rx_ns, received)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ifname", required=True)
    ap.add_argument("--dst", required=True, help="the guest's MAC")
    ap.add_argument("--record", required=True, help="JSON record written at the end")
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.005, help="seconds between probes")
    ap.add_argument("--wait", type=float, default=0.5, help="seconds to wait for replies after the last probe")
    args = ap.parse_args()

    stop = StopFlag()
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(frames.ETHERTYPE))
    sock.bind((args.ifname, frames.ETHERTYPE))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    dst, src = frames.mac_bytes(args.dst), frames.mac_bytes(frames.PROBE_MAC)
    # A random base: a late reply to an earlier measurement cannot pass for one of these.
    base = random.SystemRandom().getrandbits(31)
    sent: dict[int, int] = {}
    samples: dict[int, Sample] = {}
    start = time.monotonic()
    for i in range(args.count):
        if stop.set:
            break
        probe_id = base + i
        send_ns = time.time_ns()
        sock.send(frames.build_probe(dst, src, probe_id, send_ns))
        sent[probe_id] = send_ns
        collect(sock, sent, samples, start + (i + 1) * args.interval)
    if not stop.set:
        collect(sock, sent, samples, time.monotonic() + args.wait)
    sock.close()

    chosen = best(samples.values())
    record = {"ifname": args.ifname, "dst": args.dst, "probes": len(sent), "answered": len(samples),
              "samples": [list(s) for s in samples.values()],
              "offset_ns": chosen.offset_ns if chosen else None, "rtt_ns": chosen.rtt_ns if chosen else None}
    write_record(args.record, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The lab's L2 test frames: ethertype 0x88B5 (local experimental), a magic, a run id, a sequence number.

Shared by the generator (in the primary host) and the analysis (in the lab), so both agree on the
format by construction. The clock probes to the guest's receiver (images/guest/receiver.c, which
reads the same layout in C) use the same ethertype with magics of their own.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

ETHERTYPE = 0x88B5
MAGIC = b"NFCL"
PROBE_MAGIC = b"NFCQ"
REPLY_MAGIC = b"NFCA"
SOURCE_MAC = "02:6e:66:63:6c:01"  # locally administered: never a real NIC's address
PROBE_MAC = "02:6e:66:63:6c:02"  # the clock probe's source, where the guest's replies go
_HEADER = struct.Struct("!6s6sH4sIQ")
_PROBE = _HEADER  # dst src type magic, probe id, the host's send time (ns)
_REPLY = struct.Struct("!6s6sH4sIQQ")  # ... and the guest's kernel receive time of the probe (ns)
MIN_FRAME = 60  # Ethernet minimum without FCS


class Tag(NamedTuple):
    run_id: int
    seq: int


class Probe(NamedTuple):
    probe_id: int
    host_send_ns: int


class Reply(NamedTuple):
    probe_id: int
    host_send_ns: int
    guest_rx_ns: int


def mac_bytes(mac: str) -> bytes:
    return bytes(int(part, 16) for part in mac.split(":"))


def build(dst: bytes, src: bytes, run_id: int, seq: int) -> bytes:
    frame = _HEADER.pack(dst, src, ETHERTYPE, MAGIC, run_id, seq)
    return frame.ljust(MIN_FRAME, b"\0")


def parse(frame: bytes) -> Tag | None:
    """The frame's tag, or None when it is not one of the lab's test frames."""
    if len(frame) < _HEADER.size:
        return None
    _dst, _src, ethertype, magic, run_id, seq = _HEADER.unpack_from(frame)
    if ethertype != ETHERTYPE or magic != MAGIC:
        return None
    return Tag(run_id, seq)


def build_probe(dst: bytes, src: bytes, probe_id: int, host_send_ns: int) -> bytes:
    return _PROBE.pack(dst, src, ETHERTYPE, PROBE_MAGIC, probe_id, host_send_ns).ljust(MIN_FRAME, b"\0")


def parse_probe(frame: bytes) -> Probe | None:
    if len(frame) < _PROBE.size:
        return None
    _dst, _src, ethertype, magic, probe_id, send_ns = _PROBE.unpack_from(frame)
    if ethertype != ETHERTYPE or magic != PROBE_MAGIC:
        return None
    return Probe(probe_id, send_ns)


def build_reply(dst: bytes, src: bytes, probe_id: int, host_send_ns: int, guest_rx_ns: int) -> bytes:
    """What the guest's receiver answers to a probe (the receiver builds it in C; this is its model)."""
    frame = _REPLY.pack(dst, src, ETHERTYPE, REPLY_MAGIC, probe_id, host_send_ns, guest_rx_ns)
    return frame.ljust(MIN_FRAME, b"\0")


def parse_reply(frame: bytes) -> Reply | None:
    if len(frame) < _REPLY.size:
        return None
    _dst, _src, ethertype, magic, probe_id, send_ns, guest_ns = _REPLY.unpack_from(frame)
    if ethertype != ETHERTYPE or magic != REPLY_MAGIC:
        return None
    return Reply(probe_id, send_ns, guest_ns)

"""The lab's L2 test frames: ethertype 0x88B5 (local experimental), a magic, a run id, a sequence number.

Shared by the generator (in the primary host) and the analysis (in the lab), so both agree on the
format by construction.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

ETHERTYPE = 0x88B5
MAGIC = b"NFCL"
SOURCE_MAC = "02:6e:66:63:6c:01"  # locally administered: never a real NIC's address
_HEADER = struct.Struct("!6s6sH4sIQ")
MIN_FRAME = 60  # Ethernet minimum without FCS


class Tag(NamedTuple):
    run_id: int
    seq: int


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

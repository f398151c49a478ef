"""Reading the classic pcap files the lab's captures write: tcpdump's (``-w``, ``-U``) on a tap and
the recorder's (lab.agents.recorder) on the mirror stream. Each is a 24-byte file header, then per
frame a 16-byte record header and the frame's bytes.

The byte order and the timestamps' resolution come from the magic number: tcpdump writes its
machine's order, in microseconds unless asked for nanoseconds.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lab.errors import ScenarioError

FILE_HEADER = 24
RECORD_HEADER = 16
ETHERNET = 1  # LINKTYPE_ETHERNET
# Magic number as read in little-endian order -> (byte order, fractions of a second per second).
MAGICS = {0xA1B2C3D4: ("<", 1_000_000), 0xD4C3B2A1: (">", 1_000_000),
          0xA1B23C4D: ("<", 1_000_000_000), 0x4D3CB2A1: (">", 1_000_000_000)}


@dataclass(frozen=True)
class Record:
    time: float  # seconds since the epoch, as the capture stamped the frame
    data: bytes  # the frame as captured (at most the file's snap length)


def records(path: Path) -> Iterator[Record]:
    """The frames of an Ethernet pcap in file order. A file cut short (a capture stopped while it
    wrote) ends at its last whole record; a file too short for its header holds none."""
    with path.open("rb") as f:
        header = f.read(FILE_HEADER)
        if len(header) < FILE_HEADER:
            return
        (magic,) = struct.unpack_from("<I", header)
        if magic not in MAGICS:
            raise ScenarioError(f"{path}: not a classic pcap file (magic {magic:#010x}); the lab's captures write one")
        order, per_second = MAGICS[magic]
        link = struct.unpack_from(f"{order}I", header, 20)[0] & 0x0FFFFFFF  # the top bits carry FCS flags
        if link != ETHERNET:
            raise ScenarioError(f"{path}: link type {link}, where the lab captures Ethernet (1)")
        record = struct.Struct(f"{order}IIII")
        while len(head := f.read(RECORD_HEADER)) == RECORD_HEADER:
            sec, frac, captured, _ = record.unpack(head)
            data = f.read(captured)
            if len(data) < captured:
                return
            yield Record(sec + frac / per_second, data)

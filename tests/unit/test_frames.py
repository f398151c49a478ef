"""lab.agents.frames: the lab's tagged L2 test frames."""

from __future__ import annotations

import struct

import pytest

from lab.agents import frames

DST = bytes.fromhex("525400123456")
SRC = frames.mac_bytes(frames.SOURCE_MAC)


def test_mac_bytes_converts_colon_notation() -> None:
    assert frames.mac_bytes("02:6e:66:63:6c:01") == bytes([0x02, 0x6E, 0x66, 0x63, 0x6C, 0x01])


@pytest.mark.parametrize(("run_id", "seq"), [(0, 0), (7, 42), (2**32 - 1, 2**64 - 1)])
def test_build_then_parse_returns_the_tag(run_id: int, seq: int) -> None:
    assert frames.parse(frames.build(DST, SRC, run_id, seq)) == frames.Tag(run_id, seq)


def test_build_pads_to_the_ethernet_minimum() -> None:
    frame = frames.build(DST, SRC, 1, 1)
    assert len(frame) == frames.MIN_FRAME == 60
    assert frame[30:] == bytes(30)


def test_build_lays_out_an_ethernet_header() -> None:
    frame = frames.build(DST, SRC, 3, 9)
    assert frame[0:6] == DST
    assert frame[6:12] == SRC
    assert frame[12:14] == b"\x88\xb5"
    assert frame[14:18] == b"NFCL"
    assert frame[18:22] == struct.pack("!I", 3)
    assert frame[22:30] == struct.pack("!Q", 9)


def test_parse_accepts_a_frame_cut_to_the_header() -> None:
    assert frames.parse(frames.build(DST, SRC, 5, 6)[:30]) == frames.Tag(5, 6)


def test_parse_rejects_a_frame_shorter_than_the_header() -> None:
    assert frames.parse(frames.build(DST, SRC, 5, 6)[:29]) is None


def test_parse_rejects_an_empty_frame() -> None:
    assert frames.parse(b"") is None


def test_parse_rejects_another_ethertype() -> None:
    frame = bytearray(frames.build(DST, SRC, 1, 1))
    frame[12:14] = b"\x08\x00"  # IPv4
    assert frames.parse(bytes(frame)) is None


def test_parse_rejects_a_bad_magic() -> None:
    frame = bytearray(frames.build(DST, SRC, 1, 1))
    frame[14:18] = b"NFCX"
    assert frames.parse(bytes(frame)) is None

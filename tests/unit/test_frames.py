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


GUEST = bytes.fromhex("525400123456")
PROBER = frames.mac_bytes(frames.PROBE_MAC)


@pytest.mark.parametrize(("probe_id", "send_ns"), [(0, 0), (5, 1_700_000_000_123_456_789), (2**32 - 1, 2**64 - 1)])
def test_probe_build_then_parse(probe_id: int, send_ns: int) -> None:
    assert frames.parse_probe(frames.build_probe(GUEST, PROBER, probe_id, send_ns)) == frames.Probe(probe_id, send_ns)


def test_reply_build_then_parse() -> None:
    reply = frames.build_reply(PROBER, GUEST, 7, 1_700_000_000_000_000_001, 1_699_999_990_000_000_002)
    assert frames.parse_reply(reply) == frames.Reply(7, 1_700_000_000_000_000_001, 1_699_999_990_000_000_002)


def test_probe_layout_is_the_one_the_guest_reads() -> None:
    # images/guest/receiver.c reads the probe id and send time at 18 and 22 and echoes them.
    probe = frames.build_probe(GUEST, PROBER, 3, 9)
    assert len(probe) == frames.MIN_FRAME
    assert probe[:6] == GUEST and probe[6:12] == PROBER
    assert probe[12:14] == b"\x88\xb5"
    assert probe[14:18] == b"NFCQ"
    assert probe[18:22] == struct.pack("!I", 3)
    assert probe[22:30] == struct.pack("!Q", 9)


def test_reply_layout_is_the_one_the_guest_writes() -> None:
    reply = frames.build_reply(PROBER, GUEST, 3, 9, 11)
    assert len(reply) == frames.MIN_FRAME
    assert reply[:6] == PROBER and reply[6:12] == GUEST
    assert reply[14:18] == b"NFCA"
    assert reply[18:30] == struct.pack("!IQ", 3, 9)
    assert reply[30:38] == struct.pack("!Q", 11)
    assert reply[38:] == bytes(22)


def test_the_three_kinds_are_told_apart() -> None:
    test_frame = frames.build(GUEST, PROBER, 1, 2)
    probe = frames.build_probe(GUEST, PROBER, 1, 2)
    reply = frames.build_reply(PROBER, GUEST, 1, 2, 3)
    assert frames.parse(probe) is None and frames.parse(reply) is None
    assert frames.parse_probe(test_frame) is None and frames.parse_probe(reply) is None
    assert frames.parse_reply(test_frame) is None and frames.parse_reply(probe) is None


def test_short_or_foreign_probes_and_replies_are_rejected() -> None:
    assert frames.parse_probe(frames.build_probe(GUEST, PROBER, 1, 2)[:29]) is None
    assert frames.parse_reply(frames.build_reply(PROBER, GUEST, 1, 2, 3)[:37]) is None
    ipv4 = bytearray(frames.build_reply(PROBER, GUEST, 1, 2, 3))
    ipv4[12:14] = b"\x08\x00"
    assert frames.parse_reply(bytes(ipv4)) is None

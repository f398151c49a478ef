"""lab.agents.recorder: the filter-mirror stream parser and the pcap writer."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from lab.agents import frames
from lab.agents.recorder import MAX_PACKET, PcapWriter, StreamParser
from lab.analysis import Frame, read_pcap

DST = bytes.fromhex("525400123456")
SRC = frames.mac_bytes(frames.SOURCE_MAC)
VNET_HDR = bytes(range(1, 13))  # a 12-byte virtio_net_hdr_mrg_rxbuf, non-zero so leaks show
T0 = 1_700_000_000.0


def record(frame: bytes, vnet: bytes = VNET_HDR) -> bytes:
    """One record as filter-mirror writes it with vnet_hdr_support=on."""
    return struct.pack("!II", len(vnet) + len(frame), len(vnet)) + vnet + frame


def plain_record(frame: bytes) -> bytes:
    """One record as filter-mirror writes it with vnet_hdr_support=off."""
    return struct.pack("!I", len(frame)) + frame


FRAMES = [frames.build(DST, SRC, 1, seq) for seq in range(3)] + [b"\xff" * 1514]
STREAM = b"".join(record(f) for f in FRAMES)


def feed_in_chunks(parser: StreamParser, data: bytes, size: int) -> list[bytes]:
    out: list[bytes] = []
    for i in range(0, len(data), size):
        out += parser.feed(data[i:i + size])
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 61, 100, len(STREAM)])
def test_parser_yields_exactly_the_frames_whatever_the_chunking(size: int) -> None:
    assert feed_in_chunks(StreamParser(vnet_hdr=True), STREAM, size) == FRAMES


def test_parser_handles_a_split_at_every_position() -> None:
    data = record(FRAMES[0]) + record(FRAMES[1])
    for cut in range(len(data) + 1):
        parser = StreamParser(vnet_hdr=True)
        assert parser.feed(data[:cut]) + parser.feed(data[cut:]) == FRAMES[:2], f"cut at {cut}"


def test_parser_keeps_a_partial_record_until_it_completes() -> None:
    parser = StreamParser(vnet_hdr=True)
    data = record(FRAMES[0])
    assert parser.feed(data[:-1]) == []
    assert parser.feed(data[-1:]) == [FRAMES[0]]


def test_parser_returns_several_records_from_one_chunk_in_order() -> None:
    assert StreamParser(vnet_hdr=True).feed(STREAM) == FRAMES


def test_parser_keeps_the_start_of_the_next_record_after_a_complete_one() -> None:
    parser = StreamParser(vnet_hdr=True)
    second = record(FRAMES[1])
    assert parser.feed(record(FRAMES[0]) + second[:6]) == [FRAMES[0]]
    assert parser.feed(second[6:]) == [FRAMES[1]]


def test_parser_strips_a_vnet_header_of_any_length() -> None:
    assert StreamParser(vnet_hdr=True).feed(record(FRAMES[0], vnet=b"\xaa" * 10)) == [FRAMES[0]]


def test_parser_accepts_a_zero_length_vnet_header() -> None:
    assert StreamParser(vnet_hdr=True).feed(record(FRAMES[0], vnet=b"")) == [FRAMES[0]]


def test_parser_without_vnet_header_reads_length_then_frame() -> None:
    data = b"".join(plain_record(f) for f in FRAMES)
    assert feed_in_chunks(StreamParser(vnet_hdr=False), data, 3) == FRAMES


def test_parser_rejects_a_length_above_the_maximum_as_soon_as_the_header_arrives() -> None:
    parser = StreamParser(vnet_hdr=True)
    assert parser.feed(struct.pack("!II", MAX_PACKET + 1, 12)) == []
    assert "corrupt stream" in parser.error


def test_parser_accepts_a_record_of_exactly_the_maximum_length() -> None:
    payload = b"\x01" * (MAX_PACKET - 12)
    assert StreamParser(vnet_hdr=True).feed(record(payload)) == [payload]


def test_parser_rejects_a_vnet_header_longer_than_the_record() -> None:
    parser = StreamParser(vnet_hdr=True)
    assert parser.feed(struct.pack("!II", 12, 13) + bytes(12)) == []
    assert "vnet header length 13" in parser.error


def test_parser_without_vnet_header_rejects_a_corrupt_length() -> None:
    parser = StreamParser(vnet_hdr=False)
    assert parser.feed(b"\xff\xff\xff\xff") == []
    assert f"length {0xFFFFFFFF}" in parser.error


def test_parser_hands_over_the_good_frames_before_a_corruption() -> None:
    parser = StreamParser(vnet_hdr=True)
    assert parser.feed(record(FRAMES[0]) + struct.pack("!II", MAX_PACKET + 1, 12)) == [FRAMES[0]]
    assert "corrupt stream" in parser.error


def write_pcap(path: Path, packets: list[tuple[float, bytes]]) -> None:
    writer = PcapWriter(str(path))
    for ts, frame in packets:
        writer.write(ts, frame)
    writer.close()


def usec(t: float) -> int:
    return round(t * 1e6)


def test_pcap_round_trip_keeps_seqs_and_microsecond_times(tmp_path: Path) -> None:
    times = [T0, T0 + 0.000001, T0 + 0.123456, T0 + 1.5, T0 + 2.999999]
    path = tmp_path / "stream.pcap"
    write_pcap(path, [(t, frames.build(DST, SRC, 7, seq)) for seq, t in enumerate(times)])
    got = read_pcap(path, run_id=7)
    assert [f.seq for f in got] == [0, 1, 2, 3, 4]
    assert [usec(f.time) for f in got] == [usec(t) for t in times]


def test_pcap_rounds_up_into_the_next_second(tmp_path: Path) -> None:
    path = tmp_path / "stream.pcap"
    write_pcap(path, [(T0 + 0.9999997, frames.build(DST, SRC, 7, 0))])
    sec, micro = struct.unpack_from("<II", path.read_bytes(), 24)  # the first record's header
    assert (sec, micro) == (int(T0) + 1, 0)
    assert [usec(f.time) for f in read_pcap(path, run_id=7)] == [usec(T0 + 1.0)]


def test_pcap_header_is_classic_microsecond_ethernet(tmp_path: Path) -> None:
    path = tmp_path / "stream.pcap"
    PcapWriter(str(path)).close()
    magic, major, minor, _zone, _sigfigs, _snaplen, linktype = struct.unpack("<IHHiIII", path.read_bytes())
    assert (magic, major, minor, linktype) == (0xA1B2C3D4, 2, 4, 1)


def test_read_pcap_ignores_other_runs_and_other_ethertypes(tmp_path: Path) -> None:
    ipv4 = bytearray(frames.build(DST, SRC, 7, 99))
    ipv4[12:14] = b"\x08\x00"
    path = tmp_path / "stream.pcap"
    write_pcap(path, [
        (T0, frames.build(DST, SRC, 7, 0)),
        (T0 + 0.001, frames.build(DST, SRC, 8, 1)),
        (T0 + 0.002, bytes(ipv4)),
        (T0 + 0.003, frames.build(DST, SRC, 7, 2)),
    ])
    assert [f.seq for f in read_pcap(path, run_id=7)] == [0, 2]


def test_read_pcap_keeps_capture_order(tmp_path: Path) -> None:
    path = tmp_path / "stream.pcap"
    write_pcap(path, [(T0 + i * 0.001, frames.build(DST, SRC, 7, seq)) for i, seq in enumerate([2, 0, 1])])
    assert [f.seq for f in read_pcap(path, run_id=7)] == [2, 0, 1]


def test_read_pcap_of_a_header_only_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "stream.pcap"
    PcapWriter(str(path)).close()
    assert path.stat().st_size == 24
    assert read_pcap(path, run_id=7) == []


def test_read_pcap_of_a_missing_or_truncated_file_is_empty(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pcap"
    truncated.write_bytes(b"\xd4\xc3\xb2\xa1")
    assert read_pcap(tmp_path / "missing.pcap", run_id=7) == []
    assert read_pcap(truncated, run_id=7) == []


def test_read_pcap_returns_analysis_frames(tmp_path: Path) -> None:
    path = tmp_path / "stream.pcap"
    write_pcap(path, [(T0 + 0.25, frames.build(DST, SRC, 7, 3))])
    assert read_pcap(path, run_id=7) == [Frame(3, T0 + 0.25)]


def test_pcap_opens_in_scapy_as_ethernet(tmp_path: Path) -> None:
    from scapy.layers.l2 import Ether
    from scapy.utils import rdpcap

    path = tmp_path / "stream.pcap"
    frame = frames.build(DST, SRC, 7, 0)
    write_pcap(path, [(T0 + 0.5, frame)])
    packets = rdpcap(str(path))
    assert len(packets) == 1
    pkt = packets[0]
    assert isinstance(pkt, Ether)
    assert pkt.src == frames.SOURCE_MAC
    assert pkt.dst == "52:54:00:12:34:56"
    assert pkt.type == frames.ETHERTYPE
    assert bytes(pkt) == frame
    assert float(pkt.time) == pytest.approx(T0 + 0.5, abs=1e-6)

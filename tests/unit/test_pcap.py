"""The pcap reader on files tcpdump wrote (tests/fixtures/pcap: three of the lab's frames sent on a
loopback in the runtime image, captured with ``tcpdump -U -w``, in microseconds and in nanoseconds)
and on the ways a capture file can differ or break."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from lab import pcap
from lab.agents import frames
from lab.errors import ScenarioError
from lab.results.analysis import Frame, read_pcap

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pcap"
DST = frames.mac_bytes("52:54:00:12:34:56")
SRC = frames.mac_bytes(frames.SOURCE_MAC)


@pytest.mark.parametrize("name", ["tcpdump-micro.pcap", "tcpdump-nano.pcap"])
def test_tcpdumps_files_give_the_frames_in_order(name: str) -> None:
    got = read_pcap(FIXTURES / name, run_id=7)
    assert [f.seq for f in got] == [0, 1, 2]
    gaps = [b.time - a.time for a, b in zip(got, got[1:], strict=False)]
    # Sent 50 ms apart: a resolution read wrongly (nano as micro) would put them 50 s or 50 us apart.
    assert all(0.01 < gap < 1.0 for gap in gaps), gaps
    assert 1.7e9 < got[0].time < 2.0e9, "seconds since the epoch"


def test_the_nanosecond_file_keeps_its_nanoseconds() -> None:
    raw = (FIXTURES / "tcpdump-nano.pcap").read_bytes()
    sec, nsec = struct.unpack_from("<II", raw, pcap.FILE_HEADER)
    [first, *_] = pcap.records(FIXTURES / "tcpdump-nano.pcap")
    assert first.time == pytest.approx(sec + nsec / 1e9, abs=1e-9)


def pcap_file(path: Path, order: str, magic: int, link: int, records: list[tuple[int, int, bytes]]) -> Path:
    body = b"".join(struct.pack(f"{order}IIII", sec, frac, len(data), len(data)) + data for sec, frac, data in records)
    path.write_bytes(struct.pack(f"{order}IHHiIII", magic, 2, 4, 0, 0, 65535, link) + body)
    return path


def test_a_big_endian_file_reads_the_same(tmp_path: Path) -> None:
    path = pcap_file(tmp_path / "be.pcap", ">", 0xA1B2C3D4, 1, [(1_800_000_000, 250_000, frames.build(DST, SRC, 7, 4))])
    assert read_pcap(path, run_id=7) == [Frame(4, 1_800_000_000.25)]


def test_a_file_cut_in_a_record_ends_at_the_last_whole_one(tmp_path: Path) -> None:
    whole = (FIXTURES / "tcpdump-micro.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole[:-10])
    assert [f.seq for f in read_pcap(cut, run_id=7)] == [0, 1]
    cut.write_bytes(whole[:pcap.FILE_HEADER + 7])  # in the first record's header
    assert read_pcap(cut, run_id=7) == []


def test_no_file_or_a_header_cut_short_holds_no_frame(tmp_path: Path) -> None:
    assert read_pcap(tmp_path / "missing.pcap", run_id=7) == []
    (tmp_path / "short.pcap").write_bytes(b"\xd4\xc3\xb2\xa1")
    assert read_pcap(tmp_path / "short.pcap", run_id=7) == []


def test_what_is_not_an_ethernet_pcap_is_refused_by_name(tmp_path: Path) -> None:
    pcapng = tmp_path / "capture.pcapng"
    pcapng.write_bytes(struct.pack("<III", 0x0A0D0D0A, 28, 0x1A2B3C4D) + bytes(16))
    with pytest.raises(ScenarioError, match=r"capture.pcapng: not a classic pcap file \(magic 0x0a0d0d0a\)"):
        read_pcap(pcapng, run_id=7)
    raw_ip = pcap_file(tmp_path / "raw.pcap", "<", 0xA1B2C3D4, 101, [])
    with pytest.raises(ScenarioError, match="link type 101"):
        read_pcap(raw_ip, run_id=7)

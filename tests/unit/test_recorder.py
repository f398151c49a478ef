"""lab.agents.recorder: the filter-mirror stream parser, the pcap writer, and the recorder itself
between real sockets."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.agents import frames
from lab.agents.recorder import MAX_PACKET, PcapWriter, StreamParser
from lab.results.analysis import Frame, read_pcap

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


def test_read_pcap_returns_analysis_frames(tmp_path: Path) -> None:
    path = tmp_path / "stream.pcap"
    write_pcap(path, [(T0 + 0.25, frames.build(DST, SRC, 7, 3))])
    assert read_pcap(path, run_id=7) == [Frame(3, T0 + 0.25)]


def test_pcap_opens_in_scapy_as_ethernet(tmp_path: Path) -> None:
    """The recorder's file as another reader takes it (scapy: for this test only, not the lab's)."""
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


# --- the recorder between real sockets --------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
FRAME_SIZE = 1514
BATCHES, PER_BATCH = 32, 250  # 8000 frames, 12 MB: more than the loopback's socket buffers hold


def wait_for(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def all_or_none(got: list[Frame], count: int) -> list[Frame] | None:
    return got if len(got) == count else None


def events_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def slow_destination() -> Iterator[socket.socket]:
    """A listening socket with a small receive buffer, whose connections nobody reads until a test does."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server
    server.close()


def start_recorder(tmp_path: Path, destination: socket.socket, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lab.agents.recorder", "--listen", f"127.0.0.1:{port}",
                             "--forward", f"127.0.0.1:{destination.getsockname()[1]}",
                             "--pcap", str(tmp_path / "stream.pcap"), "--events", str(tmp_path / "events.jsonl"),
                             *extra],
                            cwd=ROOT)
    wait_for("listening", lambda: any(e["event"] == "listening" for e in events_of(tmp_path / "events.jsonl")))
    return proc, port


def test_a_slow_destination_does_not_delay_the_timestamps(tmp_path: Path, slow_destination: socket.socket) -> None:
    proc, port = start_recorder(tmp_path, slow_destination)
    try:
        primary = socket.create_connection(("127.0.0.1", port), timeout=10)
        destination, _ = slow_destination.accept()
        sent_at: dict[int, float] = {}
        stream = bytearray()
        for batch in range(BATCHES):
            seqs = range(batch * PER_BATCH, (batch + 1) * PER_BATCH)
            data = b"".join(record(frames.build(DST, SRC, 7, seq).ljust(FRAME_SIZE, b"\0")) for seq in seqs)
            now = time.time()
            primary.sendall(data)  # a recorder stuck on the destination stops reading: this blocks, then fails
            sent_at.update(dict.fromkeys(seqs, now))
            stream += data
            time.sleep(0.02)
        got = wait_for("every frame in the pcap",
                       lambda: all_or_none(read_pcap(tmp_path / "stream.pcap", run_id=7), len(sent_at)))
        assert [f.seq for f in got] == sorted(sent_at)
        # Stamped on arrival: the destination has read nothing yet, so a stamp taken when a frame is
        # forwarded would not be in the pcap at all. The margin is only for a loaded machine.
        lateness = max(f.time - sent_at[f.seq] for f in got)
        assert 0 <= lateness < 5.0, f"a frame was stamped {lateness:.2f} s after it was sent"
        pressure = [e for e in events_of(tmp_path / "events.jsonl") if e["event"] == "backpressure"]
        assert pressure and all(e["queued_bytes"] >= 64 * 1024 for e in pressure)

        # The destination reads at last: every byte, in order, once.
        received = bytearray()
        destination.settimeout(10)
        while len(received) < len(stream):
            chunk = destination.recv(1 << 20)
            assert chunk, "the recorder closed the destination before forwarding everything"
            received += chunk
        assert received == stream and proc.poll() is None

        primary.close()
        closed = wait_for("disconnected", lambda: [e for e in events_of(tmp_path / "events.jsonl")
                                                   if e["event"] == "disconnected"])
        assert closed[0]["reason"] == "primary closed the stream" and closed[0]["frames"] == len(sent_at)
        destination.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    stopped = [e for e in events_of(tmp_path / "events.jsonl") if e["event"] == "stopped"]
    assert stopped[0]["backpressure"] == len(pressure) and stopped[0]["max_queued_bytes"] > 0
    assert proc.returncode == 0


def test_what_the_primary_sent_before_closing_still_reaches_the_destination(
        tmp_path: Path, slow_destination: socket.socket) -> None:
    proc, port = start_recorder(tmp_path, slow_destination)
    try:
        primary = socket.create_connection(("127.0.0.1", port), timeout=10)
        destination, _ = slow_destination.accept()
        data = b"".join(record(frames.build(DST, SRC, 7, seq).ljust(FRAME_SIZE, b"\0")) for seq in range(4000))
        primary.sendall(data)
        primary.close()  # while most of it still waits for the destination
        received = bytearray()
        destination.settimeout(10)
        while chunk := destination.recv(1 << 20):
            received += chunk
        assert received == data  # then the recorder closes the destination: the end of the stream
        assert [e["reason"] for e in events_of(tmp_path / "events.jsonl") if e["event"] == "disconnected"] == [
            "primary closed the stream"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_destination_that_takes_nothing_breaks_the_stream_once_the_queue_is_full(
        tmp_path: Path, slow_destination: socket.socket) -> None:
    proc, port = start_recorder(tmp_path, slow_destination, "--max-queued-bytes", str(1 << 20))
    try:
        primary = socket.create_connection(("127.0.0.1", port), timeout=10)
        destination, _ = slow_destination.accept()  # open, never read
        data = b"".join(record(frames.build(DST, SRC, 7, seq).ljust(FRAME_SIZE, b"\0")) for seq in range(8000))
        with contextlib.suppress(OSError):  # the recorder closes the primary's connection
            primary.sendall(data)
        broken = wait_for("disconnected", lambda: [e for e in events_of(tmp_path / "events.jsonl")
                                                   if e["event"] == "disconnected"])
        assert broken[0]["reason"].startswith("the secondary QEMU has not taken ") and proc.poll() is None
        destination.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- a split cell's recorder: only a connection that presents the token -------------------------------------

TOKEN = bytes(range(32))


@pytest.fixture
def destination() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(10)
    yield server
    server.close()


@contextlib.contextmanager
def guarded_recorder(tmp_path: Path, destination: socket.socket) -> Iterator[int]:
    token_file = tmp_path / "stream.token"
    token_file.write_text(TOKEN.hex())
    proc, port = start_recorder(tmp_path, destination, "--token-file", str(token_file))
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def refusals(tmp_path: Path, count: int) -> list[str]:
    found = wait_for(f"{count} refusals", lambda: [e for e in events_of(tmp_path / "events.jsonl")
                                                    if e["event"] == "refused"][count - 1:] and
                     [e["reason"] for e in events_of(tmp_path / "events.jsonl") if e["event"] == "refused"])
    return list(found)


def frame_records(run_id: int, seqs: range) -> bytes:
    return b"".join(record(frames.build(DST, SRC, run_id, seq)) for seq in seqs)


def test_a_connection_that_presents_the_token_is_the_stream(tmp_path: Path, destination: socket.socket) -> None:
    with guarded_recorder(tmp_path, destination) as port:
        primary = socket.create_connection(("127.0.0.1", port), timeout=10)
        primary.sendall(TOKEN + frame_records(7, range(5)))  # the stream right behind the token, in one send
        forwarded, _ = destination.accept()
        got = wait_for("5 frames", lambda: all_or_none(read_pcap(tmp_path / "stream.pcap", run_id=7), 5))
        assert [f.seq for f in got] == list(range(5))
        forwarded.settimeout(10)
        received = bytearray()
        while len(received) < len(frame_records(7, range(5))):
            received += forwarded.recv(65536)
        assert bytes(received) == frame_records(7, range(5))  # the token itself is not passed on
        primary.close()
        forwarded.close()


@pytest.mark.parametrize(("intruder", "reason"), [
    (b"\xff" * 32 + b"more", "wrong token"),
    (TOKEN[:-1] + b"\x00", "wrong token"),
    (b"QEVM\x00\x00\x00\x03", "closed before its token"),  # a migration stream's header, then gone
    (b"", "no token within 2 s"),  # connects and says nothing
], ids=["garbage", "one-byte-off", "short-then-closed", "silent"])
def test_any_other_connection_is_refused_and_writes_nothing(tmp_path: Path, destination: socket.socket,
                                                            intruder: bytes, reason: str) -> None:
    with guarded_recorder(tmp_path, destination) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            # Frames of its own behind what it presents: none may reach the capture.
            sock.sendall(intruder + (frame_records(9, range(3)) if reason == "wrong token" else b""))
            if reason == "closed before its token":
                sock.shutdown(socket.SHUT_WR)
            assert refusals(tmp_path, 1) == [reason]
            assert closed(sock)
        assert read_pcap(tmp_path / "stream.pcap", run_id=9) == []
        assert not [e for e in events_of(tmp_path / "events.jsonl") if e["event"] == "connected"]
        destination.settimeout(0.2)
        with pytest.raises(TimeoutError):
            destination.accept()  # nothing was forwarded to the secondary QEMU either


def test_intruders_neither_disturb_the_stream_nor_keep_the_real_one_out(tmp_path: Path,
                                                                          destination: socket.socket) -> None:
    with guarded_recorder(tmp_path, destination) as port:
        # Before the real one: more silent connections than the recorder waits on at once.
        early = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
        primary = socket.create_connection(("127.0.0.1", port), timeout=10)
        primary.sendall(TOKEN + frame_records(7, range(3)))
        forwarded, _ = destination.accept()
        wait_for("3 frames", lambda: all_or_none(read_pcap(tmp_path / "stream.pcap", run_id=7), 3))
        # While the stream flows: garbage, a wrong token, a silent one.
        late = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        late[0].sendall(b"\x00\x00\x00\x10\x00\x00\x00\x0c" + bytes(16))
        late[1].sendall(b"\xaa" * 32 + frame_records(9, range(3)))
        primary.sendall(frame_records(7, range(3, 6)))
        got = wait_for("6 frames", lambda: all_or_none(read_pcap(tmp_path / "stream.pcap", run_id=7), 6))
        assert [f.seq for f in got] == list(range(6))
        reasons = refusals(tmp_path, 10 + 3)  # every one but the real one
        assert reasons.count("too many connections owing their token") >= 2 and "wrong token" in reasons
        events = [e["event"] for e in events_of(tmp_path / "events.jsonl")]
        assert events.count("connected") == 1 and "disconnected" not in events, events
        assert read_pcap(tmp_path / "stream.pcap", run_id=9) == []
        for sock in (*early, *late, primary, forwarded):
            sock.close()


def test_the_sender_presents_the_token_and_passes_both_ways(tmp_path: Path, destination: socket.socket) -> None:
    with guarded_recorder(tmp_path, destination) as port:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            sender_port = probe.getsockname()[1]
        sender = subprocess.Popen([sys.executable, "-m", "lab.agents.sender", "--listen", f"127.0.0.1:{sender_port}",
                                   "--to", f"127.0.0.1:{port}", "--token-file", str(tmp_path / "stream.token"),
                                   "--events", str(tmp_path / "sender.jsonl")], cwd=ROOT)
        try:
            wait_for("the sender", lambda: events_of(tmp_path / "sender.jsonl"))
            filter_side = socket.create_connection(("127.0.0.1", sender_port), timeout=10)
            filter_side.sendall(frame_records(7, range(4)))
            forwarded, _ = destination.accept()
            got = wait_for("4 frames", lambda: all_or_none(read_pcap(tmp_path / "stream.pcap", run_id=7), 4))
            assert [f.seq for f in got] == list(range(4))
            forwarded.sendall(b"back")  # what the secondary QEMU sends reaches the filter's chardev
            assert filter_side.recv(4) == b"back"
            forwarded.close()  # the recorder then drops the pair; the sender closes the chardev's end
            assert closed(filter_side)
            filter_side.close()
            assert not refusals_of(tmp_path)
        finally:
            sender.terminate()
            sender.wait(timeout=10)
        assert sender.returncode == 0


def closed(sock: socket.socket) -> bool:
    """The far end closed: an orderly end, or a reset (it closed with bytes of ours unread)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def refusals_of(tmp_path: Path) -> list[dict[str, Any]]:
    return [e for e in events_of(tmp_path / "events.jsonl") if e["event"] == "refused"]

"""The secondary's capture deciding between a verdict and an error, with the real stream recorder
running on this machine (a FolderHost) between a sender and a receiver on loopback."""

from __future__ import annotations

import json
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.agents import frames
from lab.agents.recorder import PcapWriter
from lab.errors import ScenarioError
from lab.vm.capture import BOUND, CUT, TAP_PCAP, PcapTail, SecondaryCapture
from lab.waiting import wait_until
from tests.unit.folder_host import FolderHost


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FolderHost]:
    h = FolderHost(tmp_path)
    yield h
    h.close()


@pytest.fixture
def capture(host: FolderHost) -> Iterator[tuple[SecondaryCapture, int, socket.socket]]:
    """The recorder listening, forwarding to a receiver that plays the destination QEMU's indev."""
    indev = socket.create_server(("127.0.0.1", 0))
    listen = free_port()
    cap = SecondaryCapture(host)
    cap.recorder = host.spawn("recorder", [
        "python3", "-m", "lab.agents.recorder", "--listen", f"127.0.0.1:{listen}",
        "--forward", f"127.0.0.1:{indev.getsockname()[1]}", "--pcap", "/run/lab/stream.pcap",
        "--events", "/run/lab/recorder-events.jsonl"])
    wait_until("the recorder", lambda: '"listening"' in host.read_text("recorder-events.jsonl") or None, 10)
    yield cap, listen, indev
    cap.recorder.stop(timeout=5)
    indev.close()


def stream_frames(sock: socket.socket, run_id: int, seqs: range) -> None:
    for seq in seqs:
        frame = frames.build(b"\x52\x54\x00\x12\x34\x56", b"\x52\x54\x00\x00\x00\x01", run_id, seq)
        sock.sendall(struct.pack("!II", len(frame), 0) + frame)


def events(host: FolderHost) -> list[str]:
    return [json.loads(line)["event"] for line in host.read_text("recorder-events.jsonl").splitlines()]


def test_an_unbroken_stream_is_analysed(capture: tuple[SecondaryCapture, int, socket.socket],
                                        host: FolderHost) -> None:
    cap, listen, indev = capture
    start = time.time()
    with socket.create_connection(("127.0.0.1", listen)) as primary:
        destination, _ = indev.accept()
        stream_frames(primary, 7, range(50))
        wait_until("50 frames", lambda: len(cap.stream(7)) == 50 or None, 10)
        end = time.time()
        cap.check_stream(start, end)
        destination.close()
    assert [f.seq for f in cap.stream(7)] == list(range(50))


def test_a_primary_that_never_connected_is_an_error(capture: tuple[SecondaryCapture, int, socket.socket]) -> None:
    cap, _listen, _indev = capture
    with pytest.raises(ScenarioError, match="never connected"):
        cap.check_stream(time.time() - 5, time.time())


def test_a_stream_broken_inside_the_window_is_an_error_outside_it_is_not(
        capture: tuple[SecondaryCapture, int, socket.socket], host: FolderHost) -> None:
    cap, listen, indev = capture
    start = time.time()
    with socket.create_connection(("127.0.0.1", listen)) as primary:
        destination, _ = indev.accept()
        stream_frames(primary, 7, range(5))
    wait_until("the disconnect", lambda: "disconnected" in events(host) or None, 10)
    destination.close()
    with pytest.raises(ScenarioError, match="stream broke during the scenario"):
        cap.check_stream(start, time.time())
    cap.check_stream(start - 10, start - 5)  # a break after the window says nothing about it


def test_a_recorder_that_died_is_an_error(capture: tuple[SecondaryCapture, int, socket.socket],
                                          host: FolderHost) -> None:
    cap, _listen, _indev = capture
    assert cap.recorder is not None
    cap.recorder.send_signal(signal.SIGKILL)
    wait_until("the recorder's end", lambda: cap.recorder.returncode if cap.recorder else None, 10)
    with pytest.raises(ScenarioError, match="recorder exited"):
        cap.check_stream(time.time() - 5, time.time())


def test_drain_returns_once_the_tap_is_quiet_without_blaming_anyone(host: FolderHost) -> None:
    cap = SecondaryCapture(host)
    started = time.monotonic()
    drained = cap.drain(run_id=7, expected=100, timeout=5.0, quiet_s=0.3)
    # Nothing delivered: the drain runs to its bound and returns; the analysis reports the loss.
    assert 5.0 <= drained.seconds and time.monotonic() - started < 20.0, drained
    assert drained.ended == BOUND and not drained.cut  # nothing was still arriving


def test_a_drain_cut_by_its_bound_while_frames_still_come_says_so(host: FolderHost) -> None:
    """A destination that delivers slowly but steadily (a starved one): the drain's bound comes
    first, and the drain says it was cut short instead of leaving the missing frames to read as lost."""
    stop = threading.Event()

    def deliver() -> None:
        writer = PcapWriter(str(host.own(TAP_PCAP)))
        seq = 0
        while not stop.is_set():
            writer.write(time.time(), frames.build(bytes.fromhex("525400123456"),
                                                   frames.mac_bytes(frames.SOURCE_MAC), 7, seq))
            seq += 1
            time.sleep(0.05)
        writer.close()

    sender = threading.Thread(target=deliver, daemon=True)
    sender.start()
    try:
        drained = SecondaryCapture(host).drain(run_id=7, expected=10_000, timeout=1.5, quiet_s=0.5)
    finally:
        stop.set()
        sender.join(timeout=5)
    assert drained.ended == CUT and drained.cut and drained.seconds >= 1.5, drained


# -- the drain reads what the tap gained, and no more than its cap ----------------------------------------

class CountingHost(FolderHost):
    """A FolderHost that counts what the lab read of its files, as the bytes an engine would send."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.read = 0
        self._piece = False

    def read_from(self, name: str, offset: int, limit: int) -> bytes:
        self._piece = True
        try:
            data = super().read_from(name, offset, limit)
        finally:
            self._piece = False
        self.read += len(data)
        return data

    def path(self, name: str) -> Path:
        local = super().path(name)
        if local.is_file() and not self._piece:  # what a copying engine's get_archive sends: the whole file
            self.read += local.stat().st_size
        return local


def tap_frames(run_id: int, seqs: range) -> list[bytes]:
    return [frames.build(bytes.fromhex("525400123456"), frames.mac_bytes(frames.SOURCE_MAC), run_id, seq)
            for seq in seqs]


def test_the_drain_reads_each_byte_of_the_tap_once(tmp_path: Path) -> None:
    """The destination delivers 40 frames over a second: the drain polls every 100 ms, and what it
    reads in all is the file once, not the file at every poll."""
    host = CountingHost(tmp_path)

    def deliver() -> None:
        writer = PcapWriter(str(host.own(TAP_PCAP)))
        for frame in tap_frames(7, range(40)):
            writer.write(time.time(), frame)
            time.sleep(0.025)
        writer.close()

    sender = threading.Thread(target=deliver, daemon=True)
    sender.start()
    drained = SecondaryCapture(host).drain(run_id=7, expected=40, timeout=10.0, quiet_s=0.5)
    sender.join(timeout=5)
    assert not drained.cut and drained.seconds < 5
    assert host.read == host.own(TAP_PCAP).stat().st_size, (host.read, host.own(TAP_PCAP).stat().st_size)


def test_a_tap_capture_past_the_cap_is_the_cells_error_naming_it(host: FolderHost) -> None:
    writer = PcapWriter(str(host.own(TAP_PCAP)))
    for frame in tap_frames(9, range(2000)):  # not the run's: the size counts, whatever the frames
        writer.write(time.time(), frame)
    writer.close()
    started = time.monotonic()
    with pytest.raises(ScenarioError) as failure:
        SecondaryCapture(host).drain(run_id=7, expected=10, timeout=10.0, limit=64 * 1024)
    assert str(failure.value) == "secondary: tap.pcap is larger than 64 KiB, the most the lab reads of a capture"
    assert time.monotonic() - started < 8, "the drain waited for its bound instead of stopping at the cap"


def test_a_tap_capture_that_is_no_pcap_is_one_line(host: FolderHost) -> None:
    host.own(TAP_PCAP).write_bytes(b"<html>" * 10)
    with pytest.raises(ScenarioError, match=r"^secondary: tap.pcap is no pcap \(it starts with 3c68746d\)$"):
        SecondaryCapture(host).drain(run_id=7, expected=10, timeout=2.0)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(0, 2000), max_size=8), order=st.sampled_from(["<", ">"]))
def test_a_pcap_read_in_any_pieces_counts_as_the_whole(tmp_path_factory: pytest.TempPathFactory, cuts: list[int],
                                                       order: str) -> None:
    """tcpdump writes a record at a time, and a poll may read up to anywhere in one: whatever the
    pieces, the frames counted are the file's, each once (in either byte order)."""
    whole = struct.pack(f"{order}IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for n, frame in enumerate(tap_frames(7, range(12)) + tap_frames(8, range(3)) + tap_frames(7, range(5))):
        whole += struct.pack(f"{order}IIII", 1_700_000_000 + n, 0, len(frame), len(frame)) + frame
    host = FolderHost(tmp_path_factory.mktemp("pieces"))
    tail = PcapTail(host, TAP_PCAP, run_id=7)
    with host.own(TAP_PCAP).open("wb") as out:
        written = 0
        for cut in sorted(c for c in cuts if c < len(whole)):
            out.write(whole[written:cut])
            out.flush()
            written = max(written, cut)
            assert tail.count() <= 12
        out.write(whole[written:])
    assert tail.count() == 12 and tail.offset == len(whole)

"""lab.vm.guest: the guest receiver's record, read over its port, and the guest clock's offset."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.agents import clock, frames
from lab.errors import ScenarioError
from lab.host import RUNDIR
from lab.vm.guest import (
    RECORD_FILE,
    ClockOffset,
    GuestFrame,
    GuestRecord,
    end_of_record,
    measure_offset,
    offset_from_samples,
    read_record,
)
from tests.unit.folder_host import FolderHost

GOOD = ("LAB-RX 1 frames=2 drops=3 now=1700000002000000000\n"
        "7 0 1700000000000000000\n"
        "7 1 1700000000500000000\n"
        "LAB-RX-END 2\n")


# -- the record -----------------------------------------------------------------------------------

def test_parse_a_record() -> None:
    record = GuestRecord.parse(GOOD)
    assert record.frames == (GuestFrame(7, 0, 1_700_000_000.0), GuestFrame(7, 1, 1_700_000_000.5))
    assert record.socket_drops == 3
    assert record.guest_now == 1_700_000_002.0


def test_parse_an_empty_record() -> None:
    record = GuestRecord.parse("LAB-RX 1 frames=0 drops=0 now=5\nLAB-RX-END 0\n")
    assert record.frames == ()
    assert record.guest_now == 5e-9


def test_parse_keeps_the_full_range_of_the_fields() -> None:
    line = f"{2**32 - 1} {2**64 - 1} 1700000000123456789"
    record = GuestRecord.parse(f"LAB-RX 1 frames=1 drops=0 now=1\n{line}\nLAB-RX-END 1\n")
    assert record.frames[0].run_id == 2**32 - 1
    assert record.frames[0].seq == 2**64 - 1
    assert record.frames[0].time == pytest.approx(1_700_000_000.123456789, abs=1e-6)


def test_of_run_keeps_one_runs_frames() -> None:
    text = "LAB-RX 1 frames=2 drops=0 now=1\n1 0 10\n2 0 20\nLAB-RX-END 2\n"
    assert GuestRecord.parse(text).of_run(2) == (GuestFrame(2, 0, 20e-9),)


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"),
    ("hello\n", "does not start with a LAB-RX 1 header"),
    ("LAB-RX 2 frames=0 drops=0 now=1\nLAB-RX-END 0\n", "does not start with a LAB-RX 1 header"),
    ("LAB-RX 1 frames=0 drops=0\nLAB-RX-END 0\n", "bad header"),
    ("LAB-RX 1 frames=x drops=0 now=1\nLAB-RX-END 0\n", "bad header"),
    ("LAB-RX 1 frames=-1 drops=0 now=1\nLAB-RX-END 0\n", "negative"),
    (GOOD.rsplit("LAB-RX-END", 1)[0], "truncated after 2 of 2"),
    (GOOD[:60], "truncated"),
    ("LAB-RX 1 frames=2 drops=0 now=1\n", "truncated after 0 of 2"),
    (GOOD.replace("LAB-RX-END 2", "LAB-RX-END 3"), "ends with 'LAB-RX-END 3'"),
    (GOOD.replace("frames=2", "frames=3").replace("END 2", "END 3"), "says 3 frames, the record has 2"),
    (GOOD.replace("7 1 ", "7 x "), "line 3 is not"),
    (GOOD.replace("7 1 ", "7 -1 "), "line 3 is not"),
    (GOOD.replace("7 1 1700000000500000000", "7 1"), "line 3 is not"),
    (GOOD.replace("7 0 ", "7  0 "), "line 2 is not"),
], ids=["empty", "no-header", "other-version", "header-without-now", "header-not-a-number", "negative-count",
        "no-end-line", "cut-mid-line", "header-only", "end-count-differs", "fewer-lines-than-said",
        "not-a-number", "negative-seq", "two-fields", "double-space"])
def test_a_bad_record_is_one_line_saying_why(text: str, reason: str) -> None:
    with pytest.raises(ScenarioError, match="guest record: ") as failure:
        GuestRecord.parse(text)
    assert reason in str(failure.value)
    assert "\n" not in str(failure.value)


@given(st.text(max_size=300))
def test_any_text_parses_or_says_why(text: str) -> None:
    try:
        GuestRecord.parse(text)
    except ScenarioError as exc:
        assert str(exc).startswith("guest record: ")


def test_end_of_record_waits_for_the_end_lines_newline() -> None:
    assert end_of_record(GOOD.encode()) == len(GOOD)
    assert end_of_record(GOOD.encode()[:-1]) == -1
    assert end_of_record(GOOD.encode().replace(b"LAB-RX-END 2\n", b"")) == -1


def test_end_of_record_finds_an_end_line_that_came_in_two_pieces() -> None:
    data = GOOD.encode()
    split = len(data) - 3  # inside "LAB-RX-END 2\n"
    assert end_of_record(data[:split]) == -1
    assert end_of_record(data, start=split) == len(data)


# -- read_record, against a stand-in for the guest's port -------------------------------------------

Answer = Callable[[socket.socket], None]


@pytest.fixture
def host(tmp_path: Path) -> Iterator[FolderHost]:
    h = FolderHost(tmp_path, role="primary")
    yield h
    h.close()


def serve(host: FolderHost, answer: Answer) -> threading.Thread:
    """A one-connection server on rx.sock that reads the request, then answers with ``answer``."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(host.socket("rx.sock")))
    server.listen(1)

    def run() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                assert conn.recv(64) == b"dump\n"
                answer(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def in_pieces(text: str, size: int, open_until: threading.Event | None = None) -> Answer:
    """``text`` a piece at a time; then the port stays open (until ``open_until`` is set, or half a
    second) as a guest's does after its record: the end line says the record is whole."""
    def answer(conn: socket.socket) -> None:
        data = text.encode()
        for i in range(0, len(data), size):
            conn.sendall(data[i:i + size])
            time.sleep(0.001)
        if open_until is None:
            time.sleep(0.5)
        else:
            open_until.wait(30)
    return answer


def test_read_record_reads_to_the_end_line_and_keeps_the_text(host: FolderHost) -> None:
    still_open = threading.Event()
    thread = serve(host, in_pieces(GOOD, 7, open_until=still_open))
    record = read_record(host, timeout=30)
    assert thread.is_alive(), "the read waited for the port to close instead of the end line"
    still_open.set()
    assert record == GuestRecord.parse(GOOD)
    assert host.path(RECORD_FILE).read_text() == GOOD
    thread.join(5)


def test_read_record_of_a_large_record(host: FolderHost) -> None:
    n = 100_000
    text = (f"LAB-RX 1 frames={n} drops=0 now=1\n" + "".join(f"9 {i} {10**18 + i}\n" for i in range(n))
            + f"LAB-RX-END {n}\n")
    serve(host, in_pieces(text, 32 * 1024))
    record = read_record(host, timeout=10)
    assert len(record.frames) == n
    assert record.frames[-1] == GuestFrame(9, n - 1, (10**18 + n - 1) / 1e9)


def test_a_guest_that_does_not_finish_is_a_bounded_wait_that_says_what_it_saw(host: FolderHost) -> None:
    still_open = threading.Event()  # the guest never finishes nor hangs up: only the bound ends the read
    thread = serve(host, lambda conn: (conn.sendall(GOOD[:70].encode()), still_open.wait(30)))
    with pytest.raises(ScenarioError, match=r"primary: the guest receiver did not finish its record within "
                                            r"1 s \(got 70 bytes: last line '7 0 17") as failure:
        read_record(host, timeout=1)
    assert thread.is_alive(), "the port closed first: the bound was not what ended the read"
    still_open.set()
    assert "\n" not in str(failure.value)
    assert host.path(RECORD_FILE).read_text() == GOOD[:70]


def test_the_guests_own_error_is_named(host: FolderHost) -> None:
    host.write_text("console.log", "booting\nLAB-RX-ERROR no virtio-serial port named lab.rx\nLAB-GUEST-READY\n")
    serve(host, lambda conn: time.sleep(2))
    with pytest.raises(ScenarioError, match="the guest said: LAB-RX-ERROR no virtio-serial port"):
        read_record(host, timeout=0.5)


def test_a_port_that_closes_early_says_so(host: FolderHost) -> None:
    serve(host, lambda conn: conn.sendall(GOOD[:40].encode()))
    with pytest.raises(ScenarioError, match="QEMU closed the guest receiver's port after 40 bytes"):
        read_record(host, timeout=5)


def test_no_socket_is_a_bounded_wait_that_names_the_host(host: FolderHost) -> None:
    with pytest.raises(ScenarioError, match=r"primary: the guest receiver's record on rx.sock: not within 0.3 s "
                                            r"\(last seen: no socket yet\)"):
        read_record(host, timeout=0.3)


def test_a_garbled_record_names_the_host_and_the_saved_text(host: FolderHost) -> None:
    serve(host, in_pieces(GOOD.replace("7 1 ", "7 ? "), 1000))
    with pytest.raises(ScenarioError, match=r"primary: guest record: line 3 .* \(as received: .*guest-rx.txt\)"):
        read_record(host, timeout=5)


# -- the clock ----------------------------------------------------------------------------------------

def test_a_samples_offset_is_ntp_style() -> None:
    # Sent at 1000, the guest stamped it 400 (its clock), back at 1010: host = guest + 605.
    sample = clock.Sample(host_send_ns=1000, guest_rx_ns=400, host_recv_ns=1010)
    assert sample.rtt_ns == 10
    assert sample.offset_ns == 605


def test_the_offset_comes_from_the_shortest_round_trip() -> None:
    base = 1_700_000_000 * 10**9
    samples = [clock.Sample(base, base - 2 * 10**9 + 900_000, base + 2_000_000),  # rtt 2 ms
               clock.Sample(base + 5_000_000, base - 2 * 10**9 + 5_050_000, base + 5_100_000),  # rtt 0.1 ms
               clock.Sample(base + 10_000_000, base - 2 * 10**9 + 10_000_000, base + 10_900_000)]
    offset = offset_from_samples(samples)
    assert offset == ClockOffset(offset_s=pytest.approx(2.0), uncertainty_s=pytest.approx(50e-6), samples=3)


def test_no_answered_probe_is_no_offset() -> None:
    assert offset_from_samples([]) is None


def test_the_offset_keeps_nanoseconds_at_todays_times() -> None:
    now = time.time_ns()
    sample = clock.Sample(now, now - 123_456_789, now + 2)
    assert sample.offset_ns == 123_456_790


def test_kernel_time_comes_from_the_timestamp_message() -> None:
    data = clock._TIMESPEC.pack(1_700_000_000, 42)
    assert clock.kernel_time_ns([(socket.SOL_SOCKET, clock.SO_TIMESTAMPNS, data)]) == 1_700_000_000_000_000_042


def test_kernel_time_without_a_stamp_is_now() -> None:
    before = time.time_ns()
    assert before <= clock.kernel_time_ns([]) <= time.time_ns()


def test_collect_takes_only_answers_to_its_own_probes() -> None:
    ours, guest = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    dst, src = frames.mac_bytes(frames.PROBE_MAC), frames.mac_bytes("52:54:00:12:34:56")
    sent = {10: 1000, 11: 2000}
    with ours, guest:
        for frame in (frames.build_probe(src, dst, 10, 1000),  # our own probe, seen going out
                      frames.build_reply(dst, src, 99, 1000, 5),  # another measurement's
                      frames.build_reply(dst, src, 10, 999, 5),  # not the time we sent
                      frames.build_reply(dst, src, 10, 1000, 500),
                      frames.build_reply(dst, src, 10, 1000, 501),  # a duplicate
                      frames.build_reply(dst, src, 11, 2000, 700)):
            guest.send(frame)
        samples: dict[int, clock.Sample] = {}
        clock.collect(ours, sent, samples, time.monotonic() + 2)
    assert sorted(samples) == [10, 11]
    assert samples[10].guest_rx_ns == 500 and samples[10].host_send_ns == 1000
    assert samples[11].guest_rx_ns == 700


def test_collect_stops_at_its_deadline() -> None:
    ours, _guest = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, _guest:
        started = time.monotonic()
        clock.collect(ours, {1: 1}, {}, started + 0.1)  # nothing answers: only the deadline ends it
        assert time.monotonic() - started < 15.0


# -- measure_offset, with the agent's record as a host would leave it -------------------------------------

class RecordedClock(FolderHost):
    """A host whose clock agent 'ran' and left ``record`` (no AF_PACKET needed)."""

    def __init__(self, folder: Path, record: dict[str, object] | None, rc: int = 0) -> None:
        super().__init__(folder, role="primary")
        self.record = record
        self.rc = rc
        self.argv: list[str] = []

    def start(self, argv: list[str]) -> None:
        self.argv = argv
        if self.record is not None:
            self.write_text("clock.json", json.dumps(self.record))
        self.write_text("clock.pid", "1")
        self.write_text("clock.rc", str(self.rc))


def test_measure_offset_runs_the_agent_on_the_tap_and_reads_its_samples(tmp_path: Path) -> None:
    host = RecordedClock(tmp_path, {"samples": [[1000, 400, 1010], [2000, 1390, 2030]]})
    offset = measure_offset(host, "52:54:00:12:34:56", timeout=5)
    assert offset == ClockOffset(offset_s=605e-9, uncertainty_s=5e-9, samples=2)
    agent = host.argv[host.argv.index("python3"):]
    assert agent[:3] == ["python3", "-m", "lab.agents.clock"]
    assert agent[agent.index("--ifname") + 1] == "lab-tap0"
    assert agent[agent.index("--dst") + 1] == "52:54:00:12:34:56"
    assert agent[agent.index("--record") + 1] == f"{RUNDIR}/clock.json"


def test_measure_offset_without_answers_is_none(tmp_path: Path) -> None:
    assert measure_offset(RecordedClock(tmp_path, {"samples": []}), "52:54:00:12:34:56", timeout=5) is None


@pytest.mark.parametrize(("record", "rc", "reason"), [
    ({"samples": []}, 1, "the clock probe failed (exit 1)"),
    (None, 0, "the clock probe's record is unreadable"),
    ({"samples": [[1, 2]]}, 0, "the clock probe's record is unreadable"),
])
def test_measure_offset_failures_are_scenario_errors(tmp_path: Path, record: dict[str, object] | None, rc: int,
                                                     reason: str) -> None:
    with pytest.raises(ScenarioError, match=r"primary: " + reason.replace("(", r"\(").replace(")", r"\)")):
        measure_offset(RecordedClock(tmp_path, record, rc), "52:54:00:12:34:56", timeout=5)


def test_a_record_past_the_cap_is_the_cells_error_naming_it(host: FolderHost) -> None:
    """A receiver that never ends its record (a guest gone wrong) is read up to the cap, not to the
    deadline and not into all of the lab's memory."""
    line = b"9 1 1000000000000000000\n" * 4096

    def endless(conn: socket.socket) -> None:
        conn.sendall(b"LAB-RX 1 frames=99999999 drops=0 now=1\n")
        with contextlib.suppress(OSError):  # the lab hangs up at the cap
            while True:
                conn.sendall(line)

    serve(host, endless)
    started = time.monotonic()
    with pytest.raises(ScenarioError) as failure:
        read_record(host, timeout=30, limit=2**20)
    assert str(failure.value) == ("primary: the guest receiver's record on rx.sock is larger than 1 MiB, the most "
                                  "the lab reads of a guest's record")
    assert time.monotonic() - started < 10
    assert host.path(RECORD_FILE).stat().st_size <= 2**20

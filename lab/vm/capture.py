"""Capture on the secondary side, at two points.

- The mirror stream as it reaches the secondary host: the in-host recorder accepts the primary's
  outdev connection, forwards it to the destination QEMU and writes every frame with its arrival
  time to ``stream.pcap``. This is where timing is true: the destination QEMU, still incoming, holds
  the frames it is given until it runs.
- The destination's tap, with tcpdump: ``tap.pcap``, the frames the secondary QEMU delivered.

In a split cell the recorder takes only a connection that presents the cell's token (lab.guard), and
the primary's filter reaches it through the sender agent on its own host, which presents it.
"""

from __future__ import annotations

import json
import re
import signal
import struct
import time
from dataclasses import dataclass, field

from lab import guard, pcap
from lab.agents import frames
from lab.bounds import ENGINE_LIMIT, past
from lab.errors import ScenarioError
from lab.host import RUNDIR, TAP, Host, Process
from lab.results.analysis import Frame, read_pcap
from lab.waiting import Deadline, wait_until

STREAM_PCAP = "stream.pcap"
BREAKS = ("disconnected", "forward-failed", "parse-error")  # recorder events that mean a broken stream
TAP_PCAP = "tap.pcap"
RECORDER_PORT = 9000  # the primary's outdev connects here
INDEV_PORT = 9001  # the destination QEMU's indev chardev server, on the host's loopback
SENDER_PORT = 9002  # in a split cell, the primary's outdev connects here, on its own host's loopback


# How a drain ended: every expected frame delivered, the tap quiet, its bound on a quiet tap, or its
# bound while frames still came (cut short).
ALL, QUIET, BOUND, CUT = "all", "quiet", "bound", "cut"


@dataclass(frozen=True)
class Drained:
    """How a drain ended (ALL, QUIET, BOUND, CUT), after how long, with how many frames delivered."""

    seconds: float
    ended: str
    delivered: int

    @property
    def cut(self) -> bool:
        return self.ended == CUT


# A pcap's first four bytes: the byte order of its record headers (microsecond or nanosecond stamps alike).
PCAP_ORDER = {struct.pack("<I", magic): order for magic, (order, _) in pcap.MAGICS.items()}
PCAP_HEADER = pcap.FILE_HEADER
RECORD_HEADER = pcap.RECORD_HEADER
TAIL_STEP = 16 * 2**20  # the most one poll reads: a poll that got this much reads on at once


@dataclass
class PcapTail:
    """The test frames of one run in a pcap that is still being written, counted a piece at a time:
    each poll reads only what the file gained since the last (on an engine that copies run folders,
    that is all that crosses its connection), and no more than ``limit`` bytes of it in all."""

    host: Host
    name: str
    run_id: int
    limit: int = ENGINE_LIMIT
    offset: int = 0
    order: str = ""  # of the record headers, once the file's header is read
    pending: bytes = b""  # a record cut at the end of what was read
    seqs: set[int] = field(default_factory=set)

    def count(self) -> int:
        """How many distinct frames of the run the file holds now."""
        while True:
            step = min(TAIL_STEP, self.limit + 1 - self.offset)
            data = self.host.read_from(self.name, self.offset, step)
            self.offset += len(data)
            if self.offset > self.limit:
                raise ScenarioError(f"{self.host.role}: " + past(self.name, self.limit, "of a capture"))
            self._parse(self.pending + data)
            if len(data) < step:
                return len(self.seqs)

    def _parse(self, data: bytes) -> None:
        at = 0
        if not self.order:
            if len(data) < PCAP_HEADER:
                self.pending = data
                return
            self.order = PCAP_ORDER.get(data[:4], "")
            if not self.order:
                raise ScenarioError(f"{self.host.role}: {self.name} is no pcap (it starts with {data[:4].hex()})")
            at = PCAP_HEADER
        while at + RECORD_HEADER <= len(data):
            (length,) = struct.unpack_from(f"{self.order}I", data, at + 8)  # the captured length
            end = at + RECORD_HEADER + length
            if end > len(data):
                break
            tag = frames.parse(data[at + RECORD_HEADER:end])
            if tag is not None and tag.run_id == self.run_id:
                self.seqs.add(tag.seq)
            at = end
        self.pending = data[at:]


def _wait_for(host: Host, name: str, text: str, timeout: float, proc: Process) -> None:
    def seen() -> bool | None:
        if text in host.read_text(name):
            return True
        if proc.returncode is not None:
            raise ScenarioError(f"{proc.name} exited {proc.returncode}: {proc.tail(5)}")
        return None

    wait_until(f"{host.role}: {text!r} in {name}", seen, timeout, last=lambda: proc.tail(1))


def start_sender(host: Host, recorder: tuple[str, int], timeout: float, listen: int = SENDER_PORT,
                 name: str = "sender", ends: tuple[str, str] = ("the filter's chardev", "the recorder")) -> Process:
    """A sender agent on the primary (a split cell's): the filter's outdev (or the source's migration)
    connects to it on ``listen``, and it to the ``recorder`` (or the destination's gate), presenting
    the token."""
    events = f"{name}-events.jsonl"
    sender = host.spawn(name, [
        "python3", "-m", "lab.agents.sender", "--listen", f"127.0.0.1:{listen}",
        "--to", f"{recorder[0]}:{recorder[1]}", "--token-file", f"{RUNDIR}/{guard.TOKEN_FILE}",
        "--events", f"{RUNDIR}/{events}", "--near", ends[0], "--far", ends[1]])
    _wait_for(host, events, '"listening"', timeout, sender)
    return sender


def start_gate(host: Host, listen: int, to: int, timeout: float) -> Process:
    """The migration gate on the secondary (a split cell's): on the published ``listen`` port, it
    passes to QEMU's loopback ``to`` port only a connection that presented the token."""
    gate = host.spawn("gate", [
        "python3", "-m", "lab.agents.gate", "--listen", f"0.0.0.0:{listen}", "--to", f"127.0.0.1:{to}",
        "--token-file", f"{RUNDIR}/{guard.TOKEN_FILE}", "--events", f"{RUNDIR}/gate-events.jsonl"])
    _wait_for(host, "gate-events.jsonl", '"listening"', timeout, gate)
    return gate


@dataclass
class SecondaryCapture:
    host: Host
    guarded: bool = False  # the recorder admits only connections that present the cell's token
    recorder: Process | None = None
    tcpdump: Process | None = None

    def start(self, timeout: float) -> None:
        self.tcpdump = self.host.spawn("tcpdump", [
            "tcpdump", "-i", TAP, "-n", "-U", "-w", f"{RUNDIR}/{TAP_PCAP}", "ether", "proto",
            f"0x{frames.ETHERTYPE:04x}"])
        token = ["--token-file", f"{RUNDIR}/{guard.TOKEN_FILE}"] if self.guarded else []
        self.recorder = self.host.spawn("recorder", [
            "python3", "-m", "lab.agents.recorder", "--listen", f"0.0.0.0:{RECORDER_PORT}",
            "--forward", f"127.0.0.1:{INDEV_PORT}", "--pcap", f"{RUNDIR}/{STREAM_PCAP}",
            "--events", f"{RUNDIR}/recorder-events.jsonl", *token])
        _wait_for(self.host, "tcpdump.log", "listening on", timeout, self.tcpdump)
        _wait_for(self.host, "recorder-events.jsonl", '"listening"', timeout, self.recorder)

    def wait_connected(self, timeout: float) -> None:
        """Until the primary's filter has connected to the recorder: its chardev retries a connection
        every 100 ms, and frames it takes before that go nowhere."""
        assert self.recorder is not None, "the capture was not started"
        _wait_for(self.host, "recorder-events.jsonl", '"connected"', timeout, self.recorder)

    def stream(self, run_id: int) -> list[Frame]:
        return read_pcap(self.host.path(STREAM_PCAP), run_id)

    def delivered(self, run_id: int) -> list[Frame]:
        return read_pcap(self.host.path(TAP_PCAP), run_id)

    def drain(self, run_id: int, expected: int, timeout: float, quiet_s: float = 1.0,
              limit: int = ENGINE_LIMIT) -> Drained:
        """Waits until the tap has delivered ``expected`` frames or has been quiet for ``quiet_s``;
        a tap.pcap past ``limit`` bytes is an error."""
        # Not an error when it runs out on a quiet tap: frames the destination never delivers are a
        # finding. One still delivering when the bound came was cut short (Drained.cut).
        start = time.monotonic()
        deadline = Deadline("the destination tap to drain", timeout)
        tap = PcapTail(self.host, TAP_PCAP, run_id, limit)
        count, changed = -1, start
        while not deadline.expired():
            now_count = tap.count()
            if now_count >= expected:
                return Drained(time.monotonic() - start, ALL, now_count)
            if now_count != count:
                count, changed = now_count, time.monotonic()
            elif count > 0 and time.monotonic() - changed >= quiet_s:
                return Drained(time.monotonic() - start, QUIET, count)
            deadline.sleep(0.1)
        still_coming = count > 0 and time.monotonic() - changed < quiet_s
        return Drained(time.monotonic() - start, CUT if still_coming else BOUND, max(count, 0))

    def check_stream(self, start: float, end: float) -> None:
        """Raises when the recorder died or its stream broke between ``start`` and ``end``."""
        if self.recorder is not None and self.recorder.returncode not in (None, 0):
            raise ScenarioError(f"the stream recorder exited {self.recorder.returncode}: {self.recorder.tail(3)}")
        events = [json.loads(line) for line in self.host.read_text("recorder-events.jsonl").splitlines()]
        for ev in events:
            if ev["event"] in BREAKS and start <= ev["time"] <= end:
                detail = ev.get("reason") or ev.get("error") or ""
                raise ScenarioError(f"the mirror stream broke during the scenario ({ev['event']}: {detail}); "
                                    "frames lost there say nothing about the filter")
        if not any(ev["event"] == "connected" for ev in events):
            raise ScenarioError("the primary's filter never connected to the stream recorder")

    def tap_dropped(self) -> int | None:
        """Frames the kernel dropped before tcpdump read them (tcpdump's own count, once stopped)."""
        found = re.search(r"(\d+) packets? dropped by kernel", self.host.read_text("tcpdump.log"))
        return int(found.group(1)) if found else None

    def stop(self) -> None:
        # SIGINT lets tcpdump flush and close its file.
        for proc, signo in ((self.tcpdump, signal.SIGINT), (self.recorder, signal.SIGTERM)):
            if proc is not None:
                proc.stop(timeout=5.0, signo=signo)

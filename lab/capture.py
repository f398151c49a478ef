"""Capture on the secondary side, at two points.

- The mirror stream as it reaches the secondary host: the in-host recorder accepts the primary's
  outdev connection, forwards it to the destination QEMU and writes every frame with its arrival
  time to ``stream.pcap``. This is where timing is true: the destination QEMU, still incoming, holds
  the frames it is given until it runs.
- The destination's tap, with tcpdump: ``tap.pcap``, the frames the secondary QEMU delivered.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from lab.agents import frames
from lab.analysis import Frame, read_pcap
from lab.errors import ScenarioError, Timeout
from lab.hosts import RUNDIR, TAP, Host, Process

STREAM_PCAP = "stream.pcap"
BREAKS = ("disconnected", "forward-failed", "parse-error")  # recorder events that mean a broken stream
TAP_PCAP = "tap.pcap"
RECORDER_PORT = 9000  # the primary's outdev connects here
INDEV_PORT = 9001  # the destination QEMU's indev chardev server, on the host's loopback


@dataclass
class SecondaryCapture:
    host: Host
    recorder: Process | None = None
    tcpdump: Process | None = None

    def start(self, timeout: float) -> None:
        self.tcpdump = self.host.spawn("tcpdump", [
            "tcpdump", "-i", TAP, "-n", "-U", "-w", f"{RUNDIR}/{TAP_PCAP}", "ether", "proto",
            f"0x{frames.ETHERTYPE:04x}"])
        self.recorder = self.host.spawn("recorder", [
            "python3", "-m", "lab.agents.recorder", "--listen", f"0.0.0.0:{RECORDER_PORT}",
            "--forward", f"127.0.0.1:{INDEV_PORT}", "--pcap", f"{RUNDIR}/{STREAM_PCAP}",
            "--events", f"{RUNDIR}/recorder-events.jsonl"])
        self._wait_for(self.tcpdump, "listening on", timeout)
        self._wait_for_file(self.host.path("recorder-events.jsonl"), '"listening"', timeout)

    def _wait_for(self, proc: Process, text: str, timeout: float) -> None:
        self._wait_for_file(proc.log, text, timeout, proc)

    @staticmethod
    def _wait_for_file(path: Path, text: str, timeout: float, proc: Process | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and text in path.read_text(errors="replace"):
                return
            if proc is not None and proc.returncode is not None:
                raise ScenarioError(f"{proc.name} exited {proc.returncode}: {proc.tail(5)}")
            time.sleep(0.05)
        raise Timeout(f"no {text!r} in {path.name} within {timeout:.0f} s")

    def stream(self, run_id: int) -> list[Frame]:
        return read_pcap(self.host.path(STREAM_PCAP), run_id)

    def delivered(self, run_id: int) -> list[Frame]:
        return read_pcap(self.host.path(TAP_PCAP), run_id)

    def drain(self, run_id: int, expected: int, timeout: float, quiet_s: float = 1.0) -> float:
        """Waits until the tap has delivered ``expected`` frames or has been quiet for ``quiet_s``."""
        start = time.monotonic()
        deadline = start + timeout
        count, changed = -1, start
        while time.monotonic() < deadline:
            now_count = len({f.seq for f in self.delivered(run_id)})
            if now_count >= expected:
                break
            if now_count != count:
                count, changed = now_count, time.monotonic()
            elif count > 0 and time.monotonic() - changed >= quiet_s:
                break
            time.sleep(0.1)
        return time.monotonic() - start

    def check_stream(self, start: float, end: float) -> None:
        """Raises when the recorder died or its stream broke between ``start`` and ``end``."""
        if self.recorder is not None and self.recorder.returncode not in (None, 0):
            raise ScenarioError(f"the stream recorder exited {self.recorder.returncode}: {self.recorder.tail(3)}")
        path = self.host.path("recorder-events.jsonl")
        events = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        for ev in events:
            if ev["event"] in BREAKS and start <= ev["time"] <= end:
                detail = ev.get("reason") or ev.get("error") or ""
                raise ScenarioError(f"the mirror stream broke during the scenario ({ev['event']}: {detail}); "
                                    "frames lost there say nothing about the filter")
        if not any(ev["event"] == "connected" for ev in events):
            raise ScenarioError("the primary's filter never connected to the stream recorder")

    def stop(self) -> None:
        # SIGINT lets tcpdump flush and close its file.
        for proc, signo in ((self.tcpdump, signal.SIGINT), (self.recorder, signal.SIGTERM)):
            if proc is not None:
                proc.stop(timeout=5.0, signo=signo)

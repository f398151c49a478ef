"""The capture point inside the guest, lab side: the guest receiver's record and the guest's clock.

The guest's receiver (images/guest/receiver.c) keeps every test frame it got, with the guest kernel's
receive time, in guest memory: the record migrates with the guest and is read at the end through
the virtio-serial port ``lab.rx``, a socket in the host (``rx.sock``). Its times are the guest's
clock, which under TCG stands still while the VM is stopped; ``measure_offset`` relates it to the
host's clock by probing the guest over the tap (lab.agents.clock).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lab.agents.clock import Sample, best
from lab.bounds import RECORD_LIMIT, past
from lab.errors import ScenarioError, Timeout
from lab.host import RUNDIR, TAP, Host
from lab.vm.qemu import CONSOLE_LOG, RX_SOCKET
from lab.waiting import Deadline, wait_until

RECORD_FILE = "guest-rx.txt"
CLOCK_RECORD = "clock.json"
HEADER = "LAB-RX"
END = "LAB-RX-END"
VERSION = "1"
ERROR_LINE = "LAB-RX-ERROR"
NS = 1_000_000_000
LINE_MAX = 80  # longer than any line the receiver writes


@dataclass(frozen=True)
class GuestFrame:
    run_id: int
    seq: int
    time: float  # guest CLOCK_REALTIME seconds (the guest kernel's receive stamp)


@dataclass(frozen=True)
class GuestRecord:
    frames: tuple[GuestFrame, ...]
    socket_drops: int  # frames the guest kernel dropped before the receiver read them
    guest_now: float  # the guest's clock when it answered the dump

    @classmethod
    def parse(cls, text: str) -> GuestRecord:
        """The record as the receiver wrote it; a truncated or garbled one raises ScenarioError."""
        lines = text.splitlines()
        if not lines:
            raise ScenarioError("guest record: empty")
        count, drops, now_ns = _header(lines[0])
        body, last = lines[1:-1], lines[-1] if len(lines) > 1 else ""
        if last.split(" ")[0] != END:
            raise ScenarioError(f"guest record: truncated after {len(lines) - 1} of {count} frame lines "
                                f"(no {END} line)")
        if last != f"{END} {count}" or len(body) != count:
            raise ScenarioError(f"guest record: the header says {count} frames, the record has {len(body)} "
                                f"lines and ends with {last!r}")
        return cls(frames=tuple(_frame(line, n) for n, line in enumerate(body, start=2)),
                   socket_drops=drops, guest_now=now_ns / NS)

    def of_run(self, run_id: int) -> tuple[GuestFrame, ...]:
        return tuple(f for f in self.frames if f.run_id == run_id)


@dataclass(frozen=True)
class ClockOffset:
    offset_s: float  # host time = guest time + offset_s
    uncertainty_s: float  # half the smallest probe round trip
    samples: int


def _header(line: str) -> tuple[int, int, int]:
    parts = line.split(" ")
    if parts[:2] != [HEADER, VERSION]:
        raise ScenarioError(f"guest record: does not start with a {HEADER} {VERSION} header: {line[:80]!r}")
    fields = {key: value for key, _, value in (p.partition("=") for p in parts[2:])}
    try:
        values = int(fields["frames"]), int(fields["drops"]), int(fields["now"])
    except (KeyError, ValueError):
        raise ScenarioError(f"guest record: a bad header (frames=, drops=, now= wanted): {line[:80]!r}") from None
    if values[0] < 0 or values[1] < 0:
        raise ScenarioError(f"guest record: negative counts in the header: {line[:80]!r}")
    return values


def _frame(line: str, number: int) -> GuestFrame:
    parts = line.split(" ")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 20 for p in parts):
        raise ScenarioError(f"guest record: line {number} is not '<run_id> <seq> <rx_ns>': {line[:80]!r}")
    run_id, seq, rx_ns = (int(p) for p in parts)
    return GuestFrame(run_id, seq, rx_ns / NS)


def offset_from_samples(samples: Iterable[Sample]) -> ClockOffset | None:
    """The offset from the probe with the shortest round trip; None without any answered probe."""
    taken = list(samples)
    chosen = best(taken)
    if chosen is None:
        return None
    return ClockOffset(offset_s=chosen.offset_ns / NS, uncertainty_s=chosen.rtt_ns / 2 / NS, samples=len(taken))


def end_of_record(received: bytes | bytearray, start: int = 0) -> int:
    """Where the record's end line ends (just past its newline), searching from about ``start``
    (a line's length before it: the end line may have come in two pieces); -1 until it has come."""
    marker = f"\n{END} ".encode()
    at = received.find(marker, max(0, start - LINE_MAX))
    if at < 0:
        return -1
    newline = received.find(b"\n", at + 1)
    return newline + 1 if newline >= 0 else -1


def read_record(host: Host, timeout: float, limit: int = RECORD_LIMIT) -> GuestRecord:
    """Asks the guest's receiver for its record (``dump``) and reads it to its end line, at most ``limit`` bytes."""
    deadline = Deadline(f"{host.role}: the guest receiver's record on {RX_SOCKET}", timeout, host.cancel)
    received = bytearray()
    try:
        with _connect(host, deadline) as sock:
            sock.sendall(b"dump\n")
            _read_to_end(host, sock, deadline, received, limit)
    finally:
        host.own(RECORD_FILE).write_text(received.decode(errors="replace"))
    try:
        return GuestRecord.parse(received.decode(errors="replace"))
    except ScenarioError as exc:
        raise ScenarioError(f"{host.role}: {exc} (as received: {host.own(RECORD_FILE)})") from None


def _connect(host: Host, deadline: Deadline) -> socket.socket:
    path = host.socket(RX_SOCKET)
    last: list[str] = ["no socket yet"]

    def attempt() -> socket.socket | None:
        if not path.exists():
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(0.1, deadline.remaining()))
            sock.connect(str(path))
        except OSError as exc:
            sock.close()
            last[:] = [str(exc)]
            return None
        return sock

    try:
        return wait_until(deadline.what, attempt, deadline.remaining(), last=lambda: last[0], cancel=host.cancel)
    except Timeout:
        raise ScenarioError(f"{deadline.fail(last[0])}{_receiver_errors(host)}") from None


def _read_to_end(host: Host, sock: socket.socket, deadline: Deadline, received: bytearray, limit: int) -> None:
    # QEMU drops what a guest wrote for an earlier reader when that reader left, so whatever comes
    # now answers this request. Only new bytes are searched: a dump may be megabytes.
    searched = 0
    while end_of_record(received, searched) < 0:
        searched = len(received)
        if deadline.expired():
            raise ScenarioError(f"{host.role}: the guest receiver did not finish its record within "
                                f"{deadline.timeout:g} s (got {len(received)} bytes: {_tail(received)}"
                                f"){_receiver_errors(host)}")
        deadline.sleep(0)  # raises Cancelled when the run is
        sock.settimeout(max(0.01, min(0.2, deadline.remaining())))
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            continue
        except OSError as exc:
            raise ScenarioError(f"{host.role}: reading the guest receiver's record failed: {exc}") from None
        if not chunk:
            raise ScenarioError(f"{host.role}: QEMU closed the guest receiver's port after {len(received)} "
                                f"bytes ({_tail(received)}){_receiver_errors(host)}")
        if len(received) + len(chunk) > limit:
            raise ScenarioError(f"{host.role}: " + past(f"the guest receiver's record on {RX_SOCKET}", limit,
                                                        "of a guest's record"))
        received += chunk


def _tail(received: bytearray) -> str:
    lines = received.decode(errors="replace").strip().splitlines()
    return f"last line {lines[-1][:80]!r}" if lines else "nothing"


def _receiver_errors(host: Host) -> str:
    """What the receiver said went wrong on the guest console, if anything."""
    for line in host.read_text(CONSOLE_LOG).splitlines():
        if ERROR_LINE in line:
            return f"; the guest said: {line.strip()[:200]}"
    return ""


def measure_offset(host: Host, mac: str, timeout: float) -> ClockOffset | None:
    """Probes the guest ``mac`` from the host's tap; None when no probe was answered (a filter that
    takes every frame away from the guest, or a guest that is stopped), which is not an error."""
    host.remove(CLOCK_RECORD)
    proc = host.spawn("clock", ["python3", "-m", "lab.agents.clock", "--ifname", TAP, "--dst", mac,
                                "--record", f"{RUNDIR}/{CLOCK_RECORD}"])
    try:
        rc = proc.wait(timeout)
    except Timeout:
        proc.stop(timeout=2.0)
        raise ScenarioError(f"{host.role}: the clock probe did not finish within {timeout:g} s: "
                            f"{proc.tail(3)}") from None
    if rc != 0:
        raise ScenarioError(f"{host.role}: the clock probe failed (exit {rc}): {proc.tail(3)}")
    try:
        data = json.loads(host.read_text(CLOCK_RECORD))
        samples: Sequence[Sample] = [Sample(*map(int, s)) for s in data["samples"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ScenarioError(f"{host.role}: the clock probe's record is unreadable ({exc})") from None
    return offset_from_samples(samples)

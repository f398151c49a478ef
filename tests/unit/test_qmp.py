"""The QMP monitor and the migration driver, against a server that speaks QMP as QEMU does."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.errors import Cancelled, QemuExited, ScenarioError, Timeout
from lab.vm.migration import Migration
from lab.vm.qmp import Monitor, QMPCommandError, QMPDisconnected, event_time
from tests.unit.qmp_server import FakeQMP, migration_source


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Short: a unix socket's path must stay under 108 bytes, which pytest's tmp_path may not.
    path = Path(tempfile.mkdtemp(prefix="qmp-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(sock_dir: Path) -> Iterator[FakeQMP]:
    qmp = FakeQMP(sock_dir / "qmp.sock")
    yield qmp
    qmp.close()


@pytest.fixture
def monitor(server: FakeQMP, sock_dir: Path) -> Iterator[Monitor]:
    m = Monitor("primary", server.path, sock_dir / "qmp.jsonl", timeout=2.0)
    m.connect(5.0)
    yield m
    m.close()


def test_a_command_returns_what_qemu_answered(monitor: Monitor, server: FakeQMP) -> None:
    assert monitor.cmd("query-status") == {"status": "running"}
    assert server.received[0]["execute"] == "qmp_capabilities"
    assert server.received[-1]["execute"] == "query-status"


def test_an_unknown_command_is_an_error_that_keeps_its_cause(monitor: Monitor) -> None:
    with pytest.raises(QMPCommandError, match="has not been found") as failure:
        monitor.cmd("bogus-command")
    assert failure.value.command == "bogus-command" and isinstance(failure.value, ScenarioError)


def test_events_keep_qemus_timestamp_and_are_read_without_a_command(monitor: Monitor, server: FakeQMP) -> None:
    stamp = 1764300000.25
    server.event("STOP", at=stamp)
    event = monitor.event_wait("STOP", 2.0)
    assert event_time(event) == pytest.approx(stamp, abs=1e-6)


def test_event_wait_matches_and_skips_older_events(monitor: Monitor, server: FakeQMP) -> None:
    server.event("MIGRATION", {"status": "setup"}, at=100.0)
    server.event("MIGRATION", {"status": "active"}, at=101.0)
    server.event("MIGRATION", {"status": "active"}, at=102.0)
    got = monitor.event_wait("MIGRATION", 2.0, match=lambda e: e["data"]["status"] == "active", after=101.5)
    assert event_time(got) == 102.0


def test_event_wait_runs_out_saying_what_it_waited_for(monitor: Monitor, server: FakeQMP) -> None:
    server.event("RESUME")
    started = time.monotonic()
    with pytest.raises(Timeout) as failure:
        monitor.event_wait("STOP", 0.3, what="the source to stop")
    assert time.monotonic() - started < 15.0, "the wait ran on past its bound"
    assert "the source to stop" in str(failure.value) and "0.3 s" in str(failure.value)
    assert "last event RESUME" in str(failure.value)


def test_event_wait_ends_when_qemu_hangs_up(monitor: Monitor, server: FakeQMP) -> None:
    threading.Timer(0.2, server.hang_up).start()
    with pytest.raises(QMPDisconnected, match="closed while waiting for STOP"):
        monitor.event_wait("STOP", 10.0)
    with pytest.raises(QMPDisconnected):
        monitor.cmd("query-status")


def test_event_wait_is_cut_short_by_cancel(monitor: Monitor) -> None:
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        monitor.event_wait("STOP", 30.0, cancel=cancel)
    assert time.monotonic() - started < 15.0, "the wait ran on after the cancel"


def test_connect_gives_up_when_qemu_is_gone(sock_dir: Path) -> None:
    m = Monitor("primary", sock_dir / "never.sock", sock_dir / "t.jsonl", timeout=1.0)
    try:
        with pytest.raises(QemuExited, match="exited before"):
            m.connect(5.0, alive=lambda: False)
        with pytest.raises(Timeout, match="no socket yet"):
            m.connect(0.2)
    finally:
        m.close()


def test_the_transcript_has_commands_replies_and_events(monitor: Monitor, server: FakeQMP, sock_dir: Path) -> None:
    monitor.cmd("query-status")
    server.event("STOP")
    monitor.event_wait("STOP", 2.0)
    monitor.close()
    kinds = [next(k for k in json.loads(line) if k not in ("time", "who"))
             for line in (sock_dir / "qmp.jsonl").read_text().splitlines()]
    assert kinds == ["connected", "command", "return", "event"]


# -- the migration driver ----------------------------------------------------------------------

@contextlib.contextmanager
def migration_rig(sock_dir: Path, fail_at: str = "", tls_creds: str = "",
                  ) -> Iterator[tuple[Migration, FakeQMP, Monitor]]:
    """A migration driver between a source and a destination that speak QMP as QEMU does."""
    dest = FakeQMP(sock_dir / "dest.sock")
    dest.handlers["migrate-set-capabilities"] = lambda a: {}
    source = migration_source(sock_dir / "src.sock", destination=dest, fail_at=fail_at)
    source.handlers["migrate-set-parameters"] = lambda a: {}
    src_m = Monitor("primary", source.path, sock_dir / "p.jsonl", timeout=2.0)
    dest_m = Monitor("secondary", dest.path, sock_dir / "s.jsonl", timeout=2.0)
    try:
        src_m.connect(5.0)
        dest_m.connect(5.0)
        yield Migration(src_m, dest_m, "tcp:secondary:4444", tls_creds=tls_creds), source, src_m
    finally:
        for closing in (src_m, dest_m, source, dest):
            closing.close()


@pytest.mark.parametrize("tls_creds", ["", "mig0"], ids=["plain", "tls"])
def test_the_source_alone_is_told_its_tls_credentials_before_it_migrates(sock_dir: Path, tls_creds: str) -> None:
    with migration_rig(sock_dir, tls_creds=tls_creds) as (m, source, _src_m):
        m.prepare()
        m.start(5.0)
        told = [c["arguments"] for c in source.received if c.get("execute") == "migrate-set-parameters"]
        assert told == ([{"tls-creds": "mig0"}] if tls_creds else [])
        executed = [c.get("execute") for c in source.received]
        assert not told or executed.index("migrate-set-parameters") < executed.index("migrate")


def test_migration_times_come_from_qemus_events(sock_dir: Path) -> None:
    with migration_rig(sock_dir) as (m, source, src_m):
        m.prepare()
        caps = [c["capability"] for c in source.received[1]["arguments"]["capabilities"]]
        assert caps == ["pause-before-switchover", "events"]
        m.start(5.0)
        m.wait_pre_switchover(5.0)
        m.resume(5.0)
        m.wait_completed(5.0)
        t = m.times
        assert t.stopped is not None and t.resumed is not None
        assert t.started < t.stopped < t.pre_switchover < t.continued < t.completed <= t.resumed
        events = [(e["event"], e["data"].get("status")) for e in src_m.events]
        assert ("MIGRATION", "device") in events


@pytest.mark.parametrize("fail_at", ["pre-switchover", "completed"])
def test_a_failed_migration_says_where_and_why(sock_dir: Path, fail_at: str) -> None:
    with migration_rig(sock_dir, fail_at) as (m, _source, _src_m):
        m.prepare()
        m.start(5.0)
        with pytest.raises(ScenarioError, match=f"migration failed on the way to {fail_at}: failed on the way"):
            m.wait_pre_switchover(5.0)
            m.resume(5.0)
            m.wait_completed(5.0)


def test_a_monitor_whose_client_cannot_be_made_leaves_no_thread_or_open_transcript(
        sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_client(self: Monitor) -> None:
        raise TimeoutError("no answer within 0 s")

    before = {t.name for t in threading.enumerate()}
    monkeypatch.setattr(Monitor, "_make_client", no_client)
    opened: list[object] = []
    real_open = Path.open

    def spy(self: Path, *args: object, **kwargs: object) -> object:
        handle = real_open(self, *args, **kwargs)  # type: ignore[call-overload]
        opened.append(handle)
        return handle

    monkeypatch.setattr(Path, "open", spy)
    with pytest.raises(TimeoutError):
        Monitor("primary", sock_dir / "q.sock", sock_dir / "t.jsonl", timeout=0.5)
    assert all(h.closed for h in opened)  # type: ignore[attr-defined]
    assert "qmp-primary" not in {t.name for t in threading.enumerate()} - before

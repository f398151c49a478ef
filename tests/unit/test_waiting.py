"""Bounded waits: what they return, how they run out, how a cancel cuts them short."""

from __future__ import annotations

import threading
import time

import pytest

from lab.errors import Cancelled, Timeout
from lab.waiting import pause, wait_until


def test_returns_what_the_probe_found() -> None:
    calls = iter([None, None, 42])
    assert wait_until("the answer", lambda: next(calls), 5.0, interval=0.01) == 42


def test_runs_out_naming_what_it_awaited_the_bound_and_the_last_state() -> None:
    started = time.monotonic()
    with pytest.raises(Timeout) as failure:
        wait_until("the guest's ready line", lambda: None, 0.2, interval=0.01, last=lambda: "Loading initramfs")
    # Not before its bound; the upper margin only tells a wait that ran out from one that hung.
    assert 0.2 <= time.monotonic() - started < 15.0
    assert str(failure.value) == "the guest's ready line: not within 0.2 s (last seen: Loading initramfs)"


def test_a_probe_that_raises_ends_the_wait_at_once() -> None:
    def dead() -> None:
        raise RuntimeError("QEMU exited 1")

    with pytest.raises(RuntimeError, match="exited 1"):
        wait_until("QEMU", dead, 60.0)


def test_cancel_cuts_a_wait_and_a_pause_short() -> None:
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled, match="the hold"):
        pause(30.0, cancel, "the hold")
    assert time.monotonic() - started < 15.0, "the pause ran on after the cancel"
    with pytest.raises(Cancelled):
        wait_until("anything", lambda: None, 30.0, cancel=cancel)


def test_a_pause_without_cancel_lasts_its_time() -> None:
    started = time.monotonic()
    pause(0.1)
    assert time.monotonic() - started >= 0.1

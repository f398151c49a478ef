"""The KVM probe's outcome: kept for this boot when definite, forgotten otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.namespace import boot_id
from lab.vm import accel
from lab.vm.accel import ProbeOutcome


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    if not boot_id():
        pytest.skip("this kernel gives no boot id")
    return tmp_path / ".labs" / accel.CACHE_NAME


def test_a_definite_outcome_is_kept_for_this_boot(cache: Path) -> None:
    assert accel.remember(cache, ProbeOutcome(False, "a KVM guest did not boot within 10 s", definite=True))
    seen = accel.cached(cache)
    assert seen is not None and not seen.ok and "did not boot" in seen.detail and "this boot" in seen.detail


def test_a_passing_failure_is_not_kept(cache: Path) -> None:
    assert not accel.remember(cache, ProbeOutcome(False, "cannot start a probe host: conflict", definite=False))
    assert not cache.exists() and accel.cached(cache) is None


def test_an_outcome_of_another_boot_is_ignored(cache: Path) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({"boot_id": "another-boot", "ok": True, "detail": "booted", "when": "then"}))
    assert accel.cached(cache) is None


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"boot_id": 3}', '{"ok": true}'])
def test_an_unreadable_cache_counts_as_none(cache: Path, text: str) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_text(text)
    assert accel.cached(cache) is None

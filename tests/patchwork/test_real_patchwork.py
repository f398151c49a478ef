"""`lab check` end to end against the real Patchwork (tests/patchwork/real.py), not a server written
here: what it stores, and how it refuses. Opt-in: `LAB_PATCHWORK_SRC=<checkout of
getpatchwork/patchwork> tox -e patchwork`; without it every test skips, saying so.

The two runs that build (a series that applies, one that does not) need Docker and /dev/net/tun like
the e2e tests; the refusals stop before anything is built.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from lab import cli
from lab.config import LabConfig
from tests.e2e import made_images
from tests.e2e.test_check import assert_token_nowhere, check_config
from tests.patchwork.real import SRC_ENV, RealPatchwork, as_posted
from tests.patchwork_server import RECORDED_PATCH, SERIES_DIR, seed_patch_mbox

CONTROL_PATCH = next((SERIES_DIR / "control").glob("*.patch"))

__all__ = ["check_config"]  # a fixture, used by name
CONTROL_MSGID = "<20261207000000.1-1-lab@example.org>"
SEED_MSGID = str(json.loads(RECORDED_PATCH.read_text())["msgid"])
INCOMPLETE_MSGID = "<20261207000000.2-1-lab@example.org>"
FIRST_OF_TWO = b"""From 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001
From: Lab Test <lab@example.org>
Date: Mon, 7 Dec 2026 00:00:00 +0000
Subject: [PATCH 1/2] net: the first of two

The second never arrives.
---
diff --git a/net/filter-mirror.c b/net/filter-mirror.c
index 0000000..1111111 100644
--- a/net/filter-mirror.c
+++ b/net/filter-mirror.c
@@ -1 +1,2 @@
 x
+y
--
2.43.0
"""
STREAM_SCENARIOS = ["--scenario", "mirror", "--scenario", "redirector", "--scenario", "redirector-when-stopped"]


@pytest.fixture(scope="module")
def patchwork(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealPatchwork]:
    src = os.environ.get(SRC_ENV, "")
    if not src:
        pytest.skip(f"{SRC_ENV} is not set: it names a checkout of getpatchwork/patchwork to serve "
                    f"({SRC_ENV}=PATH tox -e patchwork)")
    if not (Path(src) / "manage.py").is_file():
        pytest.fail(f"{SRC_ENV}={src}: no manage.py there; name the root of a getpatchwork/patchwork checkout")
    if importlib.util.find_spec("django") is None or importlib.util.find_spec("rest_framework") is None:
        pytest.skip("Django and djangorestframework are not installed here: tox -e patchwork installs them")
    server = RealPatchwork(Path(src), tmp_path_factory.mktemp("patchwork"))
    try:
        server.start()
        server.receive("control", as_posted(CONTROL_PATCH.read_bytes(), CONTROL_MSGID))
        server.receive("seed", seed_patch_mbox())
        server.receive("incomplete", as_posted(FIRST_OF_TWO, INCOMPLETE_MSGID))
        yield server
    finally:
        server.close()


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch, patchwork: RealPatchwork) -> str:
    monkeypatch.setenv("PATCHWORK_TOKEN", patchwork.maintainer_token)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # the server is on 127.0.0.1
    return patchwork.maintainer_token


@pytest.fixture
def images_removed(patchwork: RealPatchwork, lab_docker: docker.DockerClient, lab_config: LabConfig) -> Iterator[None]:
    # patchwork first: without it the test skips before Docker is asked
    with made_images.removed_after(lab_docker, lab_config, "check-"):
        yield


def lab_check(patchwork: RealPatchwork, msgid: str, config: Path, out: Path, *more: str) -> int:
    return cli.main(["check", patchwork.page(msgid), "--config", str(config), "--out", str(out), *more])


def assert_posted_by_the_maintainer(checks: list[dict[str, object]]) -> None:
    for c in checks:
        assert c["context"] == "netfilter-continuity"
        assert c["user"]["username"] == "maintainer"  # type: ignore[index]
        assert not str(c.get("target_url") or "").startswith("file:")


@pytest.mark.e2e
@pytest.mark.usefixtures("images_removed")
def test_pending_then_success_stored_by_patchwork(patchwork: RealPatchwork, check_config: Path, token: str,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = lab_check(patchwork, CONTROL_MSGID, check_config, tmp_path / "out", *STREAM_SCENARIOS)
    captured = capsys.readouterr()
    checks = patchwork.checks(patchwork.patch_id(CONTROL_MSGID))
    assert [c["state"] for c in checks] == ["pending", "success"], (checks, captured.err)
    assert rc == 0
    assert "mirror gap->continuous" in checks[1]["description"]
    assert_posted_by_the_maintainer(checks)
    assert_token_nowhere(tmp_path / "out", captured, token)


@pytest.mark.e2e
@pytest.mark.usefixtures("images_removed")
def test_a_series_that_does_not_apply_fails_on_patchwork(patchwork: RealPatchwork, check_config: Path, token: str,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = lab_check(patchwork, SEED_MSGID, check_config, tmp_path / "out", "--scenario", "mirror")
    captured = capsys.readouterr()
    checks = patchwork.checks(patchwork.patch_id(SEED_MSGID))
    assert [c["state"] for c in checks] == ["pending", "fail"], (checks, captured.err)
    assert rc == 1
    assert checks[1]["description"].startswith("series does not apply to baseline: patch 1/1: ")
    assert_posted_by_the_maintainer(checks)
    assert_token_nowhere(tmp_path / "out", captured, token)


def refused(patchwork: RealPatchwork, msgid: str, config: Path, tmp_path: Path,
            capsys: pytest.CaptureFixture[str]) -> str:
    """`lab check` refused before it builds: one line, exit 2, no check stored, nothing run."""
    before = patchwork.checks(patchwork.patch_id(msgid))
    rc = lab_check(patchwork, msgid, config, tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert patchwork.checks(patchwork.patch_id(msgid)) == before and not (tmp_path / "out").exists()
    return err


def test_a_wrong_token(patchwork: RealPatchwork, check_config: Path, token: str, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = "0" * 40
    monkeypatch.setenv("PATCHWORK_TOKEN", wrong)
    err = refused(patchwork, CONTROL_MSGID, check_config, tmp_path, capsys)
    assert 'HTTP 403 {"detail":"Invalid token."}: the token is wrong or revoked' in err and wrong not in err


def test_a_token_that_is_not_a_maintainers(patchwork: RealPatchwork, check_config: Path, token: str,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATCHWORK_TOKEN", patchwork.user_token)
    err = refused(patchwork, CONTROL_MSGID, check_config, tmp_path, capsys)
    assert "You do not have permission to perform this action." in err
    assert "the token is not a maintainer's for project qemu-devel" in err and patchwork.user_token not in err


def test_an_incomplete_series(patchwork: RealPatchwork, check_config: Path, token: str, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(patchwork, INCOMPLETE_MSGID, check_config, tmp_path, capsys)
    assert "is incomplete: received_all is false (expected 2 patches)" in err

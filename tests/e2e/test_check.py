"""`lab check` for real: a series from a local Patchwork-like server (tests/patchwork_server.py), built on
the baseline, run A/B, and its checks posted back: pending, then one final state per patch.

The lab here has a name of its own (containers, networks) but shares the session's images, so the
unpatched QEMU is not built again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml

from lab import cli
from lab.config import LabConfig
from tests import patchwork_server
from tests.e2e import made_images
from tests.patchwork_server import MAINTAINER, PatchworkServer, ServedPatch, ServedSeries, seed_patch_mbox

# Failing builds: one worker for them under pytest-xdist, with the test that counts dangling images.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("image-builds")]

TOKEN = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7"


@pytest.fixture
def check_config(lab_config: LabConfig, tmp_path: Path) -> Path:
    """The session's lab.yaml under another lab name, with the same images (prefix) and wheel cache."""
    data = yaml.safe_load(lab_config.path.read_text())
    data.setdefault("lab", {}).update(name=f"{lab_config.name}-check"[:31], results_dir=str(lab_config.results_root))
    data.setdefault("images", {})["prefix"] = lab_config.image_prefix
    for profile in data["profiles"].values():
        series = profile.get("series") or {}
        if series.get("mbox"):
            series["mbox"] = str(lab_config.path.parent / series["mbox"])  # as lab.yaml's folder names it
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _no_images_left(lab_docker: docker.DockerClient, lab_config: LabConfig) -> Iterator[None]:
    with made_images.removed_after(lab_docker, lab_config, "check-"):
        yield


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PATCHWORK_TOKEN", TOKEN)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # the server is on 127.0.0.1
    return TOKEN


def serve(series: ServedSeries) -> Iterator[PatchworkServer]:
    with PatchworkServer([series], tokens={TOKEN: MAINTAINER}) as server:
        yield server


@pytest.fixture
def control_series() -> Iterator[PatchworkServer]:
    yield from serve(patchwork_server.control_series())


@pytest.fixture
def seed_series() -> Iterator[PatchworkServer]:
    """The seed record's patch 12/12 alone, numbered 1/1: it does not apply to 10.2.2."""
    yield from serve(ServedSeries(491379, "[1/1] net/filter-mirror: keep mirroring while stopped",
                                  [ServedPatch(2194230, "[1/1] net/filter-mirror: keep mirroring while stopped",
                                               seed_patch_mbox())]))


def assert_token_nowhere(out: Path, captured: pytest.CaptureResult[str], token: str = TOKEN) -> None:
    """Not in what the run printed, nor in any file it wrote (report.json, logs)."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert token.encode() not in path.read_bytes(), path
    assert token not in captured.out + captured.err


def test_a_series_that_applies(lab_docker: docker.DockerClient, check_config: Path, control_series: PatchworkServer,
                               token: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)  # in a workflow, the run's page would be posted
    started = time.monotonic()
    # The stream scenarios: what the control patch is for (it does not switch a redirector on while
    # stopped, so the guest scenarios would fail it, as they should).
    rc = cli.main(["check", f"{control_series.base}/api/patches/9100011/", "--config", str(check_config),
                   "--out", str(out), "--scenario", "mirror", "--scenario", "redirector",
                   "--scenario", "redirector-when-stopped"])
    seconds = time.monotonic() - started
    captured = capsys.readouterr()
    with capsys.disabled():
        print(f"\nlab check of a one-patch series: {seconds:.0f} s end to end")
    pending, final = control_series.checks_on(9100011)
    assert pending["state"] == "pending" and pending["context"] == "netfilter-continuity"
    # The control patch keeps filter-mirror flowing; 10.2.2 has no enable_when_stopped: named, not failed.
    assert final["state"] == "success", (final, captured.err)
    assert rc == 0
    description = final["description"]
    assert "mirror gap->continuous, 0 of " in description and "redirector continuous" in description
    assert "redirector-when-stopped not run" in description and "series 910001" in description
    assert len(description) <= 255 and "target_url" not in final  # no page of this machine is posted
    report = json.loads((out / "report.json").read_text())
    assert report["check"]["state"] == "success"
    assert [(e["patch"], e["state"]) for e in report["check"]["posted"]] == [(9100011, "pending"),
                                                                          (9100011, "success")]
    assert {r["profile"] for r in report["results"]} == {"baseline", "check-910001"}
    assert report["lab"]["builds"]["check-910001"]["series"]["patchwork_id"] == 910001
    assert_token_nowhere(out, captured)


def test_a_series_that_does_not_apply(lab_docker: docker.DockerClient, check_config: Path,
                                      seed_series: PatchworkServer, token: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = cli.main(["check", f"{seed_series.base}/api/patches/2194230/", "--config", str(check_config),
                   "--out", str(out), "--scenario", "mirror"])
    captured = capsys.readouterr()
    pending, final = seed_series.checks_on(2194230)
    assert pending["state"] == "pending"
    assert final["state"] == "fail", (final, captured.err)
    assert rc == 1
    assert final["description"].startswith("series does not apply to baseline: patch 1/1: ")
    assert "keep mirroring while stopped" in final["description"] and len(final["description"]) <= 255
    report = json.loads((out / "report.json").read_text())
    assert report["check"]["state"] == "fail" and report["results"] == []
    assert_token_nowhere(out, captured)


@pytest.fixture
def offline_series() -> Iterator[PatchworkServer]:
    yield from serve(patchwork_server.offline_series())


def test_the_offline_series_gets_a_check_on_each_of_its_twelve_patches(
        lab_docker: docker.DockerClient, check_config: Path, offline_series: PatchworkServer, token: str,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = cli.main(["check", f"{offline_series.base}/api/patches/2194230/", "--config", str(check_config),
                   "--out", str(out), "--scenario", "redirector-when-stopped"])
    captured = capsys.readouterr()
    patch_ids = [p.id for p in offline_series.series[0].patches]
    assert len(patch_ids) == 12 and patch_ids[-1] == 2194230
    for patch_id in patch_ids:
        states = [c["state"] for c in offline_series.checks_on(patch_id)]
        assert states == ["pending", "success"], (patch_id, states, captured.err)
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    provenance = report["lab"]["builds"]["check-491379"]["series"]["patches"]
    assert [p["n"] for p in provenance] == [f"{n}/12" for n in range(1, 13)]
    assert provenance[-1]["patchwork_id"] == 2194230
    assert provenance[-1]["msgid"] == "<20260207134728.1495932-12-lulu@redhat.com>"
    assert_token_nowhere(out, captured)

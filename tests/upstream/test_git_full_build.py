"""Opt-in (`tox -e upstream`, minutes of compile): a `qemu.source: git` profile whose history holds no
builder's tree, so the lab builds it in full: QEMU's git tree cloned inside `docker build` from a
repository served over HTTP on this machine's Docker bridge address, configured, compiled, then the
mirror scenario run on it through `lab run`.

The served repository is one commit: the builder's tree with the control patch applied, so its
mirror keeps flowing (continuous) where the baseline's stops, and QEMU's subprojects committed (as
the tarball carries them): upstream's tree would download them while configuring, and nothing off
this machine is reachable here.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from lab import cli, images
from lab.config import LabConfig
from lab.engine import resources
from tests.e2e.test_upstream import CONTROL_PATCH, bridge_gateway, builder_image, export_tree, git, write_config
from tests.git_server import GitServer, bare_copy

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("image-builds")]


def export_subprojects(client: docker.DockerClient, cfg: LabConfig, builder: str, dest: Path) -> None:
    """The subprojects the builder's tarball carried (QEMU's .gitignore keeps them out of its commit):
    without them configure would download them, and nothing outside this machine is reachable."""
    container = client.containers.create(builder, ["true"], network_disabled=True,
                                         labels=resources.labels(cfg.name, role="test-export"))
    try:
        stream, _ = container.get_archive("/src/qemu/subprojects")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            tar.extractall(dest, filter="tar")
    finally:
        container.remove(force=True)


@pytest.fixture
def squashed(lab_docker: docker.DockerClient, lab_config: LabConfig, lab_images: dict[str, images.ImageSet],
             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """One commit, the builder's tree plus the control patch, served at the bridge's gateway."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    repo = tmp_path / "qemu"
    repo.mkdir()
    builder = builder_image(lab_docker, lab_config, lab_images, tmp_path / "logs")
    export_tree(lab_docker, lab_config, builder, repo)
    export_subprojects(lab_docker, lab_config, builder, repo)
    git(repo, "init", "-q", "-b", "master")
    git(repo, "config", "gc.auto", "0")
    subprocess.run(["git", "-C", str(repo), "apply", str(CONTROL_PATCH)], check=True, timeout=60)
    git(repo, "add", "-A")
    git(repo, "add", "-f", "subprojects")  # ignored by QEMU's .gitignore; committed here, as a tarball has them
    git(repo, "commit", "-q", "-m", "QEMU with the control patch, no history")
    root = tmp_path / "served"
    root.mkdir()
    bare_copy(repo, root, "qemu")
    with GitServer(root, address=bridge_gateway(lab_docker)) as server:
        yield server.url("qemu")


def test_a_git_profile_without_a_builders_tree_builds_in_full_and_runs(squashed: str, lab_config: LabConfig,
                                                                       lab_docker: docker.DockerClient,
                                                                       tmp_path: Path) -> None:
    config = write_config(lab_config, tmp_path / "git.yaml", {"source": "git", "url": squashed, "ref": "master"},
                          "continuous")
    started = time.monotonic()
    rc = cli.main(["run", "--config", str(config), "--profile", "up", "--scenario", "mirror",
                   "--out", str(tmp_path / "run")])
    print(f"full git build and mirror: {time.monotonic() - started:.0f} s")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    built = report["lab"]["builds"].get("up", {})
    try:
        assert rc == 0, report["results"]
        assert "/qemu:" in built["qemu_image"] and "/qemu-tree:" not in built["qemu_image"], built
        assert squashed in lab_docker.images.get(built["qemu_image"]).labels["io.nfcl.qemu.source"]
    finally:
        # The URL's port is new each run, so is the tag: these images would never be used again.
        for tag in filter(None, (built.get("runtime_image"), built.get("qemu_image"))):
            try:
                lab_docker.images.remove(tag)
            except docker.errors.APIError:
                pass

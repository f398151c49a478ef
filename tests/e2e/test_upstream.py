"""Trees of the lab's own on the builder's: a real `git bisect run` over a local checkout, and a
`qemu.source: git` profile from a repository served over HTTP on this machine (tests/git_server.py).

Both repositories are made from the builder's own tree (exported from the builder image) plus two
commits: a harmless one, then the lab's control patch. Their commits descend from a commit whose
tree is the builder's, so every build is the diff applied in a container of the builder with an
incremental ninja: seconds, not a full QEMU compile.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import docker
import pytest
import yaml

from lab import cli, images
from lab.config import LabConfig, QemuSource
from lab.engine import Engine, resources
from tests.e2e import made_images
from tests.git_server import GitServer, bare_copy

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("image-builds")]

ROOT = Path(__file__).resolve().parents[2]
CONTROL_PATCH = next((ROOT / "series" / "control").glob("*.patch"))
LAB = str(Path(sys.executable).parent / "lab")
IDENTITY = {"GIT_AUTHOR_NAME": "lab test", "GIT_AUTHOR_EMAIL": "test@localhost", "GIT_COMMITTER_NAME": "lab test",
            "GIT_COMMITTER_EMAIL": "test@localhost"}
BISECT_BOUND_S = 900  # two lab runs of one scenario, each with an incremental build


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **IDENTITY, "GIT_CONFIG_GLOBAL": "/dev/null"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env,
                          timeout=600).stdout.strip()


@dataclass(frozen=True)
class Checkout:
    path: Path
    base: str  # the builder's tree, as a commit of this repository
    harmless: str
    control: str  # the control patch: filter-mirror keeps flowing (mirror: gap -> continuous)
    builder: str  # the builder the lab builds this tree on: the newest holding base's tree


def builder_image(engine: Engine, cfg: LabConfig, built: dict[str, images.ImageSet], logs: Path) -> str:
    """The unpatched builder the default profiles build on (baseline's QEMU image)."""
    baseline = built.get("baseline") or images.ImageBuilder(engine, cfg, logs).ensure(cfg.profiles["baseline"])
    return baseline.qemu


def export_tree(client: docker.DockerClient, cfg: LabConfig, builder: str, dest: Path) -> None:
    """The builder's committed tree (images/qemu/base-tree) as files, through `git archive` in a
    short-lived container of it (labelled as the lab's, removed after)."""
    container = client.containers.create(builder, ["git", "-C", "/src/qemu", "archive", "-o", "/tmp/tree.tar", "HEAD"],
                                         network_disabled=True, labels=resources.labels(cfg.name, role="test-export"))
    try:
        container.start()
        assert container.wait(timeout=300)["StatusCode"] == 0, container.logs()
        archive = dest.parent / "tree-archive.tar"
        with archive.open("wb") as out:
            for chunk in container.get_archive("/tmp/tree.tar")[0]:
                out.write(chunk)
    finally:
        container.remove(force=True)
    with tarfile.open(archive) as outer:
        inner = outer.extractfile("tree.tar")
        assert inner is not None
        with tarfile.open(fileobj=inner, mode="r|") as tree:
            tree.extractall(dest, filter="tar")
    archive.unlink()


@pytest.fixture(scope="module", autouse=True)
def _no_images_left(lab_docker: docker.DockerClient, lab_config: LabConfig) -> Iterator[None]:
    with made_images.removed_after(lab_docker, lab_config, "up-"):
        yield


@pytest.fixture(scope="module")
def checkout(lab_docker: docker.DockerClient, lab_engine: Engine, lab_config: LabConfig,
             lab_images: dict[str, images.ImageSet], tmp_path_factory: pytest.TempPathFactory) -> Checkout:
    """base (the builder's tree, a commit of its own here), harmless (a file added), control (the
    lab's control patch, applied with `git am`)."""
    top = tmp_path_factory.mktemp("upstream")
    repo = top / "qemu"
    repo.mkdir()
    builder = builder_image(lab_engine, lab_config, lab_images, top / "logs")
    export_tree(lab_docker, lab_config, builder, repo)
    git(repo, "init", "-q", "-b", "master")
    git(repo, "config", "gc.auto", "0")  # no packing in the background while the test copies objects
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "QEMU as the builder holds it")
    base = git(repo, "rev-parse", "HEAD")
    # Another commit than the builder's, the same tree: what lets the lab build on the builder. Another
    # builder image of this prefix may hold the same tree (one a user or an earlier run built with other
    # build arguments); the lab takes the newest, and so does this test.
    trees = images.ImageBuilder(lab_engine, lab_config, top / "logs").builder_trees()
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    assert tree in trees, (tree, trees)
    (repo / "docs" / "lab-note.txt").write_text("a file no build step reads\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "docs: a note")
    harmless = git(repo, "rev-parse", "HEAD")
    git(repo, "am", "-q", str(CONTROL_PATCH))
    return Checkout(repo, base, harmless, git(repo, "rev-parse", "HEAD"), trees[tree])


def write_config(lab_config: LabConfig, path: Path, qemu: dict[str, str], expect: str) -> Path:
    """The session's lab.yaml under another lab name, with the same images (prefix), one profile
    ``up`` of the given tree and the mirror scenario expecting ``expect`` of it."""
    data = yaml.safe_load(lab_config.path.read_text())
    data.setdefault("lab", {}).update(name=f"{lab_config.name}-up"[:31], results_dir=str(lab_config.results_root))
    data.setdefault("images", {})["prefix"] = lab_config.image_prefix
    data["profiles"] = {"up": {"qemu": qemu}}
    data["scenarios"] = {"mirror": {**data["scenarios"]["mirror"], "expect": {"up": expect}}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def builders(client: docker.DockerClient, cfg: LabConfig) -> set[str]:
    return {t for img in client.images.list(name=f"{cfg.image_prefix}/qemu") for t in img.tags}


def test_git_bisect_run_names_the_control_commit(checkout: Checkout, lab_config: LabConfig,
                                                 lab_docker: docker.DockerClient, tmp_path: Path) -> None:
    config = write_config(lab_config, tmp_path / "bisect.yaml", {"source": "local", "path": str(checkout.path)}, "gap")
    before = builders(lab_docker, lab_config)
    repo = checkout.path
    git(repo, "bisect", "start", checkout.control, checkout.base)
    try:
        started = time.monotonic()
        step = [LAB, "run", "--bisect", "--config", str(config), "--profile", "up", "--scenario", "mirror",
                "--out", str(tmp_path / "step")]
        bisect = subprocess.run(["git", "-C", str(repo), "bisect", "run", *step], capture_output=True, text=True,
                                timeout=BISECT_BOUND_S, check=False)
        seconds = time.monotonic() - started
    finally:
        git(repo, "bisect", "reset")
    assert bisect.returncode == 0, bisect.stdout[-3000:] + bisect.stderr[-3000:]
    assert f"{checkout.control} is the first bad commit" in bisect.stdout, bisect.stdout[-3000:]
    print(f"git bisect run: {seconds:.1f} s")
    # The commit git bisect named, tested as it is: the control patch turns the mirror continuous.
    git(repo, "checkout", "-q", checkout.control)
    try:
        started = time.monotonic()
        bad = subprocess.run([LAB, "run", "--bisect", "--config", str(config), "--profile", "up", "--scenario",
                              "mirror", "--out", str(tmp_path / "bad")], capture_output=True, text=True,
                             timeout=BISECT_BOUND_S, check=False)
        print(f"lab run --bisect on the control commit: {time.monotonic() - started:.1f} s")
    finally:
        git(repo, "checkout", "-q", "master")
    assert bad.returncode == 1, bad.stdout[-3000:] + bad.stderr[-3000:]
    [row] = json.loads((tmp_path / "bad" / "report.json").read_text())["results"]
    assert row["verdict"] == "continuous", row
    # Every step was built on the builder's tree: no QEMU builder was made for any of them.
    assert builders(lab_docker, lab_config) == before
    report = json.loads((tmp_path / "bad" / "report.json").read_text())
    built = report["lab"]["builds"]["up"]
    assert "/qemu-tree:up-" in built["qemu_image"] and checkout.builder in built["qemu_source"], built


def bridge_gateway(client: docker.DockerClient) -> str:
    """This machine's address on Docker's default bridge: the IPAM gateway when Docker names one,
    else the bridge interface's own address (Docker 20.10 often names only the subnet)."""
    bridge = client.networks.get("bridge").attrs
    named = [c["Gateway"] for c in bridge["IPAM"].get("Config") or [] if c.get("Gateway")]
    if named:
        return str(named[0])
    device = bridge.get("Options", {}).get("com.docker.network.bridge.name", "docker0")
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", device], capture_output=True, text=True,
                           check=True, timeout=30).stdout
    found = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", shown)
    assert found, f"no IPv4 address on {device}: {shown!r}"
    return found.group(1)


@pytest.fixture
def served(checkout: Checkout, lab_docker: docker.DockerClient, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Checkout]]:
    """The checkout served over git's smart HTTP, at the Docker bridge's gateway (this machine's own
    address there, which containers reach too), with a tag and a branch at the control commit."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    gateway = bridge_gateway(lab_docker)
    root = tmp_path / "served"
    root.mkdir()
    bare = bare_copy(checkout.path, root, "qemu")
    git(bare, "tag", "-a", "-m", "the control patch", "v10.2.2-control", checkout.control)
    git(bare, "branch", "control-branch", checkout.control)
    with GitServer(root, address=gateway) as server:
        yield server.url("qemu"), checkout


def test_a_git_profile_at_four_kinds_of_ref_is_one_build(served: tuple[str, Checkout], lab_config: LabConfig,
                                                         lab_docker: docker.DockerClient, lab_engine: Engine,
                                                         tmp_path: Path) -> None:
    url, checkout = served
    refs = [checkout.control, checkout.control[:10], "v10.2.2-control", "control-branch"]
    built: list[images.ImageSet] = []
    for ref in refs:
        profile = replace(lab_config.profiles["baseline"], name="up", qemu=QemuSource(source="git", url=url, ref=ref))
        started = time.monotonic()
        # A builder of its own for each, as separate `lab build`s would have.
        built.append(images.ImageBuilder(lab_engine, lab_config, tmp_path / "logs").ensure(profile))
        print(f"{ref}: {time.monotonic() - started:.1f} s")
    assert len({(b.qemu, b.runtime) for b in built}) == 1, [(b.qemu, b.runtime) for b in built]
    assert "/qemu-tree:up-" in built[0].qemu
    for later in built[1:]:
        assert not any(later.build_seconds.values()), later.build_seconds  # reused as they were
    assert all(b.tree and b.tree["commit"] == checkout.control for b in built)
    assert all(checkout.control in b.qemu_source for b in built)
    labels = lab_docker.images.get(built[0].qemu).labels
    assert labels["io.nfcl.qemu.source"] == f"git {url} commit {checkout.control}"
    # The scenario, through `lab run`: the served tree is the control one, so the mirror keeps flowing.
    config = write_config(lab_config, tmp_path / "git.yaml", {"source": "git", "url": url, "ref": "control-branch"},
                          "continuous")
    assert cli.main(["run", "--config", str(config), "--profile", "up", "--scenario", "mirror",
                     "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["lab"]["builds"]["up"]["runtime_image"] == built[0].runtime


@pytest.mark.parametrize(("ref", "says"), [("no-such-branch", "is no branch, tag or commit"),
                                           ("0123456789abcdef0123456789abcdef01234567", "is no commit")])
def test_a_git_ref_the_server_does_not_have_is_one_line(served: tuple[str, Checkout], lab_config: LabConfig,
                                                        tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        ref: str, says: str) -> None:
    config = write_config(lab_config, tmp_path / "git.yaml", {"source": "git", "url": served[0], "ref": ref}, "gap")
    assert cli.main(["build", "--config", str(config), "--profile", "up"]) == cli.EXIT_LAB_ERROR
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "profiles.up.qemu.ref" in err and says in err and "Traceback" not in err, err
    assert re.search(re.escape(ref), err)

"""lab.upstream.gittree against real git: refs resolved over git's smart HTTP (tests/git_server.py, on
127.0.0.1), a checkout's working tree read without writing to it, the nearest commit with a builder's
tree, and a diff that `git apply` turns back into the tree."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.images import IMAGES_DIR
from lab.upstream import gittree
from lab.upstream.gittree import GitSourceError
from tests.git_server import GitServer, bare_copy

TIMEOUT = 60.0
WHERE = "profiles.up.qemu"
IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@localhost", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
            "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}


def run(repo: Path, *args: str, stdin: str = "") -> str:
    env = {**os.environ, **IDENTITY, "GIT_CONFIG_GLOBAL": "/dev/null"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env,
                          input=stdin, timeout=60).stdout.strip()


def commit(repo: Path, message: str, **files: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    run(repo, "add", "-A")
    run(repo, "commit", "-q", "-m", message)
    return run(repo, "rev-parse", "HEAD")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    repo = tmp_path / "work"
    repo.mkdir()
    run(repo, "init", "-q", "-b", "master")
    run(repo, "config", "gc.auto", "0")  # no packing in the background while the server copies objects
    commit(repo, "base", **{"VERSION": "10.2.2\n", "net/filter-mirror.c": "int a;\n", "README": "qemu\n"})
    commit(repo, "harmless", **{"README": "qemu, the lab's copy\n"})
    commit(repo, "control", **{"net/filter-mirror.c": "int a;\nint keep_reading;\n"})
    run(repo, "tag", "-a", "-m", "a release", "v1", "HEAD~1")
    run(repo, "branch", "side", "HEAD~1")
    return repo


@pytest.fixture
def served(work: Path, tmp_path: Path) -> Iterator[tuple[GitServer, str]]:
    root = tmp_path / "served"
    root.mkdir()
    bare_copy(work, root, "qemu")
    with GitServer(root) as server:
        yield server, server.url("qemu")


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # the server is on 127.0.0.1


@pytest.mark.parametrize(("ref", "kind"), [("full", "commit"), ("short", "short hash"), ("v1", "tag"),
                                           ("side", "branch")])
def test_every_kind_of_ref_names_its_commit(work: Path, served: tuple[GitServer, str], tmp_path: Path,
                                            ref: str, kind: str) -> None:
    _, url = served
    wanted = run(work, "rev-parse", "HEAD~1")
    given = {"full": wanted, "short": wanted[:7]}.get(ref, ref)
    resolved, cache = gittree.resolve(url, given, tmp_path / "cache", TIMEOUT, WHERE)
    assert (resolved.commit, resolved.kind) == (wanted, kind)
    # The commit and its history are in the lab's cache, without any file contents.
    history = run(cache, "rev-list", "--missing=allow-any", resolved.commit).split()
    assert len(history) == 2


def test_a_branch_that_moved_names_its_new_commit(work: Path, served: tuple[GitServer, str], tmp_path: Path) -> None:
    server, url = served
    before, _ = gittree.resolve(url, "side", tmp_path / "cache", TIMEOUT, WHERE)
    moved = run(work, "rev-parse", "HEAD")
    run(server.root / "qemu.git", "update-ref", "refs/heads/side", moved)
    after, _ = gittree.resolve(url, "side", tmp_path / "cache", TIMEOUT, WHERE)
    assert before.commit != after.commit == moved


def one_line(error: pytest.ExceptionInfo[GitSourceError]) -> str:
    message = str(error.value)
    assert "\n" not in message and message.startswith(WHERE), message
    return message


@pytest.mark.parametrize("ref", ["no-such-branch", "0" * 40, "abcdef1"])
def test_an_unknown_ref_is_one_line(served: tuple[GitServer, str], tmp_path: Path, ref: str) -> None:
    with pytest.raises(GitSourceError) as error:
        gittree.resolve(served[1], ref, tmp_path / "cache", TIMEOUT, WHERE)
    message = one_line(error)
    assert f"{WHERE}.ref" in message and ref in message


def test_an_unreachable_url_is_one_line(served: tuple[GitServer, str], tmp_path: Path) -> None:
    server, url = served
    server.close()  # nothing listens on its port any more
    with pytest.raises(GitSourceError) as error:
        gittree.resolve(url, "master", tmp_path / "cache", TIMEOUT, WHERE)
    assert "cannot reach" in one_line(error) and url in str(error.value)


def test_an_ambiguous_short_hash_is_one_line(tmp_path: Path) -> None:
    repo = tmp_path / "many"
    repo.mkdir()
    run(repo, "init", "-q", "-b", "master")
    tree = run(repo, "write-tree")
    seen: dict[str, str] = {}
    parent: list[str] = []
    for n in range(5000):  # ~300 commits until two share 4 hex digits (the birthday bound of 65536)
        made = run(repo, "commit-tree", tree, *parent, "-m", f"commit {n}")
        parent = ["-p", made]
        if made[:4] in seen:
            break
        seen[made[:4]] = made
    run(repo, "update-ref", "refs/heads/master", made)
    root = tmp_path / "served"
    root.mkdir()
    bare_copy(repo, root, "many")
    with GitServer(root) as server, pytest.raises(GitSourceError) as error:
        gittree.resolve(server.url("many"), made[:4], tmp_path / "cache", TIMEOUT, WHERE)
    message = one_line(error)
    assert "ambiguous" in message and seen[made[:4]][:12] in message and made[:12] in message


def builders_copy(work: Path, tmp_path: Path) -> Path:
    """The builder image's tree: the files of ``HEAD~2``, committed anew as apply-series does."""
    builder = tmp_path / "builder"
    builder.mkdir()
    subprocess.run(f"git -C {work} archive HEAD~2 | tar -x -C {builder}", shell=True, check=True)
    run(builder, "init", "-q")
    run(builder, "add", "-A")
    run(builder, "commit", "-q", "-m", "base tree")
    return builder


def test_the_nearest_commit_with_a_builders_tree_and_the_diff_that_rebuilds(work: Path, tmp_path: Path) -> None:
    base_tree = run(work, "rev-parse", "HEAD~2^{tree}")
    assert gittree.nearest_base(work, "HEAD", {base_tree: "builder"}, TIMEOUT) == (run(work, "rev-parse", "HEAD~2"),
                                                                                  base_tree)
    assert gittree.nearest_base(work, "HEAD", {"f" * 40: "builder"}, TIMEOUT) is None
    # The builder's copy: the same files, another commit; the diff puts the checkout's tree in place.
    builder = builders_copy(work, tmp_path)
    assert run(builder, "rev-parse", "HEAD^{tree}") == base_tree
    patch = tmp_path / "tree.diff"
    patch.write_bytes(gittree.diff(work, base_tree, "HEAD", TIMEOUT, WHERE))
    run(builder, "apply", "--index", str(patch))
    assert run(builder, "write-tree") == run(work, "rev-parse", "HEAD^{tree}")


def test_a_builders_tree_moved_to_new_inodes_still_takes_the_diff_and_a_changed_one_does_not(
        work: Path, tmp_path: Path) -> None:
    # A builder image restored from a CI cache (`docker save`, `docker load`) has the same files and
    # mtimes at new inodes and ctimes; apply-tree, the builder's own script, must still apply there.
    builder = builders_copy(work, tmp_path)
    patch = tmp_path / "tree.diff"
    patch.write_bytes(gittree.diff(work, run(work, "rev-parse", "HEAD~2^{tree}"), "HEAD", TIMEOUT, WHERE))
    expected = run(work, "rev-parse", "HEAD^{tree}")
    env = {**os.environ, **IDENTITY, "GIT_CONFIG_GLOBAL": str(tmp_path / "gitconfig")}

    def apply_tree(tree: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(IMAGES_DIR / "series" / "apply-tree"), str(tree), str(patch), expected],
                              capture_output=True, text=True, env=env, timeout=60)

    loaded = tmp_path / "loaded"
    shutil.copytree(builder, loaded, symlinks=True)
    applied = apply_tree(loaded)
    assert applied.returncode == 0, applied.stderr
    assert f"tree {expected} in place" in applied.stdout
    changed = tmp_path / "changed"
    shutil.copytree(builder, changed, symlinks=True)
    (changed / "net" / "filter-mirror.c").write_text("int b;\n")
    refused = apply_tree(changed)
    assert refused.returncode != 0 and "filter-mirror.c" in refused.stderr


def test_the_working_tree_is_read_without_writing_to_the_checkout(work: Path, tmp_path: Path) -> None:
    (work / "net" / "filter-mirror.c").write_text("int changed;\n")
    (work / "new-file.c").write_text("int new;\n")
    (work / ".gitignore").write_text("ignored.o\n")
    (work / "ignored.o").write_text("not part of the tree\n")
    git_dir = work / ".git"
    before = {p: p.read_bytes() for p in git_dir.rglob("*") if p.is_file()}
    scratch_dir = tmp_path / "scratch"
    scratch_dir.mkdir()
    space = gittree.scratch(work, scratch_dir, TIMEOUT, WHERE)
    tree = gittree.working_tree(work, space, TIMEOUT, WHERE)
    # Nothing new in the repository, nothing changed (git may touch an object it found: no content).
    assert {p: p.read_bytes() for p in git_dir.rglob("*") if p.is_file()} == before
    env = {**os.environ, **space.env}
    listed = subprocess.run(["git", "-C", str(work), "ls-tree", "-r", "--name-only", tree], env=env, check=True,
                            capture_output=True, text=True).stdout.split()
    assert "new-file.c" in listed and ".gitignore" in listed and "ignored.o" not in listed
    shown = subprocess.run(["git", "-C", str(work), "show", f"{tree}:net/filter-mirror.c"], env=env, check=True,
                           capture_output=True, text=True).stdout
    assert shown == "int changed;\n"
    found = gittree.nearest_base(work, "HEAD", {run(work, "rev-parse", "HEAD~2^{tree}"): "b"}, TIMEOUT, space.env)
    assert found is not None and found[0] == run(work, "rev-parse", "HEAD~2")

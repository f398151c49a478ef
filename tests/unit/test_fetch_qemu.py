"""images/qemu/fetch-qemu's git source, run for real against a repository on this machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lab.images import IMAGES_DIR

SCRIPT = IMAGES_DIR / "qemu" / "fetch-qemu"


def git(repo: Path, *args: str) -> str:
    env = os.environ | {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@localhost"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with a VERSION per commit: 1.0 (tagged v1.0), 2.0 on branch feature, 3.0 on main."""
    repo = tmp_path_factory.mktemp("upstream")
    git(repo, "init", "-q", "-b", "main")
    for version in ("1.0", "3.0"):
        (repo / "VERSION").write_text(version + "\n")
        git(repo, "add", "VERSION")
        git(repo, "commit", "-q", "-m", version)
        if version == "1.0":
            git(repo, "tag", "v1.0")
            git(repo, "checkout", "-q", "-b", "feature")
            (repo / "VERSION").write_text("2.0\n")
            git(repo, "commit", "-q", "-am", "2.0")
            git(repo, "checkout", "-q", "main")
    return repo


def fetch(root: Path, url: str, ref: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"QEMU_SRC_ROOT": str(root), "QEMU_GIT_URL": url, "QEMU_GIT_REF": ref}
    return subprocess.run(["sh", str(SCRIPT), "git"], env=env, capture_output=True, text=True, timeout=60,
                          cwd=root.parent)


@pytest.mark.parametrize(("ref", "version"), [("v1.0", "1.0"), ("feature", "2.0"), ("main", "3.0"),
                                              ("HEAD~1", "1.0")])
def test_a_tag_branch_or_commit_is_checked_out(upstream: Path, tmp_path: Path, ref: str, version: str) -> None:
    done = fetch(tmp_path / "src", str(upstream), ref)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "src" / "qemu" / "VERSION").read_text() == version + "\n"
    assert f"QEMU tree: {version} from git" in done.stdout


def test_an_abbreviated_hash_is_checked_out(upstream: Path, tmp_path: Path) -> None:
    short = git(upstream, "rev-parse", "--short", "v1.0")
    assert fetch(tmp_path / "src", str(upstream), short).returncode == 0
    assert (tmp_path / "src" / "qemu" / "VERSION").read_text() == "1.0\n"


def test_an_unknown_ref_fails_naming_it(upstream: Path, tmp_path: Path) -> None:
    done = fetch(tmp_path / "src", str(upstream), "no-such-branch")
    assert done.returncode != 0 and "no-such-branch is no commit, tag or branch" in done.stderr


@pytest.mark.parametrize("ref", ["--orphan=evil", "-b", "--detach"])
def test_a_ref_that_looks_like_an_option_is_a_name(upstream: Path, tmp_path: Path, ref: str) -> None:
    done = fetch(tmp_path / "src", str(upstream), ref)
    assert done.returncode != 0 and "is no commit, tag or branch" in done.stderr
    assert git(tmp_path / "src" / "qemu", "branch", "--list") == "* main"  # nothing made from the ref


def test_a_url_that_looks_like_an_option_is_a_name(upstream: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    done = fetch(tmp_path / "src", f"--upload-pack=touch {marker};git-upload-pack", "main")
    assert done.returncode != 0 and not marker.exists()


def test_a_debian_source_without_a_mirror_stops_before_touching_apt(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MIRROR"} | {"QEMU_SRC_ROOT": str(tmp_path / "src")}
    done = subprocess.run(["sh", str(SCRIPT), "debian"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "MIRROR" in done.stderr and "is not set" in done.stderr
    assert not (tmp_path / "src" / "qemu").exists()

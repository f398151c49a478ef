"""The CI's own scripts against the real engine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_save_images_with_no_image_to_save_writes_nothing_and_says_so(tmp_path: Path) -> None:
    # `docker save -o FILE` of an empty list fails: the script must not call it then.
    output = tmp_path / "github-output"
    done = subprocess.run([str(ROOT / "scripts" / "save-images"), str(tmp_path / "images.tar")],
                          env={**os.environ, "GITHUB_OUTPUT": str(output), "LAB_IMAGES_LABEL": "io.nfcl.none=1"},
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "images.tar").exists()
    assert output.read_text() == "saved=false\n"


def test_setup_host_refuses_a_python_older_than_the_lab_needs_in_one_line(tmp_path: Path) -> None:
    """Debian 12's own python3 (3.11.2) has no tarfile extraction filters: setup-host says so before
    it makes .venv with it, instead of tox failing later on requires-python."""
    old = "/usr/bin/python3"
    found = subprocess.run([old, "-c", "import sys; print(sys.version_info < (3, 11, 4))"], capture_output=True,
                           text=True, check=False) if Path(old).exists() else None
    if found is None or found.stdout.strip() != "True":
        pytest.skip(f"{old} is not older than 3.11.4 here")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "setup-host").write_bytes((ROOT / "scripts" / "setup-host").read_bytes())
    (tmp_path / "scripts" / "setup-host").chmod(0o755)
    done = subprocess.run([str(tmp_path / "scripts" / "setup-host")], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}, timeout=120,
                          check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = [text for text in done.stdout.splitlines() if "3.11.4" in text]
    assert line.startswith("setup-host: python3 is Python 3.11.") and "pyenv" in line, line
    assert not (tmp_path / ".venv").exists()

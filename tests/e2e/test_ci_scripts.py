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

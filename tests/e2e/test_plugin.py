"""The pytest plugin from outside this repository: a folder with its own lab.yaml and a test file,
as a QEMU checkout would have, run by the pytest of an environment where the lab is installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab import images
from lab.config import LabConfig
from tests.e2e.rundirs import config_copy

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    """The test file the README shows for use outside this repository (kept honest: run here)."""
    text = README.read_text()
    start = text.index("# tests/test_filters.py")
    return text[start:text.index("```", start)]


def test_a_scenario_test_outside_the_checkout(lab_config: LabConfig, lab_images: dict[str, images.ImageSet],
                                              tmp_path: Path) -> None:
    profile = next(iter(lab_images))
    outside = tmp_path / "elsewhere"
    (outside / "tests").mkdir(parents=True)
    config_copy(lab_config.path, outside, lab_config.path.read_text().replace(
        "results_dir: lab-results", f"results_dir: {tmp_path / 'results'}"))
    (outside / "tests" / "test_filters.py").write_text(readme_example())
    proc = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--lab-profile", profile,
                           "tests/test_filters.py"], cwd=outside, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "passed" in proc.stdout and "lab artefacts:" in proc.stdout
    assert (tmp_path / "results").is_dir(), "the artefacts did not go where that lab.yaml says"

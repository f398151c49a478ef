"""The pytest plugin from outside this repository, as a user installs it: the lab's wheel in a venv of
its own (not this checkout's editable install), a folder with its own lab.yaml and the README's test
file, run by that venv's pytest."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab import images
from lab.config import LabConfig
from tests.e2e.rundirs import config_copy
from tests.e2e.wheel import run

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    """The test file the README shows for use outside this repository (kept honest: run here)."""
    text = README.read_text()
    start = text.index("# tests/test_filters.py")
    return text[start:text.index("```", start)]


def test_the_readme_example_from_the_wheel_elsewhere(wheel_venv: Path, lab_config: LabConfig,
                                                     lab_images: dict[str, images.ImageSet], tmp_path: Path) -> None:
    profile = next(iter(lab_images))
    outside = tmp_path / "elsewhere"
    (outside / "tests").mkdir(parents=True)
    config_copy(lab_config.path, outside, lab_config.path.read_text().replace(
        "results_dir: lab-results", f"results_dir: {tmp_path / 'results'}"))
    (outside / "tests" / "test_filters.py").write_text(readme_example())
    # -m e2e: the example carries no marker of its own, so it runs only if the plugin gave it one.
    proc = run([str(wheel_venv / "bin" / "python"), "-m", "pytest", "-v", "-p", "no:cacheprovider", "-m", "e2e",
                "--lab-profile", profile, "--junitxml", "junit.xml", "-o", "junit_family=xunit1",
                "tests/test_filters.py"], outside)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout and "lab artefacts:" in proc.stdout, proc.stdout[-3000:]
    assert (tmp_path / "results").is_dir(), "the artefacts did not go where that lab.yaml says"
    where = run([str(wheel_venv / "bin" / "python"), "-c", "import lab.pytest_plugin as p; print(p.__file__)"],
                outside)
    assert where.stdout.startswith(str(wheel_venv)), f"the plugin came from {where.stdout.strip()}"
    properties = {p.get("name"): p.get("value") for p in ET.parse(outside / "junit.xml").iter("property")}
    cell = f"{profile}-redirector"
    assert properties[f"{cell}.verdict"] == "continuous", properties
    assert int(properties[f"{cell}.sent"]) > 0 and f"{cell}.total_s" in properties, properties
    assert Path(properties[f"{cell}.artefacts"]).is_dir(), properties

"""The lab as people install it: a wheel (not an editable install) in a venv of its own, run from a
folder outside the checkout that holds a copy of lab.yaml and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import images
from lab.config import LabConfig
from tests.e2e.wheel import run

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory, lab_config: LabConfig) -> Path:
    """A folder with a copy of lab.yaml only (no series folder beside it)."""
    folder = tmp_path_factory.mktemp("elsewhere")
    (folder / "lab.yaml").write_text(lab_config.path.read_text())
    return folder


def test_the_wheel_carries_what_the_images_are_built_from(wheel_venv: Path, elsewhere: Path,
                                                          lab_images: dict[str, images.ImageSet]) -> None:
    """`lab build` from the wheel finds every image the checkout built: the same files, the same tags."""
    profile = next(iter(lab_images))
    build = run([str(wheel_venv / "bin" / "lab"), "build", "--profile", profile], elsewhere)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    assert lab_images[profile].runtime in build.stdout, build.stdout[-2000:]
    assert "Step " not in build.stdout, "the installed lab built an image the checkout has"


def test_a_missing_series_folder_is_one_line(wheel_venv: Path, elsewhere: Path, lab_config: LabConfig) -> None:
    local = [p.name for p in lab_config.profiles.values() if p.default and p.series and p.series.mbox]
    if not local:
        pytest.skip("lab.yaml runs no local series by default")
    refused = run([str(wheel_venv / "bin" / "lab"), "run"], elsewhere, timeout=60)
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert "series.mbox" in refused.stderr and "copy the series" in refused.stderr, refused.stderr


def test_a_cell_from_the_wheel(wheel_venv: Path, elsewhere: Path, lab_images: dict[str, images.ImageSet]) -> None:
    """The README's plugin example from the same wheel is tests/e2e/test_plugin.py."""
    profile = next(iter(lab_images))
    cell = run([str(wheel_venv / "bin" / "lab"), "run", "--profile", profile, "--scenario", "redirector", "--jobs", "1",
                "--out", "run"], elsewhere)
    assert cell.returncode == 0, cell.stdout[-2000:] + cell.stderr[-2000:]
    [row] = json.loads((elsewhere / "run" / "report.json").read_text())["results"]
    assert (row["verdict"], row["match"]) == ("continuous", True), row["reasons"]

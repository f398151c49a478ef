"""The lab as people install it: a wheel (not an editable install) in a venv of its own, run from a
folder outside the checkout that holds a copy of lab.yaml and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from lab import images
from lab.config import LabConfig
from tests.e2e.test_plugin import readme_example

pytestmark = pytest.mark.e2e

def run(argv: list[str], cwd: Path, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, lab_wheel: Path) -> Path:
    """A venv with the lab's wheel installed: its own site-packages first; the lab's dependencies (not
    the lab) from this test environment, so that nothing is downloaded."""
    work = tmp_path_factory.mktemp("venv")
    env = work / "venv"
    made = run([sys.executable, "-m", "venv", str(env)], work, timeout=120)
    assert made.returncode == 0, made.stderr
    python = env / "bin" / "python"
    installed = run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(lab_wheel)], work)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], work
                    ).stdout.strip())
    # A plain path: the editable install's own .pth files in there are not read, so `lab` is the wheel's.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = run([str(python), "-c", "import lab.images as i; print(i.IMAGES_DIR)"], work)
    assert where.stdout.strip() == str(site / "lab" / "buildfiles"), where.stdout + where.stderr
    return env


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory, lab_config: LabConfig) -> Path:
    """A folder with a copy of lab.yaml only (no series folder beside it)."""
    folder = tmp_path_factory.mktemp("elsewhere")
    (folder / "lab.yaml").write_text(lab_config.path.read_text())
    return folder


def test_the_wheel_carries_what_the_images_are_built_from(venv: Path, elsewhere: Path,
                                                          lab_images: dict[str, images.ImageSet]) -> None:
    """`lab build` from the wheel finds every image the checkout built: the same files, the same tags."""
    profile = next(iter(lab_images))
    build = run([str(venv / "bin" / "lab"), "build", "--profile", profile], elsewhere)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    assert lab_images[profile].runtime in build.stdout, build.stdout[-2000:]
    assert "Step " not in build.stdout, "the installed lab built an image the checkout has"


def test_a_missing_series_folder_is_one_line(venv: Path, elsewhere: Path, lab_config: LabConfig) -> None:
    local = [p.name for p in lab_config.profiles.values() if p.default and p.series and p.series.mbox]
    if not local:
        pytest.skip("lab.yaml runs no local series by default")
    refused = run([str(venv / "bin" / "lab"), "run"], elsewhere, timeout=60)
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert "series.mbox" in refused.stderr and "copy the series" in refused.stderr, refused.stderr


def test_a_cell_and_the_readme_plugin_example_from_the_wheel(venv: Path, elsewhere: Path,
                                                              lab_images: dict[str, images.ImageSet]) -> None:
    profile = next(iter(lab_images))
    cell = run([str(venv / "bin" / "lab"), "run", "--profile", profile, "--scenario", "redirector", "--jobs", "1",
                "--out", "run"], elsewhere)
    assert cell.returncode == 0, cell.stdout[-2000:] + cell.stderr[-2000:]
    [row] = json.loads((elsewhere / "run" / "report.json").read_text())["results"]
    assert (row["verdict"], row["match"]) == ("continuous", True), row["reasons"]
    (elsewhere / "tests").mkdir(exist_ok=True)
    (elsewhere / "tests" / "test_filters.py").write_text(readme_example())
    plugin = run([str(venv / "bin" / "python"), "-m", "pytest", "-v", "-p", "no:cacheprovider", "--lab-profile",
                  profile, "tests/test_filters.py"], elsewhere)
    assert plugin.returncode == 0, plugin.stdout[-3000:] + plugin.stderr[-2000:]
    assert "1 passed" in plugin.stdout and "lab artefacts:" in plugin.stdout

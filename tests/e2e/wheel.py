"""The lab's wheel, built as `pip install .` builds it, from a copy of the checkout."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
# Not part of what a wheel is built from: caches, environments, results.
NOT_SOURCES = (".git", ".tox", ".venv", "lab-results", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")


def build(work: Path) -> Path:
    """The wheel, in ``work/dist``; the copy it is built from is ``work/source`` (building in the
    checkout would leave build/ there)."""
    source = work / "source"
    shutil.copytree(CHECKOUT, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    # With this environment's setuptools when it has one (nothing to download); else pip fetches it.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(work / "dist"),
                            str(source)], capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [wheel] = (work / "dist").glob("*.whl")
    return wheel


def run(argv: list[str], cwd: Path, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def install(wheel: Path, work: Path) -> Path:
    """A venv in ``work/venv`` with the lab's wheel installed: its own site-packages first; the lab's
    dependencies (not the lab) from this test environment, so that nothing is downloaded."""
    env = work / "venv"
    made = run([sys.executable, "-m", "venv", str(env)], work, timeout=120)
    assert made.returncode == 0, made.stderr
    python = env / "bin" / "python"
    installed = run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], work)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], work
                    ).stdout.strip())
    # A plain path: the editable install's own .pth files in there are not read, so `lab` is the wheel's.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = run([str(python), "-c", "import lab.images as i; print(i.IMAGES_DIR)"], work)
    assert where.stdout.strip() == str(site / "lab" / "buildfiles"), where.stdout + where.stderr
    return env

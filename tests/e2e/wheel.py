"""The lab's wheel, built as `pip install .` builds it, from a copy of the checkout."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
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

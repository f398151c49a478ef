"""Run folders of one `lab` process, found by the marker the lab writes in each (other runs may
share the machine: pytest-xdist workers, people)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from lab.namespace import Namespace

MARKER = ".nfcl-run"


def owner(rundir: Path) -> int:
    try:
        return int(json.loads((rundir / MARKER).read_text()).get("owner.pid", 0))
    except (OSError, ValueError):
        return 0


def newest_rundir(lab: str, after: float, pid: int) -> Path | None:
    """The newest run folder of the `lab` process ``pid`` made after ``after``."""
    dirs = [d for d in Path(tempfile.gettempdir()).glob(f"{lab}-*") if d.is_dir() and d.stat().st_mtime >= after
            and owner(d) == pid]
    return max(dirs, key=lambda d: d.stat().st_mtime) if dirs else None


def phase_of(lab: str, after: float, pid: int) -> str:
    rundir = newest_rundir(lab, after, pid)
    phase = rundir / "phase" if rundir is not None else None
    return phase.read_text().strip() if phase is not None and phase.exists() else ""


def run_of(rundir: Path) -> Namespace:
    """The namespace of the run a run folder belongs to."""
    marker = json.loads((rundir / MARKER).read_text())
    return Namespace(marker["lab"], marker["run"])


def config_copy(source: Path, folder: Path, text: str | None = None, copy_series: bool = False) -> Path:
    """lab.yaml (``text``, or the source's own) in another folder, with the source's series beside it:
    relative series paths stay as lab.yaml spells them, so the series images are the same ones.
    ``copy_series``: a copy, not a link (for another user, who may not reach the checkout)."""
    folder.mkdir(parents=True, exist_ok=True)
    series = folder / "series"
    if copy_series and not series.exists():
        shutil.copytree(source.parent / "series", series)
    elif not series.exists():
        series.symlink_to(source.parent / "series", target_is_directory=True)
    path = folder / "lab.yaml"
    path.write_text(source.read_text() if text is None else text)
    return path

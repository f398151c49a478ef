"""A cell's files: its run folder while it runs, its artefacts folder afterwards.

A run folder is made short, in the temporary directory (QMP's unix socket path must stay under 108
bytes), and carries the lab's marker so that a sweep after a crash removes only what the lab made.
At the end it gets ``timeline.png`` (drawn while the hosts are removed) and ``result.json`` and
moves to the artefacts folder, or, when its hosts are kept for a person, is copied there and stays
with the running lab.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from lab import guard
from lab.namespace import RUN, Namespace, alive
from lab.results import timeline
from lab.results.report import Row
from lab.scenario import Outcome

MARKER = ".nfcl-run"  # in every run folder the lab makes; a sweep removes nothing without it


def new_rundir(ns: Namespace) -> Path:
    """A run folder for a namespace; its marker says whose it is (lab, namespace, owner)."""
    path = Path(tempfile.mkdtemp(prefix=f"{ns.prefix}-"))
    (path / MARKER).write_text(json.dumps({"lab": ns.lab, **ns.labels()}) + "\n")
    return path


def own_rundir(path: Path, ns: Namespace) -> Path | None:
    """``path`` (resolved) when it is a run folder the lab made for ``ns``: right in the temporary
    folder, named with the namespace's prefix, carrying the lab's marker for that namespace (its
    owner aside: another process made it). A path read from a state file is removed only then."""
    try:
        resolved = path.resolve(strict=True)
        marker = json.loads((resolved / MARKER).read_text())
    except (OSError, ValueError):
        return None
    inside = resolved.parent == Path(tempfile.gettempdir()).resolve() and resolved.name.startswith(f"{ns.prefix}-")
    whose = {"lab": ns.lab, **{k: v for k, v in ns.labels().items() if not k.startswith("owner.")}}
    ours = isinstance(marker, dict) and {k: marker.get(k) for k in whose} == whose
    return resolved if inside and ours else None


def write_phase(rundir: Path, phase: str) -> None:
    (rundir / "phase").write_text(phase + "\n")


def describe(rundir: Path, row: Row) -> None:
    """result.json: the cell's report row."""
    (rundir / "result.json").write_text(json.dumps(row.to_json(), indent=2) + "\n")


def picture(rundir: Path, title: str, outcome: Outcome) -> Path | None:
    """timeline.png, when the scenario captured."""
    c = outcome.captured
    if c is None or outcome.analysis is None:
        return None
    return timeline.draw(rundir / "timeline.png", title, c.sent, c.stream, c.window, outcome.analysis,
                         outcome.guest, c.resumed, outcome.verdict, c.view)


def move_to(rundir: Path, out: Path) -> Path:
    """The run folder becomes ``out`` (sockets dropped: they mean nothing once QEMU is gone; a split
    cell's keys, whatever a host could not withdraw, never leave)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for sock in rundir.rglob("*.sock"):
        sock.unlink(missing_ok=True)
    guard.forget(rundir)
    (rundir / MARKER).unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    shutil.move(str(rundir), str(out))
    return out


def copy_to(rundir: Path, out: Path) -> Path:
    """A kept lab's files as they are now; the run folder itself stays with the running lab."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(rundir, out, ignore=shutil.ignore_patterns("*.sock", "authorized_keys", guard.FOLDER, MARKER))
    return out


def stray_rundirs(lab: str | None) -> list[Path]:
    """Run folders a killed run left in the temporary directory: only those with the lab's marker
    whose owner is gone (a live run's, or a kept lab's, stay)."""
    pattern = f"{lab}-*" if lab else "*-*"
    found = []
    for path in Path(tempfile.gettempdir()).glob(pattern):
        marker = path / MARKER
        try:
            # Another user's run folder cannot be looked into (is_file raises then): not this one's to remove.
            if not (path.is_dir() and not path.is_symlink() and marker.is_file()):
                continue
            owner = json.loads(marker.read_text())
            mine = lab is None or owner["lab"] == lab
            dead = owner.get("kind") == RUN and not alive(int(owner.get("owner.pid", 0)), owner.get("owner.boot", ""))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # not a marker the lab wrote: leave the folder alone
        if mine and dead:
            found.append(path)
    return found


def remove_stray_rundirs(lab: str | None) -> int:
    """Removes what ``stray_rundirs`` finds; how many."""
    found = stray_rundirs(lab)
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return len(found)

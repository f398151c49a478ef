"""`lab report merge`: the reports of a matrix run in parts (``lab run --shard``) made one.

The merged report.json has every row of every part, in the order the parts are given, each cell's
folder copied beside it (so its page links work wherever the parts were downloaded to). Parts of
different configurations are refused: their rows would not be one matrix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.results.report import Report, Row, rows_of


@dataclass(frozen=True)
class Part:
    """One report.json to merge."""

    path: Path
    lab: dict[str, Any]
    rows: list[Row]

    @classmethod
    def read(cls, path: Path) -> Part:
        """The report at ``path`` (a report.json, or the folder it is in)."""
        if path.is_dir():
            path = path / "report.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabError(f"{path}: no such report") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LabError(f"{path}: not a readable report.json ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("lab"), dict) or \
                not isinstance(data.get("results"), list):
            raise LabError(f"{path}: not a lab report (no lab and results keys)")
        try:
            rows = rows_of(data)
        except ValueError as exc:
            raise LabError(f"{path}: {exc}") from None
        return cls(path, data["lab"], rows)


def cell_key(row: Row) -> tuple[str, str, str]:
    return row.profile, row.destination_profile, row.scenario


def check_one_matrix(parts: list[Part]) -> None:
    """Refuse parts of different configurations, or two parts with the same cell."""
    first = parts[0]
    images: dict[str, tuple[str, Path]] = {}
    seen: dict[tuple[str, str, str], Path] = {}
    for part in parts:
        if part.lab.get("config") != first.lab.get("config"):
            raise LabError(f"{part.path} is of config {part.lab.get('config')!r}, {first.path} of "
                           f"{first.lab.get('config')!r}: merge the parts of one run's configuration")
        for profile, build in (part.lab.get("builds") or {}).items():
            image = str(build.get("runtime_image", ""))
            known = images.setdefault(profile, (image, part.path))
            if known[0] != image:
                raise LabError(f"{part.path} ran {profile} as {image}, {known[1]} as {known[0]}: "
                               "the parts are of different configurations")
        for row in part.rows:
            other = seen.setdefault(cell_key(row), part.path)
            if other != part.path:
                raise LabError(f"{row.builds} x {row.scenario} is in both {other} and {part.path}: "
                               "give each part once")


def _joined(values: list[Any]) -> str:
    return ", ".join(dict.fromkeys(str(v) for v in values if v))


def merged_lab(parts: list[Part]) -> dict[str, Any]:
    labs = [p.lab for p in parts]
    builds: dict[str, Any] = {}
    engines: dict[str, Any] = {}
    for lab in labs:
        builds |= lab.get("builds") or {}
        engines |= lab.get("engines") or {}
    started = [str(lab["started"]) for lab in labs if lab.get("started")]
    return {"config": labs[0].get("config"), "run": _joined([lab.get("run") for lab in labs]),
            "accel": _joined([lab.get("accel") for lab in labs]),
            "accel_reason": _joined([lab.get("accel_reason") for lab in labs]),
            "builds": builds, "engines": engines, "host": _joined([lab.get("host") for lab in labs]),
            "started": min(started) if started else "",
            # The parts ran side by side (a CI matrix): the merged run took as long as its longest part.
            "duration_s": max((float(lab.get("duration_s") or 0) for lab in labs), default=0.0),
            "merged_from": [str(p.path) for p in parts]}


def _cell_folder(row: Row, part: Part) -> Path | None:
    """The cell's folder: where the run wrote it, or beside the part's report (a downloaded artefact)."""
    if not row.artefacts:
        return None
    for folder in (Path(row.artefacts), part.path.parent / Path(row.artefacts).name):
        if folder.is_dir():
            return folder
    return None


def _copy_cell(row: Row, part: Part, out: Path) -> Row:
    folder = _cell_folder(row, part)
    if folder is None:
        return row
    dest = out / folder.name
    if dest.resolve() != folder.resolve():
        shutil.copytree(folder, dest, dirs_exist_ok=True)
    return dataclasses.replace(row, artefacts=str(dest))


@dataclass(frozen=True)
class Merged:
    path: Path
    report: Report  # for the verdict table and the exit status lab run would give


def merge(paths: list[Path], out: Path) -> Merged:
    """Read, check and merge the reports; write OUT/report.json with the cells' folders beside it."""
    parts = [Part.read(p) for p in paths]
    check_one_matrix(parts)
    out.mkdir(parents=True, exist_ok=True)
    rows = [_copy_cell(row, part, out) for part in parts for row in part.rows]
    lab = merged_lab(parts)
    data = {"lab": lab, "results": [r.to_json() for r in rows]}
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".json", dir=out)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
    path = out / "report.json"
    os.replace(tmp, path)
    return Merged(path, Report(config=str(lab["config"]), run=lab["run"], accel=lab["accel"], rows=rows))

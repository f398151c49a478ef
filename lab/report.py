"""The report: one row per profile x scenario cell, the verdict table, report.json.

``Row`` is the one definition of a report row. report.json's ``results``, the table the CLI prints,
the Markdown summary of a CI job and the README's field list all come from (or are checked against)
its fields: other tools read these names, keep them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lab.analysis import Analysis

NOT_RUN = "not-run"  # a cell the run did not get to (interrupted, or a lab error in an earlier cell)
TIMINGS = ("boot", "migrate", "hold", "drain", "total")


@dataclass(frozen=True)
class Row:
    """One cell of the matrix, as report.json gives it."""

    profile: str
    scenario: str
    filter: str
    expected: str
    verdict: str
    match: bool
    frames_sent: int | None
    frames_captured: int | None
    frames_delivered: int | None
    lost: int | None
    duplicates: int | None
    reordered: int | None
    frames_during_stop: int | None
    max_gap_ms: float | None
    stopped_window_ms: float | None
    reasons: list[str]
    accel: str
    engines: dict[str, str]  # where each host ran: {"primary": NAME, "secondary": NAME}
    qemu_version: str
    timings: dict[str, float]  # seconds: boot, migrate, hold, drain, total
    artefacts: str  # the cell's folder ("" when nothing ran)

    @classmethod
    def of(cls, *, profile: str, scenario: str, filter: str, expected: str, verdict: str, accel: str,
           analysis: Analysis | None = None, error: str = "", qemu_version: str = "",
           timings: dict[str, float] | None = None, artefacts: str = "",
           engines: dict[str, str] | None = None) -> Row:
        counts = {k: getattr(analysis, k) if analysis else None for k in COUNTS}
        reasons = list(analysis.reasons) if analysis else ([error] if error else [])
        return cls(profile=profile, scenario=scenario, filter=filter, expected=expected, verdict=verdict,
                   match=verdict == expected, **counts, reasons=reasons, accel=accel, engines=dict(engines or {}),
                   qemu_version=qemu_version,
                   timings=dict(timings or {}), artefacts=artefacts)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def why(self) -> str:
        return "; ".join(self.reasons)


COUNTS = ("frames_sent", "frames_captured", "frames_delivered", "lost", "duplicates", "reordered",
          "frames_during_stop", "max_gap_ms", "stopped_window_ms")
ROW_FIELDS = tuple(f.name for f in dataclasses.fields(Row))
# The verdict table: (column heading, row field); the CLI's table and the CI summary both use it.
COLUMNS = (("profile", "profile"), ("scenario", "scenario"), ("expected", "expected"), ("verdict", "verdict"),
           ("match", "match"), ("sent", "frames_sent"), ("captured", "frames_captured"),
           ("delivered", "frames_delivered"), ("lost", "lost"), ("during stop", "frames_during_stop"),
           ("max gap ms", "max_gap_ms"))
NUMERIC = {heading for heading, name in COLUMNS if name in COUNTS}


def cell_text(row: Row, name: str) -> str:
    value = getattr(row, name)
    if name == "match":
        return "yes" if value else "NO"
    return "-" if value is None else str(value)


@dataclass
class Report:
    config: str
    run: str = ""  # the run's namespace id: its containers, networks and run folders carry it
    accel: str = ""
    accel_reason: str = ""
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)  # name: address, image transfer seconds
    rows: list[Row] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    check: dict[str, Any] | None = None  # `lab check`: the checks posted (lab.check.Poster.record)

    @property
    def all_match(self) -> bool:
        return bool(self.rows) and all(r.match for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "lab": {"config": self.config, "run": self.run, "accel": self.accel, "accel_reason": self.accel_reason,
                    "builds": self.builds, "engines": self.engines, "host": platform.node(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                    "duration_s": round(time.time() - self.started, 1)},
            "results": [r.to_json() for r in self.rows],
        } | ({"check": self.check} if self.check is not None else {})

    def write(self, out: Path) -> Path:
        """report.json, atomically: a reader never sees half a file."""
        out.mkdir(parents=True, exist_ok=True)
        data = self.to_json()
        path = out / "report.json"
        fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".json", dir=out)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
        return path

    def table(self) -> Table:
        t = Table(title=f"netfilter continuity ({self.accel})", title_justify="left")
        for heading, _name in COLUMNS:
            t.add_column(heading, justify="right" if heading in NUMERIC else "left", no_wrap=True)
        for r in self.rows:
            style = "green" if r.match else "red"
            t.add_row(*(f"[{style}]{cell_text(r, name)}[/]" if name in ("verdict", "match") else cell_text(r, name)
                        for _heading, name in COLUMNS))
        return t

    def reasons(self) -> list[str]:
        return [f"{r.profile} x {r.scenario}: {r.why}" for r in self.rows if r.why]

    def ab_table(self) -> Table:
        """Scenarios as rows, profiles as columns: what a series changes, at a glance."""
        profiles = list(dict.fromkeys(r.profile for r in self.rows))
        t = Table(title=f"A/B: {' vs '.join(profiles)} ({self.accel})", title_justify="left")
        t.add_column("scenario")
        for p in profiles:
            t.add_column(p)
        for sc in dict.fromkeys(r.scenario for r in self.rows):
            cells = []
            for p in profiles:
                r = next((r for r in self.rows if r.profile == p and r.scenario == sc), None)
                if r is None:
                    cells.append("-")
                    continue
                style, mark = ("green", "ok") if r.match else ("red", f"expected {r.expected}")
                counts = f" {r.frames_captured}/{r.frames_sent}" if r.frames_sent is not None else ""
                cells.append(f"[{style}]{r.verdict} ({mark})[/]{counts}")
            t.add_row(sc, *cells)
        return t

    def print(self, console: Console) -> None:
        if len({r.profile for r in self.rows}) > 1:
            console.print(self.ab_table())
        console.print(self.table())
        for line in self.reasons():
            console.print(f"  {line}", markup=False)


def rows_of(report: dict[str, Any]) -> list[Row]:
    """The rows of a report.json (as written by ``Report.write``)."""
    return [Row(**{k: r.get(k) for k in ROW_FIELDS}) for r in report.get("results", [])]


def markdown(report: dict[str, Any]) -> str:
    """The verdict table as Markdown, for a CI job summary."""
    lab = report.get("lab", {})
    lines = [f"### Netfilter continuity ({lab.get('accel', '?')})", "",
             "| " + " | ".join(h for h, _ in COLUMNS) + " |",
             "|" + "|".join("---:" if h in NUMERIC else "---" for h, _ in COLUMNS) + "|"]
    for row in rows_of(report):
        cells = [cell_text(row, name) for _h, name in COLUMNS]
        if not row.match:
            cells[[n for _h, n in COLUMNS].index("match")] = "**NO**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

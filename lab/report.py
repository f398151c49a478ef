"""The verdict table and report.json.

report.json: ``{"lab": {...}, "results": [ {profile, scenario, filter, expected, verdict, match,
frames_sent, frames_captured, frames_delivered, lost, duplicates, reordered, frames_during_stop,
max_gap_ms, stopped_window_ms, accel, qemu_version, timings, ...}, ... ]}``. Other tools read these
field names: keep them.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lab.scenario import ScenarioResult


@dataclass
class Report:
    config: str
    accel: str
    accel_reason: str
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: list[ScenarioResult] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    @property
    def all_match(self) -> bool:
        return bool(self.results) and all(r.match for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "lab": {"config": self.config, "accel": self.accel, "accel_reason": self.accel_reason,
                    "builds": self.builds, "host": platform.node(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                    "duration_s": round(time.time() - self.started, 1)},
            "results": [r.to_json() for r in self.results],
        }

    def write(self, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "report.json"
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    def table(self) -> Table:
        t = Table(title=f"netfilter continuity ({self.accel})", title_justify="left")
        numeric = ("sent", "captured", "delivered", "lost", "during stop", "max gap ms")
        for col in ("profile", "scenario", "expected", "verdict", "match", *numeric):
            t.add_column(col, justify="right" if col in numeric else "left", no_wrap=True)
        for r in self.results:
            a = r.analysis
            style = "green" if r.match else "red"
            t.add_row(r.profile, r.scenario, r.expected, f"[{style}]{r.verdict}[/]",
                      f"[{style}]{'yes' if r.match else 'NO'}[/]",
                      *(str(getattr(a, k)) if a else "-" for k in (
                          "frames_sent", "frames_captured", "frames_delivered", "lost",
                          "frames_during_stop", "max_gap_ms")))
        return t

    def reasons(self) -> list[str]:
        out = []
        for r in self.results:
            why = "; ".join(r.analysis.reasons) if r.analysis else r.error
            if why:
                out.append(f"{r.profile} x {r.scenario}: {why}")
        return out

    def ab_table(self) -> Table:
        """Scenarios as rows, profiles as columns: what a series changes, at a glance."""
        profiles = list(dict.fromkeys(r.profile for r in self.results))
        t = Table(title=f"A/B: {' vs '.join(profiles)} ({self.accel})", title_justify="left")
        t.add_column("scenario")
        for p in profiles:
            t.add_column(p)
        for sc in dict.fromkeys(r.scenario for r in self.results):
            cells = []
            for p in profiles:
                r = next((r for r in self.results if r.profile == p and r.scenario == sc), None)
                if r is None:
                    cells.append("-")
                    continue
                style, mark = ("green", "ok") if r.match else ("red", f"expected {r.expected}")
                counts = f" {r.analysis.frames_captured}/{r.analysis.frames_sent}" if r.analysis else ""
                cells.append(f"[{style}]{r.verdict} ({mark})[/]{counts}")
            t.add_row(sc, *cells)
        return t

    def print(self, console: Console) -> None:
        if len({r.profile for r in self.results}) > 1:
            console.print(self.ab_table())
        console.print(self.table())
        for line in self.reasons():
            console.print(f"  {line}")

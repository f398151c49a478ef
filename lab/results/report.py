"""The report: one row per profile x scenario cell, the verdict table, report.json.

``Row`` is the one definition of a report row. report.json's ``results``, the table the CLI prints,
the Markdown summary of a CI job and the README's field list all come from (or are checked against)
its fields: other tools read these names, keep them.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lab import statefile
from lab.results.analysis import Analysis, GuestAnalysis
from lab.results.verdict import Verdict

# What a verdict judged (a scenario's ``path``): the mirror stream as it reached the secondary, or
# what the destination's guest received.
STREAM, GUEST_VIEW = "stream", "guest"
TIMINGS = ("boot", "migrate", "hold", "drain", "total")


def builds_label(profile: str, destination: str = "") -> str:
    """The build, or ``source->destination`` for a migration between two builds."""
    return profile if destination in ("", profile) else f"{profile}->{destination}"


@dataclass(frozen=True)
class Row:
    """One cell of the matrix, as report.json gives it."""

    profile: str
    scenario: str
    filter: str
    expected: str  # "" when nothing is expected of this pair of builds
    verdict: Verdict
    match: bool | None  # None: nothing was expected
    view: str  # STREAM or GUEST_VIEW: whose figures the verdict judged
    source_profile: str
    destination_profile: str
    frames_sent: int | None
    frames_captured: int | None
    frames_delivered: int | None
    lost: int | None
    duplicates: int | None
    reordered: int | None
    frames_during_stop: int | None
    max_gap_ms: float | None
    stopped_window_ms: float | None
    # The guest's own view (lab.results.analysis.GuestAnalysis), on the hosts' clock.
    guest_received: int | None
    guest_lost: int | None
    guest_duplicates: int | None
    guest_reordered: int | None
    guest_max_gap_ms: float | None
    guest_frames_after_resume: int | None
    guest_latency_ms: dict[str, float] | None  # p50, p99, max
    guest_clock: dict[str, dict[str, float] | None] | None  # per side: offset_s, uncertainty_ms
    # Where frames were lost: not sent, not on the stream, not delivered by the destination, dropped
    # by the guest's kernel.
    lost_at: dict[str, int] | None
    generator_fps: float | None  # the rate the generator achieved
    # Whether the measurement had the machine it needed (lab.scenario.Load.figures): the generator's
    # longest pause, the hold as it lasted, how the drain ended, and the verdict before the starved check.
    load: dict[str, Any] | None
    # QEMU's own clock, seconds since the first frame was sent (the timeline picture's axis).
    stop_at: float | None
    pre_switchover_at: float | None
    resume_at: float | None
    switched_on_at: float | None  # the filter under test switched on over QMP (switch_on scenarios)
    qemu_downtime_ms: float | None  # query-migrate's downtime
    ram_iterations: int | None  # query-migrate's dirty-sync-count
    dirty_rate_mb_s: float | None  # the dirty page rate QEMU measured
    reasons: list[str]
    accel: str
    engines: dict[str, str]  # where each host ran: {"primary": NAME, "secondary": NAME}
    images: dict[str, str]  # the runtime image each host ran (another build's on the secondary with --to)
    qemu_version: str
    timings: dict[str, float]  # seconds: boot, migrate, hold, drain, total
    # When the cell began and ended, seconds since the epoch: cells of one run overlap under --jobs.
    started_at: float | None
    ended_at: float | None
    artefacts: str  # the cell's folder ("" when nothing ran)

    @classmethod
    def of(cls, *, profile: str, scenario: str, filter: str, expected: str, verdict: Verdict | str, accel: str,
           analysis: Analysis | None = None, guest: GuestAnalysis | None = None,
           migration: dict[str, float | None] | None = None, lost_at: dict[str, int] | None = None,
           generator_fps: float | None = None, load: dict[str, Any] | None = None, error: str = "",
           qemu_version: str = "",
           timings: dict[str, float] | None = None, span: tuple[float, float] | None = None, artefacts: str = "",
           engines: dict[str, str] | None = None, images: dict[str, str] | None = None,
           destination_profile: str = "", view: str = STREAM,
           reasons: list[str] | None = None) -> Row:
        counts: dict[str, Any] = {k: getattr(analysis, k) if analysis else None for k in COUNTS}
        seen: dict[str, Any] = {f"guest_{k}": getattr(guest, k) if guest else None for k in GUEST}
        times: dict[str, Any] = {k: (migration or {}).get(k) for k in MIGRATION}
        if reasons is None:
            reasons = list(analysis.reasons) if analysis else ([error] if error else [])
        return cls(profile=profile, scenario=scenario, filter=filter, expected=expected, verdict=Verdict(verdict),
                   match=(verdict == expected) if expected else None, view=view, source_profile=profile,
                   destination_profile=destination_profile or profile, **counts, **seen,
                   lost_at=lost_at, generator_fps=generator_fps, load=load, **times, reasons=reasons, accel=accel,
                   engines=dict(engines or {}), images=dict(images or {}), qemu_version=qemu_version,
                   timings=dict(timings or {}), started_at=span[0] if span else None,
                   ended_at=span[1] if span else None, artefacts=artefacts)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def builds(self) -> str:
        return builds_label(self.profile, self.destination_profile)

    @property
    def why(self) -> str:
        return "; ".join(self.reasons)

    @property
    def mark(self) -> str:
        """The verdict against its expectation, in a word or two."""
        return {True: "ok", None: "nothing expected"}.get(self.match, f"expected {self.expected}")

    @property
    def figures(self) -> Figures:
        """The figures of the view the verdict judged: a guest cell's stream may be whole while its
        guest lost half, and the other way round."""
        if self.view == GUEST_VIEW:
            return Figures(self.frames_sent, self.guest_received, self.guest_lost, self.guest_max_gap_ms, None)
        return Figures(self.frames_sent, self.frames_captured, self.lost, self.max_gap_ms, self.frames_during_stop)


@dataclass(frozen=True)
class Figures:
    """What one view saw of the frames sent."""

    sent: int | None
    received: int | None
    lost: int | None
    max_gap_ms: float | None
    during_stop: int | None  # the stream's only: frames that reached the secondary while the source was stopped

    @property
    def received_of_sent(self) -> str:
        return "-" if self.sent is None else f"{self.received}/{self.sent}"


COUNTS = ("frames_sent", "frames_captured", "frames_delivered", "lost", "duplicates", "reordered",
          "frames_during_stop", "max_gap_ms", "stopped_window_ms")
GUEST = ("received", "lost", "duplicates", "reordered", "max_gap_ms", "frames_after_resume", "latency_ms", "clock")
MIGRATION = ("stop_at", "pre_switchover_at", "resume_at", "switched_on_at", "qemu_downtime_ms", "ram_iterations",
             "dirty_rate_mb_s")
ROW_FIELDS = tuple(f.name for f in dataclasses.fields(Row))
# The verdict table: (column heading, what it shows); the CLI's table and the CI summary both use it.
# Figures are the judged view's (Row.figures), under the same heading for either view.
COLUMNS = (("profile", "profile"), ("scenario", "scenario"), ("view", "view"), ("expected", "expected"),
           ("verdict", "verdict"), ("match", "match"), ("got/sent", "received_of_sent"), ("lost", "lost"),
           ("during stop", "during_stop"), ("max gap ms", "max_gap_ms"), ("downtime ms", "qemu_downtime_ms"))
FIGURES = ("received_of_sent", "lost", "during_stop", "max_gap_ms")
NUMERIC = {heading for heading, name in COLUMNS if name in (*FIGURES, "qemu_downtime_ms")}


def cell_text(row: Row, name: str) -> str:
    value = getattr(row.figures if name in FIGURES else row, name)
    if name == "profile":
        return row.builds
    if name == "match":
        return "-" if value is None else ("yes" if value else "NO")
    return "-" if value is None else str(value)


@dataclass
class Report:
    config: str
    run: str = ""  # the run's namespace id: its containers, networks and run folders carry it
    accel: str = ""
    accel_reason: str = ""
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)  # name: address, transfer s, sees_files
    rows: list[Row] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    check: dict[str, Any] | None = None  # `lab check`: the checks posted (lab.upstream.check.Poster.record)

    @property
    def all_match(self) -> bool:
        """No verdict differs from its expectation (a row with none expected does not count)."""
        return bool(self.rows) and all(r.match is not False for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "lab": {"config": self.config, "run": self.run, "accel": self.accel, "accel_reason": self.accel_reason,
                    "builds": self.builds, "engines": self.engines, "host": platform.node(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                    "duration_s": round(time.time() - self.started, 1)},
            "results": [r.to_json() for r in self.rows],
        } | ({"check": self.check} if self.check is not None else {})

    def write(self, out: Path) -> Path:
        """report.json, atomically: a reader never sees half a file (statefile.write_whole)."""
        out.mkdir(parents=True, exist_ok=True)
        path = out / "report.json"
        statefile.write_whole(path, json.dumps(self.to_json(), indent=2) + "\n", ".report-")
        return path

    def table(self) -> Table:
        t = Table(title=f"netfilter continuity ({self.accel})", title_justify="left")
        for heading, _name in COLUMNS:
            t.add_column(heading, justify="right" if heading in NUMERIC else "left", no_wrap=True)
        for r in self.rows:
            t.add_row(*(Text(cell_text(r, name), MATCH_STYLE[r.match] if name in ("verdict", "match") else "")
                        for _heading, name in COLUMNS))
        return t

    def blocks(self) -> list[Text]:
        """The table as one block per cell, for a console too narrow for it: names are never cut."""
        lines = []
        for r in self.rows:
            lines.append(Text.assemble(f"{r.builds} x {r.scenario}: ", _verdict(r)))
            figures = figures_text(r)  # none for a cell that did not run: its reason follows the tables
            if figures:
                lines += [Text(line) for line in _packed(f"    {r.view}: ", figures.split(", "), "      ")]
        return lines

    def reasons(self) -> list[str]:
        return [f"{r.builds} x {r.scenario}: {r.why}" for r in self.rows if r.why]

    def _ab(self) -> tuple[list[str], dict[str, dict[str, Text]]]:
        """Profiles, and per scenario each profile's verdict against its expectation and its figures."""
        profiles = list(dict.fromkeys(r.builds for r in self.rows))
        cells: dict[str, dict[str, Text]] = {}
        for r in self.rows:
            counts = f" {r.figures.received_of_sent}" if r.frames_sent is not None else ""
            cells.setdefault(r.scenario, {})[r.builds] = Text.assemble(_verdict(r), counts)
        return profiles, cells

    def ab_table(self) -> Table:
        """Scenarios as rows, profiles as columns: what a series changes, at a glance."""
        profiles, cells = self._ab()
        t = Table(title=f"A/B: {' vs '.join(profiles)} ({self.accel})", title_justify="left")
        t.add_column("scenario", no_wrap=True)
        for p in profiles:
            t.add_column(p, no_wrap=True)
        for scenario, by_profile in cells.items():
            t.add_row(scenario, *(by_profile.get(p, Text("-")) for p in profiles))
        return t

    def ab_blocks(self) -> list[Text]:
        """The A/B table as one block per scenario, a line per profile."""
        profiles, cells = self._ab()
        lines = []
        for scenario, by_profile in cells.items():
            lines.append(Text(scenario))
            lines += [Text.assemble(f"    {p}: ", by_profile[p]) for p in profiles if p in by_profile]
        return lines

    def print(self, console: Console) -> None:
        """The tables, or where the console is too narrow for one, its blocks."""
        if len({r.builds for r in self.rows}) > 1:
            _table_or_blocks(console, self.ab_table(), self.ab_blocks())
        _table_or_blocks(console, self.table(), self.blocks())
        for line in self.reasons():
            console.print(f"  {line}", markup=False)


MATCH_STYLE = {True: "green", False: "red", None: "yellow"}
BLOCK_WIDTH = 78  # a block's figures fit an 80-column log


def _verdict(r: Row) -> Text:
    return Text(f"{r.verdict} ({r.mark})", MATCH_STYLE[r.match])


def figures_text(row: Row) -> str:
    """The judged view's figures in words, as a block or a result line says them."""
    figures = [_figure(heading, cell_text(row, name)) for heading, name in COLUMNS if heading in NUMERIC]
    return ", ".join(f for f in figures if f)


def _figure(heading: str, value: str) -> str:
    """A table's figure as a block says it: "max gap 12.5 ms" for "max gap ms", nothing for none."""
    if value == "-":
        return ""
    label = heading.removesuffix(" ms").removesuffix("/sent")
    return f"{label} {value} ms" if label != heading and heading.endswith(" ms") else f"{label} {value}"


def _packed(first: str, items: list[str], indent: str) -> list[str]:
    """``items`` joined by commas into lines of at most BLOCK_WIDTH, never breaking one ("max gap 27.7 ms")."""
    lines, line = [], first
    for n, item in enumerate(items):
        text = item + ("," if n < len(items) - 1 else "")
        if line.strip() and line not in (first, indent) and len(line) + 1 + len(text) > BLOCK_WIDTH:
            lines.append(line)
            line = indent
        line += ("" if line in (first, indent) else " ") + text
    return [*lines, line]


def _table_or_blocks(console: Console, table: Table, blocks: list[Text]) -> None:
    # Measured unbounded: a measurement within the console's width is clamped to it.
    if console.measure(table, options=console.options.update_width(10**4)).maximum <= console.width:
        console.print(table)
        return
    if table.title:
        # Long lines stay whole on this console (a result line is one line to grep): wrap the title here.
        for title_line in textwrap.wrap(str(table.title), console.width, break_long_words=False):
            console.print(Text(title_line))
    for block in blocks:
        console.print(block)


def rows_of(report: dict[str, Any]) -> list[Row]:
    """The rows of a report.json (as written by ``Report.write``); ValueError names a row that is not one."""
    rows = []
    for n, r in enumerate(report.get("results", []), 1):
        try:
            # Reports from before rows named their view judged the stream.
            rows.append(Row(**{k: r.get(k) for k in ROW_FIELDS}
                            | {"view": r.get("view", STREAM), "verdict": Verdict(r.get("verdict"))}))
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"result {n} is not a row of the lab's ({exc})") from None
    return rows


def markdown(report: dict[str, Any]) -> str:
    """The verdict table as Markdown, for a CI job summary."""
    lab = report.get("lab", {})
    lines = [f"### Netfilter continuity ({lab.get('accel', '?')})", "",
             "| " + " | ".join(h for h, _ in COLUMNS) + " |",
             "|" + "|".join("---:" if h in NUMERIC else "---" for h, _ in COLUMNS) + "|"]
    for row in rows_of(report):
        cells = [cell_text(row, name) for _h, name in COLUMNS]
        if row.match is False:
            cells[[n for _h, n in COLUMNS].index("match")] = "**NO**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

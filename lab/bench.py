"""`lab bench`: where the lab's time and memory go, measured in one run on one machine.

Every figure comes from the lab's own machinery (``lab.runner.Runner``): builds through
``Runner.build``, scenarios and matrices through ``Runner.run``; the bench only times them and samples
the hosts' memory while a scenario runs. What it measures:

- ``cold_build`` (only when asked): every image of the selected profiles, from debootstrap on, under
  an image prefix of its own (so no other run's images are touched), removed afterwards;
- ``series_rebuild``: a copy of a profile's local series with one file changed (a trailer added to a
  commit message), built on the existing builder: the series image and the runtime on top of it;
- ``scenario``: one cell on warm images, its wall time and the report row's phase timings;
- ``matrix``: the selected cells with ``--jobs`` 1, 2, ... (wall time each), and for guest cells
  the frames' latency to the guest's receiver and the guest clocks' offset uncertainty;
- ``memory``: the peak memory of the scenario's two hosts (as ``docker stats`` counts it) and of
  their QEMUs (VmHWM).

The figures are ratios on one machine at one time: nothing here asserts a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import images
from lab.config import LabConfig, Profile, SeriesSource
from lab.engine import Engine, resources
from lab.errors import LabError
from lab.results import artefacts
from lab.results.report import Report, Row
from lab.results.verdict import Verdict
from lab.runner import Cell, CellStarted, ReportWritten, Runner, select_cells

HOST_ROLES = ("primary", "secondary")
SAMPLE_INTERVAL_S = 0.5
SAMPLER_JOIN_S = 10.0  # a sample in flight (docker stats, an exec) answers well within this
BENCH_PROFILE = "bench-series"
# Every /proc/<pid>/status in a host: the QEMU's name and its peak resident set (VmHWM).
PROC_STATUS = ["sh", "-c", "grep -H -E '^(Name|VmHWM):' /proc/[0-9]*/status 2>/dev/null; true"]
QEMU_COMM = "qemu-system-x86"  # /proc's Name: the command, cut at 15 characters

Say = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    out: Path
    profiles: list[str] | None = None  # the matrix's profiles (default: the configured default ones)
    scenarios: list[str] | None = None  # the matrix's scenarios (default: all)
    jobs: tuple[int, ...] = (1, 2)  # the matrix once per value
    cold: bool = False
    series: bool = True


@dataclass
class Bench:
    """What bench.json holds."""

    machine: dict[str, Any] = field(default_factory=dict)
    run: str = ""
    cold_build: dict[str, Any] | None = None
    series_rebuild: dict[str, Any] | None = None
    scenario: dict[str, Any] | None = None
    matrix: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        """The table: (what, figure)."""
        rows: list[tuple[str, str]] = []
        if self.cold_build is not None:
            rows.append(("cold build, all images", f"{self.cold_build['seconds']:.0f} s"))
            rows += [(f"  {s['image']} {s['step']} {s['instruction'][:50]}", f"{s['seconds']:.0f} s")
                     for s in slowest(self.cold_build["steps"], 5)]
        if self.series_rebuild is not None:
            rows.append(("series rebuild after a one-file change", f"{self.series_rebuild['seconds']:.1f} s"))
            rows += [(f"  {image}", f"{seconds:.1f} s") for image, seconds in self.series_rebuild["images"].items()]
        if self.scenario is not None:
            rows.append((f"warm scenario {self.scenario['cell']}, wall", f"{self.scenario['wall_s']:.1f} s"))
            rows += [(f"  {phase}", f"{seconds:.1f} s") for phase, seconds in self.scenario["timings"].items()]
        for m in self.matrix:
            rows.append((f"matrix, {m['cells']} cells, --jobs {m['jobs']}, wall", f"{m['wall_s']:.1f} s"))
            for cell, guest in m.get("guest", {}).items():
                if "latency_ms" in guest:
                    rows.append((f"  {cell}: latency to the guest, p99 / max",
                                 f"{guest['latency_ms']['p99']:.1f} / {guest['latency_ms']['max']:.1f} ms"))
                for side, ms in guest.get("clock_uncertainty_ms", {}).items():
                    rows.append((f"  {cell}: {side} guest clock offset, +-", f"{ms:.2f} ms"))
        for role, peaks in self.memory.items():
            rows.append((f"peak memory, {role} host", f"{peaks['container_mb']:.0f} MB"))
            rows.append((f"peak memory, {role} QEMU (VmHWM)", f"{peaks['qemu_vmhwm_mb']:.0f} MB"))
        return rows


def slowest(steps: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return sorted(steps, key=lambda s: -float(s["seconds"]))[:n]


def unique_steps(image_sets: list[images.ImageSet]) -> list[dict[str, Any]]:
    """The steps of several sets, each build once (profiles share their base, builder and guest)."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for image_set in image_sets:
        for step in image_set.build_steps:
            seen.setdefault((step["tag"], step["step"]), step)
    return list(seen.values())


def run(cfg: LabConfig, options: BenchOptions, runner: Runner, say: Say) -> tuple[Bench, Path]:
    """Every figure asked for; bench.json and the runs' reports in ``options.out``."""
    cells = select_cells(cfg, options.profiles, options.scenarios)
    warm = warm_cell(cells)
    series_profile = series_source(cfg) if options.series else None
    bench = Bench(machine=machine(runner), run=runner.ns.id)
    rundir = artefacts.new_rundir(runner.ns)
    try:
        if options.cold:
            say("cold build (every image, under an image prefix of its own) ...")
            bench.cold_build = cold_build(cfg, runner, list(dict.fromkeys(c.profile for c in cells)))
        runner.prepare(list(dict.fromkeys(c.profile for c in cells)))
        if series_profile is not None:
            say(f"series rebuild: {series_profile.name}'s series with one file changed ...")
            bench.series_rebuild = series_rebuild(cfg, runner, series_profile, rundir)
        say(f"warm scenario {warm.name} ...")
        bench.scenario, bench.memory = scenario(runner, warm, rundir / "scenario")
        for jobs in options.jobs:
            say(f"matrix, {len(cells)} cells, --jobs {jobs} ...")
            bench.matrix.append(matrix(runner, cells, jobs, rundir / f"matrix-jobs{jobs}"))
        (rundir / "bench.json").write_text(json.dumps(bench.to_json(), indent=2) + "\n")
    finally:
        out = artefacts.move_to(rundir, options.out)
    return bench, out / "bench.json"


def warm_cell(cells: list[Cell]) -> Cell:
    """The scenario timed on its own: the first selected cell that runs (not expected unsupported)."""
    for cell in cells:
        if cell.expected != Verdict.UNSUPPORTED:
            return cell
    raise LabError("every selected cell is expected unsupported: select a scenario that runs "
                   "(--scenario)")


def series_source(cfg: LabConfig) -> Profile:
    """The profile whose series the rebuild copies: the first with a local one (series.mbox)."""
    for profile in cfg.profiles.values():
        if profile.series is not None and profile.series.mbox:
            return profile
    raise LabError(f"{cfg.path}: no profile has a local series (series.mbox) for the series rebuild; "
                   "add one, or pass --no-series")


def machine(runner: Runner) -> dict[str, Any]:
    try:
        info = runner.engine.info()
    except LabError:
        info = {}
    return {"cores": os.cpu_count(), "engine_cores": info.get("NCPU"),
            "memory_gb": round(int(info.get("MemTotal") or 0) / 2**30, 1),
            "docker": info.get("ServerVersion", ""), "storage_driver": info.get("Driver", "")}


# -- builds -----------------------------------------------------------------------------------------

def cold_build(cfg: LabConfig, runner: Runner, profiles: list[Profile]) -> dict[str, Any]:
    """Every image from scratch under ``<prefix>-bench-<run>``: a base of its own (debootstrap makes a
    new one) means no layer of another build is reused. Its images are removed afterwards."""
    prefix = f"{cfg.image_prefix}-bench-{runner.ns.id}"
    cold_cfg = dataclasses.replace(cfg, images=dataclasses.replace(cfg.images, prefix=prefix))
    cold = Runner(cold_cfg, runner.engine, runner.on_build)
    started = time.monotonic()
    try:
        built = cold.build(profiles, rebuild=True)
        seconds = round(time.monotonic() - started, 1)
    finally:
        remove_prefixed(runner.engine, prefix)
    steps = unique_steps(list(built.values()))
    # With rebuild, a later profile builds the images it shares with an earlier one again, from the
    # cache: the first profile's seconds are the build's.
    seconds_per_image: dict[str, float] = {}
    for image_set in built.values():
        for tag, spent in image_set.build_seconds.items():
            seconds_per_image.setdefault(tag, spent)
    return {"prefix": prefix, "seconds": seconds, "steps": steps, "images": seconds_per_image,
            "from_cache": sum(1 for s in steps if s["cached"])}


def series_rebuild(cfg: LabConfig, runner: Runner, source: Profile, rundir: Path) -> dict[str, Any]:
    """``source``'s series copied with one file changed, built on the existing builder; its images
    (tags of their own, by digest) are removed afterwards."""
    assert source.series is not None
    copy = changed_copy(cfg.path.parent / source.series.mbox, rundir / "series")
    profile = dataclasses.replace(source, name=BENCH_PROFILE, series=SeriesSource(mbox=str(copy)), default=False)
    bench_cfg = dataclasses.replace(cfg, profiles={**cfg.profiles, BENCH_PROFILE: profile})
    started = time.monotonic()
    built = Runner(bench_cfg, runner.engine, runner.on_build).build([profile])[BENCH_PROFILE]
    seconds = round(time.monotonic() - started, 1)
    rebuilt = {tag: s for tag, s in built.build_seconds.items() if s > 0}
    remove_tags(runner.engine, [built.runtime, built.qemu])
    return {"from": source.name, "seconds": seconds, "images": rebuilt,
            "steps": [s for s in built.build_steps if s["tag"] in rebuilt]}


def changed_copy(series: Path, dest: Path) -> Path:
    """A copy of a series (an mbox file or a folder of patches) whose first patch's commit message
    has one more line: a new build context, the same code."""
    dest.mkdir(parents=True, exist_ok=True)
    if series.is_dir():
        for patch in sorted(series.iterdir()):
            if patch.is_file():
                shutil.copy2(patch, dest / patch.name)
        first = next(iter(sorted(p for p in dest.iterdir() if p.suffix == ".patch")), None)
    else:
        first = dest / series.name
        shutil.copy2(series, first)
    if first is None:
        raise LabError(f"{series}: no .patch file to copy for the series rebuild")
    text = first.read_text()
    if "Signed-off-by:" not in text:
        raise LabError(f"{first}: no Signed-off-by: line to put the bench's trailer before")
    first.write_text(text.replace("Signed-off-by:", f"Bench: {time.time()}\nSigned-off-by:", 1))
    return dest if series.is_dir() else first


def remove_tags(engine: Engine, tags: list[str]) -> None:
    """The bench's own tags, newest first (a runtime before the image it was built on)."""
    for tag in tags:
        engine.remove_image(tag)


def remove_prefixed(engine: Engine, prefix: str) -> None:
    found = sorted(engine.images(reference=f"{prefix}/*"), key=lambda img: img.created, reverse=True)
    remove_tags(engine, [tag for img in found for tag in img.tags if tag.startswith(f"{prefix}/")])


# -- runs -------------------------------------------------------------------------------------------

def scenario(runner: Runner, cell: Cell, out: Path) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """One cell through the runner, its hosts' memory sampled while it runs."""
    sampler = MemorySampler(runner.engine, runner.ns.id)
    with sampler.running():
        report, wall = timed_run(runner, [cell], out, jobs=1, started=sampler.start_sampling)
    [row] = report.rows
    return ({"cell": cell.name, "wall_s": wall, "verdict": row.verdict, "expected": row.expected,
             "timings": dict(row.timings)}, sampler.peaks())


def matrix(runner: Runner, cells: list[Cell], jobs: int, out: Path) -> dict[str, Any]:
    report, wall = timed_run(runner, cells, out, jobs=jobs)
    return {"jobs": jobs, "cells": len(cells), "wall_s": wall, "all_match": report.all_match,
            "verdicts": {f"{r.profile}-{r.scenario}": r.verdict for r in report.rows},
            "guest": {f"{r.profile}-{r.scenario}": figures for r in report.rows if (figures := guest_figures(r))}}


def guest_figures(row: Row) -> dict[str, Any]:
    """How closely a guest cell's figures sit on the hosts' clock: the frames' latency from the
    generator to the guest's receiver, and the uncertainty of each side's clock offset. Figures of
    this machine's load, not verdicts: none for a stream cell."""
    clocks = {side: c["uncertainty_ms"] for side, c in (row.guest_clock or {}).items() if c}
    found: dict[str, Any] = {}
    if row.guest_latency_ms:
        found["latency_ms"] = dict(row.guest_latency_ms)
    if clocks:
        found["clock_uncertainty_ms"] = clocks
    return found


def timed_run(runner: Runner, cells: list[Cell], out: Path, jobs: int,
              started: Callable[[], None] | None = None) -> tuple[Report, float]:
    began = time.monotonic()
    written: Report | None = None
    with contextlib.closing(runner.run(cells, out, jobs=jobs)) as events:
        for event in events:
            if isinstance(event, CellStarted) and started is not None:
                started()
            elif isinstance(event, ReportWritten):
                written = event.report
    assert written is not None
    return written, round(time.monotonic() - began, 1)


@dataclass
class MemorySampler:
    """Samples the memory of a run's two hosts until stopped: the container's (as `docker stats`
    shows it: usage less inactive page cache) and the VmHWM of the QEMU inside (its peak resident set)."""

    engine: Engine
    run: str
    container_mb: dict[str, float] = field(default_factory=dict)
    qemu_mb: dict[str, float] = field(default_factory=dict)
    _go: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)

    def start_sampling(self) -> None:
        self._go.set()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        thread = threading.Thread(target=self._loop, name="lab-bench-memory", daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._done.set()
            thread.join(timeout=SAMPLER_JOIN_S)

    def peaks(self) -> dict[str, dict[str, float]]:
        return {role: {"container_mb": self.container_mb.get(role, 0.0), "qemu_vmhwm_mb": self.qemu_mb.get(role, 0.0)}
                for role in HOST_ROLES}

    def _loop(self) -> None:
        while not self._done.wait(SAMPLE_INTERVAL_S):
            if self._go.is_set():
                with contextlib.suppress(LabError):
                    self._sample()

    def _sample(self) -> None:
        for container in self.engine.containers({resources.RUN: self.run}):
            role = container.labels.get(resources.ROLE, "")
            if role not in HOST_ROLES or container.status != "running":
                continue
            with contextlib.suppress(LabError):
                used = container_memory_mb(self.engine.stats(container.id))
                self.container_mb[role] = max(self.container_mb.get(role, 0.0), used)
                hwm = qemu_vmhwm_mb(self.engine.output_of(container.id, PROC_STATUS).decode(errors="replace"))
                self.qemu_mb[role] = max(self.qemu_mb.get(role, 0.0), hwm)


def container_memory_mb(stats: dict[str, Any]) -> float:
    """What `docker stats` shows as a container's memory: usage less inactive page cache (cgroup v2:
    inactive_file, v1: total_inactive_file)."""
    memory = stats.get("memory_stats") or {}
    detail = memory.get("stats") or {}
    inactive = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    return round(max(0, int(memory.get("usage", 0)) - int(inactive)) / 2**20, 1)


def qemu_vmhwm_mb(listing: str) -> float:
    """The largest VmHWM of a QEMU in ``grep -H`` output of /proc/*/status (Name and VmHWM lines)."""
    names: dict[str, str] = {}
    peaks: dict[str, int] = {}
    for line in listing.splitlines():
        path, _, rest = line.partition(":")
        key, _, value = rest.partition(":")
        if key == "Name":
            names[path] = value.strip()
        elif key == "VmHWM" and value.split() and value.split()[0].isdigit():
            peaks[path] = int(value.split()[0])  # kB
    qemu = [kb for path, kb in peaks.items() if names.get(path) == QEMU_COMM]
    return round(max(qemu, default=0) / 1024, 1)

"""A session: what every face (`lab run`, `lab up`, `lab check`, `lab bench`, the pytest plugin) does
around the runner, once. It checks the preconditions, places the cells on the engines, prepares the
builds, decides the jobs and the keep policy, runs the cells, and, for `lab check`, takes a series
from pending to its posted verdict. The faces only render what it reports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from lab import doctor, images, kept, runner
from lab.config import EngineSpec, LabConfig, Profile
from lab.engine import Engine
from lab.engine.resources import Leftovers
from lab.errors import LabError, ScenarioError, one_line
from lab.results import artefacts
from lab.results.report import Report
from lab.runner import Cell, Event, LabKept, ReportWritten, Runner
from lab.upstream import check as check_mod
from lab.upstream import series as series_mod
from lab.vm import accel, capabilities, snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where cells go: spread over ``engines`` (both hosts of a cell on one), or, ``split``, every
    cell's primary on the first engine and its secondary on the second."""

    engines: list[EngineSpec]
    split: bool = False

    @classmethod
    def of(cls, cfg: LabConfig, engine: list[str] | None = None, split: str | None = None) -> Placement:
        """From `--engine NAME...` or `--split PRIMARY,SECONDARY`; bad input is one line."""
        if not split:
            return cls(cfg.select_engines(engine))
        if engine:
            raise LabError("--split and --engine cannot be given together: --split already names both engines")
        names = [n.strip() for n in split.split(",")]
        if len(names) != 2 or not all(names) or names[0] == names[1]:
            raise LabError(f"--split {split!r}: give two different engines, PRIMARY,SECONDARY "
                           f"(configured: {', '.join(cfg.engines)})")
        return cls(cfg.select_engines(names), split=True)


@dataclass
class Outcome:
    """What a run through the session left: its last report (also when it stopped on an error), a kept lab."""

    written: ReportWritten | None = None
    kept: LabKept | None = None


def takes_slots(env: Mapping[str, str]) -> bool:
    """Whether a run takes engine slots: LAB_SLOTS=off runs its cells beside everything else's, to
    overload the machine on purpose."""
    value = env.get("LAB_SLOTS", "")
    if value not in ("", "off"):
        raise LabError(f"LAB_SLOTS={value!r} in the environment: the only value it takes is off "
                       "(unset it to share the engines' slots)")
    return value != "off"


def note_leftovers(run: Runner) -> None:
    """Leftovers of dead runs are named, never removed here: `lab clean` does that when asked."""
    left = run.leftovers()
    if left:
        log.warning("note: dead runs left %s; remove them with `lab clean`", left)


@dataclass
class Session:
    """Cells of one configuration, from the preconditions to the last event; a context that closes
    its runner (its thread pool, its engines' clients)."""

    cfg: LabConfig
    placement: Placement | None = None
    keep: bool = False  # the first cell that does not end as expected stays running for a person
    jobs: int = 0  # cells at once; 0: what the engines' capacity gives
    runner: Runner | None = None
    outcome: Outcome = field(default_factory=Outcome)

    def connect(self, on_build: images.Progress | None = None) -> Runner:
        """The runner, connected and placed on its engines; what the environment and machine must
        offer is checked before Docker is asked."""
        take_slots = takes_slots(os.environ)
        doctor.require_tun()
        self.runner = Runner.connect(self.cfg, on_build)
        self.runner.take_slots = take_slots
        placement = self.placement or Placement(self.cfg.select_engines(None))
        engines = {spec.name: Engine.connect(spec) if spec.url else self.runner.engine for spec in placement.engines}
        self.runner.place([engines[spec.name] for spec in placement.engines], split=placement.split)
        log.debug("run %s: cells on %s%s", self.runner.ns.id, ", ".join(engines),
                  " (split: primary, secondary)" if placement.split else "")
        note_leftovers(self.runner)
        return self.runner

    def prepare(self, profiles: list[Profile], on_build: images.Progress | None = None) -> Runner:
        """The runner with the builds of ``profiles`` ready (a local series is checked first)."""
        images.check_local_series(self.cfg, profiles)
        runner = self.runner or self.connect(on_build)
        runner.prepare(profiles)
        return runner

    @property
    def jobs_now(self) -> int:
        """--keep stops at the first cell that does not end as expected: one cell at a time, or
        others would already be under way."""
        assert self.runner is not None
        return 1 if self.keep else (self.jobs or self.runner.default_jobs())

    def run(self, cells: list[Cell], out: Path) -> Generator[Event, None, None]:
        """The cells' events as they happen; ``outcome`` keeps the last report and a kept lab. Consume
        it inside ``contextlib.closing``: an interrupt outside the generator still stops the cells."""
        assert self.runner is not None
        events = self.runner.run(cells, out, keep=self.keep, jobs=self.jobs_now)
        try:
            for event in events:
                if isinstance(event, ReportWritten):
                    self.outcome.written = event
                elif isinstance(event, LabKept):
                    self.outcome.kept = event
                yield event
        finally:
            events.close()

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def profiles_of(cells: list[Cell]) -> list[Profile]:
    return list(dict.fromkeys(p for c in cells for p in c.profiles))


# -- lab check: a series from pending to its posted verdict -------------------------------------------

@dataclass
class CheckRun:
    """A series checked: the state and description posted, the report that says so, and the lab's
    own failure, if one stopped the run (raised again once the check is posted)."""

    state: str
    description: str
    report_path: Path
    failure: Exception | None = None


RunCells = Callable[[LabConfig, list[Cell], Outcome], None]


def check(cfg: LabConfig, plan: check_mod.Plan, info: series_mod.SeriesInfo, cells: list[Cell], out: Path,
          poster: check_mod.Poster, url: str, run_cells: RunCells) -> CheckRun:
    """Pending on every patch, the cells run by ``run_cells`` (the face renders them), the rows
    judged, the verdict posted; a patch never stays pending, whatever stops the run."""

    def made(state: str, description: str) -> check_mod.Check:
        return check_mod.Check(state, description, url, cfg.check.context)

    scenarios = list(dict.fromkeys(c.scenario.name for c in cells))
    failure: Exception | None = None
    outcome = Outcome()
    with poster.none_left_pending(lambda why: made(check_mod.WARNING, check_mod.lab_stopped(why))):
        poster.post_all(info.patches, made(check_mod.PENDING, check_mod.pending(plan, scenarios)))
        try:
            run_cells(plan.cfg, cells, outcome)
            assert outcome.written is not None
            state, description = check_mod.judge(outcome.written.report.rows, plan)
        except series_mod.SeriesDoesNotApply as exc:
            state, description = check_mod.FAIL, check_mod.does_not_apply(exc, plan)
        except (LabError, ScenarioError) as exc:
            state, description, failure = check_mod.WARNING, check_mod.lab_failed(one_line(exc)), exc
        except OSError as exc:
            state, description, failure = check_mod.WARNING, check_mod.lab_stopped(one_line(exc)), exc
        report = outcome.written.report if outcome.written else Report(config=str(cfg.path))
        try:
            poster.post_all(info.patches, made(state, description))
        finally:  # report.json says what was posted, also when a post failed
            report.check = poster.record(cfg.check.context, url) | {"state": state, "description": description}
            path = runner.write_report(report, out)
    return CheckRun(state, description, path, failure)



# -- lab clean: each part of the lab forgets its own ----------------------------------------------------

@dataclass
class Cleaned:
    """What `lab clean` removed, and what it left because it is not this machine's to remove."""

    removed: Leftovers
    others: dict[str, tuple[str, Leftovers]]  # run -> (owner, what it has): another machine's
    downed: list[str] = field(default_factory=list)  # kept labs taken down
    skipped: list[str] = field(default_factory=list)  # engines that did not answer, each with why
    rundirs: int = 0  # run folders left by killed runs
    snapshots: int = 0  # saved guests whose image is gone
    images: bool = False  # the lab's images went, and what was kept of them


def clean(cfg: LabConfig | None, every_lab: bool, kept_too: bool, images_too: bool) -> Cleaned:
    """Only what dead runs of this machine left, on every engine of ``cfg``: a run in progress (another
    terminal, a CI job) keeps its hosts. ``cfg`` None: no configuration, only the default engine."""
    engine = Engine.connect()
    lab = None if every_lab or cfg is None else cfg.name
    downed: list[str] = []
    if cfg is not None:
        downed = kept.clean(engine, cfg, kept_too)
        accel.forget(cfg)
    done = Cleaned(engine.remove_dead_runs(lab), engine.others_runs(lab), downed)
    if cfg is not None and not images_too:
        done.snapshots = snapshot.prune(engine, cfg)
    for spec in (cfg.engines.values() if cfg is not None else []):
        if not spec.url:
            continue
        try:
            other = Engine.connect(spec)
        except LabError as exc:
            done.skipped.append(f"engine {spec.name} skipped: {exc}")
            continue
        gone = other.remove_dead_runs(lab)
        done.others |= other.others_runs(lab)
        done.removed.containers += gone.containers
        done.removed.networks += gone.networks
    if images_too:
        engine.remove_lab_images()
        if cfg is not None:  # what was kept of those images: saved guests, builders' tree ids, answers
            snapshot.forget(cfg)
            images.forget(cfg)
            capabilities.forget(cfg)
        done.images = True
    done.rundirs = artefacts.remove_stray_rundirs(lab)
    return done

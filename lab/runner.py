"""The runner: the one place where profile x scenario cells run. Every face (`lab run`, `lab up`,
the pytest plugin) is a thin layer over it.

``Runner.prepare`` makes sure each selected profile's images exist, chooses the accelerator once and
asks each build what its netfilters offer; ``Runner.run`` runs cells and yields what happens as it
happens: a cell starting, its phases, its report row, report.json written (after every cell, with
the cells still to come marked ``not-run``), a lab kept for a person. Cells run on a worker thread;
Ctrl-C or SIGTERM in the caller cancels it, removes what the run made and still lands the folders.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from lab import guard, images, kept, scenario, slots
from lab.config import LabConfig, Profile, ScenarioSpec
from lab.engine import KVM, TUN, Engine, HostSpec, LabHosts, machine_address, ssh
from lab.engine import registry as registry_mod
from lab.errors import Cancelled, ConfigError, LabError, ScenarioError, one_line
from lab.namespace import Namespace
from lab.results import artefacts, page, timeline
from lab.results.report import Report, Row, builds_label
from lab.results.verdict import Verdict
from lab.vm import accel as accel_mod
from lab.vm import capabilities, snapshot
from lab.vm.accel import AccelChoice

log = logging.getLogger(__name__)

# A hook a test may give: called as each phase begins, with the cell's hosts (to inject faults).
HostsHook = Callable[[str, LabHosts], None]


@dataclass(frozen=True)
class Cell:
    """A scenario on a build: the source's (``profile``), and the destination's when it differs."""

    profile: Profile
    scenario: ScenarioSpec
    destination: Profile | None = None

    @property
    def to(self) -> Profile:
        return self.destination or self.profile

    @property
    def profiles(self) -> list[Profile]:
        return list(dict.fromkeys((self.profile, self.to)))

    @property
    def name(self) -> str:
        builds = self.profile.name if self.to == self.profile else f"{self.profile.name}-to-{self.to.name}"
        return f"{builds}-{self.scenario.name}"

    @property
    def expected(self) -> str:
        return self.scenario.expected(self.profile.name, self.to.name)

    @property
    def label(self) -> str:
        """How every line names the cell: ``PROFILE x SCENARIO`` (``SOURCE->DESTINATION x SCENARIO``)."""
        return f"{builds_label(self.profile.name, self.to.name)} x {self.scenario.name}"

    @property
    def title(self) -> str:
        return f"{self.label} ({self.scenario.filter})"

    def row(self, verdict: Verdict, accel: str, **details: object) -> Row:
        return Row.of(profile=self.profile.name, scenario=self.scenario.name, filter=self.scenario.filter,
                      expected=self.expected, verdict=verdict, accel=accel, destination_profile=self.to.name,
                      view=self.scenario.path, **details)  # type: ignore[arg-type]


def _drawn(drawn: concurrent.futures.Future[Path | None]) -> list[str]:
    """The timeline is a picture of the verdict, not part of it: one that could not be drawn is a
    note in the cell's reasons, and the matrix goes on."""
    try:
        drawn.result()
    except Exception as exc:  # matplotlib's own errors, a full disk: whatever it is, the verdict stands
        return [f"the timeline was not drawn: {type(exc).__name__}: {one_line(exc)}"]
    return []


def select_profiles(cfg: LabConfig, names: list[str] | None = None) -> list[Profile]:
    selected = cfg.select_profiles(names)
    if not selected:
        raise LabError(f"{cfg.path}: no profile is selected (every profile has default: false); "
                       "name one with --profile")
    return selected


def select_cells(cfg: LabConfig, profiles: list[str] | None = None, scenarios: list[str] | None = None,
                 to: str | None = None) -> list[Cell]:
    """The selection, in the configured order (profiles outer, scenarios inner). ``to`` names the
    destination's build: each selected profile migrates to it (every profile, when none is named)."""
    if to is None:
        return [Cell(p, s) for p in select_profiles(cfg, profiles) for s in cfg.select_scenarios(scenarios)]
    if to not in cfg.profiles:
        raise ConfigError("--to", f"unknown profile {to!r}", f"known: {', '.join(cfg.profiles)}")
    destination = cfg.profiles[to]
    sources = select_profiles(cfg, profiles)
    return [Cell(p, s, destination) for p in sources for s in cfg.select_scenarios(scenarios)]


@dataclass(frozen=True)
class Build:
    """A profile's images and what its QEMU's netfilters offer."""

    images: images.ImageSet
    properties: dict[str, list[str]]

    def provenance(self) -> dict[str, object]:
        i = self.images
        return {"runtime_image": i.runtime, "qemu_image": i.qemu, "qemu_source": i.qemu_source, "series": i.series,
                "build_seconds": i.build_seconds, "build_steps": i.build_steps, "tree": i.tree,
                "filter_properties": self.properties}


def write_report(report: Report, out: Path) -> Path:
    """report.json, and the page a person opens beside it (report.html)."""
    path = report.write(out)
    page.write(path)
    return path


# -- what a run yields ----------------------------------------------------------------------------

@dataclass(frozen=True)
class CellStarted:
    cell: Cell
    index: int  # 1-based
    total: int


@dataclass(frozen=True)
class PhaseChanged:
    cell: Cell
    phase: str


@dataclass(frozen=True)
class CellFinished:
    cell: Cell
    row: Row
    index: int = 0  # 0-based, in the selection's order


@dataclass(frozen=True)
class ReportWritten:
    path: Path
    report: Report


@dataclass(frozen=True)
class LabKept:
    cell: Cell
    lab: kept.KeptLab


Event = CellStarted | PhaseChanged | CellFinished | ReportWritten | LabKept


@dataclass
class Pace:
    """Where a run stands, from its events: cells done of all, those running, and when it should end
    at the pace of the cells done so far."""

    total: int
    started: float  # time.monotonic() as the first cell started
    done: int = 0
    running: dict[int, Cell] = field(default_factory=dict)  # by 0-based index, in the order they started
    phases: dict[int, str] = field(default_factory=dict)  # each running cell's phase

    def note(self, event: Event) -> None:
        if isinstance(event, CellStarted):
            self.running[event.index - 1] = event.cell
        elif isinstance(event, PhaseChanged):
            self.phases.update((i, event.phase) for i, cell in self.running.items() if cell == event.cell)
        elif isinstance(event, CellFinished):
            self.running.pop(event.index, None)
            self.phases.pop(event.index, None)
            self.done += 1

    def elapsed_s(self, now: float) -> float:
        return now - self.started

    def eta_s(self, now: float) -> float | None:
        """Seconds still to go, at the pace so far (with --jobs, the pace of all workers together);
        None before any cell is done."""
        if not self.done:
            return None
        return self.elapsed_s(now) / self.done * (self.total - self.done)


@dataclass
class Runner:
    """Runs cells of one configuration on one engine."""

    cfg: LabConfig
    engine: Engine
    on_build: images.Progress | None = None
    builds: dict[str, Build] = field(default_factory=dict)
    accel: AccelChoice | None = None
    ns: Namespace = field(default=None)  # type: ignore[assignment]  # set in __post_init__
    # Where cells run, in turn: (primary's engine, secondary's engine); by default both on ``engine``.
    placements: list[tuple[Engine, Engine]] = field(default_factory=list)
    _spaces: list[Namespace] = field(default_factory=list)  # every namespace a cell of this run used
    transfers: dict[str, float] = field(default_factory=dict)  # per engine: seconds copying images to it
    # Per engine other than the build engine: each runtime image, present, pulled or copied.
    image_sources: dict[str, dict[str, str]] = field(default_factory=dict)
    # The saved guest each cell's source starts from, per (profile, engine): boot once, restore many.
    snapshots: dict[tuple[str, str], snapshot.Snapshot | None] = field(default_factory=dict)
    # Timeline pictures, one at a time, each drawn while its cell's hosts are removed.
    _pictures: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lab-picture"))
    # Each engine's slots, shared with every other run on this machine (lab.slots).
    _slots: dict[str, slots.Slots] = field(default_factory=dict)
    _slots_lock: threading.Lock = field(default_factory=threading.Lock)
    # False: cells run beside every other run's however many there are, to overload the machine on
    # purpose (what the starved check is tested against); LAB_SLOTS=off.
    take_slots: bool = True

    def __post_init__(self) -> None:
        if self.ns is None:
            self.ns = Namespace.new_run(self.cfg.name)
        if not self.placements:
            self.placements = [(self.engine, self.engine)]

    def place(self, engines: list[Engine], split: bool = False) -> None:
        """Cells spread over ``engines`` (both hosts of a cell on one), or, ``split``, every cell's
        primary on the first and its secondary on the second."""
        self.placements = [(engines[0], engines[1])] if split else [(e, e) for e in engines]

    @property
    def engines(self) -> list[Engine]:
        """Every engine this run uses, the build engine first."""
        return list(dict.fromkeys([self.engine, *(e for pair in self.placements for e in pair)]))

    @classmethod
    def connect(cls, cfg: LabConfig, on_build: images.Progress | None = None) -> Runner:
        return cls(cfg, Engine.connect(), on_build)

    def close(self) -> None:
        """The picture thread ends (its last picture drawn) and every engine's client is closed."""
        self._pictures.shutdown(wait=True)
        for engine in self.engines:
            engine.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def builder(self, pull_only: bool = False) -> images.ImageBuilder:
        return images.ImageBuilder(self.engine, self.cfg, self.cfg.results_root / "build-logs", self.on_build,
                                   ns=self.ns, pull_only=pull_only)

    def image_source(self, engine: Engine) -> dict[str, str]:
        """Where each image the run needed on ``engine`` came from (report.json's lab.engines.NAME)."""
        if engine is not self.engine:
            return dict(self.image_sources.get(engine.name, {}))
        return {tag: how for build in self.builds.values() for tag, how in build.images.image_source.items()}

    def build(self, profiles: list[Profile], rebuild: bool = False, push: bool = False,
              pull_only: bool = False) -> dict[str, images.ImageSet]:
        """Each profile's images; ``push``: then pushed to images.registry; ``pull_only``: every image
        the engine lacks must come from the registry."""
        builder = self.builder(pull_only)
        built = builder.ensure_all(profiles, rebuild=rebuild)
        for image_set in built.values() if push else []:
            builder.push(image_set)
        return built

    def prepare(self, profiles: list[Profile]) -> dict[str, Build]:
        """Images (built when missing), the accelerator, each build's netfilter properties."""
        missing = [p for p in profiles if p.name not in self.builds]
        built = self.build(missing) if missing else {}
        if self.accel is None and (built or self.builds):
            runtime = next(iter(built.values())).runtime if built else next(iter(self.builds.values())).images.runtime
            self.accel = accel_mod.choose(self.engine, runtime, self.cfg.accel, self.ns,
                                          self.cfg.timeouts.kvm_probe_s, self.cfg.state_root / accel_mod.CACHE_NAME)
        for name, image_set in built.items():
            self.builds[name] = Build(image_set, capabilities.filter_properties(
                self.engine, image_set.runtime, self.ns, self.cfg.state_root / capabilities.CACHE_NAME))
        runtimes = [self.builds[p.name].images.runtime for p in profiles]
        registry = registry_mod.of(self.cfg.images.registry, self.cfg.timeouts.image_build_s)
        for engine in self.engines[1:]:
            transfer = engine.ensure_images(self.engine, runtimes, registry)
            self.transfers[engine.name] = round(self.transfers.get(engine.name, 0.0) + transfer.seconds, 1)
            known = self.image_sources.setdefault(engine.name, {})
            known.update({tag: how for tag, how in transfer.sources.items() if tag not in known})  # the first way in
        if self.cfg.guest.snapshot and self.accel is not None:
            for p in profiles:
                for engine in dict.fromkeys(first for first, _second in self.placements):
                    if (p.name, engine.name) not in self.snapshots:
                        self.snapshots[p.name, engine.name] = snapshot.ensure(
                            engine, self.builds[p.name].images.runtime, self.cfg, self.accel.accel, self.ns)
        return {p.name: self.builds[p.name] for p in profiles}

    def leftovers(self) -> str:
        """What dead runs of this lab left on its engines, in a line (found only: `lab clean` removes)."""
        found = []
        for engine in self.engines:
            dead = engine.dead_runs(self.cfg.name)
            found += [f"run {run} on engine {engine.name}: {left.describe()}" for run, left in sorted(dead.items())]
        return "; ".join(found)

    @property
    def devices(self) -> tuple[str, ...]:
        return (TUN, KVM) if self.accel is not None and self.accel.accel == "kvm" else (TUN,)

    def default_jobs(self) -> int:
        """Cells at once: per placement, one per core and per 2 GiB of its engines (a cell is two TCG
        guests, busy mostly while they boot), summed over the placements."""
        return sum(min(p.capacity(), s.capacity()) for p, s in self.placements)

    # -- running cells ----------------------------------------------------------------------------

    def run(self, cells: list[Cell], out: Path, keep: bool = False, hook: HostsHook | None = None,
            jobs: int = 1) -> Generator[Event, None, None]:
        """Runs ``cells``, ``jobs`` at a time; yields events as they happen; artefacts in ``out/<cell>``;
        report.json after every cell, in the configured order, with the cells to come as not-run.
        Consume it inside ``contextlib.closing``: an exception outside the generator then still stops
        the cells and removes what they made before it goes on.

        With ``keep``, the first cell that does not end as expected stays running (LabKept) and no
        further cell starts.
        """
        self.prepare(list(dict.fromkeys(p for c in cells for p in c.profiles)))
        assert self.accel is not None
        self._pictures.submit(timeline.load)
        report = Report(config=str(self.cfg.path), run=self.ns.id, accel=self.accel.accel,
                        accel_reason=self.accel.reason,
                        builds={name: b.provenance() for name, b in self.builds.items()},
                        engines={e.name: {"address": e.address or machine_address(),
                                          "image_transfer_s": self.transfers.get(e.name, 0.0),
                                          "image_source": self.image_source(e)} for e in self.engines})
        todo: queue.Queue[tuple[int, Cell]] = queue.Queue()
        for index, cell in enumerate(cells):
            todo.put((index, cell))
        events: queue.Queue[Event | BaseException | None] = queue.Queue()
        stop = threading.Event()  # a cell was kept: start no other
        workers = [threading.Thread(target=self._work, args=(todo, len(cells), out, keep, hook, events, stop),
                                    name=f"lab-cells-{n}", daemon=True) for n in range(max(1, min(jobs, len(cells))))]
        for worker in workers:
            worker.start()
        done: dict[int, Row] = {}
        running = len(workers)
        try:
            while running:
                item = events.get()
                if item is None:
                    running -= 1
                    continue
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, CellFinished):
                    done[item.index] = item.row
                    report.rows = [done[i] for i in sorted(done)]
                    yield item
                    yield ReportWritten(self._write(report, cells, done, out), report)
                    continue
                yield item
        finally:
            if any(w.is_alive() for w in workers):  # interrupted, or the caller stopped listening
                for engine in self.engines:
                    engine.cancel(self.ns)
                for worker in workers:
                    worker.join(timeout=30)
                for engine in self.engines:  # what the workers' own cleanup missed
                    for space in self._spaces:
                        engine.remove(self.cfg.name, ns=space)
                self._write(report, cells, done, out)
        if not done:
            yield ReportWritten(write_report(report, out), report)

    def _write(self, report: Report, cells: list[Cell], done: dict[int, Row], out: Path) -> Path:
        accel = self.accel.accel if self.accel else ""
        rows = [done[i] if i in done else cell.row(Verdict.NOT_RUN, accel) for i, cell in enumerate(cells)]
        # Learnt at each engine's first container: whether hosts there share this machine's files.
        engines = {e.name: report.engines[e.name] | {"sees_files": e.sees_files} for e in self.engines}
        return write_report(dataclasses.replace(report, rows=rows, engines=engines), out)

    def _work(self, todo: queue.Queue[tuple[int, Cell]], total: int, out: Path, keep: bool, hook: HostsHook | None,
              events: queue.Queue[Event | BaseException | None], stop: threading.Event) -> None:
        try:
            while not stop.is_set() and not self.engine.cancelled.is_set():
                try:
                    index, cell = todo.get_nowait()
                except queue.Empty:
                    break
                with self._slot(index):
                    events.put(CellStarted(cell, index + 1, total))
                    log.debug("cell %d/%d %s started", index + 1, total, cell.name)
                    row, lab = self._cell(cell, index, out / cell.name, keep, hook, events.put)
                events.put(CellFinished(cell, row, index))
                log.debug("cell %d/%d %s: %s", index + 1, total, cell.name, row.verdict)
                if lab is not None:
                    stop.set()
                    events.put(LabKept(cell, lab))
        except Cancelled:
            pass
        except BaseException as exc:  # handed to the caller's thread, which raises it
            events.put(exc)
        finally:
            events.put(None)

    @contextlib.contextmanager
    def _slot(self, index: int) -> Iterator[None]:
        """A slot on each engine of the cell's placement (in one order: no two runs wait on each other)."""
        placed = set(self.placements[index % len(self.placements)]) if self.take_slots else set()
        with contextlib.ExitStack() as held:
            for engine in sorted(placed, key=lambda e: e.name):
                held.enter_context(self._slots_of(engine).take(self.cfg.timeouts.slot_s, self._say, engine.cancelled))
            yield

    def _slots_of(self, engine: Engine) -> slots.Slots:
        with self._slots_lock:
            if engine.name not in self._slots:
                self._slots[engine.name] = slots.Slots.of(engine.name, engine.key(), engine.capacity())
            return self._slots[engine.name]

    def _say(self, line: str) -> None:
        if self.on_build is not None:
            self.on_build(images.BuildEvent("slots", "info", line))
        else:
            log.info("%s", line)

    def _cell(self, cell: Cell, index: int, out: Path, keep: bool, hook: HostsHook | None,
              emit: Callable[[Event], None]) -> tuple[Row, kept.KeptLab | None]:
        assert self.accel is not None
        accel = self.accel.accel
        build = self.builds[cell.profile.name]
        why = scenario.unsupported_reason(cell.scenario, cell.profile.name, build.properties)
        if cell.to != cell.profile and not why:
            why = scenario.unsupported_reason(cell.scenario, cell.to.name, self.builds[cell.to.name].properties)
        if why:
            return cell.row(Verdict.UNSUPPORTED, accel, error=why), None
        # A cell that may be kept lives in a kept lab's namespace from the start: its hosts outlive
        # this process, which must not make them look like a dead run's leftovers.
        keep_name = f"{self.ns.id}-{index + 1}" if keep else ""
        ns = kept.namespace(self.cfg, keep_name) if keep else self.ns.for_cell(index + 1)
        keep_key = ssh.LabKeys.public_line(kept.keys(self.cfg, keep_name).ensure()) if keep else ""
        self._spaces.append(ns)
        rundir = artefacts.new_rundir(ns)
        first, second = self.placements[index % len(self.placements)]
        hosts = LabHosts(first, HostSpec(image=build.images.runtime, ns=ns, devices=self.devices, ssh_key=keep_key,
                                         published=scenario.SECONDARY_PORTS,
                                         secondary_image=self.builds[cell.to.name].images.runtime,
                                         limits=self.cfg.limits),
                         rundir, self.cfg.timeouts.host_start_s, secondary_engine=second)
        placed = {"primary": first.name, "secondary": second.name}

        def phase(name: str) -> None:
            artefacts.write_phase(rundir, name)
            emit(PhaseChanged(cell, name))
            if hook is not None:
                hook(name, hosts)

        def keep_it(o: scenario.Outcome) -> bool:
            return keep and o.verdict != cell.expected

        saved = self.snapshots.get((cell.profile.name, first.name))
        started, began = time.monotonic(), time.time()
        outcome = scenario.Outcome()
        drawn: concurrent.futures.Future[Path | None] | None = None
        try:
            phase("hosts")
            with hosts.kept_if(lambda: keep_it(outcome)):
                hosts_s = time.monotonic() - started
                # Hard-linked into the primary's run folder, which its QEMU then sees, when shared.
                restore = saved.place(rundir / "primary") if saved and hosts.primary.shares_rundir else ""
                # Split, the secondary's ports are published on its engine's address: guarded.
                keys = guard.CellKeys.new() if hosts.split else None
                outcome = scenario.run(self.cfg, cell.scenario, hosts.primary, hosts.secondary, accel, phase, keep_it,
                                       restore, keys)
                outcome.timings["hosts"] = round(hosts_s, 2)
                drawn = self._pictures.submit(artefacts.picture, rundir, cell.title, outcome)  # while hosts go
        except ScenarioError as exc:
            if first.cancelled.is_set() or second.cancelled.is_set():
                raise Cancelled(str(exc)) from exc
            outcome.verdict, outcome.error = Verdict.ERROR, str(exc)
        except LabError as exc:
            lost = [e.name for e in dict.fromkeys((first, second)) if e.lost()]
            if not lost:
                raise
            # An engine gone in the middle of a run: this cell's error, while cells elsewhere go on.
            outcome.verdict, outcome.error = Verdict.ERROR, f"engine {', '.join(lost)} was lost: {exc}"
        finally:
            (rundir / "primary" / snapshot.STATE).unlink(missing_ok=True)  # the saved guest stays in one place
            if drawn is not None:
                outcome.reasons += _drawn(drawn)
            lab = None
            # Kept for a person, who reaches its sockets in its run folder: only where they are shared.
            shared = all(h.shares_rundir for h in hosts.hosts.values())
            if keep and hosts.hosts and shared and not first.cancelled.is_set():
                lab = kept.adopt(self.cfg, keep_name, hosts, cell.profile.name, cell.scenario.name,
                                 build.images.runtime, accel)
                outcome.timings["total"] = round(time.monotonic() - started, 2)
                folder = artefacts.copy_to(rundir, out)
            else:
                if keep and hosts.hosts:  # what it would have kept: on engines that copy run folders
                    outcome.reasons.append("not kept: its engines do not see this machine's files, and a kept lab "
                                           "is reached through its run folder here")
                try:
                    hosts.close()
                finally:
                    outcome.timings["total"] = round(time.monotonic() - started, 2)
                    folder = artefacts.move_to(rundir, out)
                    if keep:
                        kept.forget(self.cfg, keep_name)
        row = cell.row(outcome.verdict, accel, analysis=outcome.analysis, guest=outcome.guest,
                       migration=outcome.figures, lost_at=outcome.lost_at, generator_fps=outcome.generator_fps,
                       load=outcome.load,
                       reasons=outcome.reasons if outcome.analysis else None, error=outcome.error,
                       qemu_version=outcome.qemu_version, timings=outcome.timings,
                       span=(round(began, 3), round(time.time(), 3)), artefacts=str(folder),
                       engines=placed, images={role: hosts.spec.image_of(role) for role in LabHosts.ROLES})
        artefacts.describe(Path(lab.rundir) if lab else folder, row)
        if lab is not None:
            artefacts.describe(folder, row)
        return row, lab

    def run_cell(self, cell: Cell, out: Path, hook: HostsHook | None = None) -> Row:
        """One cell, for callers that want its row only (the pytest plugin's ``run_scenario``)."""
        with contextlib.closing(self.run([cell], out, hook=hook)) as events:
            rows = [e.row for e in events if isinstance(e, CellFinished)]
        if not rows:
            raise LabError(f"{cell.name} did not run")
        return rows[0]

    @staticmethod
    def _discard(hosts: LabHosts, rundir: Path) -> None:
        hosts.close()
        shutil.rmtree(rundir, ignore_errors=True)

    # -- a lab for a person -----------------------------------------------------------------------

    def up(self, cell: Cell, name: str) -> kept.KeptLab:
        """Hosts and guests of ``cell`` started and left running as the kept lab ``name``: the
        primary's guest booted, the secondary waiting with -incoming, sshd in both taking its key."""
        kept.refuse_if_up(self.cfg, name)
        build = self.prepare([cell.profile])[cell.profile.name]
        assert self.accel is not None
        pubkey = ssh.LabKeys.public_line(kept.keys(self.cfg, name).ensure())
        ns = kept.namespace(self.cfg, name)
        rundir = artefacts.new_rundir(ns)
        hosts = LabHosts(self.engine, HostSpec(image=build.images.runtime, ns=ns, devices=self.devices,
                                               ssh_key=pubkey, limits=self.cfg.limits), rundir,
                         self.cfg.timeouts.host_start_s)
        try:
            hosts.create()
            if not hosts.primary.shares_rundir:
                raise LabError(f"engine {self.engine.name} does not see this machine's files, and a kept "
                               "lab is reached through its run folder here (QMP, console, ssh config); run the "
                               "lab on that engine's machine")
            booted = scenario.Booted.create(self.cfg, cell.scenario, hosts.primary, hosts.secondary, self.accel.accel)
            booted.source.keep = booted.destination.keep = True
            try:
                booted.start(self.cfg.timeouts)
            finally:
                booted.source.close()  # the QEMUs stay; only the lab's own monitor connections go
                booted.destination.close()
        except ScenarioError as exc:
            self._discard(hosts, rundir)
            raise LabError(f"{cell.name} did not come up: {str(exc).splitlines()[0]}; "
                           "`lab run --keep` keeps a run that fails, to look at") from exc
        except BaseException:
            self._discard(hosts, rundir)
            raise
        return kept.adopt(self.cfg, name, hosts, cell.profile.name, cell.scenario.name, build.images.runtime,
                          self.accel.accel)

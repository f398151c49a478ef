"""The runner: the one place where profile x scenario cells run. Every face (`lab run`, `lab up`,
the pytest plugin) is a thin layer over it.

``Runner.prepare`` makes sure each selected profile's images exist, chooses the accelerator once and
asks each build what its netfilters offer; ``Runner.run`` runs cells and yields what happens as it
happens: a cell starting, its phases, its report row, report.json written (after every cell, with
the cells still to come marked ``not-run``), a lab kept for a person. Cells run on a worker thread;
Ctrl-C or SIGTERM in the caller cancels it, removes what the run made and still lands the folders.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

from lab import accel as accel_mod
from lab import artefacts, capabilities, images, kept, resources, scenario, ssh
from lab.accel import AccelChoice
from lab.analysis import ERROR, UNSUPPORTED
from lab.config import LabConfig, Profile, ScenarioSpec
from lab.engine import KVM, TUN, Engine, HostSpec, LabHosts
from lab.errors import Cancelled, LabError, ScenarioError
from lab.report import NOT_RUN, Report, Row

# A hook a test may give: called as each phase begins, with the cell's hosts (to inject faults).
HostsHook = Callable[[str, LabHosts], None]


@dataclass(frozen=True)
class Cell:
    profile: Profile
    scenario: ScenarioSpec

    @property
    def name(self) -> str:
        return f"{self.profile.name}-{self.scenario.name}"

    @property
    def expected(self) -> str:
        return self.scenario.expect[self.profile.name]

    def row(self, verdict: str, accel: str, **details: object) -> Row:
        return Row.of(profile=self.profile.name, scenario=self.scenario.name, filter=self.scenario.filter,
                      expected=self.expected, verdict=verdict, accel=accel, **details)  # type: ignore[arg-type]


def select_profiles(cfg: LabConfig, names: list[str] | None = None) -> list[Profile]:
    selected = cfg.select_profiles(names)
    if not selected:
        raise LabError(f"{cfg.path}: no profile is selected (every profile has default: false); "
                       "name one with --profile")
    return selected


def select_cells(cfg: LabConfig, profiles: list[str] | None = None, scenarios: list[str] | None = None) -> list[Cell]:
    """The selection, in the configured order (profiles outer, scenarios inner)."""
    return [Cell(p, s) for p in select_profiles(cfg, profiles) for s in cfg.select_scenarios(scenarios)]


@dataclass(frozen=True)
class Build:
    """A profile's images and what its QEMU's netfilters offer."""

    images: images.ImageSet
    properties: dict[str, list[str]]

    def provenance(self) -> dict[str, object]:
        i = self.images
        return {"runtime_image": i.runtime, "qemu_image": i.qemu, "qemu_source": i.qemu_source, "series": i.series,
                "build_seconds": i.build_seconds, "filter_properties": self.properties}


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
class Runner:
    """Runs cells of one configuration on one engine."""

    cfg: LabConfig
    engine: Engine
    on_build: images.Progress | None = None
    builds: dict[str, Build] = field(default_factory=dict)
    accel: AccelChoice | None = None

    @classmethod
    def connect(cls, cfg: LabConfig, on_build: images.Progress | None = None) -> Runner:
        return cls(cfg, Engine.connect(), on_build)

    def builder(self) -> images.ImageBuilder:
        return images.ImageBuilder(self.engine.client, self.cfg, self.cfg.results_root / "build-logs", self.on_build)

    def build(self, profiles: list[Profile], rebuild: bool = False) -> dict[str, images.ImageSet]:
        builder = self.builder()
        return {p.name: builder.ensure(p, rebuild=rebuild) for p in profiles}

    def prepare(self, profiles: list[Profile]) -> dict[str, Build]:
        """Images (built when missing), the accelerator, each build's netfilter properties."""
        missing = [p for p in profiles if p.name not in self.builds]
        built = self.build(missing) if missing else {}
        if self.accel is None and (built or self.builds):
            runtime = next(iter(built.values())).runtime if built else next(iter(self.builds.values())).images.runtime
            self.accel = accel_mod.choose(self.engine, runtime, self.cfg.accel, self.cfg.name,
                                          self.cfg.timeouts.kvm_probe_s, self.cfg.state_root / accel_mod.CACHE_NAME)
        for name, image_set in built.items():
            self.builds[name] = Build(image_set, capabilities.filter_properties(self.engine, image_set.runtime,
                                                                               self.cfg.name))
        return {p.name: self.builds[p.name] for p in profiles}

    def refuse_leftovers(self) -> None:
        kept.refuse_if_up(self.cfg)
        resources.refuse_leftovers(self.engine.client, self.cfg.name)

    @property
    def devices(self) -> tuple[str, ...]:
        return (TUN, KVM) if self.accel is not None and self.accel.accel == "kvm" else (TUN,)

    # -- running cells ----------------------------------------------------------------------------

    def run(self, cells: list[Cell], out: Path, keep: bool = False,
            hook: HostsHook | None = None) -> Generator[Event, None, None]:
        """Runs ``cells`` one after another; yields events as they happen; artefacts in ``out/<cell>``.
        Consume it inside ``contextlib.closing``: an exception outside the generator then still stops
        the cells and removes what they made before it goes on.

        With ``keep``, the first cell that does not end as expected stays running (LabKept) and the
        run stops there.
        """
        self.prepare(list(dict.fromkeys(c.profile for c in cells)))
        assert self.accel is not None
        report = Report(config=str(self.cfg.path), accel=self.accel.accel, accel_reason=self.accel.reason,
                        builds={name: b.provenance() for name, b in self.builds.items()})
        keep_key = ssh.LabKeys.public_line(kept.keys(self.cfg).ensure()) if keep else ""
        events: queue.Queue[Event | BaseException | None] = queue.Queue()
        worker = threading.Thread(target=self._work, args=(cells, out, keep_key, hook, events), name="lab-cells",
                                  daemon=True)
        worker.start()
        done: list[Row] = []
        try:
            while True:
                item = events.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, CellFinished):
                    done.append(item.row)
                    report.rows.append(item.row)
                    yield item
                    yield ReportWritten(report.write(out, self._pending(cells, done)), report)
                    continue
                yield item
        finally:
            if worker.is_alive():  # interrupted, or the caller stopped listening
                self.engine.cancel(self.cfg.name)
                worker.join(timeout=30)
                resources.remove(self.engine.client, self.cfg.name)  # what the worker's own cleanup missed
                report.write(out, self._pending(cells, done))
        if not done:
            yield ReportWritten(report.write(out), report)

    def _pending(self, cells: list[Cell], done: list[Row]) -> list[Row]:
        accel = self.accel.accel if self.accel else ""
        return [c.row(NOT_RUN, accel) for c in cells[len(done):]]

    def _work(self, cells: list[Cell], out: Path, keep_key: str, hook: HostsHook | None,
              events: queue.Queue[Event | BaseException | None]) -> None:
        try:
            for index, cell in enumerate(cells, 1):
                events.put(CellStarted(cell, index, len(cells)))
                row, lab = self._cell(cell, out / cell.name, keep_key, hook, events.put)
                events.put(CellFinished(cell, row))
                if lab is not None:
                    events.put(LabKept(cell, lab))
                    break
        except Cancelled:
            pass
        except BaseException as exc:  # handed to the caller's thread, which raises it
            events.put(exc)
        finally:
            events.put(None)

    def _cell(self, cell: Cell, out: Path, keep_key: str, hook: HostsHook | None,
              emit: Callable[[Event], None]) -> tuple[Row, kept.KeptLab | None]:
        assert self.accel is not None
        accel = self.accel.accel
        build = self.builds[cell.profile.name]
        why = scenario.unsupported_reason(cell.scenario, cell.profile.name, build.properties)
        if why:
            return cell.row(UNSUPPORTED, accel, error=why), None
        rundir = artefacts.new_rundir(self.cfg.name)
        hosts = LabHosts(self.engine, HostSpec(image=build.images.runtime, lab=self.cfg.name, devices=self.devices,
                                               ssh_key=keep_key), rundir, self.cfg.timeouts.host_start_s)

        def phase(name: str) -> None:
            artefacts.write_phase(rundir, name)
            emit(PhaseChanged(cell, name))
            if hook is not None:
                hook(name, hosts)

        def keep(o: scenario.Outcome) -> bool:
            return bool(keep_key) and o.verdict != cell.expected

        started = time.monotonic()
        outcome = scenario.Outcome()
        try:
            phase("hosts")
            with hosts.kept_if(lambda: keep(outcome)):
                outcome = scenario.run(self.cfg, cell.scenario, hosts.primary, hosts.secondary, accel, phase, keep,
                                       self.engine.cancelled)
        except ScenarioError as exc:
            if self.engine.cancelled.is_set():
                raise Cancelled(str(exc)) from exc
            outcome.verdict, outcome.error = ERROR, str(exc)
        finally:
            outcome.timings["total"] = round(time.monotonic() - started, 2)
            lab = None
            if keep_key and hosts.hosts and not self.engine.cancelled.is_set():  # kept for a person
                lab = kept.adopt(self.cfg, hosts, cell.profile.name, cell.scenario.name, build.images.runtime, accel)
                folder = artefacts.copy_to(rundir, out)
            else:
                try:
                    hosts.close()
                finally:
                    folder = artefacts.move_to(rundir, out)
        row = cell.row(outcome.verdict, accel, analysis=outcome.analysis, error=outcome.error,
                       qemu_version=outcome.qemu_version, timings=outcome.timings, artefacts=str(folder))
        artefacts.describe(Path(lab.rundir) if lab else folder, row, outcome)
        if lab is not None:
            artefacts.describe(folder, row, outcome)
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

    def up(self, cell: Cell) -> kept.KeptLab:
        """Hosts and guests of ``cell`` started and left running: the primary's guest booted, the
        secondary waiting with -incoming, sshd in both taking the lab's key."""
        build = self.prepare([cell.profile])[cell.profile.name]
        assert self.accel is not None
        kept.refuse_if_up(self.cfg)
        pubkey = ssh.LabKeys.public_line(kept.keys(self.cfg).ensure())
        rundir = artefacts.new_rundir(self.cfg.name, "kept")
        hosts = LabHosts(self.engine, HostSpec(image=build.images.runtime, lab=self.cfg.name, devices=self.devices,
                                               ssh_key=pubkey), rundir, self.cfg.timeouts.host_start_s)
        try:
            hosts.__enter__()
            booted = scenario.Booted.create(self.cfg, cell.scenario, hosts.primary, hosts.secondary, self.accel.accel)
            booted.source.keep = booted.destination.keep = True
            try:
                booted.start(self.cfg.timeouts)
            finally:
                booted.source.close()  # the QEMUs stay; only the lab's own monitor connections go
                booted.destination.close()
        except ScenarioError as exc:
            self._discard(hosts, rundir)
            raise LabError(f"lab up: {cell.profile.name} x {cell.scenario.name} did not come up: "
                           f"{str(exc).splitlines()[0]}; see `lab run --keep` to look at a run that fails") from exc
        except BaseException:
            self._discard(hosts, rundir)
            raise
        return kept.adopt(self.cfg, hosts, cell.profile.name, cell.scenario.name, build.images.runtime,
                          self.accel.accel)

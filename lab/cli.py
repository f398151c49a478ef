"""`lab`: build the images, run the scenarios, check the machine, clean up.

Exit statuses: EXIT_STATUSES below, which `lab --help` prints.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import re
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from lab import bench, completion, doctor, images, kept, version
from lab import config as config_mod
from lab import runner as runner_mod
from lab import session as session_mod
from lab.config import LabConfig
from lab.engine import Engine, resources, ssh
from lab.errors import Cancelled, ConfigError, Error, LabError, one_line
from lab.results import junit, merge, page
from lab.results.report import Row, figures_text
from lab.results.verdict import Verdict
from lab.runner import (
    CellFinished,
    CellStarted,
    Event,
    Pace,
    Runner,
    select_cells,
    select_profiles,
)
from lab.session import Outcome, Placement, Session, profiles_of
from lab.shard import Shard, configured_order
from lab.upstream import check as check_mod
from lab.upstream import lore
from lab.upstream import series as series_mod

EXIT_MISMATCH = 1
EXIT_LAB_ERROR = 2
EXIT_BISECT_SKIP = 125  # `git bisect run`: this commit cannot be tested
EXIT_INTERRUPTED = 130
EXIT_STATUSES = f"""exit status:
  0    every verdict as expected (lab check: success); any other verb: done
  {EXIT_MISMATCH}    some verdict not as expected (lab check: fail)
  {EXIT_LAB_ERROR}    the lab could not run, or bad input: one line says what, where and what to do
       (lab check: warning, or no check posted; lab doctor: a check failed)
  {EXIT_BISECT_SKIP}  lab run --bisect instead of 2, and for a cell without a verdict: git bisect run skips
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C, SIGTERM), after removing the lab's containers and networks
"""


class BuildDisplay:
    """Live build progress: a bar per image, driven by Dockerfile steps and ninja's counter.

    On a terminal the bars redraw in place; elsewhere (CI logs) each step is one line and ninja's
    counter is printed every tenth of the way.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[what]}"), TimeElapsedColumn(), console=console,
                                 disable=not self.live)
        self.tasks: dict[str, TaskID] = {}
        self.ninja_shown: dict[str, int] = {}

    def __enter__(self) -> BuildDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: images.BuildEvent) -> None:
        task = self.tasks.get(event.image)
        if task is None:
            task = self.tasks[event.image] = self.progress.add_task(event.image, total=None, what="")
        if event.kind == "info":
            self.progress.update(task, what=event.line[:70])
            self.console.log(f"{event.image}: {event.line}") if not self.live else self.progress.console.print(
                f"[dim]{event.image}:[/] {event.line}")
        elif event.kind == "step" and event.count:
            done, total = event.count
            self.progress.update(task, completed=done - 1, total=total, what=event.line.split(" : ", 1)[-1][:60])
            if not self.live:
                self.console.print(f"{event.image}: {event.line[:120]}")
        elif event.kind == "ninja" and event.count:
            done, total = event.count
            self.progress.update(task, what=f"ninja [{done}/{total}]")
            tenth = done * 10 // total
            if not self.live and tenth > self.ninja_shown.get(event.image, -1):
                self.ninja_shown[event.image] = tenth
                self.console.print(f"{event.image}: ninja [{done}/{total}]")


def _load(args: argparse.Namespace) -> LabConfig:
    return config_mod.load(Path(args.config))


def cmd_build(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args)
    profiles = select_profiles(cfg, args.profile)
    images.check_local_series(cfg, profiles)
    if args.rebuild and args.pull:
        raise LabError("--rebuild and --pull cannot be given together: --pull builds nothing")
    if (args.push or args.pull) and not cfg.images.registry:
        raise ConfigError(f"{cfg.path}: images.registry", "not set",
                          f"--{'push' if args.push else 'pull'} needs a registry, HOST[:PORT]/PATH")
    with BuildDisplay(console) as display, Runner.connect(cfg, display) as runner:
        started = time.monotonic()
        built = runner.build(profiles, rebuild=args.rebuild, push=args.push, pull_only=args.pull)
        for name, image_set in built.items():
            console.print(f"[bold]{name}[/]: {image_set.runtime}")
    _show_build_steps(console, bench.unique_steps(list(built.values())))
    console.print(f"images ready in {time.monotonic() - started:.0f} s")
    return 0


def _show_build_steps(console: Console, steps: list[dict[str, Any]], at_least_s: float = 1.0) -> None:
    """Where the build's time went: each step that took a second or more (shorter ones are summed)."""
    if not steps:
        return
    table = Table(title="build steps", title_justify="left")
    for heading in ("image", "step", "instruction", "seconds"):
        table.add_column(heading, justify="right" if heading == "seconds" else "left")
    short = [s for s in steps if s["seconds"] < at_least_s]
    for s in steps:
        if s["seconds"] >= at_least_s:
            cached = " (cache)" if s["cached"] else ""
            table.add_row(s["image"], s["step"], s["instruction"][:70] + cached, f"{s['seconds']:.1f}")
    if short:
        table.add_row("", "", f"{len(short)} shorter steps", f"{sum(s['seconds'] for s in short):.1f}")
    console.print(table)


def _run_matrix(session: Session, cells: list[runner_mod.Cell], out: Path, console: Console) -> Outcome:
    """The faces' one way through a session: images, accelerator, cells with their lines, the tables."""
    with BuildDisplay(console) as display:
        runner = session.prepare(profiles_of(cells), display)
    assert runner.accel is not None
    if runner.transfers:
        console.print("images copied to " + ", ".join(f"{k} in {v:g} s" for k, v in runner.transfers.items()))
    unslotted = "" if runner.take_slots else ", taking no engine slots (LAB_SLOTS=off: the machine may be overloaded)"
    console.print(f"accelerator: [bold]{runner.accel.accel}[/] ({runner.accel.reason}); run {runner.ns.id}, "
                  f"{len(cells)} cells, {session.jobs_now} at a time{unslotted}")
    # closing: an interrupt landing here, outside the generator, still stops the cells at once.
    with contextlib.closing(session.run(cells, out)) as events, RunDisplay(console, len(cells)) as display:
        for event in events:
            display(event)
    written = session.outcome.written
    assert written is not None
    written.report.print(console)
    console.print(f"report: {written.path}", markup=False)
    console.print(f"page: {written.path.parent / page.PAGE}", markup=False)
    return session.outcome


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args)
    out = Path(args.out) if args.out else cfg.results_root / time.strftime("run-%Y%m%d-%H%M%S")
    cells = select_cells(cfg, args.profile, args.scenario, args.to)
    if args.shard is not None:
        cells = args.shard.of(configured_order(cfg, cells))
    placement = Placement.of(cfg, args.engine, args.split)
    with Session(cfg, placement, keep=args.keep, jobs=args.jobs) as session:
        try:
            _run_matrix(session, cells, out, console)
        finally:  # a run stopped by a lab error still says which cells ran and which did not
            if args.junit and session.outcome.written is not None:
                junit.write(session.outcome.written.report.rows, Path(args.junit))
    run = session.outcome
    assert run.written is not None
    if run.kept is not None:
        _how_to_get_in(console, run.kept.lab, f"kept: {run.kept.cell.name} did not end as expected")
    if args.bisect:
        return bisect_status(run.written.report.rows)
    return 0 if run.written.report.all_match else EXIT_MISMATCH


def bisect_status(rows: list[Row]) -> int:
    """What `git bisect run` reads: 0 good, 1 bad, 125 this commit cannot tell (skip it). A cell that
    did not give a verdict, or a build that lacks a property a scenario sets, decides nothing."""
    if not rows or any(not r.verdict.decided for r in rows):
        return EXIT_BISECT_SKIP
    if any(r.verdict == Verdict.UNSUPPORTED and not r.match for r in rows):
        return EXIT_BISECT_SKIP
    return 0 if all(r.match for r in rows) else EXIT_MISMATCH


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args)
    out = Path(args.out) if args.out else cfg.results_root / time.strftime("check-%Y%m%d-%H%M%S")
    patchwork, info = series_mod.resolve(args.ref, args.patchwork or cfg.check.patchwork or None)
    series_mod.require_complete(info)
    plan = check_mod.plan(cfg, info, args.ref, patchwork.base_url, args.base)
    cells = select_cells(plan.cfg, plan.profiles, args.scenario)
    poster = check_mod.Poster(patchwork, check_mod.read_token(cfg), info.project, args.dry_run,
                              lambda line: console.print(line, markup=False, soft_wrap=True))
    url = check_mod.target_url(cfg.check.target_url, os.environ)
    console.print(f"series {info.id}: {info.name} ({len(info.patches)} patches) on {plan.base.name}", markup=False)

    def run_cells(cfg: LabConfig, cells: list[runner_mod.Cell], outcome: Outcome) -> None:
        with Session(cfg, outcome=outcome) as session:
            _run_matrix(session, cells, out, console)

    done = session_mod.check(cfg, plan, info, cells, out, poster, url, run_cells)
    verb = "would be posted" if args.dry_run else "posted"
    patches = f"{len(info.patches)} patch{'es' if len(info.patches) != 1 else ''}"
    console.print(f"check {done.state} {verb} on {patches}: {done.description} (report: {done.report_path})",
                  markup=False)
    if done.failure is not None:
        raise done.failure
    return check_mod.EXIT_STATUS[done.state]


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args)
    out = Path(args.out) if args.out else cfg.results_root / time.strftime("bench-%Y%m%d-%H%M%S")
    options = bench.BenchOptions(out=out, profiles=args.profile, scenarios=args.scenario,
                                 jobs=tuple(dict.fromkeys(args.jobs or (1, 2))), cold=args.cold,
                                 series=not args.no_series)
    # Bad input is refused before Docker is asked.
    bench.warm_cell(select_cells(cfg, options.profiles, options.scenarios))
    if options.series:
        bench.series_source(cfg)
    with Session(cfg) as session:
        with BuildDisplay(console) as display:
            runner = session.prepare(select_profiles(cfg, options.profiles), display)
        result, path = bench.run(cfg, options, runner, lambda line: console.print(line, markup=False))
    table = Table(title=f"lab bench (run {result.run}, {result.machine.get('cores')} cores)", title_justify="left")
    table.add_column("what")
    table.add_column("figure", justify="right")
    for what, figure in result.rows():
        table.add_row(what, figure)
    console.print(table)
    console.print(f"bench: {path}", markup=False)
    return 0


class RunDisplay:
    """lab run's cells as they start and finish, each line naming its cell. On a terminal, a status
    line under them, redrawn in place: cells done/total, the running ones, elapsed time and ETA.
    Elsewhere (CI logs, pipes) the lines alone, without cursor control."""

    def __init__(self, console: Console, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.clock = clock
        self.pace = Pace(total, clock())
        self.live = Live(console=console, transient=True, refresh_per_second=2, get_renderable=self.status) \
            if console.is_terminal else None

    def __enter__(self) -> RunDisplay:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def __call__(self, event: Event) -> None:
        self.pace.note(event)
        _show(self.console, event)
        if self.live is not None:
            self.live.refresh()

    def status(self) -> Group:
        head, *running = status_lines(self.pace, self.clock())
        return Group(Text(head, style="bold"), *(Text(line) for line in running))


def status_lines(pace: Pace, now: float) -> list[str]:
    """The run in a line, then a line per running cell with its phase (a cell's name is never cut)."""
    eta = pace.eta_s(now)
    # Copies in one step: the status is drawn on rich's refresh thread while events change the pace.
    running, phases = list(pace.running.items()), dict(pace.phases)
    head = (f"cells {pace.done}/{pace.total} done, {len(running)} running, {_clock(pace.elapsed_s(now))} elapsed, "
            f"ETA {_clock(eta) if eta is not None else '?'}")
    return [head, *(f"  {cell.label}: {phases.get(index, 'starting')}" for index, cell in running)]


def _clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


def _show(console: Console, event: Event) -> None:
    # With --jobs, cells finish in any order: each line names its cell, never relying on the line above.
    if isinstance(event, CellStarted):
        console.print(f"[{event.index}/{event.total}] {event.cell.title} started", markup=False)
    elif isinstance(event, CellFinished):
        console.print(_verdict_line(event.row), markup=False)


def _verdict_line(row: Row) -> str:
    """One cell's result, whole on one line: its cell, its verdict against the expectation, its figures."""
    total = row.timings.get("total", 0)
    head = f"{row.builds} x {row.scenario}: {row.verdict} ({row.mark})"
    if row.frames_sent is None:
        return f"{head}: {row.why} [{total:.1f} s]"
    return f"{head}; {row.view}: {figures_text(row)} [{total:.1f} s]"


def cmd_series(args: argparse.Namespace, console: Console) -> int:
    if lore.looks_like_message_id(args.ref):
        fetched = lore.fetch(args.ref, args.archive or lore.DEFAULT_ARCHIVE)
        name = re.sub(r"[^A-Za-z0-9_.@-]", "_", lore.message_id(args.ref))
        if args.action == "show":
            console.print(f"series {fetched.extra['message_id']}: {fetched.name}", markup=False)
            console.print(f"  {len(fetched.patches)} patches, from {fetched.origin} with b4 {fetched.extra['b4']}",
                          markup=False)
            _list_patches(console, fetched)
            return 0
    else:
        patchwork, info = series_mod.resolve(args.ref, args.patchwork)
        if args.action == "show":
            console.print(f"series {info.id}: {info.name}", markup=False)
            console.print(f"  version {info.version}, patches {info.total if info.total is not None else '?'}, "
                          f"received_all {info.received_all if info.received_all is not None else '?'}")
            console.print(f"  mbox {info.mbox}")
            return 0
        fetched, name = patchwork.fetch(info), str(info.id)
    out = Path(args.output or f"series-{name}.mbox")
    try:
        out.write_bytes(b"".join(p.message if p.message.endswith(b"\n") else p.message + b"\n"
                                 for p in fetched.patches))
    except OSError as exc:
        raise LabError(f"cannot write {out}: {exc.strerror}; pass -o FILE in an existing folder") from exc
    _list_patches(console, fetched)
    console.print(f"series {name} ({len(fetched.patches)} patches) written to {out}", markup=False)
    return 0


def _list_patches(console: Console, fetched: series_mod.Series) -> None:
    for p in fetched.patches:
        console.print(f"  {p.index}/{p.total} {p.subject}", markup=False)


def cmd_up(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args)
    cell = select_cells(cfg, [args.profile] if args.profile else None, [args.scenario] if args.scenario else None)[0]
    name = kept.check_name(args.name)
    kept.refuse_if_up(cfg, name)
    with Session(cfg) as session:
        with BuildDisplay(console) as display:
            runner = session.prepare([cell.profile], display)
        lab = runner.up(cell, name)
    _how_to_get_in(console, lab, f"up: {cell.name} ({cell.scenario.filter}), {lab.accel}; the primary's guest "
                                 "runs, the secondary waits with -incoming")
    return 0


def _how_to_get_in(console: Console, lab: kept.KeptLab, what: str) -> None:
    at = f" --lab {lab.name}"
    console.print(f"lab {lab.name} is {what}", markup=False)
    console.print(f"  lab ssh{at} primary             # or: ssh -F {lab.ssh_config} primary", markup=False)
    console.print(f"  lab qmp{at} primary query-status", markup=False)
    console.print(f"  lab console{at} primary", markup=False)
    console.print(f"  files: {lab.rundir}", markup=False)
    console.print(f"  lab down {lab.name}                # when done", markup=False)


def cmd_down(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args)
    name = args.name or kept.load(cfg).name
    if name not in kept.names(cfg):
        kept.load(cfg, name)  # says which labs are up
    removed = kept.down(Engine.connect(), cfg, name)
    console.print(f"lab {name} is down" + (f"; removed {removed.describe()}" if removed else ""), markup=False)
    return 0


def cmd_ssh(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args)
    lab = kept.load(cfg, args.lab)
    client = ssh.connect(_container(lab, args.role), kept.keys(cfg, lab.name), engine_url=lab.engine_url(args.role))
    try:
        if args.command:
            result = ssh.run(client, shlex.join(args.command))
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            return result.exit_status
        return ssh.interactive(client)
    finally:
        client.close()


def cmd_qmp(args: argparse.Namespace, console: Console) -> int:
    lab = kept.load(_load(args), args.lab)
    _container(lab, args.role)
    try:
        arguments = json.loads(args.arguments) if args.arguments else {}
    except ValueError as exc:
        raise LabError(f"QMP arguments must be a JSON object, e.g. '{{\"path\": \"/objects\"}}' ({exc})") from exc
    console.print_json(data=kept.qmp(lab, args.role, args.execute, arguments))
    return 0


def cmd_console(args: argparse.Namespace, console: Console) -> int:
    lab = kept.load(_load(args), args.lab)
    _container(lab, args.role)
    if not (args.log or args.follow):
        if not sys.stdin.isatty():
            raise LabError("lab console attaches to a terminal; use --log (or -f) to print the console's output")
        console.print(f"attached to the {args.role} guest's serial console; Ctrl-] leaves", markup=False)
        kept.attach_console(lab, args.role)
        return 0
    path = lab.console(args.role)
    sys.stdout.write(path.read_text(errors="replace") if path.exists() else "")
    sys.stdout.flush()
    if args.follow:
        offset = path.stat().st_size if path.exists() else 0
        while True:  # until Ctrl-C: following is what was asked for
            time.sleep(0.2)
            if path.exists() and path.stat().st_size > offset:
                with path.open("rb") as f:
                    f.seek(offset)
                    data = f.read()
                offset += len(data)
                sys.stdout.write(data.decode(errors="replace"))
                sys.stdout.flush()
    return 0


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args)
    engine = Engine.connect()
    labs = [kept.load(cfg, name) for name in ([args.lab] if args.lab else kept.names(cfg))]
    hosts = {lab.name: kept.status(engine, lab) for lab in labs}
    dead = engine.dead_runs(cfg.name)
    if args.json:
        _print_json({"labs": [dataclasses.asdict(lab) | {"hosts": hosts[lab.name]} for lab in labs],
                     "dead_runs": {run: dataclasses.asdict(left) for run, left in sorted(dead.items())}})
        return 0
    if not labs:
        console.print("no lab is up (lab up --name NAME starts one)")
    for lab in labs:
        console.print(f"lab {lab.name}: {lab.profile} x {lab.scenario}, {lab.accel}, image {lab.image}",
                      markup=False)
        for row in hosts[lab.name]:
            filters = ", ".join(str(f) for f in row.get("filters", [])) or "-"  # type: ignore[attr-defined]
            console.print(f"  {row['role']:<9} {row['container']:<24} host {row['host']:<8} "
                          f"QEMU {row.get('runstate', '-')}  filters: {filters}", markup=False)
        console.print(f"  ssh_config: {lab.ssh_config}   files: {lab.rundir}", markup=False)
    for run, stuff in sorted(dead.items()):
        console.print(f"dead run {run} left {stuff.describe()} (lab clean removes it)", markup=False)
    return 0


def _print_json(data: object) -> None:
    """--json: plain JSON on stdout, for a program to read (no colour, no wrapping)."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _container(lab: kept.KeptLab, role: str) -> str:
    if role not in lab.containers:
        raise LabError(f"no host {role!r} in lab {lab.name}; hosts: {', '.join(lab.containers)}")
    return lab.containers[role]


def cmd_doctor(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args)
    checks = doctor.run(cfg)
    missing = [c for c in checks if not c.ok]
    if args.json:
        _print_json({"ok": not missing, "checks": [dataclasses.asdict(c) for c in checks]})
        return EXIT_LAB_ERROR if missing else 0
    for c in checks:
        mark = "[green]ok[/]" if c.ok else "[red]MISSING[/]"
        console.print(f"{mark:>20}  {c.name}: {c.detail}")
    if missing:
        console.print(f"{len(missing)} of {len(checks)} checks failed")
        return EXIT_LAB_ERROR
    return 0


def cmd_clean(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args) if not args.all or Path(args.config).exists() else None
    done = session_mod.clean(cfg, every_lab=args.all, kept_too=args.kept, images_too=args.images)
    for line in done.skipped:
        console.print(line, markup=False)
    if done.downed:
        console.print(f"took down the kept labs {', '.join(done.downed)}", markup=False)
    console.print(f"removed {done.removed.describe()}" if done.removed else "no container, network or volume to remove")
    for run, (owner, left) in sorted(done.others.items()):
        console.print(f"not removed: run {run} of {owner} ({left.describe()}): another machine's", markup=False)
    if done.rundirs:
        console.print(f"removed {done.rundirs} run folders left by interrupted runs")
    if done.images:
        console.print("removed the lab's images and the guests saved from them")
    elif done.snapshots:
        console.print(f"removed {done.snapshots} saved guest{'s' if done.snapshots > 1 else ''} whose image is gone")
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    console.print(f"page: {page.write(Path(args.report))}", markup=False)
    return 0


def cmd_report_merge(args: argparse.Namespace, console: Console) -> int:
    merged = merge.merge([Path(p) for p in args.reports], Path(args.out))
    page.write(merged.path)
    if args.junit:
        junit.write(merged.report.rows, Path(args.junit))
    merged.report.print(console)
    console.print(f"report: {merged.path}", markup=False)
    return 0 if merged.report.all_match else EXIT_MISMATCH


def cmd_completion(args: argparse.Namespace, console: Console) -> int:
    sys.stdout.write(completion.script(args.shell, parser()))
    return 0


class _Version(argparse.Action):
    """--version, described only when asked: it may run git."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(version.describe())
        parser.exit()


def _saying() -> OneLineParser:
    """-v and -q, on every verb: how much of the lab's own log (the ``lab`` logger) is shown."""
    common = OneLineParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="say more: the lab's debug lines too (QMP commands, hosts, slots)")
    common.add_argument("-q", "--quiet", action="count", default=0, help="say less: warnings and errors only")
    return common


def parser() -> argparse.ArgumentParser:
    common = _saying()
    ap = OneLineParser(prog="lab", description="The netfilter continuity lab.", epilog=EXIT_STATUSES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action=_Version, help="the lab's version (and its git description in a checkout)")
    sub = ap.add_subparsers(dest="verb", required=True)

    def verb(name: str, fn: Callable[[argparse.Namespace, Console], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=[common])
        p.error = ap.error  # type: ignore[method-assign]
        p.add_argument("--config", default="lab.yaml", help="lab configuration (default: ./lab.yaml)")
        p.set_defaults(fn=fn)
        return p

    b = verb("build", cmd_build, "build every image the configuration needs")
    b.add_argument("--profile", action="append", help="only this build profile (repeatable)")
    b.add_argument("--rebuild", action="store_true", help="rebuild even when the images are current")
    b.add_argument("--push", action="store_true",
                   help="then push them to images.registry under their content tags (docker login's credentials)")
    b.add_argument("--pull", action="store_true",
                   help="build nothing: what the engine lacks must come from images.registry")
    r = verb("run", cmd_run, "run every scenario on every build profile and report the verdicts")
    r.add_argument("--profile", action="append", help="only this build profile (repeatable)")
    r.add_argument("--scenario", action="append", help="only this scenario (repeatable)")
    r.add_argument("--out", help="folder for the report and artefacts (default: a new one under results_dir)")
    r.add_argument("--keep", action="store_true",
                   help="leave the first scenario that does not end as expected running, and say how to get in")
    r.add_argument("--jobs", type=_positive, default=0,
                   help="cells at once (default: one per core and per 2 GiB of the engines)")
    r.add_argument("--engine", action="append", help="spread cells over this engine of lab.yaml (repeatable)")
    r.add_argument("--split", help="PRIMARY,SECONDARY: every cell's primary on one engine, secondary on the other")
    r.add_argument("--to", metavar="PROFILE",
                   help="migrate to PROFILE's build: the destination runs it, the source each selected profile "
                        "(every default profile when none is named)")
    r.add_argument("--shard", type=_shard, metavar="I/N",
                   help="only the I-th of N parts of the selected cells (split in the configured order; "
                        "lab report merge joins the parts' reports)")
    r.add_argument("--junit", metavar="FILE", help="also write JUnit XML: a testcase per cell")
    r.add_argument("--bisect", action="store_true",
                   help="exit for `git bisect run`: 0 as expected, 1 not, 125 the lab could not decide")
    k = verb("check", cmd_check, "run a Patchwork series A/B against a base profile and post a check on its patches")
    k.add_argument("ref", help="a Patchwork patch or series URL, or a series ID (with --patchwork or check.patchwork)")
    k.add_argument("--base", help="the unpatched profile the series goes on (default: baseline)")
    k.add_argument("--scenario", action="append", help="only this scenario (repeatable; default: all)")
    k.add_argument("--out", help="folder for the report and artefacts (default: a new one under results_dir)")
    k.add_argument("--patchwork", help="the Patchwork server, e.g. https://patchwork.ozlabs.org")
    k.add_argument("--dry-run", action="store_true", help="print the checks it would post (token masked); post none")
    bn = verb("bench", cmd_bench, "measure builds, a warm scenario, the matrix and the hosts' memory; bench.json")
    bn.add_argument("--cold", action="store_true",
                    help="also a cold build of every image (minutes; under an image prefix of its own, removed after)")
    bn.add_argument("--profile", action="append", help="the matrix's profiles (repeatable; default: the default ones)")
    bn.add_argument("--scenario", action="append", help="the matrix's scenarios (repeatable; default: all); "
                    "the first that runs is also timed alone")
    bn.add_argument("--jobs", type=_positive, action="append", help="the matrix with this many cells at once "
                    "(repeatable; default: 1 and 2)")
    bn.add_argument("--no-series", action="store_true", help="skip the series rebuild")
    bn.add_argument("--out", help="folder for bench.json and the runs' reports (default: a new one under results_dir)")
    sr = sub.add_parser("series", help="look up or fetch a patch series (Patchwork, or a mail archive with b4)",
                        description="look up or fetch a patch series (Patchwork, or a mail archive with b4)",
                        parents=[common])
    sr.error = ap.error  # type: ignore[method-assign]
    sr.add_argument("action", choices=("show", "fetch"))
    sr.add_argument("ref", help="a Patchwork patch or series URL, a series ID (with --patchwork), or a Message-ID "
                                "(<local@domain>: its thread's series, through b4)")
    sr.add_argument("--patchwork", help="the Patchwork server, e.g. https://patchwork.ozlabs.org")
    sr.add_argument("--archive", help=f"the mail archive for a Message-ID (default {config_mod.DEFAULT_ARCHIVE})")
    sr.add_argument("-o", "--output", help="mbox file to write (fetch; default series-ID.mbox)")
    sr.set_defaults(fn=cmd_series)
    u = verb("up", cmd_up, "start a lab and leave it running: hosts, the primary's guest, the secondary -incoming")
    u.add_argument("--profile", help="build profile (default: the first one)")
    u.add_argument("--scenario", help="scenario whose filters to attach (default: the first one)")
    u.add_argument("--name", default="dev", help="the kept lab's name (default: dev)")
    d = verb("down", cmd_down, "remove a kept lab")
    d.add_argument("name", nargs="?", help="which (default: the one that is up)")
    st = verb("status", cmd_status, "kept labs: hosts, QEMU runstates, filters; dead runs' leftovers")
    st.add_argument("--lab", help="only this kept lab")
    st.add_argument("--json", action="store_true", help="as JSON: each kept lab with its hosts, dead runs' leftovers")
    for name, fn, what in (("ssh", cmd_ssh, "a shell (or one command) in a host of the running lab"),
                           ("qmp", cmd_qmp, "one QMP command to a host's QEMU, pretty-printed"),
                           ("console", cmd_console, "the guest's serial console (attach; or --log, -f)")):
        v = verb(name, fn, what)
        v.add_argument("--lab", help="which kept lab (needed when more than one is up)")
        v.add_argument("role", choices=("primary", "secondary"))
        if name == "ssh":
            v.add_argument("command", nargs="*", help="-- COMMAND... (default: a shell)")
        elif name == "qmp":
            v.add_argument("execute", help="the QMP command, e.g. query-migrate")
            v.add_argument("arguments", nargs="?", help="its arguments as a JSON object")
        else:
            v.add_argument("--log", action="store_true", help="print what the console has shown, do not attach")
            v.add_argument("-f", "--follow", action="store_true", help="print it, then keep printing what comes")
    dr = verb("doctor", cmd_doctor, "check that this machine can run the lab, and say what is missing")
    dr.add_argument("--json", action="store_true", help="as JSON: every check's name, ok and detail")
    c = verb("clean", cmd_clean, "remove what dead runs left (never a run in progress; kept labs with --kept)")
    c.add_argument("--images", action="store_true", help="remove the lab's images as well")
    c.add_argument("--kept", action="store_true", help="take every kept lab down as well (lab down N: one)")
    c.add_argument("--all", action="store_true", help="every lab on this machine, not only the configured name")
    what = "report.json files: draw the page again (html), or join the parts of a sharded run (merge)"
    rp = sub.add_parser("report", help=what, description=what)
    rp.error = ap.error  # type: ignore[method-assign]
    formats = rp.add_subparsers(dest="format", required=True)
    what = "draw report.html again from a report.json (a merged one, say)"
    rh = formats.add_parser("html", help=what, description=what, parents=[common])
    rh.error = ap.error  # type: ignore[method-assign]
    rh.add_argument("report", metavar="REPORT.json", help="the report; the page is written beside it")
    rh.set_defaults(fn=cmd_report)
    what = ("merge reports (lab run --shard's parts) into one report.json with its page and verdict table; "
            "exits as lab run would")
    rm = formats.add_parser("merge", help=what, description=what, parents=[common])
    rm.error = ap.error  # type: ignore[method-assign]
    rm.add_argument("reports", nargs="+", metavar="REPORT", help="a report.json, or the folder it is in")
    rm.add_argument("--out", required=True, help="folder for the merged report.json, its page and the cells' folders")
    rm.add_argument("--junit", metavar="FILE", help="also write JUnit XML: a testcase per cell")
    rm.set_defaults(fn=cmd_report_merge)
    what = "a shell completion script: eval \"$(lab completion bash)\", or source <(lab completion zsh)"
    co = sub.add_parser("completion", help=what, description=what, parents=[common])
    co.error = ap.error  # type: ignore[method-assign]
    co.add_argument("shell", choices=completion.SHELLS)
    co.set_defaults(fn=cmd_completion)
    return ap


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line. `lab ssh` takes its options anywhere before `--`, and what follows `--` is the
    remote command, whole (argparse alone would give options after the host to the command, or
    take the command's own options as lab's)."""
    if argv[:1] != ["ssh"] or "--" not in argv:
        return parser().parse_args(argv)
    dashes = argv.index("--")
    args = parser().parse_args(argv[:dashes])
    args.command = [*args.command, *argv[dashes + 1:]]
    return args


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


class OneLineParser(argparse.ArgumentParser):
    """Bad command lines get one line, like every other bad input, and exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"lab: error: {message} (see lab --help)", file=sys.stderr)
        raise SystemExit(EXIT_LAB_ERROR)


def _crash_report(verb: str) -> Path:
    """An unexpected error's traceback, kept in a file: the user sees one line that names it."""
    fd, name = tempfile.mkstemp(prefix=f"lab-{verb}-crash-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(traceback.format_exc())
    return Path(name)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rc = _main(argv)
    # Under `git bisect run`, 2 would mark the commit bad: a lab that could not decide says "skip".
    return EXIT_BISECT_SKIP if rc == EXIT_LAB_ERROR and argv[:1] == ["run"] and "--bisect" in argv else rc


LOG_LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


def log_to_stderr(verbosity: int) -> None:
    """The ``lab`` logger's lines on stderr, each as ``lab: ...``: warnings only with -q, debug lines
    with -v. The CLI owns the logger's one handler (a second main() in one process replaces it)."""
    logger = logging.getLogger("lab")
    for handler in [h for h in logger.handlers if getattr(h, "lab_cli", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("lab: %(message)s"))
    handler.lab_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(LOG_LEVELS[max(-1, min(1, verbosity))])
    logger.propagate = False


def make_console(file: TextIO | None = None, width: int | None = None) -> Console:
    """The console lab prints on. Logs (CI, pipes) are read at COLUMNS, else 80 (rich's default): a
    table wider than that is printed as a block per cell. soft_wrap: a long line stays one line (a
    URL, a result line to grep); tables still fit the width."""
    return Console(file=file, width=width, highlight=False, soft_wrap=True)


def _main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # --help, or a bad command line (one line already printed)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_LAB_ERROR
    console = make_console()
    interrupts = resources.Interrupts(lambda line: print(f"lab: {line}", file=sys.stderr, flush=True))
    interrupts.install()
    # Libraries' own log lines (paramiko's refused channels, urllib3's full pools) would print beside
    # the lab's; what matters of them reaches the lab as exceptions.
    for library in ("paramiko", "urllib3"):
        logging.getLogger(library).addHandler(logging.NullHandler())
    log_to_stderr(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))
    verb = f"lab {args.verb}"
    try:
        return int(args.fn(args, console))
    except (KeyboardInterrupt, Cancelled):
        interrupts.settle()
        with contextlib.suppress(OSError):  # a terminal that hung up (SIGHUP) takes no line
            print(f"{verb}: interrupted; the lab's containers and networks were removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Error as exc:
        print(f"{verb}: error: {one_line(exc)}", file=sys.stderr)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{verb}: error: {exc.strerror or one_line(exc)}{where}", file=sys.stderr)
    except Exception as exc:
        path = _crash_report(args.verb)
        print(f"{verb}: internal error: {type(exc).__name__}: {one_line(exc)}; traceback in {path}",
              file=sys.stderr)
    return EXIT_LAB_ERROR

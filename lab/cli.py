"""`lab`: build the images, run the scenarios, check the machine, clean up.

Exit status: 0 every verdict matched its expectation; 1 some did not; 2 the lab could not run (the
one line printed says what, where and what to do); 130 interrupted (after cleaning up).
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import docker
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from lab import accel as accel_mod
from lab import capabilities, doctor, images, kept, resources, scenario, ssh
from lab import config as config_mod
from lab import series as series_mod
from lab.config import LabConfig
from lab.errors import LabError, LeftoverLab
from lab.report import Report

EXIT_MISMATCH = 1
EXIT_LAB_ERROR = 2
EXIT_INTERRUPTED = 130


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


def _builder(cfg: LabConfig, display: BuildDisplay) -> tuple[docker.DockerClient, images.ImageBuilder]:
    client = resources.connect()
    log_dir = Path(cfg.results_dir) / "build-logs"
    return client, images.ImageBuilder(client, cfg, log_dir, display)


def cmd_build(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args)
    profiles = cfg.select_profiles(args.profile)
    with BuildDisplay(console) as display:
        client, builder = _builder(cfg, display)
        started = time.monotonic()
        for profile in profiles:
            built = builder.ensure(profile, rebuild=args.rebuild)
            console.print(f"[bold]{profile.name}[/]: {built.runtime}")
    console.print(f"images ready in {time.monotonic() - started:.0f} s")
    return 0


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args)
    profiles = cfg.select_profiles(args.profile)
    scenarios = cfg.select_scenarios(args.scenario)
    out = Path(args.out) if args.out else Path(cfg.results_dir) / time.strftime("run-%Y%m%d-%H%M%S")
    doctor.require_tun()
    with BuildDisplay(console) as display:
        client, builder = _builder(cfg, display)
        _refuse_leftovers(client, cfg)
        built = {p.name: builder.ensure(p) for p in profiles}
    first = next(iter(built.values()))
    choice = accel_mod.choose(client, first.runtime, cfg.accel, cfg.name, cfg.timeouts.kvm_probe_s, _accel_cache(cfg))
    console.print(f"accelerator: [bold]{choice.accel}[/] ({choice.reason})")
    report = Report(config=str(cfg.path), accel=choice.accel, accel_reason=choice.reason)
    keep_key = ssh.LabKeys.public_line(kept.keys(cfg).ensure()) if args.keep else ""
    kept_lab = None
    for profile in profiles:
        if kept_lab is not None:
            break
        images_ = built[profile.name]
        offered = capabilities.filter_properties(client, images_.runtime, cfg.name)
        report.builds[profile.name] = {"runtime_image": images_.runtime, "qemu_image": images_.qemu,
                                       "qemu_source": images_.qemu_source, "series": images_.series,
                                       "build_seconds": images_.build_seconds, "filter_properties": offered}
        for sc in scenarios:
            console.print(f"running [bold]{profile.name}[/] x [bold]{sc.name}[/] ({sc.filter}) ...")
            result = scenario.run(client, cfg, profile, sc, images_.runtime, choice.accel,
                                  out / f"{profile.name}-{sc.name}", offered, keep_key)
            report.results.append(result)
            if result.kept is not None:
                kept_lab = kept.adopt(cfg, result.kept, profile, sc, images_.runtime, choice.accel)
            a = result.analysis
            console.print(f"  {result.verdict} (expected {result.expected})"
                          + (f": sent {a.frames_sent}, captured {a.frames_captured}, delivered "
                             f"{a.frames_delivered}, during stop {a.frames_during_stop}" if a else f": {result.error}")
                          + f" [{result.timings.get('total', 0):.1f} s]")
            if kept_lab is not None:
                break
    path = report.write(out)
    report.print(console)
    console.print(f"report: {path}")
    if kept_lab is not None:
        _how_to_get_in(console, kept_lab, f"kept: {kept_lab.profile} x {kept_lab.scenario} did not end as expected")
    return 0 if report.all_match else EXIT_MISMATCH


def cmd_series(args: argparse.Namespace, console: Console) -> int:
    patchwork, info = series_mod.resolve(args.ref, args.patchwork)
    if args.action == "show":
        console.print(f"series {info.id}: {info.name}", markup=False)
        console.print(f"  version {info.version}, patches {info.total if info.total is not None else '?'}, "
                      f"received_all {info.received_all if info.received_all is not None else '?'}")
        console.print(f"  mbox {info.mbox}")
        return 0
    fetched = patchwork.fetch(info)
    out = Path(args.output or f"series-{info.id}.mbox")
    try:
        out.write_bytes(b"".join(p.message if p.message.endswith(b"\n") else p.message + b"\n"
                                 for p in fetched.patches))
    except OSError as exc:
        raise LabError(f"cannot write {out}: {exc.strerror}; pass -o FILE in an existing folder") from exc
    for p in fetched.patches:
        console.print(f"  {p.index}/{p.total} {p.subject}", markup=False)
    console.print(f"series {info.id} ({len(fetched.patches)} patches) written to {out}")
    return 0

def cmd_up(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args)
    [profile] = cfg.select_profiles([args.profile] if args.profile else None)[:1]
    [sc] = cfg.select_scenarios([args.scenario] if args.scenario else None)[:1]
    doctor.require_tun()
    with BuildDisplay(console) as display:
        client, builder = _builder(cfg, display)
        _refuse_leftovers(client, cfg)
        built = builder.ensure(profile)
    choice = accel_mod.choose(client, built.runtime, cfg.accel, cfg.name, cfg.timeouts.kvm_probe_s, _accel_cache(cfg))
    lab = kept.up(client, cfg, profile, sc, built.runtime, choice.accel)
    _how_to_get_in(console, lab, f"up: {profile.name} x {sc.name} ({sc.filter}), {choice.accel}; the primary's guest "
                                 "runs, the secondary waits with -incoming")
    return 0


def _how_to_get_in(console: Console, lab: kept.KeptLab, what: str) -> None:
    console.print(f"lab {lab.name} is {what}", markup=False)
    console.print(f"  lab ssh primary                  # or: ssh -F {lab.ssh_config} primary", markup=False)
    console.print("  lab qmp primary query-status", markup=False)
    console.print("  lab console primary", markup=False)
    console.print(f"  files: {lab.rundir}", markup=False)
    console.print("  lab down                         # when done", markup=False)


def cmd_down(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args)
    removed = kept.down(resources.connect(), cfg)
    console.print(f"removed {removed.describe()}" if removed else f"no lab named {cfg.name} was up")
    return 0


def cmd_ssh(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args)
    lab = kept.load(cfg)
    client = ssh.connect(_container(lab, args.role), kept.keys(cfg))
    try:
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if command:
            result = ssh.run(client, shlex.join(command))
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            return result.exit_status
        return ssh.interactive(client)
    finally:
        client.close()


def cmd_qmp(args: argparse.Namespace, console: Console) -> int:
    lab = kept.load(_load(args))
    _container(lab, args.role)
    try:
        arguments = json.loads(args.arguments) if args.arguments else {}
    except ValueError as exc:
        raise LabError(f"QMP arguments must be a JSON object, e.g. '{{\"path\": \"/objects\"}}' ({exc})") from exc
    console.print_json(data=kept.qmp(lab, args.role, args.execute, arguments))
    return 0


def cmd_console(args: argparse.Namespace, console: Console) -> int:
    lab = kept.load(_load(args))
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
    lab = kept.load(_load(args))
    console.print(f"lab {lab.name}: {lab.profile} x {lab.scenario}, {lab.accel}, image {lab.image}", markup=False)
    for row in kept.status(resources.connect(), lab):
        console.print(f"  {row['role']:<9} {row['container']:<16} host {row['host']:<8} "
                      f"QEMU {row.get('runstate', '-')}  filters: {', '.join(row.get('filters', [])) or '-'}",  # type: ignore[arg-type]
                      markup=False)
    console.print(f"  ssh_config: {lab.ssh_config}   files: {lab.rundir}", markup=False)
    return 0


def _accel_cache(cfg: LabConfig) -> Path:
    return kept.state_dir(cfg).parent / "accel.json"


def _refuse_leftovers(client: docker.DockerClient, cfg: LabConfig) -> None:
    if (kept.state_dir(cfg) / "state.json").exists():
        raise LeftoverLab(f"the lab {cfg.name!r} is up (lab up); look at it with `lab status`, "
                          "remove it with `lab down`")
    resources.refuse_leftovers(client, cfg.name)


def _container(lab: kept.KeptLab, role: str) -> str:
    if role not in lab.containers:
        raise LabError(f"no host {role!r} in lab {lab.name}; hosts: {', '.join(lab.containers)}")
    return lab.containers[role]


def cmd_doctor(args: argparse.Namespace, console: Console) -> int:
    cfg = _load(args)
    checks = doctor.run(cfg)
    for c in checks:
        mark = "[green]ok[/]" if c.ok else "[red]MISSING[/]"
        console.print(f"{mark:>20}  {c.name}: {c.detail}")
    missing = [c for c in checks if not c.ok]
    if missing:
        console.print(f"{len(missing)} of {len(checks)} checks failed")
        return EXIT_LAB_ERROR
    return 0


def cmd_clean(args: argparse.Namespace, console: Console) -> int:
    client = resources.connect()
    lab = None if args.all else _load(args).name
    if lab is not None:
        cfg = _load(args)
        kept.down(client, cfg)
        kept.forget(cfg)
    removed = resources.remove(client, lab, images=args.images)
    rundirs = resources.remove_rundirs(lab)
    console.print(f"removed {removed.describe()}" if removed else "no container, network or volume to remove")
    if rundirs:
        console.print(f"removed {len(rundirs)} run folders left by interrupted runs")
    if args.images:
        console.print("removed the lab's images")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lab", description="The netfilter continuity lab.")
    sub = ap.add_subparsers(dest="verb", required=True)

    def verb(name: str, fn: Callable[[argparse.Namespace, Console], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", default="lab.yaml", help="lab configuration (default: ./lab.yaml)")
        p.set_defaults(fn=fn)
        return p

    b = verb("build", cmd_build, "build every image the configuration needs")
    b.add_argument("--profile", action="append", help="only this build profile (repeatable)")
    b.add_argument("--rebuild", action="store_true", help="rebuild even when the images are current")
    r = verb("run", cmd_run, "run every scenario on every build profile and report the verdicts")
    r.add_argument("--profile", action="append", help="only this build profile (repeatable)")
    r.add_argument("--scenario", action="append", help="only this scenario (repeatable)")
    r.add_argument("--out", help="folder for the report and artefacts (default: a new one under results_dir)")
    r.add_argument("--keep", action="store_true",
                   help="leave the first scenario that does not end as expected running, and say how to get in")
    sr = sub.add_parser("series", help="look up or fetch a patch series on Patchwork",
                        description="look up or fetch a patch series on Patchwork")
    sr.add_argument("action", choices=("show", "fetch"))
    sr.add_argument("ref", help="a Patchwork patch or series URL, or a series ID (with --patchwork)")
    sr.add_argument("--patchwork", help="the Patchwork server, e.g. https://patchwork.ozlabs.org")
    sr.add_argument("-o", "--output", help="mbox file to write (fetch; default series-ID.mbox)")
    sr.set_defaults(fn=cmd_series)
    u = verb("up", cmd_up, "start a lab and leave it running: hosts, the primary's guest, the secondary -incoming")
    u.add_argument("--profile", help="build profile (default: the first one)")
    u.add_argument("--scenario", help="scenario whose filters to attach (default: the first one)")
    verb("down", cmd_down, "remove the running lab")
    verb("status", cmd_status, "hosts, QEMU runstates and filters of the running lab")
    for name, fn, what in (("ssh", cmd_ssh, "a shell (or one command) in a host of the running lab"),
                           ("qmp", cmd_qmp, "one QMP command to a host's QEMU, pretty-printed"),
                           ("console", cmd_console, "the guest's serial console (attach; or --log, -f)")):
        v = verb(name, fn, what)
        v.add_argument("role", choices=("primary", "secondary"))
        if name == "ssh":
            v.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND... (default: a shell)")
        elif name == "qmp":
            v.add_argument("execute", help="the QMP command, e.g. query-migrate")
            v.add_argument("arguments", nargs="?", help="its arguments as a JSON object")
        else:
            v.add_argument("--log", action="store_true", help="print what the console has shown, do not attach")
            v.add_argument("-f", "--follow", action="store_true", help="print it, then keep printing what comes")
    verb("doctor", cmd_doctor, "check that this machine can run the lab, and say what is missing")
    c = verb("clean", cmd_clean, "remove everything the lab created (containers, networks, volumes)")
    c.add_argument("--images", action="store_true", help="remove the lab's images as well")
    c.add_argument("--all", action="store_true", help="every lab on this machine, not only the configured name")
    return ap


def _interrupt(signo: int, _frame: FrameType | None) -> None:
    # SIGTERM takes the same path as Ctrl-C: the context managers remove what the lab made.
    raise KeyboardInterrupt(f"signal {signo}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Logs (CI, pipes) get a width that fits the verdict table rather than rich's default of 80.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(args.fn(args, console))
    except LabError as exc:
        print(f"lab {args.verb}: error: {exc}", file=sys.stderr)
        return EXIT_LAB_ERROR
    except KeyboardInterrupt:
        print(f"lab {args.verb}: interrupted; the lab's containers and networks were removed", file=sys.stderr)
        return EXIT_INTERRUPTED

"""The lab as a pytest plugin: fixtures for writing scenario tests anywhere the lab is installed.

Installed with the package (entry point ``pytest11``), so a QEMU checkout or any other repository can
``pip install`` the lab and write tests with these fixtures; nothing here knows this repository.

pytest loads this module in every session of an environment where the lab is installed, most of
which never use a lab fixture: it imports pytest and the standard library only, and the lab's own
modules (the Docker SDK, the runner, images) when a fixture is first set up.

Options (ini: ``lab_config``, resolved against pytest's rootdir):
    --lab-config FILE   lab.yaml to use (default: the ini's lab_config, else lab.yaml in pytest's rootdir)
    --lab-out DIR       artefacts folder (default: <results_dir>/pytest-<time>)
    --lab-profile NAME  only this build profile (repeatable; default: the profiles run by default)
    --lab-no-skip       a missing capability (Docker, /dev/net/tun) fails a test instead of skipping it,
                        as it does under CI=true

Fixtures (session-wide unless said):
    lab_config        the parsed lab.yaml
    lab_runner        the lab's runner (lab.runner.Runner): images, accelerator, cells
    lab_docker        the Docker client (skips without Docker or /dev/net/tun)
    lab_engine        the runner's engine (lab.engine.Engine)
    lab_images        {profile: ImageSet} of the selected profiles, built once when missing (one
                      pytest-xdist worker at a time)
    lab_accel         the accelerator chosen for this session (kvm or tcg, with the reason)
    lab_capabilities  {profile: {filter type: [property, ...]}} from each build's QEMU
    lab_out           (per test) this test's own artefacts folder
    lab_hosts         (per test) a primary + secondary host pair on the lab network, removed after
    run_scenario      (per test) run_scenario(profile, scenario[, hook]) -> lab.results.report.Row; each cell's
                      verdict and figures go into the test's properties (record_property: JUnit XML)

A test that uses any of these that reaches an engine (all but lab_config and lab_out) gets the
``e2e`` marker. pytest's last line says where the
artefacts are.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from lab import images
    from lab.config import LabConfig
    from lab.engine import Engine, LabHosts
    from lab.results.report import Row
    from lab.runner import HostsHook, Runner
    from lab.session import Session
    from lab.vm.accel import AccelChoice

RESULTS_KEY = pytest.StashKey[Path]()
LOCKS_KEY = pytest.StashKey["Locks"]()
RunScenario = Callable[..., "Row"]

# The lock every worker takes to build images; tests that remove or count images take it too.
IMAGE_BUILDS = "image-builds"
LOCK_WAIT_S = 3600.0  # a first build of every image takes minutes on two cores; the holder's own waits are bounded
LOCK_POLL_S = 0.5


class Missing(pytest.skip.Exception):  # type: ignore[name-defined,misc]  # pytest's public skip exception
    """A capability the lab needs is missing here: a skip, or a failure with ``--lab-no-skip`` or CI=true."""


def need(reason: str) -> None:
    """A missing capability: a skip with its reason on a user's machine, a failure where every
    capability is required (``--lab-no-skip``, CI=true)."""
    raise Missing(reason)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lab", "the netfilter continuity lab")
    group.addoption("--lab-config", default=None,
                    help="lab configuration (default: the ini's lab_config, else lab.yaml in pytest's rootdir)")
    group.addoption("--lab-out", default=None, help="artefacts folder (default: <results_dir>/pytest-<time>)")
    group.addoption("--lab-profile", action="append", default=None,
                    help="only this build profile (repeatable; default: the profiles lab.yaml runs by default)")
    group.addoption("--lab-no-skip", action="store_true", default=False,
                    help="a missing capability (Docker, /dev/net/tun) fails the test instead of skipping it "
                         "(also with CI=true)")
    parser.addini("lab_config", "lab configuration, relative to pytest's rootdir (default: lab.yaml)", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs real QEMU guests in Docker (needs a Docker daemon and /dev/net/tun)")
    config.stash[LOCKS_KEY] = Locks()


def pytest_unconfigure(config: pytest.Config) -> None:
    locks = config.stash.get(LOCKS_KEY, None)
    if locks is not None:
        locks.release_all()


def config_path(pytestconfig: pytest.Config) -> Path:
    given = pytestconfig.getoption("--lab-config") or pytestconfig.getini("lab_config") or "lab.yaml"
    return Path(pytestconfig.rootpath) / given  # an absolute path stays itself


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # An item's fixture names are its whole closure: every fixture that reaches an engine goes
    # through lab_runner, while lab_config or lab_out alone need no Docker.
    for item in items:
        if "lab_runner" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                               call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.skipped and call.excinfo is not None and call.excinfo.errisinstance(Missing):
        why = _no_skip_because(item.config)
        if why:
            report.outcome = "failed"
            report.longrepr = f"{why} every capability must be there, but: {call.excinfo.value}"
    return report


def _no_skip_because(config: pytest.Config) -> str:
    if config.getoption("--lab-no-skip"):
        return "--lab-no-skip:"
    return "CI=true:" if os.environ.get("CI", "").lower() == "true" else ""


@dataclass
class Locks:
    """File locks shared by the pytest-xdist workers of one run, held by name; a name this process
    holds already is held again at once (a test of a locked group may set up ``lab_images``)."""

    held: dict[str, tuple[IO[str], int]] = field(default_factory=dict)

    @contextlib.contextmanager
    def hold(self, folder: Path, name: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
        if name not in self.held:
            self.held[name] = (_acquire(folder / f"{name}.lock", name, wait_s), 0)
        lock, depth = self.held[name]
        self.held[name] = (lock, depth + 1)
        try:
            yield
        finally:
            lock, depth = self.held[name]
            if depth > 1:
                self.held[name] = (lock, depth - 1)
            else:
                del self.held[name]
                lock.close()  # the lock goes with it

    def release_all(self) -> None:
        for lock, _ in self.held.values():
            lock.close()
        self.held.clear()


def _acquire(path: Path, name: str, wait_s: float) -> IO[str]:
    from lab.errors import Timeout
    from lab.waiting import wait_until

    lock = path.open("w")

    def taken() -> IO[str] | None:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            return None

    try:
        return wait_until(f"{name}, locked by another pytest-xdist worker (its lock file: {path})", taken, wait_s,
                          interval=LOCK_POLL_S)
    except Timeout as exc:
        lock.close()
        pytest.fail(str(exc), pytrace=False)


def lock_folder(factory: pytest.TempPathFactory) -> Path:
    """The test run's own temporary folder, which pytest keeps or drops like its others: under
    pytest-xdist every worker's is a folder in one the run's workers share."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def held(request: pytest.FixtureRequest, name: str) -> contextlib.AbstractContextManager[None]:
    """The run-wide lock ``name``, for as long as the block runs."""
    factory = request.getfixturevalue("tmp_path_factory")
    return request.config.stash[LOCKS_KEY].hold(lock_folder(factory), name)


@pytest.fixture(scope="session")
def lab_config(pytestconfig: pytest.Config) -> LabConfig:
    from lab import config

    return config.load(config_path(pytestconfig))


@pytest.fixture(scope="session")
def lab_results(pytestconfig: pytest.Config, lab_config: LabConfig) -> Path:
    given = pytestconfig.getoption("--lab-out")
    path = Path(given).resolve() if given else lab_config.results_root / time.strftime("pytest-%Y%m%d-%H%M%S")
    pytestconfig.stash[RESULTS_KEY] = path
    return path


@pytest.fixture(scope="session")
def lab_session(lab_config: LabConfig) -> Iterator[Session]:
    """The session every lab fixture goes through, as `lab run` does; closed after the last test."""
    from lab.session import Session

    with Session(lab_config) as session:
        yield session


@pytest.fixture(scope="session")
def lab_runner(pytestconfig: pytest.Config, lab_session: Session) -> Runner:
    from lab.errors import LabError

    if not os.path.exists("/dev/net/tun"):
        need("/dev/net/tun is missing")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def progress(event: images.BuildEvent) -> None:
        # Past pytest's capture: a first build takes minutes and should be seen to progress.
        if event.kind in ("info", "step") or (event.kind == "ninja" and event.count and event.count[0] % 200 == 0):
            with capture.global_and_fixture_disabled():
                print(f"\n[{event.image}] {event.line[:150]}", end="", flush=True)

    try:
        return lab_session.connect(progress)
    except LabError as exc:
        need(str(exc))
        raise


@pytest.fixture(scope="session")
def lab_docker(lab_runner: Runner) -> Any:
    """The engine's own Docker client, for a test that speaks to the engine itself."""
    return lab_runner.engine.client


@pytest.fixture(scope="session")
def lab_engine(lab_runner: Runner) -> Engine:
    return lab_runner.engine


@pytest.fixture(scope="session")
def lab_images(request: pytest.FixtureRequest, lab_session: Session, lab_runner: Runner) -> dict[str, images.ImageSet]:
    from lab.runner import select_profiles

    # Every worker of a pytest-xdist run has a session of its own: the first builds, the others then
    # find the images.
    with held(request, IMAGE_BUILDS):
        lab_session.prepare(select_profiles(lab_runner.cfg, request.config.getoption("--lab-profile")))
    return {name: b.images for name, b in lab_runner.builds.items()}


@pytest.fixture(scope="session")
def lab_accel(lab_runner: Runner, lab_images: dict[str, images.ImageSet]) -> AccelChoice:
    assert lab_runner.accel is not None
    return lab_runner.accel


@pytest.fixture(scope="session")
def lab_capabilities(lab_runner: Runner, lab_images: dict[str, images.ImageSet]) -> dict[str, dict[str, list[str]]]:
    return {name: lab_runner.builds[name].properties for name in lab_images}


@pytest.fixture
def lab_out(request: pytest.FixtureRequest, lab_results: Path) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")
    return lab_results / name


@pytest.fixture
def lab_hosts(lab_runner: Runner, lab_config: LabConfig, lab_images: dict[str, images.ImageSet],
              lab_accel: AccelChoice, lab_out: Path) -> Iterator[LabHosts]:
    from lab.engine import HostSpec, LabHosts
    from lab.namespace import Namespace
    from lab.results import artefacts

    runtime = next(iter(lab_images.values())).runtime
    ns = Namespace.new_run(lab_config.name)  # a test's own: other tests, runs and kept labs go on
    rundir = artefacts.new_rundir(ns)
    try:
        with LabHosts(lab_runner.engine, HostSpec(image=runtime, ns=ns, devices=lab_runner.devices),
                      rundir, lab_config.timeouts.host_start_s) as hosts:
            yield hosts
    finally:
        artefacts.move_to(rundir, lab_out)


@pytest.fixture
def run_scenario(lab_runner: Runner, lab_config: LabConfig, lab_images: dict[str, images.ImageSet],
                 lab_out: Path, record_property: Callable[[str, object], None]) -> RunScenario:
    """``run_scenario(profile, scenario, hook=None, to=None)``: one cell, its artefacts in ``lab_out``;
    ``to`` names another profile for the destination's build."""
    from lab.runner import Cell

    def run(profile: str, scenario: str, hook: HostsHook | None = None, to: str | None = None) -> Row:
        cell = Cell(lab_config.profiles[profile], lab_config.scenarios[scenario],
                    lab_config.profiles[to] if to else None)
        row = lab_runner.run_cell(cell, lab_out, hook)
        for name, value in cell_properties(row).items():
            record_property(f"{cell.name}.{name}", value)
        return row
    return run


def cell_properties(row: Row) -> dict[str, object]:
    """What a JUnit reader wants of a cell: the verdict against its expectation, the judged view's
    figures, the phases' seconds and where the artefacts are; figures the cell has none of are left out."""
    figures = row.figures
    found: dict[str, object] = {
        "verdict": row.verdict, "expected": row.expected, "view": row.view, "sent": figures.sent,
        "received": figures.received, "lost": figures.lost, "max_gap_ms": figures.max_gap_ms,
        "during_stop": figures.during_stop, "qemu_downtime_ms": row.qemu_downtime_ms,
        **{f"{phase}_s": seconds for phase, seconds in row.timings.items()},
        "artefacts": row.artefacts,
    }
    return {name: value for name, value in found.items() if value not in (None, "")}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    path = config.stash.get(RESULTS_KEY, None)
    if path is not None:
        terminalreporter.write_line(f"lab artefacts: {path}")

"""The lab as a pytest plugin: fixtures for writing scenario tests anywhere the lab is installed.

Installed with the package (entry point ``pytest11``), so a QEMU checkout or any other repository can
``pip install`` the lab and write tests with these fixtures; nothing here knows this repository.

Options:
    --lab-config FILE   lab.yaml to use (default: lab.yaml in pytest's rootdir)
    --lab-out DIR       artefacts folder (default: <results_dir>/pytest-<time>)
    --lab-profile NAME  only this build profile (repeatable; default: the profiles run by default)

Fixtures (session-wide unless said):
    lab_config        the parsed lab.yaml
    lab_runner        the lab's runner (lab.runner.Runner): images, accelerator, cells
    lab_docker        the Docker client (skips, or fails under CI=true, without Docker or /dev/net/tun)
    lab_images        {profile: ImageSet} of the selected profiles, built once when missing
    lab_accel         the accelerator chosen for this session (kvm or tcg, with the reason)
    lab_capabilities  {profile: {filter type: [property, ...]}} from each build's QEMU
    lab_out           (per test) this test's own artefacts folder
    lab_hosts         (per test) a primary + secondary host pair on the lab network, removed after
    run_scenario      (per test) run_scenario(profile, scenario[, hook]) -> lab.report.Row

pytest's last line says where the artefacts are.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import artefacts, config, images
from lab.accel import AccelChoice
from lab.config import LabConfig
from lab.engine import Engine, HostSpec, LabHosts
from lab.errors import LabError
from lab.namespace import Namespace
from lab.report import Row
from lab.runner import Cell, HostsHook, Runner, select_profiles

RESULTS_KEY = pytest.StashKey[Path]()
RunScenario = Callable[..., Row]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lab", "the netfilter continuity lab")
    group.addoption("--lab-config", default=None, help="lab configuration (default: lab.yaml in pytest's rootdir)")
    group.addoption("--lab-out", default=None, help="artefacts folder (default: <results_dir>/pytest-<time>)")
    group.addoption("--lab-profile", action="append", default=None,
                    help="only this build profile (repeatable; default: the profiles lab.yaml runs by default)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs real QEMU guests in Docker (needs a Docker daemon and /dev/net/tun)")


def config_path(pytestconfig: pytest.Config) -> Path:
    given = pytestconfig.getoption("--lab-config")
    return Path(given) if given else Path(pytestconfig.rootpath) / "lab.yaml"


def need(reason: str) -> None:
    """A missing capability: a skip with its reason on a user's machine, a failure in CI."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must have every capability, but: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def lab_config(pytestconfig: pytest.Config) -> LabConfig:
    return config.load(config_path(pytestconfig))


@pytest.fixture(scope="session")
def lab_results(pytestconfig: pytest.Config, lab_config: LabConfig) -> Path:
    given = pytestconfig.getoption("--lab-out")
    path = Path(given).resolve() if given else lab_config.results_root / time.strftime("pytest-%Y%m%d-%H%M%S")
    pytestconfig.stash[RESULTS_KEY] = path
    return path


@pytest.fixture(scope="session")
def lab_runner(pytestconfig: pytest.Config, lab_config: LabConfig) -> Runner:
    if not os.path.exists("/dev/net/tun"):
        need("/dev/net/tun is missing")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def progress(event: images.BuildEvent) -> None:
        # Past pytest's capture: a first build takes minutes and should be seen to progress.
        if event.kind in ("info", "step") or (event.kind == "ninja" and event.count and event.count[0] % 200 == 0):
            with capture.global_and_fixture_disabled():
                print(f"\n[{event.image}] {event.line[:150]}", end="", flush=True)

    try:
        return Runner.connect(lab_config, progress)
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
def lab_images(pytestconfig: pytest.Config, lab_runner: Runner) -> dict[str, images.ImageSet]:
    builds = lab_runner.prepare(select_profiles(lab_runner.cfg, pytestconfig.getoption("--lab-profile")))
    return {name: b.images for name, b in builds.items()}


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
                 lab_out: Path) -> RunScenario:
    """``run_scenario(profile, scenario, hook=None, to=None)``: one cell, its artefacts in ``lab_out``;
    ``to`` names another profile for the destination's build."""
    def run(profile: str, scenario: str, hook: HostsHook | None = None, to: str | None = None) -> Row:
        cell = Cell(lab_config.profiles[profile], lab_config.scenarios[scenario],
                    lab_config.profiles[to] if to else None)
        return lab_runner.run_cell(cell, lab_out, hook)
    return run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    path = config.stash.get(RESULTS_KEY, None)
    if path is not None:
        terminalreporter.write_line(f"lab artefacts: {path}")

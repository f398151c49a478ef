"""pytest fixtures over the lab's library, for the lab's own tests and for anyone writing more.

    lab_config    the parsed lab.yaml (--lab-config)
    lab_docker    a Docker client; skips (fails under CI=true) when no daemon or /dev/net/tun
    lab_images    every profile's images, built once per session (reused when current)
    lab_accel     kvm or tcg, chosen once per session by a bounded probe
    lab_capabilities  per profile, the properties its netfilters offer (QMP qom-list-properties)
    lab_out       this test's own artefacts folder
    lab_hosts     a primary + secondary host pair on the lab network, removed after the test
    run_scenario  run(profile, scenario) -> ScenarioResult, artefacts in lab_out
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from lab import accel, capabilities, config, images, resources, scenario
from lab.accel import AccelChoice
from lab.config import LabConfig
from lab.errors import LabError
from lab.hosts import HostSpec, LabHosts
from lab.scenario import ScenarioResult

ROOT = Path(__file__).resolve().parent
RESULTS_KEY = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lab")
    group.addoption("--lab-config", default=str(ROOT / "lab.yaml"), help="lab configuration for e2e tests")
    group.addoption("--lab-out", default=None, help="artefacts folder (default: lab-results/pytest-<time>)")
    group.addoption("--lab-profile", action="append", default=None,
                    help="only this build profile (repeatable; default: the profiles lab.yaml runs by default)")


def need(reason: str) -> None:
    """A missing capability: a skip with its reason on a user's machine, a failure in CI."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must have every capability, but: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def lab_config(pytestconfig: pytest.Config) -> LabConfig:
    return config.load(Path(pytestconfig.getoption("--lab-config")))


@pytest.fixture(scope="session")
def lab_results(pytestconfig: pytest.Config, lab_config: LabConfig) -> Path:
    given = pytestconfig.getoption("--lab-out")
    path = Path(given) if given else ROOT / lab_config.results_dir / time.strftime("pytest-%Y%m%d-%H%M%S")
    pytestconfig.stash[RESULTS_KEY] = path
    return path


@pytest.fixture(scope="session")
def lab_docker() -> docker.DockerClient:
    if not os.path.exists("/dev/net/tun"):
        need("/dev/net/tun is missing")
    try:
        return resources.connect()
    except LabError as exc:
        need(str(exc))
        raise


@pytest.fixture(scope="session")
def lab_images(pytestconfig: pytest.Config, lab_docker: docker.DockerClient, lab_config: LabConfig,
               lab_results: Path) -> dict[str, images.ImageSet]:
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def progress(event: images.BuildEvent) -> None:
        # Past pytest's capture: a first build takes minutes and should be seen to progress.
        if event.kind in ("info", "step") or (event.kind == "ninja" and event.count and event.count[0] % 200 == 0):
            with capture.global_and_fixture_disabled():
                print(f"\n[{event.image}] {event.line[:150]}", end="", flush=True)

    builder = images.ImageBuilder(lab_docker, lab_config, ROOT / lab_config.results_dir / "build-logs", progress)
    return {p.name: builder.ensure(p) for p in lab_config.select_profiles(pytestconfig.getoption("--lab-profile"))}


@pytest.fixture(scope="session")
def lab_accel(lab_docker: docker.DockerClient, lab_config: LabConfig,
              lab_images: dict[str, images.ImageSet]) -> AccelChoice:
    runtime = next(iter(lab_images.values())).runtime
    return accel.choose(lab_docker, runtime, lab_config.accel, lab_config.name, lab_config.timeouts.kvm_probe_s,
                        lab_config.path.parent / lab_config.results_dir / ".labs" / "accel.json")


@pytest.fixture(scope="session")
def lab_capabilities(lab_docker: docker.DockerClient, lab_config: LabConfig,
                     lab_images: dict[str, images.ImageSet]) -> dict[str, dict[str, list[str]]]:
    """Per profile, the properties its QEMU's netfilters offer (asked over QMP)."""
    return {name: capabilities.filter_properties(lab_docker, s.runtime, lab_config.name)
            for name, s in lab_images.items()}


@pytest.fixture
def lab_out(request: pytest.FixtureRequest, lab_results: Path) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")
    return lab_results / name


@pytest.fixture
def lab_hosts(lab_docker: docker.DockerClient, lab_config: LabConfig, lab_images: dict[str, images.ImageSet],
              lab_out: Path) -> Iterator[LabHosts]:
    runtime = next(iter(lab_images.values())).runtime
    # Short: QMP's unix socket path must stay under 108 bytes. Moved to lab_out afterwards.
    rundir = Path(tempfile.mkdtemp(prefix=f"{lab_config.name}-"))
    try:
        with LabHosts(lab_docker, HostSpec(image=runtime, lab=lab_config.name), rundir,
                      lab_config.timeouts.host_start_s) as hosts:
            yield hosts
    finally:
        for sock in rundir.rglob("*.sock"):
            sock.unlink()
        lab_out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(rundir), str(lab_out))


@pytest.fixture
def run_scenario(lab_docker: docker.DockerClient, lab_config: LabConfig, lab_images: dict[str, images.ImageSet],
                 lab_capabilities: dict[str, dict[str, list[str]]], lab_accel: AccelChoice,
                 lab_out: Path) -> Callable[[str, str], ScenarioResult]:
    def run(profile: str, scenario_name: str) -> ScenarioResult:
        return scenario.run(lab_docker, lab_config, lab_config.profiles[profile],
                            lab_config.scenarios[scenario_name], lab_images[profile].runtime,
                            lab_accel.accel, lab_out, lab_capabilities[profile])
    return run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    path = config.stash.get(RESULTS_KEY, None)
    if path is not None:
        terminalreporter.write_line(f"lab artefacts: {path}")

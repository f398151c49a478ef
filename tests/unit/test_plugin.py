"""The pytest plugin as pytest itself runs it: in sessions of their own (a subprocess each), from
folders outside this repository, with the plugin loaded from its entry point like any user's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.pytest_plugin import Locks, cell_properties
from lab.results.report import Row

# What a session that uses no lab fixture must not pay for.
HEAVY = ("docker", "paramiko", "requests", "scapy", "matplotlib", "yaml", "rich")

RECORD_MODULES = '''
import json, sys

def pytest_sessionfinish(session):
    with open("modules.json", "w") as out:
        json.dump(sorted(sys.modules), out)
'''


def pytest_in(folder: Path, *args: str, ci: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")}
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def project(folder: Path, tests: str, ini: str = "") -> Path:
    """A folder of its own (rootdir: its pytest.ini) with one test file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pytest.ini").write_text(f"[pytest]\n{ini}\n")
    (folder / "test_it.py").write_text(tests)
    return folder


def test_a_session_without_lab_fixtures_imports_nothing_of_the_lab(tmp_path: Path) -> None:
    folder = project(tmp_path / "plain", "def test_plain():\n    assert 1 + 1 == 2\n")
    (folder / "conftest.py").write_text(RECORD_MODULES)
    ran = pytest_in(folder, "-q")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    modules = set(json.loads((folder / "modules.json").read_text()))
    assert "lab.pytest_plugin" in modules, "the plugin was not loaded: the test proves nothing"
    assert {m for m in modules if m.startswith("lab.")} == {"lab.pytest_plugin"}
    assert not {m.split(".")[0] for m in modules} & set(HEAVY), sorted(modules & set(HEAVY))


def test_lab_config_comes_from_the_ini_against_rootdir(tmp_path: Path, lab_yaml: Path) -> None:
    folder = project(tmp_path / "repo", "def test_where(lab_config):\n    print('CONFIG', lab_config.path)\n",
                     ini="lab_config = conf/the-lab.yaml")
    (folder / "conf").mkdir()
    (folder / "conf" / "the-lab.yaml").write_text(lab_yaml.read_text())
    (folder / "sub").mkdir()
    # From a folder below rootdir: resolved against rootdir, not the working folder.
    ran = pytest_in(folder / "sub", "-s", "-q", str(folder / "test_it.py"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"CONFIG {folder / 'conf' / 'the-lab.yaml'}" in ran.stdout, ran.stdout
    # The command line's --lab-config wins over the ini.
    ran = pytest_in(folder, "-s", "-q", "--lab-config", str(lab_yaml))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"CONFIG {lab_yaml}" in ran.stdout, ran.stdout


def test_tests_that_reach_an_engine_are_marked_e2e(tmp_path: Path) -> None:
    folder = project(tmp_path / "marks", "def test_engine(lab_docker):\n    pass\n\n"
                     "def test_hosts(lab_hosts):\n    pass\n\n"
                     "def test_config_only(lab_config):\n    pass\n\n"
                     "def test_plain():\n    pass\n")
    ran = pytest_in(folder, "--collect-only", "-q", "-m", "e2e")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    chosen = {line.split("::")[1] for line in ran.stdout.splitlines() if "::" in line}
    assert chosen == {"test_engine", "test_hosts"}, ran.stdout


NEEDS = '''
from lab.pytest_plugin import need

def test_needs_a_device():
    need("/dev/some-device is missing")

def test_skips_for_its_own_reason():
    import pytest
    pytest.skip("nothing to compare here")
'''


@pytest.mark.parametrize(("args", "ci"), [((), False), (("--lab-no-skip",), False), ((), True)],
                         ids=["plain", "--lab-no-skip", "CI=true"])
def test_a_missing_capability_fails_only_where_every_one_is_required(tmp_path: Path, args: tuple[str, ...],
                                                                     ci: bool) -> None:
    folder = project(tmp_path / "needs", NEEDS)
    ran = pytest_in(folder, "-rA", *args, ci=ci)
    required = bool(args) or ci
    assert ran.returncode == (1 if required else 0), ran.stdout + ran.stderr
    assert "SKIPPED [1] test_it.py" in ran.stdout and "nothing to compare here" in ran.stdout, \
        "a skip of a test's own stays a skip"
    if required:
        assert "FAILED test_it.py::test_needs_a_device" in ran.stdout, ran.stdout
        assert "every capability must be there, but: /dev/some-device is missing" in ran.stdout, ran.stdout
    else:
        assert "/dev/some-device is missing" in ran.stdout and "1 failed" not in ran.stdout, ran.stdout


def test_a_cells_properties_are_its_verdict_figures_and_artefacts() -> None:
    row = Row.of(profile="baseline", scenario="mirror", filter="filter-mirror", expected="gap", verdict="gap",
                 accel="tcg", timings={"boot": 0.8, "total": 9.1}, artefacts="/results/baseline-mirror",
                 migration={"qemu_downtime_ms": 12.0})
    props = cell_properties(row)
    assert props == {"verdict": "gap", "expected": "gap", "view": row.view, "qemu_downtime_ms": 12.0,
                     "boot_s": 0.8, "total_s": 9.1, "artefacts": "/results/baseline-mirror"}
    assert not {name for name, value in props.items() if value is None}, "an absent figure is left out"


def test_a_lock_is_held_again_by_its_holder_and_waited_for_by_others(tmp_path: Path) -> None:
    ours, theirs = Locks(), Locks()  # two workers' sessions: their lock files open on their own
    with ours.hold(tmp_path, "image-builds"):
        with ours.hold(tmp_path, "image-builds"):  # a test of the group that sets up lab_images
            pass
        taken = "image-builds, locked by another pytest-xdist worker .* not within 0.2 s"
        with pytest.raises(pytest.fail.Exception, match=taken):
            with theirs.hold(tmp_path, "image-builds", wait_s=0.2):
                pass
        assert "image-builds" in ours.held, "the inner release let go of the outer hold"
    with theirs.hold(tmp_path, "image-builds", wait_s=0.2):
        assert not ours.held

"""The layering, read from the imports: faces -> runner -> scenario -> QEMU/QMP -> host interface,
with the Docker engine behind that interface."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[2] / "lab"
FACES = {"cli", "pytest_plugin", "__main__"}
# What runs in a scenario, speaking to hosts only through lab.host.
QEMU_LAYER = {"scenario", "qemu", "qmp", "migration", "capture", "traffic", "host", "waiting", "analysis"}
ENGINE = {"engine", "resources"}


def imports(module: str) -> set[str]:
    tree = ast.parse((LAB / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "lab":
                found |= {a.name for a in node.names}
            else:
                found.add(node.module.removeprefix("lab.") if node.module.startswith("lab.") else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


MODULES = sorted(p.stem for p in LAB.glob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_nothing_below_the_faces_imports_a_face(module: str) -> None:
    if module not in FACES:
        assert not imports(module) & FACES


@pytest.mark.parametrize("module", sorted(QEMU_LAYER))
def test_the_qemu_layer_knows_no_engine(module: str) -> None:
    found = imports(module)
    assert not found & (ENGINE | {"runner", "kept", "accel", "capabilities", "images"}), found
    assert not any(name == "docker" or name.startswith("docker.") for name in found), found


def test_only_the_runner_runs_scenarios() -> None:
    users = {m for m in MODULES if "scenario" in imports(m)}
    assert users <= {"runner", "artefacts"}, users

"""The layering, read from the imports: faces -> runner -> scenario -> QEMU/QMP -> host interface,
with the Docker engine behind that interface."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[2] / "lab"
FACES = {"cli", "pytest_plugin", "__main__"}
# What runs in a scenario, speaking to hosts only through lab.host.
QEMU_LAYER = {"scenario", "vm.qemu", "vm.qmp", "vm.migration", "vm.capture", "vm.traffic", "host", "waiting",
              "results.analysis"}
ENGINE = {"engine", "resources"}


def imports(module: str) -> set[str]:
    """The lab modules (dotted, below lab) and outside modules that ``module`` imports."""
    tree = ast.parse((LAB / f"{module.replace('.', '/')}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            package = node.module.removeprefix("lab").removeprefix(".")
            if node.module == "lab" or node.module.startswith("lab.") and (LAB / package.replace(".", "/")).is_dir():
                found |= {f"{package}.{a.name}" if package else a.name for a in node.names}
            else:
                found.add(node.module.removeprefix("lab.") if node.module.startswith("lab.") else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


MODULES = sorted(".".join(p.relative_to(LAB).with_suffix("").parts) for p in LAB.rglob("*.py")
                 if "agents" not in p.parts and "buildfiles" not in p.parts and p.stem != "__init__")


@pytest.mark.parametrize("module", MODULES)
def test_nothing_below_the_faces_imports_a_face(module: str) -> None:
    if module not in FACES:
        assert not imports(module) & FACES


@pytest.mark.parametrize("module", sorted(QEMU_LAYER))
def test_the_qemu_layer_knows_no_engine(module: str) -> None:
    found = imports(module)
    assert not found & (ENGINE | {"runner", "kept", "vm.accel", "vm.capabilities", "images"}), found
    assert not any(name == "docker" or name.startswith("docker.") for name in found), found


def test_only_the_runner_runs_scenarios() -> None:
    users = {m for m in MODULES if "scenario" in imports(m)}
    assert users <= {"runner", "results.artefacts"}, users

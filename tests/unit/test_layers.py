"""The layering, read from the imports: faces -> runner -> scenario -> QEMU/QMP -> host interface,
with the Docker engine behind that interface, and every transport (Docker, SSH, HTTP to an engine)
inside the engine package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[2] / "lab"
FACES = {"cli", "pytest_plugin", "__main__"}
# What runs in a scenario, speaking to hosts only through lab.host.
QEMU_LAYER = {"scenario", "vm.qemu", "vm.qmp", "vm.migration", "vm.capture", "vm.traffic", "host", "waiting",
              "results.analysis"}
ENGINE = "engine"


def source(module: str) -> Path:
    """A module's file, by its dotted name under lab (``engine.remote``, ``cli``)."""
    path = LAB.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports(module: str) -> set[str]:
    tree = ast.parse(source(module).read_text())
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


def dotted(path: Path) -> str:
    parts = path.relative_to(LAB).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(dotted(p) for p in LAB.rglob("*.py") if dotted(p))


def of_engine(name: str) -> bool:
    return name == ENGINE or name.startswith(ENGINE + ".")


@pytest.mark.parametrize("module", MODULES)
def test_nothing_below_the_faces_imports_a_face(module: str) -> None:
    if module not in FACES:
        assert not imports(module) & FACES


@pytest.mark.parametrize("module", sorted(QEMU_LAYER))
def test_the_qemu_layer_knows_no_engine(module: str) -> None:
    found = imports(module)
    assert not any(of_engine(name) for name in found), found
    assert not found & {"runner", "kept", "vm.accel", "vm.capabilities", "images"}, found
    assert not any(name == "docker" or name.startswith("docker.") for name in found), found


def test_only_the_runner_runs_scenarios() -> None:
    users = {m for m in MODULES if "scenario" in imports(m)}
    assert users <= {"runner", "results.artefacts"}, users


TRANSPORTS = {"docker", "paramiko", "requests", "urllib3"}


@pytest.mark.parametrize("module", [m for m in MODULES if not of_engine(m)])
def test_only_the_engine_package_speaks_to_a_transport(module: str) -> None:
    found = {name.split(".")[0] for name in imports(module)}
    assert not found & TRANSPORTS, f"lab.{module} imports {sorted(found & TRANSPORTS)}: ask lab.engine instead"


def test_the_engine_package_touches_no_private_attribute_of_a_transport() -> None:
    # What the SDK or paramiko keep to themselves changes without notice on an upgrade.
    for path in (LAB / ENGINE).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                assert isinstance(owner, ast.Name) and owner.id in {"self", "cls"}, \
                    f"{path.name}:{node.lineno}: .{node.attr} of something not its own"

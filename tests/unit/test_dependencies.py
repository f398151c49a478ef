"""What the package declares against what lab/ imports, read from the imports themselves."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Imported by the pytest plugin only, which pytest itself loads: pytest is there whenever it is.
BROUGHT_BY_ITS_HOST = {"pytest"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> dict[str, set[str]]:
    """Top-level modules outside the standard library that lab/ imports: {module: {file, ...}}."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "lab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"lab"}:
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {normalized(re.match(r"[A-Za-z0-9_.-]+", req).group()) for req in project["dependencies"]}  # type: ignore[union-attr]


def test_every_distribution_lab_imports_is_declared() -> None:
    providers = importlib.metadata.packages_distributions()
    needed = {module: {normalized(d) for d in providers.get(module, [module])}
              for module in imported_modules() if module not in BROUGHT_BY_ITS_HOST}
    missing = {module: dists for module, dists in needed.items() if not dists & declared()}
    assert not missing, f"imported but not declared in pyproject.toml's dependencies: {missing}"


def test_every_declared_dependency_is_imported() -> None:
    providers = importlib.metadata.packages_distributions()
    used = {normalized(d) for module in imported_modules() for d in providers.get(module, [module])}
    assert declared() <= used, f"declared but imported nowhere in lab/: {declared() - used}"

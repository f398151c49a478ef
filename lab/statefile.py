"""Small JSON files in the lab's state folder (``lab.state_root``): what is worth keeping between
runs because it is a function of an image's id (a builder's tree, a build's netfilter properties).
Labs running at once may write one too, so a file is written whole or not at all."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path


def read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: found again
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def write(path: Path, data: Mapping[str, str]) -> None:
    """Each writer writes what it read and found: a lost update costs one probe more, nothing else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(dict(data), indent=1, sort_keys=True))
    tmp.replace(path)

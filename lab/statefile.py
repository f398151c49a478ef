"""Small JSON files in the lab's state folder (``lab.state_root``): what is worth keeping between
runs because it is a function of an image's id (a builder's tree, a build's netfilter properties).
Labs running at once may write one too, so a file is written whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
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


def write_whole(path: Path, text: str, prefix: str) -> None:
    """``text`` as ``path``, whole or not at all: written beside it under ``prefix``, on disk
    (fsync) before the rename, and with the mode any file of the user's gets (the umask: not
    mkstemp's 0600, the user's group reads it as it reads their other files). The temporary file
    is gone on any failure."""
    tmp = path.with_name(f"{prefix}{secrets.token_hex(6)}{path.suffix}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # the rename itself on disk too, where the folder can be opened
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

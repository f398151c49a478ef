"""An engine's capacity, shared by every run on this machine: a cell takes one of the engine's slots
(a lock file per slot, in the system's lock folder, named after the engine) for as long as it runs.
The kernel lets go of a dead process's locks, so a killed run never holds a slot."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.errors import Cancelled, LabError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slots:
    engine: str  # its name in lab.yaml, for the messages
    folder: Path
    size: int

    @classmethod
    def of(cls, engine: str, engine_id: str, size: int) -> Slots:
        digest = hashlib.sha1(engine_id.encode()).hexdigest()[:16]  # whole ids, not a cut that may clash
        return cls(engine, _shared_folder() / f"nfcl-slots-{digest}", max(1, size))

    @contextlib.contextmanager
    def take(self, timeout: float, say: Callable[[str], None], cancelled: threading.Event) -> Iterator[int]:
        """A free slot's number, held until the block ends; waits for one (saying so once), bounded."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):  # every user of the engine takes slots here
            self.folder.chmod(0o1777)
        deadline, said = time.monotonic() + timeout, False
        while True:
            held = self._try()
            if held is not None:
                break
            if not said:
                say(f"engine {self.engine}: its {self.size} slots are taken by other cells; waiting for a free one")
                said = True
            if cancelled.is_set():
                raise Cancelled("the run was cancelled while it waited for a slot")
            if time.monotonic() > deadline:
                raise LabError(f"no free slot on engine {self.engine} within {timeout:.0f} s (timeouts.slot_s): "
                               f"{self.size} cells of other runs held them all")
            time.sleep(0.5)
        number, fd = held
        log.debug("engine %s: slot %d of %d taken", self.engine, number + 1, self.size)
        try:
            yield number
        finally:
            os.close(fd)  # the lock goes with it

    def _try(self) -> tuple[int, int] | None:
        for number in range(self.size):
            path = self.folder / f"{number}.lock"
            # Read-only: flock needs no more, and another user's lock file (0644 under its umask) opens so.
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return number, fd
        return None


def engine_key(info: Mapping[str, Any]) -> str:
    """What names an engine's slots, from its ``docker info``. Two daemons of one machine may share an
    ID (it comes from /etc/docker/key.json): their data roots tell them apart."""
    return " ".join(str(info.get(key) or "") for key in ("ID", "Name", "DockerRootDir"))


def _shared_folder() -> Path:
    """Where every run of this machine finds the slots, whatever its TMPDIR: the system's lock folder
    (writable by all on Debian), else the temporary folder."""
    system = Path("/run/lock")
    return system if system.is_dir() and os.access(system, os.W_OK | os.X_OK) else Path(tempfile.gettempdir())

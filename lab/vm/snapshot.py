"""A booted guest, saved once per build and restored for every scenario: boot once, restore many.

QEMU's own migration to a file (``migrate file:``) saves the whole running machine, and the lab's
guest has no disk: the state file is the guest, booted, eth0 up, its receiver listening. A
scenario's source then starts with ``-incoming file:`` and runs from there in a fraction of a boot.

A snapshot is kept in the lab's state folder, named for what it holds (the runtime image, the
accelerator and the guest's settings), and written atomically, so that runs at once share it and a
changed image never restores an old guest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from lab import statefile
from lab.config import LabConfig
from lab.engine import Engine, resources
from lab.errors import LabError, ScenarioError
from lab.host import RUNDIR
from lab.namespace import Namespace
from lab.vm.qemu import MachineSpec, Qemu, guest_machine

STATE = "guest.state"  # in a host's run folder: what its QEMU restores from
FOLDER = "snapshots"
INDEX = "index.json"  # in FOLDER: each saved guest's file name -> the id of the image it was saved from


@dataclass(frozen=True)
class Snapshot:
    path: Path
    seconds: float  # what making it took; 0 when it was there already

    def place(self, hostdir: Path) -> str:
        """The snapshot in a host's run folder (a link: nothing is copied); its path as the host sees it."""
        hostdir.mkdir(parents=True, exist_ok=True)
        target = hostdir / STATE
        target.unlink(missing_ok=True)
        try:
            os.link(self.path, target)
        except OSError:
            shutil.copyfile(self.path, target)  # another filesystem: a copy, then
        return f"{RUNDIR}/{STATE}"


SAVED_RE = re.compile(r"[0-9a-f]{16}\.state")  # what _name gives


def _name(image_id: str, spec: MachineSpec) -> str:
    what = f"{image_id}\0{spec.accel}\0{spec.memory_mb}\0{spec.mac}\0{spec.dirty_mb_s}"
    return hashlib.sha256(what.encode()).hexdigest()[:16] + ".state"


def ensure(engine: Engine, image: str, cfg: LabConfig, accel: str, ns: Namespace) -> Snapshot | None:
    """The snapshot of ``image``'s guest, made when it is not there yet; None on an engine that does
    not see this machine's files."""
    image_id = engine.image_id(image)
    if not image_id:
        raise LabError(f"cannot find {image} on engine {engine.name} for the guest snapshot")
    spec = guest_machine(cfg.guest, accel, "snapshot")
    folder = cfg.state_root / FOLDER
    path = folder / _name(image_id, spec)
    if path.is_file():
        return Snapshot(path, 0.0)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with engine.throwaway(image, "snapshot", ns) as host:
        if not host.shares_rundir:
            return None  # a saved guest is placed by hard link in each cell's run folder: boot instead
        host.add_tap()
        try:
            with Qemu(host, spec) as qemu:
                qemu.launch(cfg.timeouts.boot_s)
                qemu.wait_guest_ready(cfg.timeouts.boot_s)
                qemu.save(f"{RUNDIR}/{STATE}", cfg.timeouts.completion_s)
            host.hand_over(STATE)  # QEMU wrote it for root alone
        except ScenarioError as exc:
            raise LabError(f"cannot make the guest snapshot of {image}: {str(exc).splitlines()[0]}") from exc
        partial = folder / f".{path.name}.{os.getpid()}"
        try:
            # The run folder is in the temporary folder, often another filesystem (a tmpfs /tmp): a
            # rename when it can be, else a copy; then a rename within the folder, whole or not at
            # all, whoever else makes it at the same time.
            shutil.move(host.path(STATE), partial)
            os.replace(partial, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
    statefile.write(folder / INDEX, statefile.read(folder / INDEX) | {path.name: image_id})
    return Snapshot(path, round(time.monotonic() - started, 2))


def prune(engine: Engine, cfg: LabConfig) -> int:
    """Removes the saved guests whose image is gone (`lab clean`); how many it removed."""
    folder = cfg.state_root / FOLDER
    saved = statefile.read(folder / INDEX)
    if not saved:
        return 0
    present = {image.id for image in engine.images(label=f"{resources.MANAGED}=true")}
    gone = {name for name, image_id in saved.items() if image_id not in present}
    for name in gone:
        # The index is a file anyone with the folder may have edited: only a saved guest's own name,
        # in this folder, is ever removed.
        if SAVED_RE.fullmatch(name):
            (folder / name).unlink(missing_ok=True)
    # Read again: a run may have saved a guest meanwhile.
    statefile.write(folder / INDEX, {n: i for n, i in statefile.read(folder / INDEX).items() if n not in gone})
    return len(gone)


def forget(cfg: LabConfig) -> None:
    """Every saved guest, with the images it was saved from (`lab clean --images`)."""
    shutil.rmtree(cfg.state_root / FOLDER, ignore_errors=True)

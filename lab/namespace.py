"""Namespaces: every run, kept lab and test lives in its own, so that many share an engine.

A namespace's id goes into the name and the labels of everything the lab creates for it (containers,
networks, run folders), next to the family name (``lab.name``). Its owner (process and machine boot)
goes into the labels too: resources whose owner is gone are a dead run's leftovers, which the next
command names and `lab clean` removes; nothing else is ever removed on another's behalf.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

RUN, KEPT = "run", "kept"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def machine_id() -> str:
    """This machine's identity (systemd's machine-id; D-Bus's where that is all there is): an engine
    shared by several machines holds resources whose owners' processes this one cannot see."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            found = Path(path).read_text().strip()
        except OSError:
            continue
        if found:
            return found
    return ""


ALIVE, DEAD, ELSEWHERE = "alive", "dead", "elsewhere"


def whose(pid: int, boot: str, machine: str) -> str:
    """Whether an owner runs (ALIVE), is gone (DEAD), or is another machine's, which this one cannot
    judge (ELSEWHERE). Without a machine (labels from before it was recorded), another boot may be
    another machine: ELSEWHERE too, never removed on a guess."""
    here = machine_id()
    if (machine and machine != here) or (not machine and boot != boot_id()):
        return ELSEWHERE
    return ALIVE if alive(pid, boot) else DEAD


def alive(pid: int, boot: str) -> bool:
    """Whether the process that owns something still runs (in this boot of this machine)."""
    if boot != boot_id() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


@dataclass(frozen=True)
class Namespace:
    lab: str  # the family name, lab.name
    id: str  # a run's random id, or a kept lab's name
    kind: str = RUN
    cell: str = ""  # within a run: one cell's hosts
    pid: int = field(default_factory=os.getpid)
    boot: str = field(default_factory=boot_id)
    machine: str = field(default_factory=machine_id)

    @classmethod
    def new_run(cls, lab: str) -> Namespace:
        return cls(lab, secrets.token_hex(3))

    @classmethod
    def kept(cls, lab: str, name: str) -> Namespace:
        return cls(lab, name, KEPT)

    def for_cell(self, cell: int) -> Namespace:
        return Namespace(self.lab, self.id, self.kind, str(cell), self.pid, self.boot, self.machine)

    @property
    def prefix(self) -> str:
        return f"{self.lab}-{self.id}" + (f"-{self.cell}" if self.cell else "")

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def labels(self) -> dict[str, str]:
        """The labels that say whose a resource is (lab.engine.resources adds the lab's own)."""
        # A kept lab's owner is the process that made it: while it runs (lab up, lab run --keep) its
        # hosts are not orphans even before their state is written.
        owner = {"owner.pid": str(self.pid), "owner.boot": self.boot, "owner.machine": self.machine}
        return {"run": self.id, "kind": self.kind, **({"cell": self.cell} if self.cell else {}), **owner}

    def describe(self) -> str:
        return f"kept lab {self.id}" if self.kind == KEPT else f"run {self.id} (pid {self.pid})"

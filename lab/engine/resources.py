"""Docker resources the lab owns: how they are labelled, found and removed.

Every container, network, volume and image the lab creates carries ``io.nfcl.managed=true`` and
``io.nfcl.lab=<lab name>``; what belongs to a run or a kept lab carries its namespace too
(``io.nfcl.run``, ``io.nfcl.kind``, the owner's pid and boot: see lab.namespace), so that a run
removes only its own, and the next command can tell a dead run's leftovers from a live run's hosts.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType

import docker
import docker.errors
from docker.models.networks import Network

from lab.namespace import DEAD, ELSEWHERE, KEPT, Namespace, whose
from lab.waiting import wait_until

MANAGED = "io.nfcl.managed"
LAB = "io.nfcl.lab"
ROLE = "io.nfcl.role"
IMAGE = "io.nfcl.image"
RUN = "io.nfcl.run"
KIND = "io.nfcl.kind"
CELL = "io.nfcl.cell"
OWNER_PID = "io.nfcl.owner.pid"
OWNER_BOOT = "io.nfcl.owner.boot"
OWNER_MACHINE = "io.nfcl.owner.machine"


def labels(lab: str, ns: Namespace | None = None, **extra: str) -> dict[str, str]:
    own = ns.labels() if ns is not None else {}
    return {MANAGED: "true", LAB: lab, **{f"io.nfcl.{k}": v for k, v in {**own, **extra}.items()}}


@dataclass
class Leftovers:
    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.containers or self.networks or self.volumes)

    def describe(self) -> str:
        parts = [f"{kind}: {', '.join(names)}" for kind, names in
                 (("containers", self.containers), ("networks", self.networks), ("volumes", self.volumes)) if names]
        return "; ".join(parts)


# What stops the lab the way Ctrl-C does: SIGTERM, and SIGHUP (a terminal or SSH session that dropped).
STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class Interrupts:
    """The process's handler of STOPPING: the first signal raises KeyboardInterrupt, so that the
    context managers remove what the lab made; any later one only says that cleanup goes on, so a
    second Ctrl-C cannot cut it short (and leave containers behind)."""

    say: Callable[[str], None]
    received: int = 0

    def install(self) -> None:
        for signo in STOPPING:
            signal.signal(signo, self.handle)

    def settle(self) -> None:
        """The lab is leaving after an interrupt: its cleanup is done, and one more Ctrl-C while the
        interpreter winds down (it joins its threads) would end it by the signal instead of its status."""
        for signo in STOPPING:
            signal.signal(signo, signal.SIG_IGN)

    def handle(self, signo: int, _frame: FrameType | None) -> None:
        self.received += 1
        if self.received == 1:  # Ctrl-C says nothing, as Python's own; another signal names itself
            raise KeyboardInterrupt() if signo == signal.SIGINT else KeyboardInterrupt(f"signal {signo}")
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            self.say("cleaning up, please wait")


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP wait until a creation is answered: otherwise the daemon may make a
    container or network after the interrupted lab has already cleaned up, and leave it behind."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOPPING))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def free_gb(client: docker.DockerClient | None) -> tuple[float, str]:
    """Free space where Docker keeps its images (its data root when the daemon says, else /)."""
    root = "/var/lib/docker"
    if client is not None:
        try:
            root = client.info().get("DockerRootDir", root)
        except docker.errors.APIError:
            pass
    where = root if os.path.exists(root) else "/"
    return shutil.disk_usage(where).free / 1e9, where


def _filters(lab: str | None, ns: Namespace | None = None) -> dict[str, str | list[str] | bool]:
    wanted = [f"{MANAGED}=true"] + ([f"{LAB}={lab}"] if lab else [])
    if ns is not None:
        wanted += [f"{RUN}={ns.id}", f"{KIND}={ns.kind}"] + ([f"{CELL}={ns.cell}"] if ns.cell else [])
    return {"label": wanted}


def find(client: docker.DockerClient, lab: str | None = None, ns: Namespace | None = None) -> Leftovers:
    """Resources of one lab (every lab when ``lab`` is None): of one namespace, or all of them."""
    flt = _filters(lab, ns)
    return Leftovers(
        containers=[str(c.name) for c in client.containers.list(all=True, filters=flt, ignore_removed=True)],
        networks=[str(n.name) for n in client.networks.list(filters=flt)],
        volumes=[str(v.name) for v in client.volumes.list(filters=flt)],
    )


def owner_gone(found: dict[str, str]) -> bool:
    """A run's resource whose process is gone (killed, or from an earlier boot); kept labs have no
    owner process and are never leftovers."""
    if found.get(KIND) == KEPT or RUN not in found:
        return False
    return owner_state(found) == DEAD


def owner_state(found: dict[str, str]) -> str:
    """ALIVE, DEAD or ELSEWHERE (another machine's, on an engine they share): namespace.whose."""
    return whose(owner_pid(found), found.get(OWNER_BOOT, ""), found.get(OWNER_MACHINE, ""))


def owner_of(found: dict[str, str]) -> str:
    return f"machine {found.get(OWNER_MACHINE) or '(not recorded)'}, pid {owner_pid(found)}"


def owner_pid(found: dict[str, str]) -> int:
    try:
        return int(found.get(OWNER_PID, "0"))
    except ValueError:
        return 0


def remove_dead_runs(client: docker.DockerClient, lab: str | None) -> Leftovers:
    """`lab clean`: what dead runs left, only that."""
    removed = Leftovers()
    for run in dead_runs(client, lab):
        found = remove(client, lab, ns=Namespace(lab or "", run))
        removed.containers += found.containers
        removed.networks += found.networks
    return removed


def others_runs(client: docker.DockerClient, lab: str | None) -> dict[str, tuple[str, Leftovers]]:
    """Per run id, its owner and what it has on this engine, for runs of other machines (alive or
    not: this machine cannot tell), which `lab clean` lists and never removes."""
    runs: dict[str, tuple[str, Leftovers]] = {}
    flt = _filters(lab)
    found = [(c.labels, str(c.name), True) for c in client.containers.list(all=True, filters=flt, ignore_removed=True)]
    found += [(n.attrs.get("Labels") or {}, str(n.name), False) for n in client.networks.list(filters=flt)]
    for labels_, name, container in found:
        if labels_.get(KIND) == KEPT or RUN not in labels_ or owner_state(labels_) != ELSEWHERE:
            continue
        _owner, left = runs.setdefault(labels_[RUN], (owner_of(labels_), Leftovers()))
        (left.containers if container else left.networks).append(name)
    return runs


def dead_runs(client: docker.DockerClient, lab: str | None) -> dict[str, Leftovers]:
    """Per run id, what runs whose owner is gone left on this engine (found, never removed here)."""
    runs: dict[str, Leftovers] = {}
    flt = _filters(lab)
    for c in client.containers.list(all=True, filters=flt, ignore_removed=True):
        if owner_gone(c.labels):
            runs.setdefault(c.labels[RUN], Leftovers()).containers.append(str(c.name))
    for n in client.networks.list(filters=flt):
        if owner_gone(n.attrs.get("Labels") or {}):
            runs.setdefault((n.attrs.get("Labels") or {})[RUN], Leftovers()).networks.append(str(n.name))
    return runs


def remove(client: docker.DockerClient, lab: str | None = None, ns: Namespace | None = None) -> Leftovers:
    """Removes what ``find`` finds; returns what was removed."""
    left = find(client, lab, ns)
    flt = _filters(lab, ns)
    containers = client.containers.list(all=True, filters=flt, ignore_removed=True)
    if containers:
        # At once: each removal is mostly the daemon stopping a container.
        with concurrent.futures.ThreadPoolExecutor(len(containers), thread_name_prefix="lab-remove") as pool:
            for removal in [pool.submit(_quietly, c.remove, force=True, v=True) for c in containers]:
                removal.result()
    for n in client.networks.list(filters=flt):
        _remove_network(n)
    for v in client.volumes.list(filters=flt):
        _quietly(v.remove, force=True)
    return left


def remove_images(client: docker.DockerClient) -> None:
    """Every image the lab built (shared by every lab on the engine)."""
    for img in client.images.list(filters={"label": f"{MANAGED}=true"}):
        for tag in img.tags or [str(img.id)]:
            _quietly(client.images.remove, tag, force=True)


def _remove_network(network: Network, timeout: float = 15.0) -> None:
    """A network goes once its containers have: a removal another thread started may still run."""
    def removed() -> bool | None:
        try:
            network.remove()
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code not in (403, 409):
                raise
            return None
        return True

    wait_until(f"network {network.name} to be left by its containers", removed, timeout, interval=0.1)


def _quietly(action: Callable[..., object], *args: object, **kwargs: object) -> None:
    try:
        action(*args, **kwargs)
    except docker.errors.NotFound:
        pass  # already gone: removed concurrently, or by the container's removal
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: another removal of it is under way (an interrupt's sweep)
            raise

"""Docker resources the lab owns: how they are labelled, found and removed.

Every container, network, volume and image the lab creates carries ``io.nfcl.managed=true`` and
``io.nfcl.lab=<lab name>``, so that `lab clean` (and the next run, after a crash) can find them
without any state file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import docker
import docker.errors
from docker.models.networks import Network

from lab.errors import DockerUnavailable, LeftoverLab

MANAGED = "io.nfcl.managed"
LAB = "io.nfcl.lab"
ROLE = "io.nfcl.role"
IMAGE = "io.nfcl.image"


def labels(lab: str, **extra: str) -> dict[str, str]:
    return {MANAGED: "true", LAB: lab, **{f"io.nfcl.{k}": v for k, v in extra.items()}}


def connect() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        raise DockerUnavailable(
            f"no Docker daemon answers ({_first_line(exc)}); start it with `dockerd &` as root "
            "(or `make setup`), then run `lab doctor`") from exc
    return client


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


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


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until a creation is answered: otherwise the daemon may make a
    container or network after the interrupted lab has already cleaned up, and leave it behind."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
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


def _filters(lab: str | None) -> dict[str, str | list[str] | bool]:
    return {"label": [f"{MANAGED}=true"] + ([f"{LAB}={lab}"] if lab else [])}


def find(client: docker.DockerClient, lab: str | None = None) -> Leftovers:
    """Running or stopped resources of one lab (or of every lab when ``lab`` is None)."""
    flt = _filters(lab)
    return Leftovers(
        containers=[str(c.name) for c in client.containers.list(all=True, filters=flt)],
        networks=[str(n.name) for n in client.networks.list(filters=flt)],
        volumes=[str(v.name) for v in client.volumes.list(filters=flt)],
    )


def refuse_leftovers(client: docker.DockerClient, lab: str) -> None:
    left = find(client, lab)
    if left:
        raise LeftoverLab(f"a lab named {lab!r} is still there ({left.describe()}); "
                          "remove it with `lab clean`")


def remove(client: docker.DockerClient, lab: str | None = None, images: bool = False) -> Leftovers:
    """Removes what ``find`` finds (and the lab's images when asked); returns what was removed."""
    left = find(client, lab)
    flt = _filters(lab)
    for c in client.containers.list(all=True, filters=flt):
        _quietly(c.remove, force=True, v=True)
    for n in client.networks.list(filters=flt):
        _remove_network(n)
    for v in client.volumes.list(filters=flt):
        _quietly(v.remove, force=True)
    if images:
        for img in client.images.list(filters={"label": f"{MANAGED}=true"}):
            for tag in img.tags or [str(img.id)]:
                _quietly(client.images.remove, tag, force=True)
    return left


def _remove_network(network: Network, timeout: float = 15.0) -> None:
    """A network goes once its containers have: a removal another thread started may still run."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            network.remove()
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code not in (403, 409) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _quietly(action: Callable[..., object], *args: object, **kwargs: object) -> None:
    try:
        action(*args, **kwargs)
    except docker.errors.NotFound:
        pass  # already gone: removed concurrently, or by the container's removal
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: another removal of it is under way (an interrupt's sweep)
            raise

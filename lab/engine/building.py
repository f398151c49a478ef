"""What building the lab's images asks of an engine: a build's stream of progress, a short-lived
container's status and output, a build container (an archive in, its output followed, an archive
out), and images imported, pulled, pushed and cleaned up after a failed build.

Every transport error on the way is a ``BuildRequestFailed``: an ImageBuildError that keeps the
engine's own words, for lab.images to say which image and step it concerns.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import docker.errors
from docker.models.containers import Container

from lab.engine import resources
from lab.engine.engine import Engine
from lab.engine.registry import Registry
from lab.engine.transport import TRANSPORT_ERRORS
from lab.errors import ImageBuildError

LAYER_IN_USE_S = 15.0  # how long a failed build's image may stay in use by its last step's container


class BuildRequestFailed(ImageBuildError):
    """The engine could not do what a build asked: ``problem`` is the transport's error as it said it,
    ``explanation`` the daemon's own words when it gave any."""

    def __init__(self, problem: str, explanation: str = "") -> None:
        self.problem = problem
        self.explanation = explanation or problem
        super().__init__(problem)


def _failed(exc: BaseException) -> BuildRequestFailed:
    return BuildRequestFailed(str(exc), str(getattr(exc, "explanation", "") or ""))


@contextlib.contextmanager
def _requests() -> Iterator[None]:
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        raise _failed(exc) from exc


def build(engine: Engine, context: BinaryIO, tag: str, args: dict[str, str], labels: dict[str, str],
          timeout_s: float, target: str = "") -> Iterator[Mapping[str, Any]]:
    """A legacy-builder build of ``context`` (a tar), as the decoded chunks the engine sends while it
    runs: its progress is live, not a list handed over at the end."""
    with _requests():
        yield from engine.client.api.build(
            fileobj=context, custom_context=True, tag=tag, buildargs=args, labels=labels, rm=True, forcerm=True,
            decode=True, timeout=int(timeout_s), target=target or None)


@dataclass(frozen=True)
class Finished:
    """What a short-lived container ended with: its exit status (None when it gave none) and stdout."""

    status: int | None
    output: str


def run_once(engine: Engine, image: str, argv: list[str], name: str, labels: dict[str, str],
             timeout_s: float) -> Finished:
    """``argv`` in a container of ``image`` with no network, to its end (bounded by ``timeout_s``);
    the container is removed whatever happens."""
    with _requests():
        with resources.uninterrupted():
            container = engine.client.containers.create(image, argv, name=name, network_disabled=True, labels=labels)
        try:
            container.start()
            status = container.wait(timeout=timeout_s).get("StatusCode")
            output = container.logs(stdout=True, stderr=False).decode(errors="replace")
        finally:
            _remove(container)
    return Finished(None if status is None else int(status), output)


class BuildContainer:
    """A container a build runs in, without network and within bounds of memory and processes:
    files are put into it, its output followed line by line, its result taken out; leaving the
    ``with`` block removes it, whatever happened."""

    def __init__(self, container: Container) -> None:
        self.container = container

    @classmethod
    def create(cls, engine: Engine, image: str, argv: list[str], name: str, labels: dict[str, str],
               memory_mb: int, pids: int) -> BuildContainer:
        with _requests(), resources.uninterrupted():
            # memswap equal to memory: no swap beyond the bound.
            return cls(engine.client.containers.create(
                image, argv, name=name, network_mode="none", mem_limit=f"{memory_mb}m",
                memswap_limit=f"{memory_mb}m", pids_limit=pids, labels=labels))

    def __enter__(self) -> BuildContainer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _remove(self.container)

    @property
    def id(self) -> str:
        return str(self.container.id)

    def put(self, path: str, archive: bytes) -> None:
        with _requests():
            self.container.put_archive(path, archive)

    def start(self) -> None:
        with _requests():
            self.container.start()

    def follow(self, lines: queue.Queue[str | None]) -> None:
        """Its output, line by line, into ``lines`` from a thread of its own; None when it ends (or
        the container went: whoever waits decides what that means)."""
        threading.Thread(target=self._read_logs, args=(lines,), name="lab-build-logs", daemon=True).start()

    def _read_logs(self, lines: queue.Queue[str | None]) -> None:
        pending = b""
        try:
            for chunk in self.container.logs(stream=True, follow=True):
                pending += chunk
                *done, pending = pending.split(b"\n")
                for line in done:
                    lines.put(line.decode(errors="replace").rstrip("\r"))
        except TRANSPORT_ERRORS:
            pass  # removed (an interrupt, a failure elsewhere)
        finally:
            if pending:
                lines.put(pending.decode(errors="replace"))
            lines.put(None)

    def wait(self, timeout_s: float) -> int:
        """Its exit status, once it has ended (-1 when it gave none)."""
        with _requests():
            return int(self.container.wait(timeout=timeout_s).get("StatusCode", -1))

    def archive(self, path: str) -> Iterator[bytes]:
        """``path`` in it as a tar stream, chunk by chunk."""
        with _requests():
            stream, _ = self.container.get_archive(path)
            yield from stream


def _remove(container: Container) -> None:
    # Signals wait until the daemon has answered: an interrupted removal would leave it behind.
    with resources.uninterrupted(), contextlib.suppress(*TRANSPORT_ERRORS):
        container.remove(force=True, v=True)  # when it fails: labelled with its run, `lab clean` removes it


def remove_layer(engine: Engine, image_id: str) -> None:
    """An image a failed build committed, removed while it is still untagged (never its parents:
    noprune). An interrupted build's last step container may still be going away (Docker drops it
    once it hears the client is gone); until then its image is in use: that is waited for, bounded.
    Gone already, or another image's parent now: not the build's to remove."""
    deadline = time.monotonic() + LAYER_IN_USE_S
    while True:
        try:
            if not engine.client.images.get(image_id).tags:
                engine.client.images.remove(image_id, noprune=True)
            return
        except docker.errors.APIError as exc:
            in_use = exc.status_code == 409 and "container" in str(exc.explanation or "")
            if not in_use or time.monotonic() > deadline:
                return
            time.sleep(0.2)
        except TRANSPORT_ERRORS:
            return


def import_rootfs(engine: Engine, tarball: Path, tag: str, changes: list[str]) -> None:
    """An image made of a root file system's tar (``changes``: Dockerfile instructions, its labels)."""
    repository, _, version = tag.rpartition(":")
    with _requests():
        engine.client.api.import_image_from_file(str(tarball), repository=repository, tag=version, changes=changes)


def pull(engine: Engine, reference: str) -> None:
    """``reference`` pulled from the registry it names (Docker's own configuration and credentials)."""
    with _requests():
        engine.client.images.pull(reference)


def pull_from(engine: Engine, registry: Registry, tag: str, required: bool = False) -> float | None:
    """``tag`` from ``registry`` under its local tag: the seconds it took, None when the registry has
    no such image (with ``required``, that is a RegistryError)."""
    if required:
        return registry.require(engine.client, tag, engine.name)
    return registry.pull(engine.client, tag, engine.name)


def push_to(engine: Engine, registry: Registry, tag: str) -> float:
    """``tag`` pushed to ``registry`` under its content tag: the seconds it took."""
    return registry.push(engine.client, tag, engine.name)

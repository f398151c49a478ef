"""Images from a registry (``images.registry: HOST[:PORT]/PATH``), as QEMU's own CI shares its
container images: ``lab build --push`` pushes each image under its content tag, and an engine that
lacks one pulls it before it would build or copy it.

An image ``<prefix>/<image>:<tag>`` is ``HOST[:PORT]/PATH/<prefix>/<image>:<tag>`` in the registry;
pulled, it takes its local tag again and the registry's name is dropped, so the rest of the lab sees
the image it would have built. Credentials are Docker's own: the SDK reads ``docker login``'s config
(``DOCKER_CONFIG``, credential helpers) and hands them to the engine, which never logs them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import paramiko
import requests.exceptions

from lab.engine import resources
from lab.errors import LabError, excerpt

# Where an engine's image came from (report.json: lab.engines.NAME.image_source).
PRESENT = "present"  # the engine had it
PULLED = "pulled"  # from the registry
COPIED = "copied"  # streamed from the engine that built it
BUILT = "built"  # built there

# What the engine's answer says, in the words Docker's daemon and distribution's registry use.
_MISSING = ("manifest unknown", "not found", "name unknown")
_REFUSED = ("unauthorized", "authentication required", "no basic auth credentials")  # 401: who are you?
# 403: not for these credentials. GitHub's registry answers so for a package that does not exist yet,
# too: a pull takes it for an image the registry does not have; a push for refused credentials.
_DENIED = ("denied", "forbidden")
_UNREACHABLE = ("connection refused", "no such host", "i/o timeout", "dial tcp", "timeout", "network is unreachable",
                "http response to https client", "no route to host", "connection reset", "eof")


class RegistryError(LabError):
    """The registry could not be used: unreachable, the credentials refused, an image not in it."""

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind  # what the registry's answer said (lab.engine.registry._kind), "" when not its answer


@dataclass(frozen=True)
class Registry:
    location: str  # HOST[:PORT]/PATH
    timeout_s: float  # a whole pull or push

    @property
    def host(self) -> str:
        return self.location.split("/", 1)[0]

    def remote(self, tag: str) -> str:
        return f"{self.location}/{tag}"

    def pull(self, client: docker.DockerClient, tag: str, engine: str) -> float | None:
        """Pulls ``tag`` onto the engine and gives it its local tag: the seconds it took, or None
        when the registry does not have it, or denies it to these credentials (not an error: the
        caller builds or copies it)."""
        remote = self.remote(tag)
        repository, version = _split(remote)
        started = time.monotonic()
        try:
            self._follow(client.api.pull(repository, version, stream=True, decode=True), remote, "pull", engine)
        except RegistryError as exc:
            if exc.kind in ("missing", "denied"):
                return None
            raise
        except docker.errors.APIError as exc:
            problem = str(exc.explanation or exc)
            if _kind(problem) in ("missing", "denied") or (exc.status_code == 404 and not _kind(problem)):
                return None
            raise self._error("pull", remote, engine, problem) from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException, paramiko.SSHException,
                OSError) as exc:
            raise LabError(f"engine {engine} failed while pulling {remote}: {excerpt(str(exc))}") from exc
        local_repository, local_version = _split(tag)
        try:
            # Both or neither: an interrupt between them would leave the registry's name behind.
            with resources.uninterrupted():
                client.api.tag(remote, local_repository, local_version)
                client.api.remove_image(remote, noprune=True)  # only the registry's name: the image stays
        except docker.errors.DockerException as exc:
            raise LabError(f"engine {engine}: cannot tag {remote} as {tag}: {excerpt(str(exc))}") from exc
        return round(time.monotonic() - started, 1)

    def require(self, client: docker.DockerClient, tag: str, engine: str) -> float:
        """As ``pull``, for an image that must come from the registry: its absence is an error."""
        seconds = self.pull(client, tag, engine)
        if seconds is None:
            raise RegistryError(f"registry {self.location} has no {tag} (manifest unknown, or access denied to these "
                                "credentials); push it with `lab build --push` from a machine that has it", "missing")
        return seconds

    def push(self, client: docker.DockerClient, tag: str, engine: str) -> float:
        """Pushes the engine's ``tag`` to the registry under its content tag; the seconds it took."""
        remote = self.remote(tag)
        repository, version = _split(remote)
        started = time.monotonic()
        try:
            client.api.tag(tag, repository, version)
            try:
                self._follow(client.api.push(repository, version, stream=True, decode=True), remote, "push", engine)
            finally:
                client.api.remove_image(remote, noprune=True)
        except docker.errors.APIError as exc:
            raise self._error("push", remote, engine, str(exc.explanation or exc)) from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException, paramiko.SSHException,
                OSError) as exc:
            raise LabError(f"engine {engine} failed while pushing {remote}: {excerpt(str(exc))}") from exc
        return round(time.monotonic() - started, 1)

    def _follow(self, chunks: Iterable[Mapping[str, Any]], remote: str, verb: str, engine: str) -> None:
        """A pull's or push's progress to its end; its error (Docker reports them in the stream) raised."""
        deadline = time.monotonic() + self.timeout_s
        for chunk in chunks:
            if "error" in chunk:
                raise self._error(verb, remote, engine, str(chunk["error"]))
            if time.monotonic() > deadline:
                raise RegistryError(f"registry {self.location}: the {verb} of {remote} on engine {engine} did not end "
                                    f"within {self.timeout_s:.0f} s (timeouts.image_build_s)")

    def _error(self, verb: str, remote: str, engine: str, problem: str) -> RegistryError:
        what = f"registry {self.location} ({verb} of {remote} on engine {engine})"
        kind = _kind(problem)
        if kind in ("refused", "denied"):
            return RegistryError(f"{what}: the credentials were refused ({excerpt(problem)}); log in with "
                                 f"`docker login {self.host}` as the user who runs the lab", kind)
        if kind == "unreachable":
            return RegistryError(f"{what}: unreachable ({excerpt(problem)}); is it up, and is images.registry right?",
                                 kind)
        if kind == "missing":
            return RegistryError(f"{what}: not in the registry ({excerpt(problem)})", kind)
        return RegistryError(f"{what}: {excerpt(problem)}")


def _kind(problem: str) -> str:
    """``refused``, ``denied``, ``unreachable``, ``missing`` or "" for what a registry's error says."""
    text = problem.lower()
    for kind, words in (("refused", _REFUSED), ("denied", _DENIED), ("unreachable", _UNREACHABLE),
                        ("missing", _MISSING)):
        if any(word in text for word in words):
            return kind
    return ""


def _split(reference: str) -> tuple[str, str]:
    """``repository``, ``tag`` of ``repository:tag`` (a registry's port is part of the repository)."""
    repository, _, version = reference.rpartition(":")
    return repository, version


def of(location: str, timeout_s: float) -> Registry | None:
    return Registry(location, timeout_s) if location else None

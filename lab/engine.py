"""Lab hosts on a Docker engine: containers, each with its own tap and run folder, on an internal
network of their own.

This module is the lab's one boundary with the Docker SDK for hosts: it implements lab.host's
``Host`` over ``docker exec`` and a bind-mounted run folder, and it turns the SDK's errors into the
lab's (a host that cannot be made is a LabError; a command that cannot run is a ScenarioError).
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.networks import Network

from lab import resources
from lab.errors import Cancelled, LabError, ScenarioError
from lab.host import RUNDIR, TAP, ExecResult, Host
from lab.waiting import wait_until

TUN = "/dev/net/tun"
KVM = "/dev/kvm"


def _text(data: object) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else ""


class DockerHost(Host):
    """A lab host that is a container; its run folder is a folder of the lab's, bind-mounted."""

    def __init__(self, container: Container, role: str, rundir: Path,
                 cancel: threading.Event | None = None) -> None:
        self.container = container
        self.role = role
        self.rundir = rundir
        self.cancel = cancel

    @property
    def name(self) -> str:
        return str(self.container.name)

    def path(self, name: str) -> Path:
        return self.rundir / name

    def run(self, argv: list[str], timeout: float = 30.0) -> ExecResult:
        # docker exec has no timeout of its own; coreutils' does, inside the host.
        wrapped = ["timeout", "-k", "2", str(int(timeout) + 1), *argv]
        try:
            rc, (out, err) = self.container.exec_run(wrapped, demux=True)
        except docker.errors.DockerException as exc:
            raise ScenarioError(f"{self.role}: cannot run {shlex.join(argv)}: {_why(exc)}") from exc
        return ExecResult(shlex.join(argv), -1 if rc is None else rc, _text(out), _text(err))

    def start(self, argv: list[str]) -> None:
        try:
            self.container.exec_run(argv, detach=True)
        except docker.errors.DockerException as exc:
            raise ScenarioError(f"{self.role}: cannot start {shlex.join(argv)}: {_why(exc)}") from exc


def _why(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class Engine:
    """One Docker engine and the guard around what the lab creates on it.

    Creations and the teardown that follows an interrupt take turns: a container the daemon is
    making while Ctrl-C lands is finished, and then removed, instead of appearing after the sweep.
    """

    client: docker.DockerClient
    name: str = "local"
    cancelled: threading.Event = field(default_factory=threading.Event)
    _creating: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def connect(cls) -> Engine:
        return cls(resources.connect())

    @contextlib.contextmanager
    def creating(self) -> Iterator[None]:
        with self._creating, resources.uninterrupted():
            if self.cancelled.is_set():
                raise Cancelled("the run was cancelled; nothing more is created")
            yield

    def cancel(self, lab: str) -> resources.Leftovers:
        """Stops all further creation and removes what the lab has on this engine."""
        with self._creating:
            self.cancelled.set()
        return resources.remove(self.client, lab)

    def run_container(self, image: str, role: str, lab: str, rundir: Path, devices: tuple[str, ...],
                      network: str | None = None) -> DockerHost:
        """A host container: on ``network``, or on none at all."""
        try:
            with self.creating():
                container = self.client.containers.run(
                    image, name=f"{lab}-{role}", hostname=role, detach=True, init=True, cap_add=["NET_ADMIN"],
                    devices=[f"{d}:{d}:rwm" for d in devices],
                    volumes={str(rundir.resolve()): {"bind": RUNDIR, "mode": "rw"}},
                    labels=resources.labels(lab, role=role), network=network,
                    network_mode=None if network else "none")
        except docker.errors.DockerException as exc:
            raise LabError(f"cannot start the {role} host from {image} on engine {self.name}: {_why(exc)}") from exc
        host = DockerHost(container, role, rundir, self.cancelled)
        self._wait_running(host, 30.0)
        return host

    def _wait_running(self, host: DockerHost, timeout: float) -> None:
        def running() -> bool | None:
            host.container.reload()
            if host.container.status in ("exited", "dead"):
                raise LabError(f"the {host.role} host did not start (status {host.container.status}): "
                               f"{host.container.logs(tail=10).decode(errors='replace').strip()}")
            return True if host.container.status == "running" else None

        wait_until(f"the {host.role} host to run", running, timeout, interval=0.1,
                   last=lambda: str(host.container.status))

    @contextlib.contextmanager
    def throwaway(self, image: str, role: str, lab: str, devices: tuple[str, ...] = (TUN,)) -> Iterator[DockerHost]:
        """A host with no network for a short job (the KVM probe, the capability check), removed after."""
        rundir = Path(tempfile.mkdtemp(prefix=f"{lab}-{role}-"))
        host = None
        try:
            host = self.run_container(image, role, lab, rundir, devices)
            yield host
        finally:
            if host is not None:
                with contextlib.suppress(docker.errors.DockerException):
                    host.container.remove(force=True)
            shutil.rmtree(rundir, ignore_errors=True)


@dataclass(frozen=True)
class HostSpec:
    image: str
    lab: str
    devices: tuple[str, ...] = (TUN,)
    ssh_key: str = ""  # an authorized public key: the hosts then run sshd (key-only, loopback)


class LabHosts:
    """The primary and secondary hosts and their internal network, as one context.

    Entering creates the network and both containers (each with its tap up); leaving removes them,
    whatever happened in between. The run folders stay: they are the scenario's artefacts.
    """

    ROLES = ("primary", "secondary")

    def __init__(self, engine: Engine, spec: HostSpec, rundir: Path, start_timeout: float) -> None:
        self.engine = engine
        self.spec = spec
        self.rundir = rundir
        self.start_timeout = start_timeout
        self.network: Network | None = None
        self.hosts: dict[str, DockerHost] = {}

    @property
    def primary(self) -> DockerHost:
        return self.hosts["primary"]

    @property
    def secondary(self) -> DockerHost:
        return self.hosts["secondary"]

    def __enter__(self) -> LabHosts:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @contextlib.contextmanager
    def kept_if(self, keep: Callable[[], bool]) -> Iterator[LabHosts]:
        """Creates the hosts; on leaving, removes them unless ``keep()`` says otherwise."""
        self.__enter__()
        try:
            yield self
        except Exception:
            if not keep():
                self.close()
            raise
        except BaseException:
            self.close()  # Ctrl-C, SIGTERM: nothing stays
            raise
        if not keep():
            self.close()

    def _create(self) -> None:
        lab = self.spec.lab
        client = self.engine.client
        resources.refuse_leftovers(client, lab)
        # internal: no route off this machine; the lab's traffic stays between its hosts.
        try:
            with self.engine.creating():
                self.network = client.networks.create(f"{lab}-net", driver="bridge", internal=True,
                                                      labels=resources.labels(lab, role="network"))
        except docker.errors.DockerException as exc:
            raise LabError(f"cannot create the lab network {lab}-net on engine {self.engine.name}: "
                           f"{_why(exc)}") from exc
        for role in self.ROLES:
            hostdir = self.rundir / role
            hostdir.mkdir(parents=True, exist_ok=True)
            self.hosts[role] = self.engine.run_container(self.spec.image, role, lab, hostdir, self.spec.devices,
                                                         network=self.network.name)
        for host in self.hosts.values():
            host.check(["ip", "tuntap", "add", "dev", TAP, "mode", "tap"])
            host.check(["ip", "link", "set", TAP, "up"])
            if self.spec.ssh_key:
                self._start_sshd(host)

    def _start_sshd(self, host: DockerHost) -> None:
        host.write_text("ssh/authorized_keys", self.spec.ssh_key + "\n")
        host.check(["ssh-keygen", "-A"])  # host keys of this host only, never shipped in the image
        sshd = host.spawn("sshd", ["/usr/sbin/sshd", "-D", "-e"])

        def listening() -> bool | None:
            if host.run(["sh", "-c", "ss -ltn | grep -q '127.0.0.1:22 '"], timeout=5).succeeded:
                return True
            if sshd.returncode is not None:
                raise LabError(f"sshd did not start in the {host.role} host: {sshd.tail(5)}")
            return None

        wait_until(f"sshd in the {host.role} host", listening, self.start_timeout, interval=0.1,
                   last=lambda: sshd.tail(1))

    def close(self) -> None:
        # By label, not only what this object holds: an interrupt can land between the daemon
        # creating a container or network and this process hearing of it.
        resources.remove(self.engine.client, self.spec.lab)
        self.hosts.clear()
        self.network = None

"""Lab hosts on a Docker engine: containers, each with its own tap and run folder, on an internal
network of their own.

``Engine`` is what the lab asks of an engine (hosts, images, what runs left, its capacity); it
implements lab.host's ``Host`` over ``docker exec`` with two backends, one per way of reaching a
host's run folder: ``SharedHost`` (bind-mounted: the engine sees this machine's files) and
``CopiedHost`` (copied through the engine's API: lab.engine.remote). Every request goes through
lab.engine.transport, which turns the transport's errors into the lab's (a host that cannot be made
is an EngineError; a command that cannot run is a ScenarioError).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.networks import Network
from docker.types import Mount

from lab import slots
from lab.config import LOCAL_ENGINE, EngineSpec, Limits
from lab.engine import remote, resources, transport
from lab.engine.registry import COPIED, PRESENT, PULLED, Registry
from lab.engine.transport import TRANSPORT_ERRORS, why
from lab.errors import Cancelled, EngineError, LabError, ScenarioError, Timeout
from lab.host import RUNDIR, ExecResult, Host
from lab.namespace import Namespace
from lab.waiting import wait_until

T = TypeVar("T")

TUN = "/dev/net/tun"
KVM = "/dev/kvm"
# A host's first act: take the lab's handshake file out of its run folder, or exit NO_HANDSHAKE when
# the folder it was given is not the lab's (it has no such file).
HANDSHAKE = ".handshake"
NO_HANDSHAKE = 3
HOST_COMMAND = ["sh", "-c", f"rm {RUNDIR}/{HANDSHAKE} 2>/dev/null || exit {NO_HANDSHAKE}; exec sleep infinity"]
# QEMU and the helpers run as root in a host, and what they make in a shared run folder is for the
# user who runs the lab, who may not be root (a member of the docker group): the folder is setgid, so
# that files take that user's group, and every command runs under this umask, so that the group may
# connect to QEMU's sockets (QMP, the console, the guest's record port) and read what they write.
UMASK = "0002"


def _with_umask(argv: list[str]) -> list[str]:
    return ["sh", "-c", f'umask {UMASK} && exec "$@"', "sh", *argv]


class _NoHandshake(LabError):
    """The host's run folder is not the lab's: its engine does not see this machine's files."""


def _text(data: object) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else ""


class DockerHost(Host):
    """A lab host that is a container of an engine; how the lab reaches its run folder is its
    backend's (SharedHost, CopiedHost)."""

    def __init__(self, engine: Engine, container: Container, role: str, rundir: Path) -> None:
        self.engine = engine
        self.container = container
        self.role = role
        self.rundir = rundir
        self.cancel = engine.cancelled
        self.published: dict[int, tuple[str, int]] = {}
        self.address = ""  # on the lab network

    @property
    def name(self) -> str:
        return str(self.container.name)

    def own(self, name: str) -> Path:
        return self.rundir / name

    def let_go(self, files: bool = False) -> None:
        """The host is about to go: with ``files``, its run folder's files brought into the lab's (an
        interrupted run takes none)."""

    def hand_over(self, name: str = "") -> None:
        """What root made in the run folder the lab sees (all of it, or ``name``) made the lab user's own."""

    def reach(self, port: int) -> tuple[str, int]:
        # By address, not by name: an engine without iptables has no embedded DNS on its networks.
        return self.published.get(port) or (self.address or self.name, port)

    def run(self, argv: list[str], timeout: float = 30.0) -> ExecResult:
        # docker exec has no timeout of its own; coreutils' does, inside the host.
        wrapped = _with_umask(["timeout", "-k", "2", str(int(timeout) + 1), *argv])
        rc, (out, err) = self._exec("run", argv, lambda: self.container.exec_run(wrapped, demux=True))
        return ExecResult(shlex.join(argv), -1 if rc is None else rc, _text(out), _text(err))

    def start(self, argv: list[str]) -> None:
        self._exec("start", argv, lambda: self.container.exec_run(_with_umask(argv), detach=True))

    def _exec(self, what: str, argv: list[str], call: Callable[[], T]) -> T:
        return transport.call(self.engine.client, call, lambda exc: ScenarioError(
            f"{self.role}: cannot {what} {shlex.join(argv)}: {why(exc)}"))

    def _files(self, what: str, name: str, call: Callable[[], T]) -> T:
        return self._exec(what, [f"{RUNDIR}/{name}"], call)


class SharedHost(DockerHost):
    """A host whose run folder is a folder of the lab's, bind-mounted: both see the same files."""

    shares_rundir = True

    def path(self, name: str) -> Path:
        return self.rundir / name

    def let_go(self, files: bool = False) -> None:
        if files:
            with contextlib.suppress(ScenarioError):  # a host that is gone already hands nothing over
                self.hand_over()

    def hand_over(self, name: str = "") -> None:
        """Some files are written for their owner alone (QEMU saves a guest 0600): root's files in
        the shared folder handed to the user who runs the lab."""
        uid, gid = os.geteuid(), os.getegid()
        if uid != 0:
            self.check(["chown", "-R", f"{uid}:{gid}", os.path.join(RUNDIR, name)])


class CopiedHost(DockerHost):
    """A host on an engine that does not see this machine's files: its run folder is the container's
    own, read and written through the engine (lab.engine.remote), copied back when the host goes, and
    each of its unix sockets reached through a relay."""

    shares_rundir = False

    def __init__(self, engine: Engine, container: Container, role: str, rundir: Path) -> None:
        super().__init__(engine, container, role, rundir)
        self._relays: dict[str, remote.SocketRelay] = {}

    def path(self, name: str) -> Path:
        local = self.rundir / name
        self._files("read", name, lambda: remote.fetch(self.container, f"{RUNDIR}/{name}", local))
        return local

    def read_from(self, name: str, offset: int, limit: int) -> bytes:
        # Only the new bytes cross the engine's connection, never the whole file again.
        script = 'tail -c "+$1" "$2" 2>/dev/null | head -c "$3"'
        argv = ["sh", "-c", script, "sh", str(offset + 1), f"{RUNDIR}/{name}", str(limit)]
        _rc, (out, _err) = self._exec("read", [f"{RUNDIR}/{name}"],
                                      lambda: self.container.exec_run(argv, demux=True))
        return out if isinstance(out, bytes) else b""

    def remove(self, name: str) -> None:
        self.check(["rm", "-f", f"{RUNDIR}/{name}"])
        (self.rundir / name).unlink(missing_ok=True)

    def write_text(self, name: str, text: str) -> None:
        self._put(name, text.encode(), 0o644)

    def write_secret(self, name: str, data: bytes) -> None:
        self._put(name, data, 0o600)

    def _put(self, name: str, data: bytes, mode: int) -> None:
        self.check(["mkdir", "-p", os.path.dirname(f"{RUNDIR}/{name}")])
        self._files("write", name, lambda: remote.put(self.container, f"{RUNDIR}/{name}", data, mode))

    def socket(self, name: str) -> Path:
        if name not in self._relays:
            self._relays[name] = remote.SocketRelay(self.container, f"{RUNDIR}/{name}", self.rundir / name)
        return self._relays[name].local

    def let_go(self, files: bool = False) -> None:
        """Its sockets relayed no more and, with ``files``, its run folder copied into the lab's."""
        for relay in self._relays.values():
            relay.close()
        self._relays.clear()
        if files and not self.engine.cancelled.is_set():
            try:
                self._exec("copy back", [RUNDIR], lambda: remote.fetch_folder(self.container, RUNDIR, self.rundir))
            except remote.ArchiveError:
                raise  # the caller's to say
            except ScenarioError:
                pass  # a host whose engine is gone hands nothing over


def machine_address() -> str:
    """The first IPv4 address of the interface of this machine's default route (found by asking the
    kernel's tables with `ip`, not by sending anything)."""
    try:
        routes = json.loads(subprocess.run(["ip", "-j", "-4", "route", "show", "default"], capture_output=True,
                                           text=True, timeout=10, check=True).stdout or "[]")
        dev = routes[0]["dev"] if routes else ""
        if not dev:
            return ""
        links = json.loads(subprocess.run(["ip", "-j", "-4", "addr", "show", "dev", dev], capture_output=True,
                                          text=True, timeout=10, check=True).stdout or "[]")
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, IndexError):
        return ""
    for link in links:
        for info in link.get("addr_info", []):
            if info.get("family") == "inet" and info.get("local"):
                return str(info["local"])
    return ""


@dataclass(frozen=True)
class ImageInfo:
    """An image as the lab reads it: its id, tags, labels and when it was made."""

    id: str
    tags: tuple[str, ...]
    labels: dict[str, str]
    created: str


def _image_info(image: Any) -> ImageInfo:
    return ImageInfo(str(image.id), tuple(image.tags), dict(image.labels), str(image.attrs.get("Created", "")))


@dataclass(frozen=True)
class ImageTransfer:
    """What bringing a cell's images to an engine took: seconds, and where each came from."""

    seconds: float
    sources: dict[str, str]


@dataclass(eq=False)  # an engine is itself: compared and hashed by identity
class Engine:
    """One Docker engine, what the lab asks of it, and the guard around what the lab creates on it.

    Creations and the teardown that follows an interrupt take turns: a container the daemon is
    making while Ctrl-C lands is finished, and then removed, instead of appearing after the sweep.
    """

    client: docker.DockerClient
    name: str = "local"
    address: str = ""  # where containers on other engines reach the ports this one publishes
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Whether its containers see this machine's files (bind mounts): learnt at its first container.
    sees_files: bool | None = None
    _creating: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def connect(cls, spec: EngineSpec = LOCAL_ENGINE) -> Engine:
        """The engine of a lab.yaml `engines:` entry; every way of failing is one line naming it."""
        return cls(transport.dial(spec), spec.name, spec.address)

    def call(self, what: str, request: Callable[[], T], hint: str = "", resend: bool = True) -> T:
        """``request()`` through the transport's retry (``resend``: it may run twice); an EngineError
        saying ``what`` could not be done."""
        return transport.call(self.client, request, lambda exc: EngineError(self.name, f"cannot {what}: {why(exc)}",
                                                                            hint), resend)

    def close(self) -> None:
        self.client.close()

    def lost(self, within: float = 5.0) -> bool:
        """Whether the engine stops answering within ``within`` seconds (one that is shutting down may
        still answer a moment, with errors about its containers)."""
        try:
            wait_until(f"engine {self.name} to stop answering", lambda: None if self.alive() else True, within,
                       interval=0.5)
        except (LabError, ScenarioError):
            return False
        return True

    def alive(self) -> bool:
        try:
            self.call("answer", self.client.ping)
        except EngineError:
            return False
        return True

    def info(self) -> dict[str, Any]:
        """The daemon's `docker info`."""
        return dict(self.call("say what it is", self.client.info))

    def version(self) -> str:
        return str(self.call("say its version", self.client.version).get("Version", "?"))

    def capacity(self) -> int:
        """Cells it runs at once: one per core and per 2 GiB (1 when it cannot say)."""
        try:
            info = self.info()
        except EngineError:
            return 1
        cores = int(info.get("NCPU") or 1)
        memory = int(info.get("MemTotal") or 0) // (2 << 30)
        return max(1, min(cores, memory or 1))

    def key(self) -> str:
        """What names this engine's slots on this machine (its name when it cannot say)."""
        try:
            return slots.engine_key(self.info())
        except EngineError:
            return self.name

    def free_gb(self) -> tuple[float, str]:
        return resources.free_gb(self.client)

    def reach_address(self) -> str:
        """``address``, or the one derived for it: this machine's own address for a local engine."""
        if self.address:
            return self.address
        found = machine_address()
        if not found:
            raise LabError(f"engines.{self.name}.address: cannot be derived (no IPv4 address on this machine's "
                           "default route); set it in lab.yaml")
        return found

    def ensure_images(self, source: Engine, tags: list[str], registry: Registry | None = None) -> ImageTransfer:
        """The images a cell needs: pulled from ``registry`` when this engine lacks them and it has them,
        else streamed from ``source`` (digest tags make both idempotent)."""
        started = time.monotonic()
        sources: dict[str, str] = {}
        for tag in tags:
            if self.image_id(tag):
                sources[tag] = PRESENT
                continue
            if registry is not None and registry.pull(self.client, tag, self.name) is not None:
                sources[tag] = PULLED
                continue
            self.call(f"copy {tag} from engine {source.name}", functools.partial(self._load, source, tag))
            sources[tag] = COPIED
        return ImageTransfer(round(time.monotonic() - started, 1), sources)

    def _load(self, source: Engine, tag: str) -> None:
        self.client.api.load_image(source.client.api.get_image(tag))

    def image_id(self, tag: str) -> str:
        """The image's id, "" when the engine has no such image."""
        found = self.image(tag)
        return found.id if found else ""

    def image(self, tag: str) -> ImageInfo | None:
        """The image ``tag`` (or id) names, None when the engine has no such image."""
        try:
            return _image_info(self.call(f"say whether it has {tag}", lambda: self.client.images.get(tag)))
        except transport.NotFound:
            return None

    def images(self, label: str | list[str] = "", reference: str = "") -> list[ImageInfo]:
        """Its images with ``label`` (``key=value`` or ``key``; a list: every one of them) or whose
        name matches ``reference``."""
        filters = {k: v for k, v in (("label", label), ("reference", reference)) if v}
        found = self.call("list its images", lambda: self.client.images.list(filters=filters))
        return [_image_info(i) for i in found]

    def remove_image(self, tag: str, noprune: bool = False) -> bool:
        """The image gone; False when it was not there, or when another image depends on it (not the
        lab's to force)."""
        def remove() -> bool:
            try:
                self.client.images.remove(tag, noprune=noprune)
            except docker.errors.NotFound:
                return False
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    return False
                raise
            return True

        return self.call(f"remove {tag}", remove)

    def remove_lab_images(self) -> None:
        self.call("remove the lab's images", lambda: resources.remove_images(self.client))

    def container_status(self, name: str) -> str:
        """A container's status (running, exited...), "gone" when there is none of that name."""
        try:
            return str(self.call(f"say how {name} is", lambda: self.client.containers.get(name).status))
        except transport.NotFound:
            return "gone"

    def containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        """Its containers (running or not) with every one of ``labels``."""
        flt: dict[str, str | list[str] | bool] = {"label": [f"{k}={v}" for k, v in labels.items()]}
        found = self.call("list its containers",
                          lambda: self.client.containers.list(all=True, filters=flt, ignore_removed=True))
        return [ContainerInfo(str(c.id), str(c.name), str(c.status), dict(c.labels)) for c in found]

    def stats(self, container_id: str) -> dict[str, Any]:
        """A container's `docker stats`, once; none of a container gone since it was listed."""
        try:
            found = self.call("read a container's figures",
                              lambda: self.client.api.stats(container_id, stream=False, one_shot=True))
        except transport.NotFound:
            return {}
        return found if isinstance(found, dict) else {}

    def output_of(self, container_id: str, argv: list[str]) -> bytes:
        """What a command run in a container wrote (a probe, not a host's work: that is DockerHost.run);
        nothing of a container gone since it was listed."""
        try:
            result = self.call(f"run {argv[0]} in a container",
                               lambda: self.client.containers.get(container_id).exec_run(argv))
        except transport.NotFound:
            return b""
        return result.output if isinstance(result.output, bytes) else b""

    def find(self, lab: str | None = None, ns: Namespace | None = None) -> resources.Leftovers:
        return self.call("list what the lab has on it", lambda: resources.find(self.client, lab, ns))

    def remove(self, lab: str | None = None, ns: Namespace | None = None) -> resources.Leftovers:
        """What ``find`` finds, removed."""
        return self.call("remove what the lab has on it", lambda: resources.remove(self.client, lab, ns=ns))

    def dead_runs(self, lab: str | None) -> dict[str, resources.Leftovers]:
        return self.call("list what dead runs left", lambda: resources.dead_runs(self.client, lab))

    def remove_dead_runs(self, lab: str | None) -> resources.Leftovers:
        return self.call("remove what dead runs left", lambda: resources.remove_dead_runs(self.client, lab))

    def others_runs(self, lab: str | None) -> dict[str, tuple[str, resources.Leftovers]]:
        return self.call("list other machines' runs", lambda: resources.others_runs(self.client, lab))

    @contextlib.contextmanager
    def creating(self) -> Iterator[None]:
        with self._creating, resources.uninterrupted():
            if self.cancelled.is_set():
                raise Cancelled("the run was cancelled; nothing more is created")
            yield

    def cancel(self, ns: Namespace) -> resources.Leftovers:
        """Stops all further creation and removes what the namespace has on this engine."""
        with self._creating:
            self.cancelled.set()
        return self.remove(ns.lab, ns=ns)

    def run_container(self, image: str, role: str, ns: Namespace, rundir: Path, devices: tuple[str, ...],
                      network: str | None = None, publish: tuple[int, ...] = (),
                      limits: Limits | None = None) -> DockerHost:
        """A host container: on ``network``, or on none at all; ``publish``: ports published on this
        engine's address (the engine picks free host ports), reached there from other engines.

        Its run folder is ``rundir`` bind-mounted, on an engine that sees this machine's files; the
        first container on an engine finds out (``sees_files``): one that does not see the folder
        it was given is made again with a folder of its own (lab.engine.remote)."""
        limits = limits or Limits()
        rundir.mkdir(parents=True, exist_ok=True)
        rundir.chmod(rundir.stat().st_mode | stat.S_ISGID)  # what the host makes in it takes its group
        if self.sees_files is not False:
            try:
                host = self._container(SharedHost, image, role, ns, rundir, devices, network, publish, limits)
                self.sees_files = True
                return host
            except _NoHandshake:
                self.sees_files = False
                (rundir / HANDSHAKE).unlink(missing_ok=True)
        return self._container(CopiedHost, image, role, ns, rundir, devices, network, publish, limits)

    def _container(self, backend: type[DockerHost], image: str, role: str, ns: Namespace, rundir: Path,
                   devices: tuple[str, ...], network: str | None, publish: tuple[int, ...],
                   limits: Limits) -> DockerHost:
        shared = backend.shares_rundir
        address = self.reach_address() if publish else ""
        # (address, None): bound to that address only, on a free port the engine picks.
        ports: Any = {f"{p}/tcp": (address, None) for p in publish} or None
        if shared:
            (rundir / HANDSHAKE).touch()

        def run() -> Container:
            return self.client.containers.run(
                # Without a shared folder, the image's own command; the folder is made once it runs.
                image, HOST_COMMAND if shared else None, name=ns.name(role), hostname=role,
                detach=True, init=True, cap_add=["NET_ADMIN"],
                devices=[f"{d}:{d}:rwm" for d in devices],
                # A mount, not a volume: an engine that lacks the folder refuses it instead of making it.
                mounts=[Mount(RUNDIR, str(rundir.resolve()), type="bind")] if shared else None,
                labels=resources.labels(ns.lab, ns, role=role), network=network,
                network_mode=None if network else "none",
                # memswap equal to memory: no swap on top of the cap (Docker's default doubles it).
                mem_limit=f"{limits.host_memory_mb}m", memswap_limit=f"{limits.host_memory_mb}m",
                pids_limit=limits.host_pids, ports=ports)

        try:
            with self.creating():
                container = self.call(f"start the {role} host from {image}", run, resend=False)
        except EngineError as exc:
            said = why(exc.__cause__) if exc.__cause__ is not None else exc.problem
            if shared and "bind source path does not exist" in said:
                raise _NoHandshake(f"engine {self.name} has no {rundir}") from exc
            missing = next((d for d in devices if f'custom device "{d}"' in said), "")
            if missing:
                raise EngineError(self.name, f"has no {missing}, which every lab host needs", f"on that engine's "
                                  f"machine, load its module (modprobe {Path(missing).name}) or use another engine "
                                  f"(Docker said: {said})") from exc
            raise
        host = backend(self, container, role, rundir)
        try:
            self._wait_running(host, 30.0)
        except BaseException:
            with contextlib.suppress(*TRANSPORT_ERRORS):
                container.remove(force=True)
            raise
        if network:
            host.address = str(container.attrs["NetworkSettings"]["Networks"].get(network, {}).get("IPAddress", ""))
        if publish:
            host.published = {p: (address, self._published_port(container, p)) for p in publish}
        return host

    def _published_port(self, container: Container, port: int) -> int:
        self.call(f"read the published ports of {container.name}", container.reload)
        bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{port}/tcp") or []
        if not bindings:
            raise LabError(f"{container.name}: port {port} was not published")
        return int(bindings[0]["HostPort"])

    def _wait_running(self, host: DockerHost, timeout: float) -> None:
        """Until the host runs and, with a shared run folder, has taken the handshake out of it:
        then the lab and the host see the same files."""
        container = host.container

        def running() -> bool | None:
            self.call(f"say how the {host.role} host is", container.reload)
            if container.status in ("exited", "dead"):
                if host.shares_rundir and container.attrs["State"].get("ExitCode") == NO_HANDSHAKE:
                    raise _NoHandshake(f"engine {self.name} does not see {host.rundir}")
                logs = self.call(f"read the {host.role} host's log", lambda: container.logs(tail=10))
                raise LabError(f"the {host.role} host did not start (status {container.status}): "
                               f"{logs.decode(errors='replace').strip()}")
            if container.status != "running" or (host.shares_rundir and host.path(HANDSHAKE).exists()):
                return None
            return True

        wait_until(f"the {host.role} host to run", running, timeout, interval=0.02, last=lambda: str(container.status))
        if not host.shares_rundir:
            host.check(["mkdir", "-p", RUNDIR])

    def remove_host(self, host: DockerHost) -> None:
        with contextlib.suppress(*TRANSPORT_ERRORS):
            host.container.remove(force=True)

    def shares_files(self, image: str, ns: Namespace) -> bool:
        """Whether hosts on this engine see this machine's files, found with a host of ``image``
        when no host has told yet."""
        if self.sees_files is None:
            with self.throwaway(image, "files", ns, devices=()):
                pass
        return bool(self.sees_files)

    @contextlib.contextmanager
    def throwaway(self, image: str, role: str, ns: Namespace,
                  devices: tuple[str, ...] = (TUN,)) -> Iterator[DockerHost]:
        """A host with no network for a short job (the KVM probe, the capability check), removed after."""
        rundir = Path(tempfile.mkdtemp(prefix=f"{ns.prefix}-{role}-"))
        host = None
        try:
            host = self.run_container(image, role, ns, rundir, devices)
            yield host
        finally:
            if host is not None:
                host.let_go()
                self.remove_host(host)
            shutil.rmtree(rundir, ignore_errors=True)


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    status: str
    labels: dict[str, str]


@dataclass(frozen=True)
class HostSpec:
    image: str
    ns: Namespace
    devices: tuple[str, ...] = (TUN,)
    ssh_key: str = ""  # an authorized public key: the hosts then run sshd (key-only, loopback)
    published: tuple[int, ...] = ()  # the secondary's ports the primary uses, published when split
    secondary_image: str = ""  # the secondary's, when it runs another build than the primary's
    limits: Limits = Limits()  # each host's memory and processes

    def image_of(self, role: str) -> str:
        return self.secondary_image if role == "secondary" and self.secondary_image else self.image


class LabHosts:
    """The primary and secondary hosts and their networks, as one context.

    Both hosts on one engine share an internal network (no route off this machine) and reach each
    other by name. Split over two engines (``secondary_engine``), each host sits on a bridge of its
    own engine, and the secondary publishes ``spec.published`` on its engine's address, where the
    primary reaches them. Entering creates the networks and both containers (each with its tap up);
    leaving removes them, whatever happened in between. The run folders stay: they are the artefacts.
    """

    ROLES = ("primary", "secondary")

    def __init__(self, engine: Engine, spec: HostSpec, rundir: Path, start_timeout: float,
                 secondary_engine: Engine | None = None) -> None:
        self.engine = engine
        self.engines = {"primary": engine, "secondary": secondary_engine or engine}
        self.spec = spec
        self.rundir = rundir
        self.start_timeout = start_timeout
        self.networks: dict[str, Network] = {}
        self.hosts: dict[str, DockerHost] = {}

    @property
    def split(self) -> bool:
        return self.engines["primary"] is not self.engines["secondary"]

    @property
    def network(self) -> Network | None:
        return self.networks.get("secondary")

    @property
    def primary(self) -> DockerHost:
        return self.hosts["primary"]

    @property
    def secondary(self) -> DockerHost:
        return self.hosts["secondary"]

    def create(self) -> LabHosts:
        """The hosts and their networks; on any failure, what was made is removed again."""
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> LabHosts:
        return self.create()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @contextlib.contextmanager
    def kept_if(self, keep: Callable[[], bool]) -> Iterator[LabHosts]:
        """Creates the hosts; on leaving, removes them unless ``keep()`` says otherwise."""
        self.create()
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

    def _network(self, role: str) -> Network:
        engine, ns = self.engines[role], self.spec.ns
        for network in self.networks.values():
            if network.client is engine.client:
                return network
        with engine.creating():
            # internal unless split: then the primary must reach the secondary's engine address.
            return engine.call(f"create the lab network {ns.name('net')}", lambda: engine.client.networks.create(
                ns.name("net"), driver="bridge", internal=not self.split,
                labels=resources.labels(ns.lab, ns, role="network")), resend=False)

    def _create(self) -> None:
        for role in self.ROLES:
            self.networks[role] = self._network(role)
        # Both hosts at once: each is a container start and a few execs, mostly waiting on the daemon.
        with concurrent.futures.ThreadPoolExecutor(len(self.ROLES), thread_name_prefix="lab-hosts") as pool:
            started = {role: pool.submit(self._host, role) for role in self.ROLES}
            self.hosts.update({role: host.result() for role, host in started.items()})

    def _host(self, role: str) -> DockerHost:
        hostdir = self.rundir / role
        hostdir.mkdir(parents=True, exist_ok=True)
        publish = self.spec.published if self.split and role == "secondary" else ()
        host = self.engines[role].run_container(self.spec.image_of(role), role, self.spec.ns, hostdir,
                                                self.spec.devices, network=self.networks[role].name, publish=publish,
                                                limits=self.spec.limits)
        host.add_tap()
        if self.spec.ssh_key:
            self._start_sshd(host)
        return host

    def _start_sshd(self, host: DockerHost) -> None:
        host.write_text("ssh/authorized_keys", self.spec.ssh_key + "\n")
        # A host key of this host only, never shipped in the image; ed25519 alone: RSA keys take
        # seconds to make on a busy machine.
        host.check(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/etc/ssh/ssh_host_ed25519_key"],
                   timeout=self.start_timeout)
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
        """Each host's files brought in, then everything of the namespace removed: the removal also
        when bringing the files in failed (an archive the lab refused), whose error then follows."""
        refused: list[remote.ArchiveError] = []
        try:
            for host in self.hosts.values():
                try:
                    host.let_go(files=True)
                except remote.ArchiveError as exc:
                    refused.append(exc)  # the other host's files still come in
        finally:
            self._remove()
        if refused:
            raise refused[0]

    def _remove(self) -> None:
        # By label, not only what this object holds: an interrupt can land between the daemon
        # creating a container or network and this process hearing of it.
        for engine in dict.fromkeys(self.engines.values()):
            try:
                engine.remove(self.spec.ns.lab, ns=self.spec.ns)
            except (EngineError, Timeout):
                pass  # an engine that is gone took its containers with it; `lab status` names what is left
        self.hosts.clear()
        self.networks.clear()

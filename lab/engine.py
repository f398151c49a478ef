"""Lab hosts on a Docker engine: containers, each with its own tap and run folder, on an internal
network of their own.

This module is the lab's one boundary with the Docker SDK for hosts: it implements lab.host's
``Host`` over ``docker exec`` and a bind-mounted run folder, and it turns the SDK's errors into the
lab's (a host that cannot be made is a LabError; a command that cannot run is a ScenarioError).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import docker
import docker.errors
import paramiko
import requests.exceptions
from docker.models.containers import Container
from docker.models.networks import Network
from docker.types import Mount

from lab import remote, resources
from lab.config import LOCAL_ENGINE, EngineSpec, Limits
from lab.errors import Cancelled, LabError, ScenarioError
from lab.host import RUNDIR, ExecResult, Host
from lab.namespace import Namespace
from lab.waiting import wait_until

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
    """A lab host that is a container. Its run folder is a folder of the lab's, bind-mounted
    (``shared``), or, on an engine that does not see this machine's files, a folder of its own that
    the lab reads and writes through the engine (lab.remote) and copies back when the host goes."""

    def __init__(self, container: Container, role: str, rundir: Path,
                 cancel: threading.Event | None = None, revive: Callable[[], bool] = lambda: False,
                 shared: bool = True) -> None:
        self.revive = revive  # re-establishes its engine's connection when it dropped
        self.container = container
        self.role = role
        self.rundir = rundir
        self.cancel = cancel
        self.shared = shared
        self.published: dict[int, tuple[str, int]] = {}
        self.address = ""  # on the lab network
        self._relays: dict[str, remote.SocketRelay] = {}

    @property
    def name(self) -> str:
        return str(self.container.name)

    def path(self, name: str) -> Path:
        local = self.rundir / name
        if not self.shared:
            self._files("read", name, lambda: remote.fetch(self.container, f"{RUNDIR}/{name}", local))
        return local

    def own(self, name: str) -> Path:
        return self.rundir / name

    def remove(self, name: str) -> None:
        if not self.shared:
            self.check(["rm", "-f", f"{RUNDIR}/{name}"])
        (self.rundir / name).unlink(missing_ok=True)

    def write_text(self, name: str, text: str) -> None:
        if self.shared:
            super().write_text(name, text)
            return
        self._put(name, text.encode(), 0o644)

    def write_secret(self, name: str, data: bytes) -> None:
        if self.shared:
            super().write_secret(name, data)
            return
        self._put(name, data, 0o600)

    def _put(self, name: str, data: bytes, mode: int) -> None:
        self.check(["mkdir", "-p", os.path.dirname(f"{RUNDIR}/{name}")])
        self._files("write", name, lambda: remote.put(self.container, f"{RUNDIR}/{name}", data, mode))

    def socket(self, name: str) -> Path:
        if self.shared:
            return self.path(name)
        if name not in self._relays:
            self._relays[name] = remote.SocketRelay(self.container, f"{RUNDIR}/{name}", self.rundir / name)
        return self._relays[name].local

    def let_go(self, files: bool = False) -> None:
        """The host is about to go: its sockets relayed no more and, with ``files``, its run folder's
        files brought into the lab's (a shared one has them already; an interrupted run takes none)."""
        for relay in self._relays.values():
            relay.close()
        self._relays.clear()
        if files and self.shared:
            with contextlib.suppress(ScenarioError):  # a host that is gone already hands nothing over
                self.hand_over()
        if files and not self.shared and not (self.cancel is not None and self.cancel.is_set()):
            with contextlib.suppress(*remote.TRANSPORT_ERRORS):  # not ArchiveError: the caller's to say
                remote.fetch_folder(self.container, RUNDIR, self.rundir)

    def hand_over(self, name: str = "") -> None:
        """What root made in the shared run folder (all of it, or ``name``) made the lab user's own:
        some files are written for their owner alone (QEMU saves a guest 0600). A folder of the
        lab's own (not shared) holds only what the lab itself fetched."""
        uid, gid = os.geteuid(), os.getegid()
        if self.shared and uid != 0:
            self.check(["chown", "-R", f"{uid}:{gid}", os.path.join(RUNDIR, name)])

    def _files(self, what: str, name: str, call: Callable[[], Any]) -> Any:
        return self._exec(what, [f"{RUNDIR}/{name}"], call)

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

    def _exec(self, what: str, argv: list[str], call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (docker.errors.DockerException, paramiko.SSHException, OSError, EOFError) as exc:
            # A dropped SSH connection to the engine is made again, once, and a request the engine's
            # end hung up on unanswered is sent again, once; anything else is final.
            if not (self.revive() or _unanswered(exc)):
                raise ScenarioError(f"{self.role}: cannot {what} {shlex.join(argv)}: {_why(exc)}") from exc
        try:
            return call()
        except (docker.errors.DockerException, paramiko.SSHException, OSError, EOFError) as exc:
            raise ScenarioError(f"{self.role}: cannot {what} {shlex.join(argv)}: {_why(exc)}") from exc


def _unanswered(exc: BaseException) -> bool:
    """A request that got no response at all: over ssh://, the far end's `docker system dial-stdio`
    can hang up before it answers; a moment later, sent again, it is answered."""
    if isinstance(exc, requests.exceptions.ConnectionError):
        time.sleep(0.5)
        return True
    return False


SESSION_WAIT = 30.0  # seconds a refused SSH session is asked for again
SSH_POOL = "http+docker://ssh"  # the one pool of an ssh:// client's idle connections


def _bounded_sessions(client: docker.DockerClient) -> None:
    """Keeps an ssh:// client within what the engine's sshd allows, and patient with its refusals.

    Every request the SDK sends over ssh:// runs in a session of one SSH connection, and sshd refuses
    sessions beyond its MaxSessions (10 by default) while others are open. The SDK keeps idle
    connections in a pool per request URL (one per container, one per exec): a few dozen requests
    hold every session the sshd grants and the next is refused, for good. One pool holds at most
    ``max_pool_size`` idle sessions; a burst beyond what is left (a teardown removing containers at
    once, cells side by side) can still meet a refusal a moment before sessions close, and a refused
    session carried nothing: asking again is safe for every request, even one that creates something.
    """
    adapter = getattr(client.api, "_custom_adapter", None)
    ssh_client = getattr(adapter, "ssh_client", None)
    transport = ssh_client.get_transport() if ssh_client is not None else None
    if adapter is None or transport is None:
        return
    if "get_connection" not in vars(adapter):
        per_url = adapter.get_connection
        adapter.get_connection = lambda url, proxies=None: per_url(SSH_POOL, proxies)
    open_session = transport.open_session

    def patiently(*args: Any, **kwargs: Any) -> paramiko.Channel:
        deadline = time.monotonic() + SESSION_WAIT
        while True:
            try:
                return open_session(*args, **kwargs)
            except paramiko.SSHException:
                # Refusals reach one of the threads opening sessions at once as ChannelException,
                # the others as "Unable to open channel": paramiko keeps a single last error.
                if not transport.is_active() or time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    transport.open_session = patiently  # type: ignore[method-assign]


def _ssh_trouble(exc: paramiko.SSHException, url: str) -> str:
    text = str(exc)
    if "known_hosts" in text:
        return (f"{text}; the host key is not known here and is never accepted silently: check it, then add "
                "it to ~/.ssh/known_hosts")
    if isinstance(exc, paramiko.AuthenticationException) or "authentication" in text.lower():
        return f"SSH refused the login ({text}); give an IdentityFile for that host in ~/.ssh/config"
    return f"SSH failed: {text}"


def ssh_url(url: str) -> str:
    """An ssh:// URL with the port ~/.ssh/config gives its host, when it names none: the Docker SDK
    would take 22, while it takes identity and host name from that same file."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "ssh" or parsed.port is not None or not parsed.hostname:
        return url
    config = Path("~/.ssh/config").expanduser()
    if not config.is_file():
        return url
    ssh_config = paramiko.SSHConfig()
    with config.open() as f:
        ssh_config.parse(f)
    port = ssh_config.lookup(parsed.hostname).get("port")
    return f"{url}:{port}" if port else url


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


def _published_port(container: Container, port: int) -> int:
    try:
        container.reload()
    except docker.errors.DockerException as exc:
        raise LabError(f"{container.name}: cannot read its published ports: {_why(exc)}") from exc
    bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{port}/tcp") or []
    if not bindings:
        raise LabError(f"{container.name}: port {port} was not published")
    return int(bindings[0]["HostPort"])


def _why(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(eq=False)  # an engine is itself: compared and hashed by identity
class Engine:
    """One Docker engine and the guard around what the lab creates on it.

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
        if not spec.url:
            client = resources.connect()
        else:
            try:
                # Each pooled connection is a session open on the engine's sshd (MaxSessions: 10 by
                # default): a few kept idle, the rest opened and closed as needed.
                client = docker.DockerClient(base_url=ssh_url(spec.url), timeout=120, use_ssh_client=False,
                                             max_pool_size=4)
                _bounded_sessions(client)
                client.ping()
            except paramiko.SSHException as exc:
                raise LabError(f"engine {spec.name} ({spec.url}): {_ssh_trouble(exc, spec.url)}") from exc
            except (docker.errors.DockerException, OSError, EOFError) as exc:
                raise LabError(f"engine {spec.name} ({spec.url}) does not answer: {_why(exc)}; is its daemon "
                               "up (scripts/second-engine status)?") from exc
        return cls(client, spec.name, spec.address)

    def lost(self, within: float = 5.0) -> bool:
        """Whether the engine stops answering within ``within`` seconds (one that is shutting down may
        still answer a moment, with errors about its containers)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.5)
        return False

    def alive(self) -> bool:
        for attempt in range(2):
            try:
                self.client.ping()
                return True
            except (docker.errors.DockerException, OSError, paramiko.SSHException, EOFError):
                if attempt or not self.revive():
                    return False
        return False

    def revive(self) -> bool:
        """Re-establishes a dropped SSH connection to this engine (the SDK's paramiko transport
        reconnects only when it has none, not when the one it has died); True when it did."""
        adapter = getattr(self.client.api, "_custom_adapter", None)
        ssh_client = getattr(adapter, "ssh_client", None)
        if adapter is None or ssh_client is None:
            return False
        transport = ssh_client.get_transport()
        if transport is not None and transport.is_active():
            return False
        ssh_client.close()
        adapter.pools.clear()
        try:
            adapter._connect()
        except (paramiko.SSHException, OSError, EOFError):
            return False
        _bounded_sessions(self.client)
        return True

    def reach_address(self) -> str:
        """``address``, or the one derived for it: this machine's own address for a local engine."""
        if self.address:
            return self.address
        found = machine_address()
        if not found:
            raise LabError(f"engines.{self.name}.address: cannot be derived (no IPv4 address on this machine's "
                           "default route); set it in lab.yaml")
        return found

    def ensure_images(self, source: Engine, tags: list[str]) -> float:
        """The images a cell needs, streamed from ``source`` when this engine lacks them (no registry;
        digest tags make it idempotent). Returns the seconds spent."""
        started = time.monotonic()
        for tag in tags:
            try:
                self.has_image(tag)
                continue
            except docker.errors.ImageNotFound:
                pass
            try:
                self.client.api.load_image(source.client.api.get_image(tag))
            except (docker.errors.DockerException, OSError) as exc:
                raise LabError(f"cannot copy {tag} from engine {source.name} to engine {self.name}: "
                               f"{_why(exc)}") from exc
        return round(time.monotonic() - started, 1)

    def has_image(self, tag: str) -> str:
        """The image's id; raises ImageNotFound, or LabError when the engine cannot say."""
        for attempt in range(2):
            try:
                return str(self.client.images.get(tag).id)
            except docker.errors.ImageNotFound:
                raise
            except (docker.errors.DockerException, paramiko.SSHException, OSError, EOFError) as exc:
                if attempt or not (self.revive() or _unanswered(exc)):
                    raise LabError(f"engine {self.name} cannot say whether it has {tag}: {_why(exc)}") from exc
        raise AssertionError("unreachable")

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
        return resources.remove(self.client, ns.lab, ns=ns)

    def run_container(self, image: str, role: str, ns: Namespace, rundir: Path, devices: tuple[str, ...],
                      network: str | None = None, publish: tuple[int, ...] = (),
                      limits: Limits | None = None) -> DockerHost:
        """A host container: on ``network``, or on none at all; ``publish``: ports published on this
        engine's address (the engine picks free host ports), reached there from other engines.

        Its run folder is ``rundir`` bind-mounted, on an engine that sees this machine's files; the
        first container on an engine finds out (``sees_files``): one that does not see the folder
        it was given is made again with a folder of its own (lab.remote)."""
        limits = limits or Limits()
        rundir.mkdir(parents=True, exist_ok=True)
        rundir.chmod(rundir.stat().st_mode | stat.S_ISGID)  # what the host makes in it takes its group
        if self.sees_files is not False:
            try:
                host = self._container(image, role, ns, rundir, devices, network, publish, limits, shared=True)
                self.sees_files = True
                return host
            except _NoHandshake:
                self.sees_files = False
                (rundir / HANDSHAKE).unlink(missing_ok=True)
        return self._container(image, role, ns, rundir, devices, network, publish, limits, shared=False)

    def _container(self, image: str, role: str, ns: Namespace, rundir: Path, devices: tuple[str, ...],
                   network: str | None, publish: tuple[int, ...], limits: Limits, shared: bool) -> DockerHost:
        address = self.reach_address() if publish else ""
        # (address, None): bound to that address only, on a free port the engine picks.
        ports: Any = {f"{p}/tcp": (address, None) for p in publish} or None
        if shared:
            (rundir / HANDSHAKE).touch()
        try:
            with self.creating():
                container = self.client.containers.run(
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
        except docker.errors.DockerException as exc:
            if shared and "bind source path does not exist" in _why(exc):
                raise _NoHandshake(f"engine {self.name} has no {rundir}") from exc
            missing = next((d for d in devices if f'custom device "{d}"' in _why(exc)), "")
            if missing:
                raise LabError(f"engine {self.name} has no {missing}, which every lab host needs: on that engine's "
                               f"machine, load its module (modprobe {Path(missing).name}) or use another engine "
                               f"(Docker said: {_why(exc)})") from exc
            raise LabError(f"cannot start the {role} host from {image} on engine {self.name}: {_why(exc)}") from exc
        host = DockerHost(container, role, rundir, self.cancelled, self.revive, shared=shared)
        try:
            self._wait_running(host, 30.0)
        except BaseException:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)
            raise
        if network:
            host.address = str(container.attrs["NetworkSettings"]["Networks"].get(network, {}).get("IPAddress", ""))
        if publish:
            host.published = {p: (address, _published_port(container, p)) for p in publish}
        return host

    def _wait_running(self, host: DockerHost, timeout: float) -> None:
        """Until the host runs and, with a shared run folder, has taken the handshake out of it:
        then the lab and the host see the same files."""
        def running() -> bool | None:
            try:
                host.container.reload()
            except docker.errors.DockerException as exc:
                raise LabError(f"the {host.role} host went away on engine {self.name}: {_why(exc)}") from exc
            if host.container.status in ("exited", "dead"):
                if host.shared and host.container.attrs["State"].get("ExitCode") == NO_HANDSHAKE:
                    raise _NoHandshake(f"engine {self.name} does not see {host.rundir}")
                raise LabError(f"the {host.role} host did not start (status {host.container.status}): "
                               f"{host.container.logs(tail=10).decode(errors='replace').strip()}")
            if host.container.status != "running" or (host.shared and host.path(HANDSHAKE).exists()):
                return None
            return True

        wait_until(f"the {host.role} host to run", running, timeout, interval=0.02,
                   last=lambda: str(host.container.status))
        if not host.shared:
            host.check(["mkdir", "-p", RUNDIR])

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
                with contextlib.suppress(docker.errors.DockerException):
                    host.container.remove(force=True)
            shutil.rmtree(rundir, ignore_errors=True)


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

    def _network(self, role: str) -> Network:
        engine, ns = self.engines[role], self.spec.ns
        for network in self.networks.values():
            if network.client is engine.client:
                return network
        try:
            with engine.creating():
                # internal unless split: then the primary must reach the secondary's engine address.
                network = engine.client.networks.create(ns.name("net"), driver="bridge", internal=not self.split,
                                                        labels=resources.labels(ns.lab, ns, role="network"))
        except docker.errors.DockerException as exc:
            raise LabError(f"cannot create the lab network {ns.name('net')} on engine {engine.name}: "
                           f"{_why(exc)}") from exc
        return network

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
                resources.remove(engine.client, self.spec.ns.lab, ns=self.spec.ns)
            except (docker.errors.DockerException, OSError, paramiko.SSHException):
                pass  # an engine that is gone took its containers with it; `lab status` names what is left
        self.hosts.clear()
        self.networks.clear()

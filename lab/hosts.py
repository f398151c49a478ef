"""Lab hosts: containers on an internal Docker network, each with its own tap and run directory.

A host is where one QEMU runs, with whatever helpers its side of the scenario needs. The lab talks to
a host through ``docker exec`` and through its run directory, a host folder bind-mounted at
``/run/lab`` that holds QEMU's QMP socket, logs, console and captures.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.networks import Network

from lab import resources
from lab.errors import LabError, ScenarioError, Timeout

RUNDIR = "/run/lab"
TAP = "lab-tap0"


@dataclass(frozen=True)
class ExecResult:
    """What a command in a host did (the shape of testinfra's CommandResult)."""

    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def succeeded(self) -> bool:
        return self.exit_status == 0


def _text(data: object) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else ""


class Process:
    """A background process in a host, started by ``Host.spawn``; output goes to ``<name>.log``."""

    def __init__(self, host: Host, name: str, argv: list[str]) -> None:
        self.host = host
        self.name = name
        self.argv = argv
        self.log = host.path(f"{name}.log")
        self._pidfile = host.path(f"{name}.pid")
        self._rcfile = host.path(f"{name}.rc")

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)

    def pid(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._pidfile.read_text().strip() if self._pidfile.exists() else ""
            if text:
                return int(text)
            time.sleep(0.02)
        raise Timeout(f"{self.host.role}: {self.name} did not start within {timeout:.0f} s")

    @property
    def returncode(self) -> int | None:
        text = self._rcfile.read_text().strip() if self._rcfile.exists() else ""
        return int(text) if text else None

    def send_signal(self, signo: int) -> None:
        self.host.run(["kill", f"-{signo}", str(self.pid())], timeout=10)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.returncode
            if rc is not None:
                return rc
            time.sleep(0.05)
        raise Timeout(f"{self.host.role}: {self.name} did not exit within {timeout:.0f} s")

    def stop(self, timeout: float = 10.0, signo: int = signal.SIGTERM) -> int:
        """Asks the process to finish, then kills it when it does not within ``timeout``."""
        rc = self.returncode
        if rc is not None:
            return rc
        self.send_signal(signo)
        try:
            return self.wait(timeout)
        except Timeout:
            self.send_signal(signal.SIGKILL)
            return self.wait(5.0)

    def tail(self, lines: int = 20) -> str:
        if not self.log.exists():
            return "(no output)"
        text = self.log.read_text(errors="replace").rstrip().splitlines()
        return "\n".join(text[-lines:]) or "(no output)"


class Host:
    def __init__(self, container: Container, role: str, rundir: Path | None) -> None:
        self.container = container
        self.role = role
        self.rundir = rundir

    @property
    def name(self) -> str:
        """The container's name, which is also its host name on the lab network."""
        return str(self.container.name)

    def path(self, name: str) -> Path:
        """The lab-side path of a file that the host sees as ``/run/lab/<name>``."""
        if self.rundir is None:
            raise ScenarioError(f"{self.role}: this host has no run folder shared with the lab")
        return self.rundir / name

    def run(self, argv: list[str], timeout: float = 30.0) -> ExecResult:
        # docker exec has no timeout of its own; coreutils' does, inside the host.
        wrapped = ["timeout", "-k", "2", str(int(timeout) + 1), *argv]
        try:
            rc, (out, err) = self.container.exec_run(wrapped, demux=True)
        except docker.errors.APIError as exc:
            raise ScenarioError(f"{self.role}: cannot run {shlex.join(argv)}: {exc.explanation}") from exc
        return ExecResult(shlex.join(argv), -1 if rc is None else rc, _text(out), _text(err))

    def check(self, argv: list[str], timeout: float = 30.0) -> ExecResult:
        result = self.run(argv, timeout)
        if not result.succeeded:
            raise ScenarioError(f"{self.role}: `{result.command}` exited {result.exit_status}: "
                                f"{(result.stderr or result.stdout).strip()[-500:]}")
        return result

    def spawn(self, name: str, argv: list[str]) -> Process:
        proc = Process(self, name, argv)
        for stale in (proc._pidfile, proc._rcfile, proc.log):
            stale.unlink(missing_ok=True)
        script = (f'"$@" > {RUNDIR}/{name}.log 2>&1 & pid=$!; echo $pid > {RUNDIR}/{name}.pid; '
                  f'wait $pid; echo $? > {RUNDIR}/{name}.rc')
        self.container.exec_run(["sh", "-c", script, "sh", *argv], detach=True)
        proc.pid()
        return proc


@dataclass(frozen=True)
class HostSpec:
    image: str
    lab: str
    devices: tuple[str, ...] = ("/dev/net/tun",)
    ssh_key: str = ""  # an authorized public key: the hosts then run sshd (key-only, loopback)


class LabHosts:
    """The primary and secondary hosts and their internal network, as one context.

    Entering creates the network and both containers (each with its tap up); leaving removes them,
    whatever happened in between. The run directories stay: they are the scenario's artefacts.
    """

    ROLES = ("primary", "secondary")

    def __init__(self, client: docker.DockerClient, spec: HostSpec, rundir: Path, start_timeout: float) -> None:
        self.client = client
        self.spec = spec
        self.rundir = rundir
        self.start_timeout = start_timeout
        self.network: Network | None = None
        self.hosts: dict[str, Host] = {}

    @property
    def primary(self) -> Host:
        return self.hosts["primary"]

    @property
    def secondary(self) -> Host:
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
        resources.refuse_leftovers(self.client, lab)
        # internal: no route off this machine; the lab's traffic stays between its hosts.
        with resources.uninterrupted():
            self.network = self.client.networks.create(f"{lab}-net", driver="bridge", internal=True,
                                                       labels=resources.labels(lab, role="network"))
        for role in self.ROLES:
            hostdir = self.rundir / role
            hostdir.mkdir(parents=True, exist_ok=True)
            try:
                with resources.uninterrupted():
                    container = self.client.containers.run(
                        self.spec.image, name=f"{lab}-{role}", hostname=role, detach=True, init=True,
                        network=self.network.name, cap_add=["NET_ADMIN"],
                        devices=[f"{d}:{d}:rwm" for d in self.spec.devices],
                        volumes={str(hostdir.resolve()): {"bind": RUNDIR, "mode": "rw"}},
                        labels=resources.labels(lab, role=role))
            except docker.errors.APIError as exc:
                raise LabError(f"cannot start the {role} host from {self.spec.image}: {exc.explanation}") from exc
            self.hosts[role] = Host(container, role, hostdir)
        for host in self.hosts.values():
            self._wait_running(host)
            host.check(["ip", "tuntap", "add", "dev", TAP, "mode", "tap"])
            host.check(["ip", "link", "set", TAP, "up"])
            if self.spec.ssh_key:
                self._start_sshd(host)

    def _start_sshd(self, host: Host) -> None:
        keys = host.path("ssh/authorized_keys")
        keys.parent.mkdir(exist_ok=True)
        keys.write_text(self.spec.ssh_key + "\n")
        host.check(["ssh-keygen", "-A"])  # host keys of this host only, never shipped in the image
        sshd = host.spawn("sshd", ["/usr/sbin/sshd", "-D", "-e"])
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if host.run(["sh", "-c", "ss -ltn | grep -q '127.0.0.1:22 '"], timeout=5).succeeded:
                return
            if sshd.returncode is not None:
                break
            time.sleep(0.1)
        raise LabError(f"sshd did not start in the {host.role} host: {sshd.tail(5)}")

    def _wait_running(self, host: Host) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            host.container.reload()
            if host.container.status == "running":
                return
            if host.container.status in ("exited", "dead"):
                break
            time.sleep(0.1)
        raise LabError(f"the {host.role} host did not start (status {host.container.status}): "
                       f"{host.container.logs(tail=10).decode(errors='replace').strip()}")

    def close(self) -> None:
        # By label, not only what this object holds: an interrupt can land between the daemon
        # creating a container or network and this process hearing of it.
        resources.remove(self.client, self.spec.lab)
        self.hosts.clear()
        self.network = None

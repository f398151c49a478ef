"""What the QEMU layer needs of a lab host, whatever runs it: run a command, start a process, read
and write the files of its run folder, reach a unix socket in it.

``Host`` is the interface; lab.engine implements it over the Docker SDK. Above this module nothing
knows how a host is made, which is what lets the scenario, QEMU and QMP code run unchanged on any
engine. The host sees its run folder as ``RUNDIR``; the lab sees the same files through ``path()``.
"""

from __future__ import annotations

import abc
import os
import shlex
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from lab.errors import ScenarioError, Timeout
from lab.waiting import wait_until

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


class Host(abc.ABC):
    """One lab host: where one QEMU runs, with the helpers its side of a scenario needs.

    ``cancel``, when set, ends every wait on this host at once (the run was interrupted)."""

    role: str
    cancel: threading.Event | None = None
    # Whether the lab and the host see one run folder: then what the lab places there (a saved guest)
    # reaches QEMU as it is, and a person reaches the host's sockets there (a kept lab).
    shares_rundir: bool = True

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Where the other hosts of the lab reach this one (its name on the lab network)."""

    @abc.abstractmethod
    def run(self, argv: list[str], timeout: float = 30.0) -> ExecResult:
        """Runs a command to its end, bounded by ``timeout``."""

    @abc.abstractmethod
    def start(self, argv: list[str]) -> None:
        """Starts a command in the background and returns at once."""

    @abc.abstractmethod
    def path(self, name: str) -> Path:
        """The lab-side path of the file the host sees as ``RUNDIR/<name>``, as it is now."""

    def own(self, name: str) -> Path:
        """A file the lab writes beside the host's (a transcript, a record it received): never the host's."""
        return self.path(name)

    def remove(self, name: str) -> None:
        """The file the host sees as ``RUNDIR/<name>`` gone, if it was there."""
        self.path(name).unlink(missing_ok=True)

    def reach(self, port: int) -> tuple[str, int]:
        """Where the lab's other host reaches this host's TCP ``port``."""
        return self.name, port

    def socket(self, name: str) -> Path:
        """A unix socket the host made in its run folder, as the lab reaches it."""
        return self.path(name)

    def read_from(self, name: str, offset: int, limit: int) -> bytes:
        """At most ``limit`` bytes of ``RUNDIR/<name>`` from ``offset`` on (b"" without the file):
        what a file that grows gained since the last read."""
        try:
            with self.path(name).open("rb") as f:
                f.seek(offset)
                return f.read(limit)
        except FileNotFoundError:
            return b""

    def read_text(self, name: str) -> str:
        path = self.path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def write_text(self, name: str, text: str) -> None:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def write_secret(self, name: str, data: bytes) -> None:
        """``data`` as a file no one but its owner reads, from its first byte on."""
        path = self.path(name)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def add_tap(self) -> None:
        """The tap QEMU's netdev opens, up (in one command: each is a round trip to the engine)."""
        self.check(["sh", "-c", f"ip tuntap add dev {TAP} mode tap && ip link set {TAP} up"])

    def check(self, argv: list[str], timeout: float = 30.0) -> ExecResult:
        result = self.run(argv, timeout)
        if not result.succeeded:
            raise ScenarioError(f"{self.role}: `{result.command}` exited {result.exit_status}: "
                                f"{(result.stderr or result.stdout).strip()[-500:]}")
        return result

    def spawn(self, name: str, argv: list[str]) -> Process:
        """A background process whose output goes to ``<name>.log`` and whose exit status is kept."""
        proc = Process(self, name, argv)
        for stale in (proc.pidfile, proc.rcfile, proc.logfile):
            self.remove(stale)
        script = (f'"$@" > {RUNDIR}/{proc.logfile} 2>&1 & pid=$!; echo $pid > {RUNDIR}/{proc.pidfile}; '
                  f'wait $pid; echo $? > {RUNDIR}/{proc.rcfile}')
        self.start(["sh", "-c", script, "sh", *argv])
        proc.pid()
        return proc


class Process:
    """A background process in a host, started by ``Host.spawn``."""

    def __init__(self, host: Host, name: str, argv: list[str]) -> None:
        self.host = host
        self.name = name
        self.argv = argv
        self.logfile, self.pidfile, self.rcfile = f"{name}.log", f"{name}.pid", f"{name}.rc"

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)

    @property
    def log(self) -> Path:
        return self.host.path(self.logfile)

    def pid(self, timeout: float = 10.0) -> int:
        text = wait_until(f"{self.host.role}: {self.name} to start", lambda: self.host.read_text(self.pidfile).strip()
                          or None, timeout, interval=0.02, cancel=self.host.cancel)
        return int(text)

    @property
    def returncode(self) -> int | None:
        text = self.host.read_text(self.rcfile).strip()
        return int(text) if text else None

    def send_signal(self, signo: int) -> None:
        self.host.run(["kill", f"-{signo}", str(self.pid())], timeout=10)

    def wait(self, timeout: float) -> int:
        return wait_until(f"{self.host.role}: {self.name} to exit", lambda: self.returncode, timeout,
                          cancel=self.host.cancel)

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
        text = self.host.read_text(self.logfile).rstrip().splitlines()
        return "\n".join(text[-lines:]) or "(no output)"

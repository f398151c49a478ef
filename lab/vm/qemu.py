"""QEMU in a lab host: its command line, its process, its monitor, its guest console.

The command lines are pure functions of a ``MachineSpec`` so that tests can check them without
starting anything. ``Qemu`` owns one QEMU process's life in a host, as QEMU's own ``QEMUMachine``
does: a launch that fails says the command line and QEMU's output; a shutdown tries QMP ``quit``,
then SIGTERM, then SIGKILL, and says which one ended it.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from lab import guard
from lab.config import Guest
from lab.errors import QemuExited, ScenarioError, Timeout
from lab.host import RUNDIR, TAP, Host, Process
from lab.vm.qmp import Monitor, QMPCommandError, QMPDisconnected
from lab.waiting import wait_until

BINARY = "/opt/qemu/bin/qemu-system-x86_64"
KERNEL = "/opt/guest/vmlinuz"
INITRD = "/opt/guest/initrd.img"
# quiet and ipv6.disable: a fast TCG boot, and a guest that sends nothing of its own.
KERNEL_APPEND = "console=ttyS0 quiet loglevel=1 ipv6.disable=1 panic=-1"
READY_LINE = "LAB-GUEST-READY"
FAILED_LINE = "LAB-GUEST-FAILED"
MIGRATION_PORT = 4444
# Guarded (a split cell's), the destination listens on its loopback and the gate on MIGRATION_PORT;
# the source migrates to its own sender, which presents the token (lab.guard).
MIGRATION_INNER_PORT = 4445
MIGRATION_SENDER_PORT = 4446
CONSOLE_SOCKET = "console.sock"
CONSOLE_LOG = "console.log"
NETDEV = "n0"
RX_SOCKET = "rx.sock"  # the guest receiver's virtio-serial port, as a socket in the host (lab.vm.guest)
RX_PORT_NAME = "lab.rx"
RX_CHARDEV = "labrx"


@dataclass(frozen=True)
class Filter:
    """A netfilter object on the machine's netdev, with the chardev it talks through."""

    qom_type: str
    id: str
    queue: str
    direction: str  # "outdev" or "indev"
    socket: str  # the chardev socket's options
    properties: tuple[tuple[str, str], ...] = ()
    chardev_id: str = "mirror0"

    def chardev_arg(self) -> str:
        return f"socket,id={self.chardev_id},{self.socket}"

    def object_arg(self) -> str:
        props = [f"{self.qom_type},id={self.id},netdev={NETDEV},queue={self.queue}",
                 f"{self.direction}={self.chardev_id}", "vnet_hdr_support=on"]
        props += [f"{k}={v}" for k, v in self.properties]
        return ",".join(props)


@dataclass(frozen=True)
class MachineSpec:
    name: str
    accel: str
    memory_mb: int
    mac: str
    filters: tuple[Filter, ...] = ()
    incoming: bool = False
    restore: str = ""  # a state file (as the host sees it) to start from instead of booting
    nic: bool = True  # False only to check that a guest without eth0 is caught
    dirty_mb_s: int = 0  # the guest dirties its memory at this rate (MB/s), so migration iterates
    tls: bool = False  # the migration over TLS with the cell's key (lab.guard): a split cell's


def kernel_append(spec: MachineSpec) -> str:
    # Read by the guest's receiver from /proc/cmdline; the kernel ignores a parameter it does not know.
    return KERNEL_APPEND + (f" lab.dirty_mb_s={spec.dirty_mb_s}" if spec.dirty_mb_s else "")


def receiver_port_args() -> list[str]:
    """The guest receiver's port. Every machine has it, source and destination alike, so that a
    migration finds the same devices on both sides; it does not wait for the lab to connect."""
    return ["-device", "virtio-serial-pci,id=vser0",
            "-chardev", f"socket,id={RX_CHARDEV},path={RUNDIR}/{RX_SOCKET},server=on,wait=off",
            "-device", f"virtserialport,bus=vser0.0,chardev={RX_CHARDEV},name={RX_PORT_NAME}"]


def guest_machine(guest: Guest, accel: str, name: str, filters: tuple[Filter, ...] = (), incoming: bool = False,
                  restore: str = "", tls: bool = False) -> MachineSpec:
    """The lab's guest on a machine: every machine of a lab is this one, or migration (and restoring
    a saved guest) would meet other devices than it left."""
    return MachineSpec(name=name, accel=accel, memory_mb=guest.memory_mb, mac=guest.mac, filters=filters,
                       incoming=incoming, restore=restore, dirty_mb_s=guest.dirty_mb_s, tls=tls)


def tls_args(spec: MachineSpec) -> list[str]:
    """The migration's credentials. The destination listens from its first instant, so it takes
    TLS on its command line: a connection made before any QMP command would find it without. The
    source's saved guest comes in through a file, which TLS would refuse: it is told over QMP, just
    before it migrates (lab.vm.migration)."""
    if not spec.tls:
        return []
    if not spec.incoming:
        return ["-object", guard.creds_object("client")]
    return ["-object", guard.creds_object("server"), "-global", f"migration.tls-creds={guard.CREDS_ID}"]


def command_line(spec: MachineSpec) -> list[str]:
    argv = [
        BINARY, "-name", spec.name,
        "-machine", f"pc,accel={spec.accel}", "-m", str(spec.memory_mb),
        "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-no-reboot",
        "-L", "/usr/share/seabios", "-L", "/usr/share/qemu",
        "-kernel", KERNEL, "-initrd", INITRD, "-append", kernel_append(spec),
        # The serial console: a socket a person can attach to (lab console), and its log.
        "-chardev", f"socket,id=serial0,path={RUNDIR}/{CONSOLE_SOCKET},server=on,wait=off,"
                    f"logfile={RUNDIR}/{CONSOLE_LOG}", "-serial", "chardev:serial0",
        "-qmp", f"unix:{RUNDIR}/qmp.sock,server=on,wait=off",
        "-netdev", f"tap,id={NETDEV},ifname={TAP},script=no,downscript=no",
    ]
    if spec.nic:
        # romfile=: no option ROM to load; the guest boots from -kernel.
        argv += ["-device", f"virtio-net-pci,netdev={NETDEV},romfile=,mac={spec.mac}"]
    argv += receiver_port_args()
    for f in spec.filters:
        argv += ["-chardev", f.chardev_arg(), "-object", f.object_arg()]
    argv += tls_args(spec)
    if spec.incoming:
        argv += ["-incoming", f"tcp:127.0.0.1:{MIGRATION_INNER_PORT}" if spec.tls else f"tcp:0.0.0.0:{MIGRATION_PORT}"]
    elif spec.restore:
        argv += ["-incoming", f"file:{spec.restore}"]
    return argv


SOURCE_FILTER_ID = "f0"


def source_filter(qom_type: str, peer_host: str, port: int, properties: tuple[tuple[str, str], ...] = (),
                  on: bool = True) -> Filter:
    """The filter under test on the source: frames from the tap (queue=tx) out to the secondary;
    ``on=False`` starts it with status=off, for the lab to switch on over QMP."""
    status = () if on else (("status", "off"),)
    return Filter(qom_type=qom_type, id=SOURCE_FILTER_ID, queue="tx", direction="outdev",
                  properties=properties + status, socket=f"host={peer_host},port={port},reconnect-ms=100")


def destination_redirector(port: int, to_guest: bool = False) -> Filter:
    """The secondary's side: frames from the stream into its netdev, out of its tap (queue=rx), or,
    ``to_guest``, towards its guest (queue=tx: as if the tap had sent them)."""
    return Filter(qom_type="filter-redirector", id="r0", queue="tx" if to_guest else "rx", direction="indev",
                  socket=f"host=127.0.0.1,port={port},server=on,wait=off")


class Ending(enum.StrEnum):
    """How a QEMU ended."""

    QUIT = "quit"  # asked over QMP
    SIGTERM = "sigterm"
    SIGKILL = "sigkill"
    EXITED = "exited"  # before the lab asked: a crash, or a guest that shut it down
    KEPT = "kept"  # left running for a person
    CANCELLED = "cancelled"  # its host was being removed, and QEMU with it
    UNKNOWN = "unknown"  # not even SIGKILL was seen to end it
    NEVER_STARTED = "never started"


@dataclass(frozen=True)
class Shutdown:
    how: Ending
    exit_code: int | None = None

    @property
    def clean(self) -> bool:
        return self.how in (Ending.QUIT, Ending.KEPT) or (self.how == Ending.SIGTERM and self.exit_code == 0)

    def describe(self) -> str:
        return self.how + (f" (exit {self.exit_code})" if self.exit_code is not None else "")


@dataclass
class Qemu:
    """One QEMU process in a host, with its monitor; a context that always ends the process."""

    host: Host
    spec: MachineSpec
    qmp_timeout: float = 10.0
    keep: bool = False
    process: Process | None = None
    monitor: Monitor | None = None
    argv: list[str] = field(default_factory=list)
    ended: Shutdown | None = None

    def launch(self, timeout: float) -> Qemu:
        self.argv = command_line(self.spec)
        self.process = self.host.spawn("qemu", self.argv)
        self.monitor = Monitor(self.host.role, self.host.socket("qmp.sock"), self.host.own("qmp.jsonl"),
                               timeout=self.qmp_timeout)
        try:
            self.monitor.connect(timeout, alive=self.running, cancel=self.host.cancel)
        except (Timeout, QemuExited) as exc:
            raise self.launch_failure(str(exc)) from exc
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def launch_failure(self, why: str) -> ScenarioError:
        assert self.process is not None
        rc = self.process.returncode
        state = f"exited {rc}" if rc is not None else "still running"
        return ScenarioError(f"{self.host.role}: QEMU did not come up ({why}; {state})\n"
                             f"  command: {self.process.command_line}\n  output: {self.process.tail(10)}")

    @property
    def qmp(self) -> Monitor:
        if self.monitor is None:
            raise ScenarioError(f"{self.host.role}: QEMU was not launched")
        return self.monitor

    def console(self) -> str:
        return self.host.read_text(CONSOLE_LOG)

    def wait_guest_ready(self, timeout: float) -> None:
        """Waits for the guest's own ready line on its serial console."""

        def ready() -> bool | None:
            text = self.console()
            if READY_LINE in text:
                return True
            if FAILED_LINE in text:
                raise ScenarioError(f"{self.host.role}: the guest did not bring eth0 up: "
                                    f"{text.strip().splitlines()[-1]}")
            if not self.running():
                raise self.launch_failure("QEMU exited while the guest booted")
            return None

        def last_line() -> str:
            return (self.console().strip().splitlines() or ["(nothing)"])[-1]

        wait_until(f"{self.host.role}: {READY_LINE} on the guest console", ready, timeout, interval=0.1,
                   last=last_line, cancel=self.host.cancel)

    def save(self, path: str, timeout: float) -> None:
        """The running machine, whole, into the state file ``path`` (as the host sees it)."""
        self.qmp.cmd("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
        self.qmp.cmd("migrate", uri=f"file:{path}")

        def saved(event: dict[str, Any]) -> bool:
            return event.get("data", {}).get("status") in ("completed", "failed", "cancelled")

        event = self.qmp.event_wait("MIGRATION", timeout, match=saved, cancel=self.host.cancel,
                                    what=f"the machine saved to {path}")
        if event["data"]["status"] != "completed":
            raise ScenarioError(f"{self.host.role}: saving the machine to {path} {event['data']['status']}: "
                                f"{self.qmp.cmd('query-migrate').get('error-desc', 'no reason given')}")

    def wait_restored(self, timeout: float) -> None:
        """Waits until the machine started from ``spec.restore`` runs (QEMU starts it once loaded)."""
        def running() -> bool | None:
            status = str(self.qmp.cmd("query-status").get("status"))
            if status == "running":
                return True
            if status not in ("inmigrate", "prelaunch", "restore-vm"):
                raise ScenarioError(f"{self.host.role}: the machine did not start from {self.spec.restore} "
                                    f"(status {status}): {self.process.tail(5) if self.process else ''}")
            if not self.running():
                raise self.launch_failure(f"QEMU exited while restoring {self.spec.restore}")
            return None

        wait_until(f"{self.host.role}: the machine restored from {self.spec.restore} to run", running, timeout,
                   interval=0.05, cancel=self.host.cancel)

    def shutdown(self, timeout: float = 5.0) -> Shutdown:
        """Ends QEMU: ``quit`` over QMP, then SIGTERM, then SIGKILL; says which one did it."""
        if self.process is None:
            return Shutdown(Ending.NEVER_STARTED)
        rc = self.process.returncode
        if rc is not None:
            self.ended = Shutdown(Ending.EXITED, rc)
        else:
            self.ended = self._end(timeout)
        if self.monitor is not None:
            self.monitor.close()
        return self.ended

    def _end(self, timeout: float) -> Shutdown:
        assert self.process is not None
        if self.host.cancel is not None and self.host.cancel.is_set():
            return Shutdown(Ending.CANCELLED)  # its host is being removed, and QEMU with it
        if self.monitor is not None and self.monitor.connected:
            try:
                self.monitor.cmd("quit")
                return Shutdown(Ending.QUIT, self.process.wait(timeout))
            except (QMPCommandError, QMPDisconnected, Timeout):
                pass  # QEMU may close the socket before it answers quit; it is ending either way
            rc = self.process.returncode
            if rc is not None:
                return Shutdown(Ending.QUIT, rc)
        for how, signo in ((Ending.SIGTERM, signal.SIGTERM), (Ending.SIGKILL, signal.SIGKILL)):
            try:
                self.process.send_signal(signo)
                return Shutdown(how, self.process.wait(timeout))
            except ScenarioError:
                continue
        return Shutdown(Ending.UNKNOWN)

    def close(self) -> None:
        """Ends QEMU, unless ``keep`` says a person will look at it; then only the monitor goes."""
        if self.keep:
            self.ended = Shutdown(Ending.KEPT)
            if self.monitor is not None:
                self.monitor.close()
            return
        try:
            self.shutdown()
        except ScenarioError:
            pass  # the host goes away with its container in any case

    def __enter__(self) -> Qemu:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

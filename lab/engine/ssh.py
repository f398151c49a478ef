"""SSH into lab hosts: a key pair per lab, an ssh_config for people, paramiko for the lab itself.

sshd in a host listens on its loopback only and takes the lab's key only; the connection reaches it
through ``docker exec -i HOST python3 -m lab.agents.relay 127.0.0.1 22`` (the hosts sit on an
internal network, which Docker publishes no port from). Plain ``ssh -F <ssh_config> primary`` works
the same way.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import paramiko

from lab import terminal
from lab.errors import LabError
from lab.host import ExecResult

SSH_PORT = 22
KEY_BITS = 3072


@dataclass(frozen=True)
class LabKeys:
    """The lab's key pair, made on first use, kept in the lab's state folder (mode 0600)."""

    folder: Path

    @property
    def private(self) -> Path:
        return self.folder / "id_rsa"

    def ensure(self) -> paramiko.RSAKey:
        config_path(self.private.resolve())  # refused here, before any host starts, not once it runs
        if self.private.exists():
            return paramiko.RSAKey.from_private_key_file(str(self.private))
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = paramiko.RSAKey.generate(KEY_BITS)
        fd = os.open(self.private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            key.write_private_key(f)
        (self.folder / "id_rsa.pub").write_text(self.public_line(key) + "\n")
        return key

    @staticmethod
    def public_line(key: paramiko.RSAKey) -> str:
        return f"{key.get_name()} {key.get_base64()} netfilter-continuity-lab"


def proxy_command(container: str, engine_url: str = "") -> str:
    """``engine_url``: the engine the container runs on, when not the default one (DOCKER_HOST's)."""
    engine = f"-H {shlex.quote(engine_url)} " if engine_url else ""
    return f"docker {engine}exec -i {shlex.quote(container)} python3 -m lab.agents.relay 127.0.0.1 {SSH_PORT}"


def config_path(path: Path) -> str:
    """A path as ssh_config(5) reads it back: in double quotes (spaces), with '%' doubled (ssh expands
    %-tokens in IdentityFile). OpenSSH has no escape for '"' or a line break inside quotes."""
    text = str(path)
    if any(ch == '"' or not ch.isprintable() for ch in text):
        raise LabError(f"{text!r} cannot be written into an ssh_config (it holds a double quote or a line break); "
                       "move the lab's results_dir to a plainer path")
    return '"' + text.replace("%", "%%") + '"'


def write_config(path: Path, keys: LabKeys, containers: dict[str, str],
                 engine_urls: dict[str, str] | None = None) -> Path:
    """An ssh_config with one Host entry per role (primary, secondary); ``engine_urls``: each role's
    engine, when not the default one."""
    identity = config_path(keys.private.resolve())
    blocks = []
    for role, container in containers.items():
        proxy = proxy_command(container, (engine_urls or {}).get(role, ""))
        blocks.append(f"Host {role}\n  HostName 127.0.0.1\n  User root\n  IdentityFile {identity}\n"
                      f"  IdentitiesOnly yes\n  ProxyCommand {proxy}\n"
                      "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    path.write_text("# Written by the netfilter continuity lab for its kept lab.\n\n" + "\n".join(blocks))
    return path


def connect(container: str, keys: LabKeys, timeout: float = 15.0, engine_url: str = "") -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    # Host keys are made when the host starts: there is nothing to pin them to beforehand.
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect("127.0.0.1", port=SSH_PORT, username="root", pkey=keys.ensure(),
                       sock=paramiko.ProxyCommand(proxy_command(container, engine_url)), timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout, allow_agent=False, look_for_keys=False)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise LabError(f"cannot SSH into {container}: {exc}; is the lab up (lab status)?") from exc
    return client


def run(client: paramiko.SSHClient, command: str, timeout: float = 60.0) -> ExecResult:
    try:
        _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        status = stdout.channel.recv_exit_status()
    except (TimeoutError, paramiko.SSHException) as exc:
        raise LabError(f"`{command}` over SSH failed: {exc}") from exc
    return ExecResult(command, status, out, err)


def interactive(client: paramiko.SSHClient) -> int:
    """A shell with a pty, this terminal in raw mode until the shell exits."""
    size = os.get_terminal_size() if sys.stdin.isatty() else os.terminal_size((80, 24))
    try:
        channel = client.invoke_shell(term=os.environ.get("TERM", "xterm"), width=size.columns, height=size.lines)
        terminal.session(channel, lambda: channel.recv(4096), channel.sendall, channel.shutdown_write)
        return channel.recv_exit_status()
    except (paramiko.SSHException, EOFError) as exc:
        raise LabError(f"the shell over SSH failed: {exc}; is the lab up (lab status)?") from exc

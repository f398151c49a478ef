"""A kept lab: hosts and guests left running for a person to look into (`lab up` ... `lab down`).

Its state (containers, run folder, ssh_config, key pair) lives in ``<results_dir>/.labs/<name>/``,
so that every later `lab` command finds the lab it is about.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from lab import resources, ssh, terminal
from lab.config import LabConfig
from lab.engine import LabHosts
from lab.errors import LabError, LeftoverLab, ScenarioError
from lab.host import RUNDIR
from lab.qemu import CONSOLE_LOG, CONSOLE_SOCKET
from lab.qmp import Monitor


@dataclass
class KeptLab:
    name: str
    profile: str
    scenario: str
    image: str
    accel: str
    rundir: str
    containers: dict[str, str]
    ssh_config: str
    started: float

    def qmp_socket(self, role: str) -> Path:
        return Path(self.rundir) / role / "qmp.sock"

    def console(self, role: str) -> Path:
        return Path(self.rundir) / role / CONSOLE_LOG


def state_dir(cfg: LabConfig) -> Path:
    return cfg.state_root / cfg.name


def keys(cfg: LabConfig) -> ssh.LabKeys:
    return ssh.LabKeys(state_dir(cfg))


def load(cfg: LabConfig) -> KeptLab:
    path = state_dir(cfg) / "state.json"
    if not path.exists():
        raise LabError(f"no lab named {cfg.name!r} is up; start one with `lab up`")
    try:
        return KeptLab(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise LabError(f"{path} is not a kept lab's state ({exc}); remove the lab with `lab clean`") from exc


def refuse_if_up(cfg: LabConfig) -> None:
    if (state_dir(cfg) / "state.json").exists():
        raise LeftoverLab(f"the lab {cfg.name!r} is up (lab up); look at it with `lab status`, "
                          "remove it with `lab down`")


def adopt(cfg: LabConfig, hosts: LabHosts, profile: str, scenario: str, image: str, accel: str) -> KeptLab:
    """Records running hosts (started by `lab up`, or kept by `lab run --keep`) as the kept lab."""
    containers = {role: host.name for role, host in hosts.hosts.items()}
    config = ssh.write_config(state_dir(cfg) / "ssh_config", keys(cfg), containers)
    lab = KeptLab(name=cfg.name, profile=profile, scenario=scenario, image=image, accel=accel,
                  rundir=str(hosts.rundir), containers=containers, ssh_config=str(config), started=time.time())
    (state_dir(cfg) / "state.json").write_text(json.dumps(asdict(lab), indent=2) + "\n")
    return lab


def down(client: docker.DockerClient, cfg: LabConfig) -> resources.Leftovers:
    """Removes the lab's containers and network, its run folder and its state (not its keys)."""
    removed = resources.remove(client, cfg.name)
    state = state_dir(cfg) / "state.json"
    if state.exists():
        lab = KeptLab(**json.loads(state.read_text()))
        shutil.rmtree(lab.rundir, ignore_errors=True)
        state.unlink()
    (state_dir(cfg) / "ssh_config").unlink(missing_ok=True)
    return removed


def forget(cfg: LabConfig) -> None:
    """`lab clean`: the keys and everything else of the lab's state folder."""
    shutil.rmtree(state_dir(cfg), ignore_errors=True)


def qmp(lab: KeptLab, role: str, command: str, args: dict[str, Any]) -> Any:
    socket_path = lab.qmp_socket(role)
    if not socket_path.exists():
        raise LabError(f"the {role} QEMU of lab {lab.name} has no QMP socket ({socket_path}); is it running? "
                       "(lab status)")
    with Monitor(role, socket_path, socket_path.parent / "qmp-cli.jsonl") as monitor:
        monitor.connect(10.0)
        return monitor.cmd(command, **args)


def attach_console(lab: KeptLab, role: str) -> None:
    """The guest's serial console on this terminal (Ctrl-] leaves), through the host's console socket."""
    proc = subprocess.Popen(["docker", "exec", "-i", lab.containers[role], "python3", "-m", "lab.agents.relay",
                             "unix", f"{RUNDIR}/{CONSOLE_SOCKET}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def send(data: bytes) -> None:
        stdin.write(data)
        stdin.flush()

    try:
        terminal.session(stdout, lambda: os.read(stdout.fileno(), 4096), send, stdin.close, escape=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def status(client: docker.DockerClient, lab: KeptLab) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for role, container in lab.containers.items():
        row: dict[str, object] = {"role": role, "container": container}
        try:
            row["host"] = client.containers.get(container).status
        except docker.errors.NotFound:
            row["host"] = "gone"
            rows.append(row)
            continue
        try:
            row["runstate"] = str(qmp(lab, role, "query-status", {}).get("status"))
            objects = qmp(lab, role, "qom-list", {"path": "/objects"})
            row["filters"] = [f"{o['name']} ({o['type'][6:-1]})" for o in objects
                              if str(o.get("type", "")).startswith("child<filter-")]
        except (ScenarioError, LabError) as exc:
            row["runstate"] = f"no QMP ({exc})"
        rows.append(row)
    return rows

"""A kept lab: hosts and guests left running for a person to look into (`lab up` ... `lab down`).

Its state (containers, run folder, ssh_config, key pair) lives in ``<results_dir>/.labs/<name>/``,
so that every later `lab` command finds the lab it is about.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab import terminal
from lab.config import EngineSpec, LabConfig
from lab.engine import Engine, LabHosts, resources, ssh
from lab.errors import LabError, LeftoverLab, ScenarioError
from lab.host import RUNDIR
from lab.namespace import DEAD, KEPT, Namespace
from lab.results import artefacts
from lab.vm.qemu import CONSOLE_LOG, CONSOLE_SOCKET
from lab.vm.qmp import Monitor


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
    # Each role's engine (name, and its URL as lab.yaml gave it then: "" for the default engine), so
    # that every later command reaches the hosts where they run; a state from before has neither.
    engines: dict[str, str] = field(default_factory=dict)
    engine_urls: dict[str, str] = field(default_factory=dict)

    def engine_url(self, role: str) -> str:
        return self.engine_urls.get(role, "")

    def engine(self, role: str, default: Engine) -> Engine:
        """``role``'s engine (``default`` when that is the default engine)."""
        url = self.engine_url(role)
        if not url:
            return default
        return Engine.connect(EngineSpec(name=self.engines.get(role, url), url=url))

    def qmp_socket(self, role: str) -> Path:
        return Path(self.rundir) / role / "qmp.sock"

    def console(self, role: str) -> Path:
        return Path(self.rundir) / role / CONSOLE_LOG


NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise LabError(f"{name!r} is not a kept lab's name: lower-case letters, digits and '-' "
                       f"(pattern {NAME_RE.pattern})")
    return name


def state_dir(cfg: LabConfig, name: str) -> Path:
    return cfg.state_root / check_name(name)


def keys(cfg: LabConfig, name: str) -> ssh.LabKeys:
    return ssh.LabKeys(state_dir(cfg, name))


def names(cfg: LabConfig) -> list[str]:
    """The kept labs that are up (have a state), by name."""
    if not cfg.state_root.is_dir():
        return []
    return sorted(p.parent.name for p in cfg.state_root.glob("*/state.json"))


def load(cfg: LabConfig, name: str | None = None) -> KeptLab:
    """The kept lab ``name``; without a name, the one that is up (refused when there are several)."""
    if name is None:
        up_now = names(cfg)
        if not up_now:
            raise LabError("no lab is up; start one with `lab up`")
        if len(up_now) > 1:
            raise LabError(f"{len(up_now)} labs are up ({', '.join(up_now)}); say which with --lab NAME")
        name = up_now[0]
    path = state_dir(cfg, name) / "state.json"
    if not path.exists():
        up_now = names(cfg)
        raise LabError(f"no lab named {name!r} is up" + (f" (up: {', '.join(up_now)})" if up_now else "")
                       + "; start one with `lab up --name NAME`")
    try:
        return KeptLab(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise LabError(f"{path} is not a kept lab's state ({exc}); remove the lab with `lab clean`") from exc


def namespace(cfg: LabConfig, name: str) -> Namespace:
    return Namespace.kept(cfg.name, check_name(name))


def refuse_if_up(cfg: LabConfig, name: str) -> None:
    if (state_dir(cfg, name) / "state.json").exists():
        raise LeftoverLab(f"a lab named {name!r} is up; look at it with `lab status`, remove it with "
                          f"`lab down {name}`, or start another with `lab up --name OTHER`")


def adopt(cfg: LabConfig, name: str, hosts: LabHosts, profile: str, scenario: str, image: str,
          accel: str) -> KeptLab:
    """Records running hosts (started by `lab up`, or kept by `lab run --keep`) as the kept lab ``name``."""
    containers = {role: host.name for role, host in hosts.hosts.items()}
    engines = {role: hosts.engines[role].name for role in containers}
    urls = {role: cfg.engines[e].url if e in cfg.engines else "" for role, e in engines.items()}
    config = ssh.write_config(state_dir(cfg, name) / "ssh_config", keys(cfg, name), containers, urls)
    lab = KeptLab(name=name, profile=profile, scenario=scenario, image=image, accel=accel,
                  rundir=str(hosts.rundir), containers=containers, ssh_config=str(config), started=time.time(),
                  engines=engines, engine_urls=urls)
    (state_dir(cfg, name) / "state.json").write_text(json.dumps(asdict(lab), indent=2) + "\n")
    return lab


def down(engine: Engine, cfg: LabConfig, name: str) -> resources.Leftovers:
    """Removes the kept lab's containers and network (on its engines: ``engine`` is the default
    one), its run folder and its state (not its keys)."""
    removed = engine.remove(cfg.name, ns=namespace(cfg, name))
    state = state_dir(cfg, name) / "state.json"
    lab = _state(cfg, name)
    # Hosts on another engine first: one that does not answer is an error, and the state stays.
    elsewhere = {lab.engine_url(role): role for role in lab.containers if lab.engine_url(role)} if lab else {}
    for role in elsewhere.values():
        assert lab is not None
        gone = lab.engine(role, engine).remove(cfg.name, ns=namespace(cfg, name))
        removed.containers += gone.containers
        removed.networks += gone.networks
    if state.exists():
        # A path from a file: removed only when it is this lab's run folder (artefacts.own_rundir).
        rundir = artefacts.own_rundir(Path(lab.rundir), namespace(cfg, name)) if lab else None
        if rundir is not None:
            shutil.rmtree(rundir, ignore_errors=True)
        state.unlink()
    (state_dir(cfg, name) / "ssh_config").unlink(missing_ok=True)
    return removed


def _state(cfg: LabConfig, name: str) -> KeptLab | None:
    """The kept lab's state when it has a readable one."""
    try:
        return load(cfg, name) if (state_dir(cfg, name) / "state.json").exists() else None
    except LabError:
        return None


def forget(cfg: LabConfig, name: str) -> None:
    """`lab clean`: the keys and everything else of a kept lab's state folder."""
    shutil.rmtree(state_dir(cfg, name), ignore_errors=True)


def orphans(engine: Engine, cfg: LabConfig) -> list[str]:
    """Kept labs' resources with no state left (a `lab run --keep` killed before it recorded one)."""
    known = set(names(cfg))
    found = engine.containers({resources.LAB: cfg.name, resources.KIND: KEPT})
    # Still being made (by a live `lab up` or `lab run --keep`): not an orphan yet.
    gone = [c for c in found if resources.owner_state(c.labels) == DEAD]  # another machine's is not ours to judge
    return sorted({c.labels.get(resources.RUN, "") for c in gone} - known - {""})



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
    engine = ["-H", lab.engine_url(role)] if lab.engine_url(role) else []
    proc = subprocess.Popen(["docker", *engine, "exec", "-i", lab.containers[role], "python3", "-m",
                             "lab.agents.relay", "unix", f"{RUNDIR}/{CONSOLE_SOCKET}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
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


def status(engine: Engine, lab: KeptLab) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for role, container in lab.containers.items():
        row: dict[str, object] = {"role": role, "container": container, "engine": lab.engines.get(role, "")}
        row["host"] = lab.engine(role, engine).container_status(container)
        if row["host"] == "gone":
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


def clean(engine: Engine, cfg: LabConfig, every: bool) -> list[str]:
    """Kept labs taken down and forgotten: those no one runs any more (orphans), and, ``every``,
    all of them (kept labs are people's: only when asked). Their names."""
    downed = (names(cfg) if every else []) + orphans(engine, cfg)
    for name in downed:
        down(engine, cfg, name)
        forget(cfg, name)
    return downed

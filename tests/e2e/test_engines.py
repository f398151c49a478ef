"""Engines: cells spread over two Docker engines, a cell split across them (migration and the mirror
stream crossing engines through published ports), and every way an engine can fail.

The second engine is the one scripts/second-engine makes on this machine (`make test` starts it),
reached over ssh:// through the Docker SDK's paramiko transport."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import paramiko
import pytest

from lab import config, guard, images, kept
from lab.agents import frames
from lab.config import EngineSpec, LabConfig
from lab.engine import Engine, LabHosts, resources
from lab.namespace import Namespace
from lab.pytest_plugin import need
from lab.results.analysis import read_pcap
from lab.runner import Cell, CellFinished, Runner
from lab.vm.capture import RECORDER_PORT
from lab.vm.qemu import MIGRATION_PORT
from lab.waiting import wait_until
from tests.e2e.rundirs import config_copy, owner, phase_of

# One worker for all of them under pytest-xdist (--dist loadgroup): one of them stops the engine.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("second-engine")]

ROOT = Path(__file__).resolve().parents[2]
SECOND = "ssh://nfcl-engine2"


@pytest.fixture
def engines_yaml(lab_config: LabConfig, tmp_path: Path) -> Path:
    text = lab_config.path.read_text().replace("results_dir: lab-results", f"results_dir: {lab_config.results_root}")
    return config_copy(lab_config.path, tmp_path, text + f"\nengines:\n  local: {{}}\n  second:\n    url: {SECOND}\n")


def lab(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=timeout,
                          check=False, env=env)


def rows(out: Path) -> list[dict[str, object]]:
    return list(json.loads((out / "report.json").read_text())["results"])


def test_split_placement_gives_the_single_engine_verdicts(engines_yaml: Path, lab_config: LabConfig,
                                                          lab_images: dict[str, images.ImageSet],
                                                          second_engine: docker.DockerClient, tmp_path: Path) -> None:
    profile = next(iter(lab_images))
    done = lab("run", "--config", str(engines_yaml), "--profile", profile, "--scenario", "mirror", "--scenario",
               "redirector", "--split", "local,second", "--out", str(tmp_path / "split"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    for row in rows(tmp_path / "split"):
        assert row["engines"] == {"primary": "local", "secondary": "second"}
        assert row["verdict"] == lab_config.scenarios[str(row["scenario"])].expect[profile], row["reasons"]
    report = json.loads((tmp_path / "split" / "report.json").read_text())
    print(f"split: image transfer {report['lab']['engines']['second']['image_transfer_s']} s; cell totals "
          f"{[r['timings'] for r in report['results']]}")


def test_cells_spread_over_two_engines(engines_yaml: Path, lab_config: LabConfig,
                                       lab_images: dict[str, images.ImageSet], second_engine: docker.DockerClient,
                                       tmp_path: Path) -> None:
    profile = next(iter(lab_images))
    done = lab("run", "--config", str(engines_yaml), "--profile", profile, "--scenario", "mirror", "--scenario",
               "redirector", "--engine", "local", "--engine", "second", "--jobs", "2", "--out", str(tmp_path / "s"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    placed = [r["engines"] for r in rows(tmp_path / "s")]
    assert placed == [{"primary": "local", "secondary": "local"}, {"primary": "second", "secondary": "second"}]
    run = Namespace(lab_config.name, json.loads((tmp_path / "s" / "report.json").read_text())["lab"]["run"])
    assert not resources.find(second_engine, lab_config.name, ns=run), "the run left something on the second engine"


# What an intruder on the engine's network sends first: a migration stream's header (QEMU_VM_FILE_MAGIC,
# version 3) with a section of garbage; to the recorder, bytes of its own and the filter's frames.
FAKE_MIGRATION = b"QEVM\x00\x00\x00\x03" + b"\x01" * 64
INTRUDER_RUN = 0xBAD  # the run id of the frames an intruder feeds the recorder


def fake_frames() -> bytes:
    records = [frames.build(bytes.fromhex("525400123456"), frames.mac_bytes(frames.SOURCE_MAC), INTRUDER_RUN, seq)
               for seq in range(50)]
    return b"".join(struct.pack("!II", 12 + len(f), 12) + bytes(12) + f for f in records)


@dataclass
class Intruder:
    """Connections from this machine to a split cell's published ports, made while its traffic runs."""

    sent: dict[str, int] = field(default_factory=dict)  # per port: connections made
    held: list[socket.socket] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)  # what the hosts' key files held, for the search after

    def __call__(self, phase: str, hosts: LabHosts) -> None:
        if phase == "traffic":
            self.keys = [hosts.primary.path(name).read_bytes() for name in (guard.PSK_FILE, guard.TOKEN_FILE)]
            migration, recorder = hosts.secondary.published[MIGRATION_PORT], hosts.secondary.published[RECORDER_PORT]
            # b"" to the migration port too: without the gate, a connection that never speaks would
            # hold the destination QEMU's one incoming migration in its TLS handshake.
            for where, payloads in ((migration, [b"", FAKE_MIGRATION, bytes(range(256))]),
                                    (recorder, [fake_frames(), b"\xff" * 32 + fake_frames(), b""])):
                for payload in payloads:  # b"": connects and says nothing while the real one works
                    sock = socket.create_connection(where, timeout=5)
                    sock.sendall(payload)
                    self.held.append(sock)
                    self.sent[str(where[1])] = self.sent.get(str(where[1]), 0) + 1
        elif phase == "analysis":
            for sock in self.held:
                sock.close()


def test_a_split_cells_published_ports_take_no_one_else(engines_yaml: Path, lab_config: LabConfig,
                                                        lab_runner: Runner, lab_images: dict[str, images.ImageSet],
                                                        second_engine: docker.DockerClient, tmp_path: Path) -> None:
    cfg = config.load(engines_yaml)
    profile = cfg.profiles[next(iter(lab_images))]
    runner = Runner(cfg, lab_runner.engine, builds=lab_runner.builds, accel=lab_runner.accel)
    second = Engine.connect(cfg.engines["second"])
    runner.place([lab_runner.engine, second], split=True)
    intruder = Intruder()
    out = tmp_path / "guarded"
    try:
        with contextlib.closing(runner.run([Cell(profile, cfg.scenarios["redirector"])], out, hook=intruder)) as events:
            [row] = [e.row for e in events if isinstance(e, CellFinished)]
    finally:
        second.client.close()
    assert sorted(intruder.sent.values()) == [3, 3], intruder.sent
    assert row.verdict == cfg.scenarios["redirector"].expect[profile.name], row.why
    cell = Path(row.artefacts)
    assert row.engines == {"primary": "local", "secondary": "second"}
    # The recorder refused every intruder, and its capture holds none of their frames.
    events_file = (cell / "secondary" / "recorder-events.jsonl").read_text().splitlines()
    refused = [json.loads(line)["reason"] for line in events_file if '"refused"' in line]
    assert len(refused) == 3, refused
    assert read_pcap(cell / "secondary" / "stream.pcap", INTRUDER_RUN) == []
    # The gate refused every intruder at the migration port (QEMU never saw them) and admitted the
    # source alone, whose migration then ran over TLS.
    gate = [json.loads(line) for line in (cell / "secondary" / "gate-events.jsonl").read_text().splitlines()]
    turned_away = [e["reason"] for e in gate if e["event"] == "refused"]
    assert len(turned_away) == 3 and len([e for e in gate if e["event"] == "admitted"]) == 1, gate
    assert "tls-creds" in (cell / "primary" / "qmp.jsonl").read_text()
    print(f"split guard: recorder refused {refused}; migration gate refused {turned_away}")
    # Neither the key nor the token left the run folder: not in report.json, not in any artefact.
    key_hex = intruder.keys[0].decode().strip().split(":")[1]
    token_hex = intruder.keys[1].decode().strip()
    secrets = [key_hex.encode(), token_hex.encode(), bytes.fromhex(key_hex), bytes.fromhex(token_hex)]
    files = [out / "report.json", *(p for p in cell.rglob("*") if p.is_file())]
    leaks = [str(p) for p in files if any(s in p.read_bytes() for s in secrets)]
    assert not leaks, leaks
    assert not list(cell.rglob(guard.FOLDER)), "the keys' folder reached the artefacts"


@pytest.mark.parametrize(("url", "expected"), [
    ("ssh://root@127.0.0.1:1", "does not answer"),
    ("tcp://127.0.0.1:1", "does not answer"),
], ids=["ssh-refused", "tcp-refused"])
def test_an_unreachable_engine_is_one_line(url: str, expected: str, engines_yaml: Path) -> None:
    text = engines_yaml.read_text().replace(f"url: {SECOND}", f"url: {url}")
    engines_yaml.write_text(text)
    done = lab("run", "--config", str(engines_yaml), "--engine", "second", timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "engine second" in done.stderr and expected in done.stderr


def test_an_unknown_engine_name_is_one_line(engines_yaml: Path) -> None:
    done = lab("run", "--config", str(engines_yaml), "--engine", "third", timeout=60)
    assert done.returncode == 2 and "--engine: unknown name 'third'" in done.stderr, done.stderr


@pytest.fixture
def other_home(tmp_path: Path) -> Iterator[Path]:
    """A HOME whose ~/.ssh has the engine's entry and key, but not (yet) its host key."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    real = Path("~/.ssh").expanduser()
    shutil.copy(real / "nfcl-engine2", home / ".ssh" / "nfcl-engine2")
    (home / ".ssh" / "config").write_text("Host nfcl-engine2\n  HostName 127.0.0.1\n  Port 2222\n  User root\n"
                                          f"  IdentityFile {home / '.ssh' / 'nfcl-engine2'}\n")
    yield home


def test_an_unknown_host_key_is_refused_not_accepted(engines_yaml: Path, other_home: Path,
                                                     second_engine: docker.DockerClient) -> None:
    done = lab("run", "--config", str(engines_yaml), "--engine", "second", env={**os.environ, "HOME": str(other_home)},
               timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "known_hosts" in done.stderr and "never accepted silently" in done.stderr
    assert not (other_home / ".ssh" / "known_hosts").exists(), "the host key was written without being asked"


def test_a_key_the_engine_refuses(engines_yaml: Path, other_home: Path, second_engine: docker.DockerClient) -> None:
    ssh_dir = other_home / ".ssh"
    (ssh_dir / "known_hosts").write_text(Path("~/.ssh/known_hosts").expanduser().read_text())
    (ssh_dir / "nfcl-engine2").unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_dir / "nfcl-engine2")], check=True)
    done = lab("run", "--config", str(engines_yaml), "--engine", "second", env={**os.environ, "HOME": str(other_home)},
               timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "engine second" in done.stderr and "IdentityFile" in done.stderr


def test_an_engine_lost_mid_run_errs_that_cell_and_leaves_nothing(engines_yaml: Path, lab_config: LabConfig,
                                                                  lab_images: dict[str, images.ImageSet],
                                                                  lab_docker: docker.DockerClient,
                                                                  second_engine: docker.DockerClient,
                                                                  tmp_path: Path) -> None:
    profile = next(iter(lab_images))
    out = tmp_path / "lost"
    proc = subprocess.Popen([sys.executable, "-m", "lab", "run", "--config", str(engines_yaml), "--profile", profile,
                             "--scenario", "mirror", "--scenario", "redirector", "--engine", "local", "--engine",
                             "second", "--jobs", "2", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        # The second cell runs on the second engine; stop that engine while its guests run.
        while time.monotonic() < deadline and proc.poll() is None:
            cell_two = [d for d in Path(tempfile.gettempdir()).glob(f"{lab_config.name}-*-2-*")
                        if owner(d) == proc.pid and (d / "phase").exists()]
            if cell_two and (cell_two[0] / "phase").read_text().strip() in ("traffic", "migrate", "hold"):
                break
            time.sleep(0.1)
        subprocess.run([str(ROOT / "scripts" / "second-engine"), "down"], check=True, capture_output=True)
        out_text, err_text = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run([str(ROOT / "scripts" / "second-engine"), "up"], check=True, capture_output=True)
    assert proc.returncode == 1, out_text[-2000:] + err_text[-2000:]
    # The engine's networks went with its daemon: no bridge of its pool is left on this machine.
    links = subprocess.run(["ip", "-4", "-br", "addr"], capture_output=True, text=True, check=True).stdout
    assert not [line for line in links.splitlines() if line.startswith("br-") and " 10.213." in line], links
    # Nor the network namespaces (and their veths) it kept for the guests it stopped.
    sandboxes = Path("/run/nfcl-engine2/netns")
    assert not (sandboxes.is_dir() and any(sandboxes.iterdir())), sorted(p.name for p in sandboxes.iterdir())
    report = json.loads((out / "report.json").read_text())
    first, second = report["results"]
    assert first["verdict"] == lab_config.scenarios["mirror"].expect[profile], first["reasons"]
    assert second["verdict"] == "error" and second["engines"]["primary"] == "second", second
    run = Namespace(lab_config.name, report["lab"]["run"])
    assert not resources.find(lab_docker, lab_config.name, ns=run), "the cell on the first engine left something"
    # The second engine is back with its dead containers: lab clean removes them there too.
    engine = docker.DockerClient(base_url="ssh://nfcl-engine2:2222", use_ssh_client=False, timeout=60)
    # Back up means answering its API over SSH, which a daemon just restarted on a busy machine may
    # take a moment more to do than to answer the script's own check.
    wait_until("the second engine to list its containers again", lambda: answers(engine), 120, interval=1.0)
    cleaned = lab("clean", "--config", str(engines_yaml), timeout=120)
    assert cleaned.returncode == 0, cleaned.stderr
    assert not resources.find(engine, lab_config.name, ns=Namespace(lab_config.name, run.id, cell="2"))


def answers(engine: docker.DockerClient) -> bool | None:
    try:
        engine.containers.list(all=True)
        return True
    except (docker.errors.DockerException, paramiko.SSHException, OSError, EOFError):
        return None


def drop_ssh_sessions() -> int:
    """Ends every SSH session to the second engine (its sshd's children); the listener stays."""
    listener = int(Path("/run/nfcl-engine2-sshd.pid").read_text().strip())
    children = subprocess.run(["pgrep", "-P", str(listener)], capture_output=True, text=True).stdout.split()
    for pid in children:
        subprocess.run(["kill", pid], check=False)
    return len(children)


def test_ssh_connections_dropped_mid_run_are_made_again(engines_yaml: Path, lab_config: LabConfig,
                                                        lab_images: dict[str, images.ImageSet],
                                                        second_engine: docker.DockerClient, tmp_path: Path) -> None:
    profile = next(iter(lab_images))
    out = tmp_path / "dropped"
    proc = subprocess.Popen([sys.executable, "-m", "lab", "run", "--config", str(engines_yaml), "--profile", profile,
                             "--scenario", "redirector", "--split", "local,second", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dropped, started = 0, time.time()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not dropped:
            if phase_of(lab_config.name, started, proc.pid) == "hold":
                dropped = drop_ssh_sessions()
            time.sleep(0.1)
        out_text, err_text = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert dropped, "no SSH session to drop: the run did not use the second engine"
    assert proc.returncode == 0, out_text[-2000:] + err_text[-2000:]
    [row] = rows(out)
    assert row["verdict"] == lab_config.scenarios["redirector"].expect[profile], row["reasons"]
    # Asked anew: the dropped sessions took this module's own client's connection with them.
    engine = Engine.connect(EngineSpec("second", SECOND))
    try:
        run = json.loads((out / "report.json").read_text())["lab"]["run"]
        assert not engine.find(lab_config.name, ns=Namespace(lab_config.name, run))
    finally:
        engine.close()


def test_requests_beyond_the_engines_sshd_sessions_are_answered(second_engine: docker.DockerClient) -> None:
    # Every request over ssh:// takes a session of one SSH connection; this sshd allows 10 at once.
    engine = Engine.connect(EngineSpec("second", SECOND))

    def missing(name: str) -> bool:
        return engine.image_id(name) == ""

    try:
        # One URL each, as every container and exec has: idle sessions must not pile up per URL.
        started = time.monotonic()
        assert all(missing(f"nfcl/none-{n}:0") for n in range(32))
        one_by_one = time.monotonic() - started
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            assert all(pool.map(missing, [f"nfcl/none-{n}:1" for n in range(48)]))
        print(f"burst: 32 requests one by one in {one_by_one:.2f} s, then 48 from 24 threads in "
              f"{time.monotonic() - started - one_by_one:.2f} s")
    finally:
        engine.close()


def hidden(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``argv`` with the lab's temporary folders on a tmpfs in a mount namespace of its own: the
    engines, outside it, lack them, as engines on other machines do (or one whose socket was handed
    into the container the lab runs in)."""
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if subprocess.run([*sudo, "unshare", "-m", "true"], capture_output=True, check=False).returncode:
        need("cannot make a mount namespace (unshare -m) to hide the lab's folders from the engine")
    # Short: the lab's unix sockets are in it (108 bytes at most).
    private = Path(tempfile.mkdtemp(prefix="nfcl-hidden-", dir="/tmp"))
    # sudo gives root's HOME, and the lab would run as root: back to this user, with this HOME (its
    # ~/.ssh has what scripts/second-engine wrote), as GitHub's runner user runs the lab.
    uid, gid = os.getuid(), os.getgid()
    script = (f'mount -t tmpfs -o uid={uid},gid={gid},mode=0700 lab-hidden "$0" && '
              f'home="$1" && shift && '
              f'exec setpriv --reuid={uid} --regid={gid} --init-groups env TMPDIR="$0" HOME="$home" "$@"')
    # sudo leaves out LD_LIBRARY_PATH, which a runner's Python may need (setup-python's builds find
    # their libpython through it), and which engine Docker's variables name: given back by env.
    handed = [f"{name}={os.environ[name]}" for name in ("LD_LIBRARY_PATH", "DOCKER_HOST", "DOCKER_CONTEXT",
                                                         "DOCKER_CONFIG") if os.environ.get(name)]
    try:
        return subprocess.run([*sudo, "unshare", "-m", "--propagation", "private", "sh", "-c", script, str(private),
                               str(Path.home()), *handed, *argv], capture_output=True, text=True,
                              timeout=timeout, check=False)
    finally:
        private.rmdir()  # the tmpfs went with its namespace


@pytest.mark.parametrize("placement", [[], ["--split", "local,second"]], ids=["one-engine", "split"])
def test_engines_that_do_not_see_the_labs_folders_run_it_with_copied_files(
        placement: list[str], lab_config: LabConfig, lab_images: dict[str, images.ImageSet],
        lab_docker: docker.DockerClient, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # Split, the migration crosses two such engines, which is what live migration between two
    # machines is.
    engines = request.getfixturevalue("second_engine") if placement else None
    name = f"{lab_config.name}-unseen"
    # A lab of its own name, to find what it left; the same images (and the same results folder,
    # where the accelerator probe's verdict is kept).
    text = re.sub(r"(?m)^  name: \S+", f"  name: {name}", lab_config.path.read_text(), count=1)
    text = re.sub(r"(?m)^  # prefix: \S+", f"  prefix: {lab_config.image_prefix}", text, count=1)
    text = text.replace("results_dir: lab-results", f"results_dir: {lab_config.results_root}")
    if engines is not None:
        text += f"\nengines:\n  local: {{}}\n  second:\n    url: {SECOND}\n"
    cfg = config_copy(lab_config.path, tmp_path / "cfg", text)
    profile, out = next(iter(lab_images)), tmp_path / "out"
    proc = hidden(sys.executable, "-m", "lab", "run", "--config", str(cfg), "--profile", profile,
                  "--scenario", "redirector", *placement, "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    [row] = report["results"]
    used = sorted(set(row["engines"].values()))
    assert all(report["lab"]["engines"][e]["sees_files"] is False for e in used), report["lab"]["engines"]
    assert row["verdict"] == lab_config.scenarios["redirector"].expect[profile], row["reasons"]
    print(f"files copied, {'/'.join(used)}: cell total {row['timings']['total']} s")
    # What the hosts wrote came back (captures, agents' records), beside what the lab wrote (QMP).
    cell = out / f"{profile}-redirector"
    for made in ("secondary/stream.pcap", "secondary/tap.pcap", "primary/generator.json", "primary/qmp.jsonl",
                 "timeline.png"):
        assert (cell / made).stat().st_size > 0, made
    assert not list(cell.rglob("*.sock")) and not list(cell.rglob(".handshake"))
    # Split, the key and token were there (the migration ran over TLS) and stayed behind.
    assert not list(cell.rglob(guard.FOLDER)) and not list(cell.rglob("keys.psk"))
    assert ("tls-creds" in (cell / "primary" / "qmp.jsonl").read_text()) == bool(placement)
    assert not resources.find(lab_docker, name), "the lab left something on the engine"
    if engines is None:
        # A kept lab is reached through its run folder here: not on such an engine.
        up = hidden(sys.executable, "-m", "lab", "up", "--config", str(cfg), "--profile", profile)
        assert up.returncode == 2, up.stdout[-2000:] + up.stderr[-2000:]
        [line] = [text for text in up.stderr.strip().splitlines() if text.startswith("lab ")]
        assert "does not see this machine's files" in line, line
        assert not resources.find(lab_docker, name), "lab up left something on the engine"
        return
    assert not resources.find(engines, name), "the lab left something on the second engine"
    # And `lab doctor` says so, of each engine, before any run.
    doctor = hidden(sys.executable, "-m", "lab", "doctor", "--config", str(cfg), timeout=300)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    for engine in ("local", "second"):
        [line] = [text for text in doctor.stdout.splitlines() if f"engine {engine}:" in text]
        assert "run folders copied through its API" in line, line
    assert not resources.find(lab_docker, name) and not resources.find(engines, name)


def test_doctor_names_each_engine_and_how_its_hosts_get_their_files(engines_yaml: Path,
                                                                   lab_images: dict[str, images.ImageSet],
                                                                   second_engine: docker.DockerClient) -> None:
    doctor = lab("doctor", "--config", str(engines_yaml), timeout=300)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    for engine in ("local", "second"):
        [line] = [text for text in doctor.stdout.splitlines() if f"engine {engine}:" in text]
        assert "run folders shared (bind mounts)" in line, line


def test_a_lab_kept_on_the_second_engine_is_reached_and_taken_down_there(
        lab_config: LabConfig, lab_images: dict[str, images.ImageSet], second_engine: docker.DockerClient,
        lab_docker: docker.DockerClient, tmp_path: Path) -> None:
    from tests.e2e.test_keep import flipped_config  # a scenario that cannot end as expected: it is kept

    profile = next(iter(lab_images))
    flipped = flipped_config(lab_config.path, tmp_path / "flipped" / "lab.yaml", profile, "mirror")
    text = flipped.read_text().replace("results_dir: lab-results", f"results_dir: {tmp_path / 'results'}")
    path = config_copy(lab_config.path, tmp_path, text + f"\nengines:\n  local: {{}}\n  second:\n    url: {SECOND}\n")
    cfg = config.load(path)
    done = lab("run", "--config", str(path), "--profile", profile, "--scenario", "mirror", "--keep",
               "--engine", "second", "--out", str(tmp_path / "run"))
    names = kept.names(cfg)
    try:
        assert done.returncode == 1 and len(names) == 1, done.stdout[-3000:] + done.stderr[-2000:]
        state = kept.load(cfg, names[0])
        assert state.engines == {"primary": "second", "secondary": "second"}, state
        ns = kept.namespace(cfg, state.name)
        assert resources.find(second_engine, cfg.name, ns=ns) and not resources.find(lab_docker, cfg.name, ns=ns)
        status = lab("status", "--config", str(path), "--json")
        hosts = json.loads(status.stdout)["labs"][0]["hosts"]
        assert [h["host"] for h in hosts] == ["running", "running"], status.stdout + status.stderr
        shell = lab("ssh", "--config", str(path), "primary", "--", "ip", "-br", "link")
        assert shell.returncode == 0 and "lab-tap0" in shell.stdout, shell.stdout + shell.stderr
        down = lab("down", "--config", str(path), state.name)
        assert down.returncode == 0, down.stderr
        assert not resources.find(second_engine, cfg.name, ns=ns), "lab down left the hosts on the second engine"
    finally:
        for name in names:
            resources.remove(second_engine, cfg.name, ns=kept.namespace(cfg, name))
            kept.down(Engine(lab_docker), cfg, name)

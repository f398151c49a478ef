"""Bad input, each case through the real `lab` command: one clear line on stderr, exit 2, and
nothing of the lab left (or started) in Docker."""

from __future__ import annotations

import http.server
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from lab import cli, doctor
from lab.engine import Engine, resources
from lab.errors import LabError
from tests.serving import Serving

pytestmark = pytest.mark.e2e

REPO_CONFIG = Path(__file__).resolve().parents[2] / "lab.yaml"
Mutation = Callable[[dict[str, Any]], None]


def mutated(tmp_path: Path, change: Mutation) -> Path:
    data = yaml.safe_load(REPO_CONFIG.read_text())
    change(data)
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def setter(*keys: str, value: Any) -> Mutation:
    def change(data: dict[str, Any]) -> None:
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return change


def series_of(mbox: str) -> Mutation:
    return setter("profiles", "baseline", "series", value={"mbox": mbox})


CONFIG_CASES: dict[str, tuple[Mutation, list[str], str]] = {
    # name: (change to lab.yaml, lab arguments, what the line must name)
    "unknown-top-level-key": (setter("scenarioz", value={}), ["run"], "scenarioz: unknown key"),
    "unknown-nested-key": (setter("traffic", "ratee", value=5), ["run"], "traffic.ratee: unknown key"),
    "wrong-type": (setter("traffic", "rate", value="fast"), ["run"], "traffic.rate: expected an integer"),
    "negative-rate": (setter("traffic", "rate", value=-5), ["run"], "traffic.rate: -5 is out of range"),
    "absurd-hold": (setter("migration", "hold_s", value=100000), ["run"], "migration.hold_s"),
    "negative-timeout": (setter("timeouts", "boot_s", value=-1), ["build"], "timeouts.boot_s"),
    "unknown-filter": (setter("scenarios", "mirror", "filter", value="filter-dump"), ["run"],
                       "scenarios.mirror.filter"),
    "bad-expectation": (setter("scenarios", "mirror", "expect", "baseline", value="maybe"), ["run"],
                        "scenarios.mirror.expect.baseline"),
    "unknown-profile": (lambda d: None, ["run", "--profile", "nope"], "--profile: unknown name 'nope'"),
    "unknown-scenario": (lambda d: None, ["run", "--scenario", "nope"], "--scenario: unknown name 'nope'"),
    "missing-series-file": (series_of("/nonexistent/series.mbox"), ["build", "--profile", "baseline"],
                            "no such mbox file"),
}


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    """After the case, nothing of the lab in Docker; on a machine without Docker nothing can be, and
    the case (which must not need Docker to be refused) still runs."""
    yield
    try:
        client = Engine.connect().client
    except LabError:
        return
    # What this process (the lab runs in it here) made: other runs may share the engine.
    mine = {"label": [f"{resources.OWNER_PID}={os.getpid()}"]}
    left = client.containers.list(all=True, filters=mine) + client.networks.list(filters=mine)
    assert not left, f"left behind: {[x.name for x in left]}"


def one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == cli.EXIT_LAB_ERROR, err
    assert err.count("\n") == 1 and err.startswith("lab "), err
    return err


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_config_case(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_leftovers: None) -> None:
    change, args, expected = CONFIG_CASES[case]
    path = mutated(tmp_path, change)
    err = one_line_exit_2([args[0], "--config", str(path), *args[1:]], capsys)
    assert expected in err, err


def test_malformed_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_leftovers: None) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("profiles:\n  baseline: {qemu: [\n")
    assert "not valid YAML" in one_line_exit_2(["run", "--config", str(path)], capsys)


def test_duplicate_scenario_names(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_leftovers: None) -> None:
    text = REPO_CONFIG.read_text().replace("  redirector:\n", "  mirror:\n", 1)
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    err = one_line_exit_2(["run", "--config", str(path)], capsys)
    assert "duplicate key 'mirror'" in err and "lab.yaml:" in err


def test_mbox_with_no_patches(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_leftovers: None) -> None:
    mbox = tmp_path / "empty.mbox"
    mbox.write_text("From nobody Mon Sep 17 00:00:00 2001\nSubject: hello\n\nno diff here\n")
    path = mutated(tmp_path, series_of(str(mbox)))
    assert "no patch found" in one_line_exit_2(["build", "--config", str(path), "--profile", "baseline"], capsys)


class _Broken(http.server.BaseHTTPRequestHandler):
    garbage = False

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        if self.garbage:
            body = b"<html>surprise</html>"
            self.send_response(200)
        else:
            body = b"oops"
            self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("garbage", "expected"), [(False, "HTTP 500"), (True, "not JSON")],
                         ids=["answers-500", "answers-garbage"])
def test_patchwork_failures(garbage: bool, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    handler = type("Handler", (_Broken,), {"garbage": garbage})
    server = Serving("127.0.0.1", handler, "broken-patchwork")
    try:
        assert expected in one_line_exit_2(["series", "show", f"{server.base}/api/patches/1/"], capsys)
    finally:
        server.close()


def test_docker_socket_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    assert "no Docker daemon answers" in one_line_exit_2(["run", "--config", str(REPO_CONFIG)], capsys)


def test_tun_missing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                     no_leftovers: None) -> None:
    monkeypatch.setattr(doctor, "TUN", "/dev/net/no-such-tun")  # the device cannot be taken away for real
    assert "/dev/net/no-such-tun is missing" in one_line_exit_2(["run", "--config", str(REPO_CONFIG)], capsys)


def test_disk_too_full_to_build(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_leftovers: None,
                                lab_docker: docker.DockerClient) -> None:
    # A mirror of its own makes a base image that does not exist yet; the space check comes first,
    # so nothing is fetched from that (unreachable) address.
    path = mutated(tmp_path, lambda d: d["images"].update(min_free_gb=10000, mirror="http://127.0.0.1:9/debian"))
    err = one_line_exit_2(["build", "--config", str(path), "--profile", "baseline"], capsys)
    assert "must be built but only" in err and "images.min_free_gb" in err


def test_a_series_out_of_reach_is_refused_before_any_profile_builds(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                     no_leftovers: None) -> None:
    # Images of a prefix of their own: had baseline (named first) been built before the second
    # profile's series was fetched, they would be there.
    prefix = f"nfcl-refused-{os.getpid()}"
    remote = {"default": False, "qemu": {"source": "debian", "version": "1:10.2.2+ds-1", "suite": "sid"},
              "series": {"patchwork": "http://127.0.0.1:9", "ref": 491379}}

    def change(data: dict[str, Any]) -> None:
        data["images"]["prefix"] = prefix
        data["profiles"]["remote"] = remote

    config = mutated(tmp_path, change)
    line = one_line_exit_2(["build", "--config", str(config), "--profile", "baseline", "--profile", "remote"], capsys)
    assert "127.0.0.1:9" in line, line
    client = docker.from_env()
    assert not [i.tags for i in client.images.list() if any(t.startswith(f"{prefix}/") for t in i.tags)]

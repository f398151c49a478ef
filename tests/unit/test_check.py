"""`lab check`: the check client and `lab check` up to Docker, against a local Patchwork-like server.

Every request goes to tests/patchwork_server.py on 127.0.0.1; ``only_loopback`` fails a test that
tries to connect anywhere else. The run itself needs Docker: here the lab finds no Docker daemon
(DOCKER_HOST names a socket nobody listens on), which is a real way for the lab not to run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from lab import cli, config
from lab.results.report import Row
from lab.upstream import check
from lab.upstream.check import Check, CheckError, Poster
from lab.upstream.series import Patchwork, SeriesDoesNotApply, SeriesInfo
from tests.patchwork_server import MAINTAINER, USER, Fault, PatchworkServer, ServedPatch, ServedSeries

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "f00dfeedc0ffee5ecre7700000000000deadbeef"  # a maintainer's
USER_TOKEN = "0123456789abcdef0123456789abcdef01234567"  # a user of the project, not a maintainer
pytestmark = pytest.mark.usefixtures("only_loopback")


def two_patch_series(received_all: bool = True) -> ServedSeries:
    patches = [ServedPatch(9001 + n, f"[{n + 1}/2] net: change {n + 1}", f"Subject: [PATCH {n + 1}/2] x\n".encode())
               for n in range(2)]
    return ServedSeries(900, "[1/2] net: change 1", patches, received_all=received_all)


@pytest.fixture
def server() -> Iterator[PatchworkServer]:
    with PatchworkServer([two_patch_series()], tokens={TOKEN: MAINTAINER, USER_TOKEN: USER}) as s:
        yield s


def poster(server: PatchworkServer, token: str = TOKEN, **kw: object) -> Poster:
    return Poster(Patchwork(server.base, timeout=kw.pop("timeout", 5.0)), token, "qemu-devel", **kw)  # type: ignore[arg-type]


CHECK = Check("pending", "running mirror on baseline", "https://ci.example/run/1", "netfilter-continuity")


# --- the check client -----------------------------------------------------------------------------

def test_a_check_is_posted_with_the_token_and_recorded(server: PatchworkServer) -> None:
    p = poster(server)
    p.post_all((9001, 9002), CHECK)
    assert [(c.patch, c.body, c.user) for c in server.checks] == [(9001, CHECK.body(), MAINTAINER),
                                                                   (9002, CHECK.body(), MAINTAINER)]
    assert CHECK.body() == {"state": "pending", "target_url": "https://ci.example/run/1",
                            "context": "netfilter-continuity", "description": "running mirror on baseline"}
    assert [entry["patch"] for entry in p.posted] == [9001, 9002] and all(e["posted"] for e in p.posted)
    assert TOKEN not in json.dumps(p.record("netfilter-continuity", "u"))


def test_every_state_is_a_new_post(server: PatchworkServer) -> None:
    p = poster(server)
    p.post(9001, CHECK)
    p.post(9001, dataclasses.replace(CHECK, state="success", description="3/3 as expected"))
    assert [c["state"] for c in server.checks_on(9001)] == ["pending", "success"]


def test_no_token_is_refused_before_anything_is_sent(server: PatchworkServer) -> None:
    with pytest.raises(check.LabError, match="no Patchwork token: set PATCHWORK_TOKEN or check.token_file"):
        poster(server, token="")
    assert server.requests == []


def test_a_token_that_is_not_a_maintainers(server: PatchworkServer) -> None:
    with pytest.raises(CheckError) as caught:
        poster(server, token=USER_TOKEN).post(9001, CHECK)
    message = str(caught.value)
    assert "HTTP 403" in message and "the token is not a maintainer's for project qemu-devel" in message
    assert "patch 9001" in message and USER_TOKEN not in message and "\n" not in message
    assert server.checks == []


def test_an_unknown_patch(server: PatchworkServer) -> None:
    with pytest.raises(CheckError, match=r"Patchwork has no patch 4242 \(.*/api/patches/4242/checks/\) \(HTTP 404\)"):
        poster(server).post(4242, CHECK)


def test_a_server_error(server: PatchworkServer) -> None:
    server.faults["/api/patches/9001/checks/"] = Fault(502)
    with pytest.raises(CheckError, match="Patchwork answered HTTP 502 to the check on patch 9001 .*try again later"):
        poster(server).post(9001, CHECK)


def test_a_server_that_does_not_answer(server: PatchworkServer) -> None:
    server.faults["/api/patches/9001/checks/"] = Fault(hang=True)
    with pytest.raises(CheckError, match=r"check pending on patch 9001 not posted: cannot reach Patchwork .*timed out"):
        poster(server, timeout=0.5).post(9001, CHECK)


def test_a_check_patchwork_refuses_is_an_error(server: PatchworkServer) -> None:
    with pytest.raises(CheckError, match="HTTP 400"):
        poster(server).post(9001, dataclasses.replace(CHECK, state="green"))


def test_dry_run_says_what_it_would_post_and_posts_nothing(server: PatchworkServer) -> None:
    said: list[str] = []
    p = poster(server, dry_run=True, say=said.append)
    p.post_all((9001, 9002), CHECK)
    assert server.requests == [] and server.checks == []
    assert len(said) == 2 and all(TOKEN not in line and check.MASK in line for line in said)
    assert said[0].startswith(f"would POST {server.base}/api/patches/9001/checks/ ")
    assert "'state': 'pending'" in said[0] and "'context': 'netfilter-continuity'" in said[0]
    assert [e["posted"] for e in p.posted] == [False, False]


def test_dry_run_needs_no_token(server: PatchworkServer) -> None:
    poster(server, token="", dry_run=True, say=lambda line: None).post(9001, CHECK)
    assert server.requests == []


# --- the verdict ---------------------------------------------------------------------------------

def lab_config(tmp_path: Path) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text((ROOT / "lab.yaml").read_text().replace("mbox: series/", f"mbox: {ROOT}/series/")
                    .replace("  results_dir: lab-results", f"  results_dir: {tmp_path / 'results'}"))
    return path


def info(patches: tuple[int, ...] = (9001, 9002)) -> SeriesInfo:
    return SeriesInfo(id=900, name="net: change", version=2, mbox="http://127.0.0.1:1/series/900/mbox/",
                      received_all=True, total=len(patches), api_url="http://127.0.0.1:1/api/series/900/",
                      patches=patches, project="qemu-devel")


def plan(tmp_path: Path) -> check.Plan:
    return check.plan(config.load(lab_config(tmp_path)), info(), "900", "http://127.0.0.1:1")


def row(profile: str, scenario: str, expected: str, verdict: str, lost: int | None = 0) -> Row:
    r = Row.of(profile=profile, scenario=scenario, filter="filter-mirror", expected=expected, verdict=verdict,
               accel="tcg", qemu_version="10.2.2 (Debian 1:10.2.2+ds-1)",
               view="guest" if scenario.startswith("guest") else "stream")
    return dataclasses.replace(r, lost=lost, frames_sent=3000 if lost is not None else None)


def test_the_plan_puts_the_series_on_the_base_and_expects_check(tmp_path: Path) -> None:
    p = plan(tmp_path)
    assert (p.base.name, p.patched.name, p.profiles) == ("baseline", "check-900", ["baseline", "check-900"])
    assert p.patched.series == config.SeriesSource(ref="900", patchwork="http://127.0.0.1:1")
    assert p.patched.qemu == p.base.qemu
    assert {s: sc.expect["check-900"] for s, sc in p.cfg.scenarios.items()} == {
        "mirror": "continuous", "redirector": "continuous", "redirector-when-stopped": "continuous",
        # The guest's path: what the series is for; the two without `check` keep the base's verdict.
        "guest-plain": "gap", "guest-redirect-qmp": "continuous", "guest-when-stopped": "continuous",
        "guest-redirect-early": "continuous"}


def test_a_scenario_without_check_expects_what_the_base_gives(tmp_path: Path) -> None:
    path = lab_config(tmp_path)
    path.write_text(path.read_text().replace("      check: continuous      # what a series must give", "      #"))
    p = check.plan(config.load(path), info(), "900", "http://127.0.0.1:1")
    assert p.cfg.scenarios["mirror"].expect["check-900"] == "gap"


def test_a_base_with_a_series_or_unknown_is_refused(tmp_path: Path) -> None:
    cfg = config.load(lab_config(tmp_path))
    with pytest.raises(check.LabError, match="--base control: that profile has a series of its own"):
        check.plan(cfg, info(), "900", "http://127.0.0.1:1", "control")
    with pytest.raises(check.LabError, match="--base nope: no such profile"):
        check.plan(cfg, info(), "900", "http://127.0.0.1:1", "nope")
    with pytest.raises(check.LabError, match="lists no patches"):
        check.plan(cfg, info(()), "900", "http://127.0.0.1:1")


def ab(mirror: str, redirector: str = "continuous", stopped: str = "unsupported",
       base_mirror: str = "gap") -> list[Row]:
    return [row("baseline", "mirror", "gap", base_mirror), row("baseline", "redirector", "continuous", "continuous"),
            row("baseline", "redirector-when-stopped", "unsupported", "unsupported", None),
            row("check-900", "mirror", "continuous", mirror, 0 if mirror == "continuous" else 212),
            row("check-900", "redirector", "continuous", redirector),
            row("check-900", "redirector-when-stopped", "continuous", stopped, None)]


def test_every_verdict_as_expected_is_success_and_an_unsupported_scenario_is_named(tmp_path: Path) -> None:
    state, description = check.judge(ab("continuous"), plan(tmp_path))
    assert state == "success"
    assert description == ("2/3 as expected: mirror gap->continuous, 0 of 3000 lost; redirector continuous, "
                           "0 of 3000 lost; redirector-when-stopped not run (build lacks a property it sets) | "
                           "baseline (QEMU 10.2.2) + series 900 v2, tcg")
    assert len(description) <= 255


def test_a_verdict_other_than_expected_fails(tmp_path: Path) -> None:
    state, description = check.judge(ab("gap"), plan(tmp_path))
    assert state == "fail"
    assert "mirror gap, 212 of 3000 lost (expected continuous)" in description


def test_an_error_verdict_is_a_warning(tmp_path: Path) -> None:
    state, description = check.judge(ab("continuous", redirector="error"), plan(tmp_path))
    assert state == "warning" and description.startswith("lab could not decide (check-900 x redirector: error)")


def test_a_base_off_its_expectations_is_a_warning(tmp_path: Path) -> None:
    state, description = check.judge(ab("continuous", base_mirror="continuous"), plan(tmp_path))
    assert state == "warning"
    assert description.startswith("base baseline off its expectations (mirror continuous (expected gap))")


def test_a_definite_mismatch_outweighs_an_error_elsewhere(tmp_path: Path) -> None:
    assert check.judge(ab("gap", redirector="error"), plan(tmp_path))[0] == "fail"


def test_a_series_that_does_not_apply_names_the_patch(tmp_path: Path) -> None:
    exc = SeriesDoesNotApply("patch 1/1: [PATCH 1/1] net/filter-mirror: keep mirroring while stopped: hunks do "
                             "not apply at net/filter-mirror.c:210 (base: QEMU 10.2.2)", "/logs/x.log")
    description = check.does_not_apply(exc, plan(tmp_path))
    assert description.startswith("series does not apply to baseline: patch 1/1: ")
    assert "/logs/x.log" not in description and len(description) <= 255


def test_descriptions_are_one_line_of_at_most_255_characters() -> None:
    text = check.shorten("x\n" * 400)
    assert 250 <= len(text) <= 255 and "\n" not in text and text.endswith("...")


# --- where the check points, and the token ------------------------------------------------------

def test_target_url() -> None:
    assert check.target_url("https://ci.example/1", {}) == "https://ci.example/1"
    github = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "42"}
    assert check.target_url("", github) == "https://github.com/o/r/actions/runs/42"


def test_no_target_url_of_this_machine_is_posted(tmp_path: Path) -> None:
    """Outside CI there is no page to point at: none is posted (Patchwork refuses file://, 400)."""
    assert check.target_url("", {}) == ""
    assert "target_url" not in Check("pending", "x", check.target_url("", {}), "ctx").body()
    long_repo = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/" + "r" * 200,
                 "GITHUB_RUN_ID": "42"}
    assert check.target_url("", long_repo) == ""  # longer than Patchwork takes: left out
    assert check.target_url("", {**long_repo, "GITHUB_SERVER_URL": "file:///srv", "GITHUB_REPOSITORY": "o/r"}) == ""
    # act names the repository by the path of the clone it runs: a page of nowhere
    github = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "42"}
    assert check.target_url("", {**github, "GITHUB_REPOSITORY": "/home/runner/lab"}) == ""
    assert check.target_url("", {**github, "GITHUB_RUN_ID": "x"}) == ""


def test_a_configured_target_url_longer_than_patchwork_takes_is_refused() -> None:
    with pytest.raises(check.LabError, match="check.target_url is 219 characters long; Patchwork takes at most 200"):
        check.target_url("https://ci.example/" + "x" * 200, {})


def test_token_from_the_environment_else_the_file(tmp_path: Path) -> None:
    cfg = config.load(lab_config(tmp_path))
    assert check.read_token(cfg, {}) == ""
    assert check.read_token(cfg, {"PATCHWORK_TOKEN": f" {TOKEN}\n"}) == TOKEN
    path = lab_config(tmp_path)
    path.write_text(path.read_text().replace('  token_file: ""', "  token_file: token"))
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "token").chmod(0o600)
    cfg = config.load(path)
    assert check.read_token(cfg, {}) == TOKEN
    assert check.read_token(cfg, {"PATCHWORK_TOKEN": USER_TOKEN}) == USER_TOKEN
    (tmp_path / "token").write_text("Token abc\r\nX-Other: 1")
    with pytest.raises(check.LabError, match=r"token in check.token_file \(.*\) is not one word") as caught:
        check.read_token(cfg, {})
    assert "abc" not in str(caught.value)
    (tmp_path / "token").unlink()
    with pytest.raises(check.LabError, match="check.token_file: cannot read .*token"):
        check.read_token(cfg, {})


# --- `lab check` through the real command line, up to where Docker is needed ------------------------

@pytest.fixture
def no_docker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A Docker daemon that is not there: the lab cannot run, which says nothing about the series."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-docker.sock'}")
    for var in ("GITHUB_ACTIONS", "PATCHWORK_TOKEN"):
        monkeypatch.delenv(var, raising=False)


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_lab_check_posts_pending_then_a_warning_when_the_lab_cannot_run(
        server: PatchworkServer, tmp_path: Path, no_docker: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATCHWORK_TOKEN", TOKEN)
    # Outside a CI run no target_url is posted: under GitHub Actions (or act) its run's page would be.
    for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "out"
    rc = cli.main(["check", f"{server.base}/api/series/900/", "--config", str(lab_config(tmp_path)), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == cli.EXIT_LAB_ERROR
    assert captured.err.count("\n") == 1 and captured.err.startswith("lab check: error: no Docker daemon answers")
    for patch in (9001, 9002):
        pending, final = server.checks_on(patch)
        assert pending["state"] == "pending" and final["state"] == "warning"
        assert final["description"].startswith("the lab could not run (says nothing about the series): no Docker")
        assert final["context"] == "netfilter-continuity" and "target_url" not in final
    report = json.loads((out / "report.json").read_text())
    assert report["check"]["state"] == "warning" and report["check"]["context"] == "netfilter-continuity"
    assert [(e["patch"], e["state"]) for e in report["check"]["posted"]] == [
        (9001, "pending"), (9002, "pending"), (9001, "warning"), (9002, "warning")]
    # The token is in the Authorization header only: nowhere in what the lab wrote or printed.
    assert files_under(out)
    for path in files_under(out):
        assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in captured.out + captured.err


def test_lab_check_dry_run_posts_nothing_and_masks_the_token(
        server: PatchworkServer, tmp_path: Path, no_docker: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATCHWORK_TOKEN", TOKEN)
    rc = cli.main(["check", "900", "--patchwork", server.base, "--config", str(lab_config(tmp_path)), "--dry-run",
                   "--scenario", "mirror", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == cli.EXIT_LAB_ERROR and server.checks == []
    assert all(method == "GET" for method, _path in server.requests)
    assert out.count("would POST") == 4 and check.MASK in out and TOKEN not in out
    assert "running mirror on baseline with and without series 900" in out


def test_lab_check_of_an_incomplete_series_posts_nothing(tmp_path: Path, no_docker: None,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATCHWORK_TOKEN", TOKEN)
    with PatchworkServer([two_patch_series(received_all=False)], tokens={TOKEN: MAINTAINER}) as s:
        rc = cli.main(["check", f"{s.base}/api/patches/9001/", "--config", str(lab_config(tmp_path))])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "received_all is false" in err
        assert s.checks == [] and all(method == "GET" for method, _ in s.requests)


def test_lab_check_with_a_users_token_stops_before_the_run(server: PatchworkServer, tmp_path: Path, no_docker: None,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATCHWORK_TOKEN", USER_TOKEN)
    out = tmp_path / "out"
    rc = cli.main(["check", "900", "--patchwork", server.base, "--config", str(lab_config(tmp_path)),
                   "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 2 and captured.err.count("\n") == 1
    assert "HTTP 403" in captured.err and "the token is not a maintainer's for project qemu-devel" in captured.err
    assert USER_TOKEN not in captured.out + captured.err
    assert server.checks == [] and not out.exists()  # no run happened


def test_lab_check_without_a_token(server: PatchworkServer, tmp_path: Path, no_docker: None,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["check", "900", "--patchwork", server.base, "--config", str(lab_config(tmp_path))])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no Patchwork token" in err
    assert [m for m, _ in server.requests] == ["GET"]


def test_a_guest_scenario_counts_what_never_reached_the_guest(tmp_path: Path) -> None:
    base = dataclasses.replace(row("baseline", "guest-redirect-qmp", "gap", "gap", 0), guest_lost=2100)
    patched = dataclasses.replace(row("check-900", "guest-redirect-qmp", "continuous", "gap", 0), guest_lost=2050)
    state, description = check.judge([base, patched], plan(tmp_path))
    assert state == "fail"
    assert description.startswith("0/1 as expected: guest-redirect-qmp gap, 2050 of 3000 lost to the guest "
                                  "(expected continuous)")


# --- what is posted is public; the token file is private -----------------------------------------

def test_a_token_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = lab_config(tmp_path)
    path.write_text(path.read_text().replace('  token_file: ""', "  token_file: token"))
    (tmp_path / "token").write_text(TOKEN + "\n")
    cfg = config.load(path)
    for mode in (0o644, 0o640, 0o604, 0o660):
        (tmp_path / "token").chmod(mode)
        with pytest.raises(check.LabError) as caught:
            check.read_token(cfg, {})
        assert str(caught.value) == (f"check.token_file: {tmp_path / 'token'} has mode {mode:04o}, so others may "
                                     f"read the token; chmod 600 {tmp_path / 'token'}")
        assert TOKEN not in str(caught.value)
    for mode in (0o600, 0o400):
        (tmp_path / "token").chmod(mode)
        assert check.read_token(cfg, {}) == TOKEN


def test_a_warning_quotes_no_path_engine_url_or_user_name() -> None:
    line = ("cannot copy /home/alice/lab-results/run-1/tap.pcap from engine ssh://alice@10.0.0.5:22 "
            "(tcp://10.0.0.6:2376 refused); log: ~/lab/build.log; bob@builder; alice's net/filter-mirror.c:210")
    env = {"USER": "alice", "SUDO_USER": "bob"}
    scrubbed = check.scrub(line, env)
    for secret in ("/home", "alice", "bob", "10.0.0.5", "10.0.0.6", "ssh://", "tcp://", "~/lab"):
        assert secret not in scrubbed, secret
    assert "net/filter-mirror.c:210" in scrubbed and "<path>" in scrubbed and "<url>" in scrubbed
    # What the lab posts goes through it, with this machine's own user name.
    user = check._local_users(os.environ)
    posted = check.lab_failed(f"{line} for {' '.join(user)}")
    assert "/home/alice" not in posted and "ssh://" not in posted
    assert not any(re.search(rf"\b{re.escape(u)}\b", posted) for u in user)


# --- no patch stays pending, whichever way lab check ends --------------------------------------------

@pytest.mark.parametrize(("failure", "rc"), [
    (OSError(errno.ENOSPC, "No space left on device", "/home/dev/lab-results/check-1/report.json"), 2),
    (paramiko.SSHException("Error reading SSH protocol banner from ssh://dev@10.0.0.5:22"), 2),
    (KeyboardInterrupt("signal 15"), cli.EXIT_INTERRUPTED),
], ids=["OSError", "SSH", "interrupt"])
def test_lab_check_finalises_its_pending_checks_on_every_way_out(
        server: PatchworkServer, tmp_path: Path, no_docker: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], failure: BaseException, rc: int) -> None:
    def run_stops(*args: object, **kwargs: object) -> None:
        assert [c["state"] for c in server.checks_on(9001)] == ["pending"]  # the run starts after pending
        raise failure

    monkeypatch.setenv("PATCHWORK_TOKEN", TOKEN)
    monkeypatch.setattr(cli, "_run_matrix", run_stops)
    assert cli.main(["check", "900", "--patchwork", server.base, "--config", str(lab_config(tmp_path)),
                     "--out", str(tmp_path / "out")]) == rc
    assert capsys.readouterr().err.count("\n") == 1
    for patch in (9001, 9002):
        states = server.checks_on(patch)
        assert [c["state"] for c in states] == ["pending", "warning"]
        assert states[1]["description"].startswith("the lab stopped (says nothing about the series): ")
        assert "/home/dev" not in states[1]["description"] and "ssh://" not in states[1]["description"]


class SilentDocker:
    """A Docker socket that takes connections and never answers: the lab waits on it."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.listener.accept()[0])

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.listener.close()


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_during_the_run_leaves_no_patch_pending(server: PatchworkServer, tmp_path: Path,
                                                         signo: signal.Signals) -> None:
    docker_socket = SilentDocker(tmp_path / "docker.sock")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "GITHUB_ACTIONS"}
    env.update(PATCHWORK_TOKEN=TOKEN, DOCKER_HOST=f"unix://{tmp_path / 'docker.sock'}")
    argv = [sys.executable, "-c", "import sys; from lab.cli import main; sys.exit(main())", "check", "900",
            "--patchwork", server.base, "--config", str(lab_config(tmp_path)), "--out", str(tmp_path / "out")]
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as lab:
        try:
            deadline = time.monotonic() + 60
            while len(server.checks) < 2 and lab.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [c.body["state"] for c in server.checks] == ["pending", "pending"], lab.poll()
            lab.send_signal(signo)
            _, err = lab.communicate(timeout=60)
        finally:
            lab.kill()
            docker_socket.close()
    assert lab.returncode == cli.EXIT_INTERRUPTED, err
    assert err.count("\n") == 1 and "interrupted" in err
    why = "interrupted (signal 15)" if signo == signal.SIGTERM else "interrupted"
    for patch in (9001, 9002):
        assert [(c["state"], c["description"]) for c in server.checks_on(patch)][1:] == [
            ("warning", f"the lab stopped (says nothing about the series): {why}")]

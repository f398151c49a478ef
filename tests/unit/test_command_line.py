"""lab's command line as people type it: options anywhere before `--`, the remote command after it."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import types
from pathlib import Path

import pytest

from lab import cli, completion, doctor, kept, version
from lab.engine import resources

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [
    ["ssh", "primary", "--lab", "dev", "--", "ip", "link"],
    ["ssh", "--lab", "dev", "primary", "--", "ip", "link"],
    ["ssh", "primary", "--config", "lab.yaml", "--lab", "dev", "--", "ip", "link"],
])
def test_ssh_takes_its_options_anywhere_before_the_dashes(argv: list[str]) -> None:
    args = cli.parse_args(argv)
    assert (args.role, args.lab, args.command) == ("primary", "dev", ["ip", "link"])


def test_after_the_dashes_everything_is_the_remote_command() -> None:
    args = cli.parse_args(["ssh", "secondary", "--", "tcpdump", "-c", "5", "--lab", "x", "--"])
    assert (args.lab, args.command) == (None, ["tcpdump", "-c", "5", "--lab", "x", "--"])


def test_ssh_without_a_command_is_a_shell_and_a_plain_command_needs_no_dashes() -> None:
    assert cli.parse_args(["ssh", "primary", "--lab", "dev"]).command == []
    assert cli.parse_args(["ssh", "primary", "uptime"]).command == ["uptime"]


@pytest.mark.parametrize("argv", [
    ["qmp", "primary", "--lab", "dev", "qom-list", '{"path": "/objects"}'],
    ["qmp", "primary", "qom-list", '{"path": "/objects"}', "--lab", "dev"],
    ["qmp", "--lab", "dev", "primary", "--", "qom-list", '{"path": "/objects"}'],
])
def test_qmp_takes_its_options_anywhere(argv: list[str]) -> None:
    args = cli.parse_args(argv)
    assert (args.role, args.lab, args.execute, args.arguments) == ("primary", "dev", "qom-list", '{"path": "/objects"}')


@pytest.mark.parametrize("argv", [
    ["console", "primary", "--lab", "dev", "--log", "-f"],
    ["console", "--log", "primary", "-f", "--lab", "dev"],
])
def test_console_takes_its_options_anywhere(argv: list[str]) -> None:
    args = cli.parse_args(argv)
    assert (args.role, args.lab, args.log, args.follow) == ("primary", "dev", True, True)


def test_an_option_ssh_does_not_know_before_the_dashes_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ssh", "primary", "--nope", "--", "ls"]) == cli.EXIT_LAB_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--nope" in err


def test_version_names_the_package_and_this_checkout(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    described = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--tags"],
                               capture_output=True, text=True, check=True).stdout.strip()
    assert out == f"lab {importlib.metadata.version('netfilter-continuity-lab')} (git {described})\n"


def test_version_outside_a_checkout_is_the_packages(tmp_path: Path) -> None:
    assert version.describe(tmp_path) == f"lab {importlib.metadata.version('netfilter-continuity-lab')}"


def test_help_lists_every_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    statuses = out[out.index("exit status:"):]
    for status in (0, cli.EXIT_MISMATCH, cli.EXIT_LAB_ERROR, cli.EXIT_BISECT_SKIP, cli.EXIT_INTERRUPTED):
        assert re.search(rf"^  {status} +\S", statuses, re.M), f"exit status {status} is not explained"


def test_doctor_json_gives_every_check_and_fails_as_the_text_does(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    checks = [doctor.Check("docker", True, "daemon 20.10"), doctor.Check("/dev/net/tun", False, "missing: modprobe")]
    monkeypatch.setattr(doctor, "run", lambda cfg: checks)
    assert cli.main(["doctor", "--json", "--config", str(ROOT / "lab.yaml")]) == cli.EXIT_LAB_ERROR
    assert json.loads(capsys.readouterr().out) == {"ok": False, "checks": [
        {"name": "docker", "ok": True, "detail": "daemon 20.10"},
        {"name": "/dev/net/tun", "ok": False, "detail": "missing: modprobe"}]}
    monkeypatch.setattr(doctor, "run", lambda cfg: checks[:1])
    assert cli.main(["doctor", "--json", "--config", str(ROOT / "lab.yaml")]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_status_json_gives_each_kept_lab_with_its_hosts_and_the_dead_runs(
        kept_lab: tuple[kept.KeptLab, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    lab, lab_yaml = kept_lab
    hosts = [{"role": "primary", "container": "nfcl-primary", "host": "running", "runstate": "running"}]
    dead = {"ab12cd": resources.Leftovers(["nfcl-x"])}
    monkeypatch.setattr(cli.Engine, "connect", lambda: types.SimpleNamespace(dead_runs=lambda name: dead))
    monkeypatch.setattr(kept, "status", lambda engine, lab: hosts)
    assert cli.main(["status", "--json", "--config", str(lab_yaml)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(one["name"], one["profile"], one["rundir"], one["hosts"]) for one in data["labs"]] == [
        ("dev", "baseline", lab.rundir, hosts)]
    assert data["dead_runs"] == {"ab12cd": {"containers": ["nfcl-x"], "networks": [], "volumes": []}}


def completions(script: str, *typed: str) -> list[str]:
    """What bash offers for the words typed so far (the last one being completed)."""
    words = " ".join(shlex.quote(w) for w in ("lab", *typed))
    shown = subprocess.run(["bash", "-c", f'{script}\nCOMP_WORDS=({words}); COMP_CWORD={len(typed)}; _lab; '
                                          'printf "%s\\n" "${COMPREPLY[@]}"'],
                           capture_output=True, text=True, check=True).stdout
    return shown.split()


def test_bash_completion_offers_verbs_options_and_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert completions(script, "ru") == ["run"]
    assert set(completions(script, "")) >= {"run", "ssh", "doctor", "completion", "--version"}
    assert "--jobs" in completions(script, "run", "--j") and "--json" in completions(script, "status", "--j")
    assert set(completions(script, "ssh", "")) >= {"primary", "secondary", "--lab"}
    assert completions(script, "completion", "z") == ["zsh"]


def test_zsh_completion_describes_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["completion", "zsh"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#compdef lab\n") and "compdef _lab lab" in script
    for verb in completion.words(cli.parser()):
        assert re.search(rf"^        '{verb}:\S", script, re.M), verb
    if shutil.which("zsh"):
        subprocess.run(["zsh", "-n"], input=script, text=True, check=True)


def test_an_unknown_shell_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["completion", "fish"]) == cli.EXIT_LAB_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'fish'" in err

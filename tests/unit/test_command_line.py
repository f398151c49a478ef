"""lab's command line as people type it: options anywhere before `--`, the remote command after it."""

from __future__ import annotations

import pytest

from lab import cli


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

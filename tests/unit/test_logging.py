"""The lab's own log: one `lab` logger, shown by the CLI as `lab: ...` lines, -q and -v on every verb."""

from __future__ import annotations

import logging

import pytest

from lab import cli


@pytest.mark.parametrize(("argv", "verbosity"), [
    (["doctor"], 0), (["doctor", "-v"], 1), (["run", "-vv"], 2), (["clean", "-q"], -1),
    (["report", "html", "-q", "r.json"], -1), (["series", "show", "1", "--verbose"], 1),
])
def test_every_verb_takes_v_and_q(argv: list[str], verbosity: int) -> None:
    args = cli.parse_args(argv)
    assert args.verbose - args.quiet == verbosity


@pytest.mark.parametrize(("verbosity", "shown"), [
    (-1, ["lab: note: dead runs left x"]),
    (0, ["lab: engine local: waiting for a slot", "lab: note: dead runs left x"]),
    (1, ["lab: cell 1/2 started", "lab: engine local: waiting for a slot", "lab: note: dead runs left x"]),
])
def test_the_lab_logger_is_rendered_at_the_chosen_level(verbosity: int, shown: list[str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    cli.log_to_stderr(verbosity)
    try:
        logging.getLogger("lab.runner").debug("cell 1/2 started")
        logging.getLogger("lab.slots").info("engine local: waiting for a slot")
        logging.getLogger("lab.session").warning("note: dead runs left x")
        assert capsys.readouterr().err.splitlines() == shown
    finally:
        cli.log_to_stderr(0)


def test_main_again_replaces_the_handler_instead_of_adding_one() -> None:
    cli.log_to_stderr(0)
    cli.log_to_stderr(1)
    ours = [h for h in logging.getLogger("lab").handlers if getattr(h, "lab_cli", False)]
    assert len(ours) == 1
    cli.log_to_stderr(0)

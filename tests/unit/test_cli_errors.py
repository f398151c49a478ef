"""Every failure reaches the user as one line and an exit status, never a traceback."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lab import cli, config, kept, session
from lab.errors import DockerUnavailable, EngineUnreachable, LabError, ScenarioError

ROOT = Path(__file__).resolve().parents[2]


def one_line(argv: list[str], capsys: pytest.CaptureFixture[str], status: int = cli.EXIT_LAB_ERROR) -> str:
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == status, err
    assert err.count("\n") == 1 and err.startswith("lab"), err
    assert "Traceback" not in err
    return err


def test_bad_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert "unrecognized arguments: --bogus" in one_line(["run", "--bogus"], capsys)
    assert "invalid choice: 'tertiary'" in one_line(["qmp", "tertiary", "query-status"], capsys)


def test_a_qmp_command_qemu_refuses(kept_lab: tuple[kept.KeptLab, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _lab, path = kept_lab
    err = one_line(["qmp", "--config", str(path), "primary", "bogus-command"], capsys)
    assert "QMP bogus-command failed" in err and "has not been found" in err


def test_qmp_arguments_that_are_not_json(kept_lab: tuple[kept.KeptLab, Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    _lab, path = kept_lab
    assert "must be a JSON object" in one_line(["qmp", "--config", str(path), "primary", "qom-list", "{path"], capsys)


def test_qmp_to_a_qemu_that_is_gone(kept_lab: tuple[kept.KeptLab, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _lab, path = kept_lab
    err = one_line(["qmp", "--config", str(path), "secondary", "query-status"], capsys)
    assert "no QMP socket" in err and "lab status" in err


def test_a_kept_lab_state_that_is_garbage(kept_lab: tuple[kept.KeptLab, Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    _lab, path = kept_lab
    (kept.state_dir(config.load(path), "dev") / "state.json").write_text('{"name": 3}')
    assert "lab clean" in one_line(["qmp", "--config", str(path), "primary", "query-status"], capsys)


@pytest.mark.parametrize(("raised", "expected"), [
    (LabError("what and where; what to do"), "error: what and where; what to do"),
    (ScenarioError("first line\n  command: qemu ...\n  output: ..."), "error: first line"),
    (EngineUnreachable("second (ssh://nfcl-engine2)", "does not answer: Error reading SSH protocol banner",
                       "is its daemon up (scripts/second-engine status)?"),
     "error: engine second (ssh://nfcl-engine2) does not answer: Error reading SSH protocol banner; is its daemon"),
    (DockerUnavailable("local", "Error while fetching server API version", "start it with `dockerd &` as root"),
     "error: no Docker daemon answers (Error while fetching server API version); start it with"),
    (PermissionError(13, "Permission denied", "/run/lab/x"), "error: Permission denied (/run/lab/x)"),
], ids=["lab", "scenario", "engine", "docker", "os"])
def test_every_error_class_is_one_line_and_exit_2(raised: BaseException, expected: str,
                                                   kept_lab: tuple[kept.KeptLab, Path],
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _lab, path = kept_lab

    def fail(*args: object) -> None:
        raise raised

    monkeypatch.setattr(kept, "qmp", fail)  # where lab qmp meets the lab's lower layers
    assert expected in one_line(["qmp", "--config", str(path), "primary", "query-status"], capsys)


def test_an_internal_error_names_the_file_with_its_traceback(kept_lab: tuple[kept.KeptLab, Path],
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    _lab, path = kept_lab

    def fail(*args: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(kept, "qmp", fail)
    err = one_line(["qmp", "--config", str(path), "primary", "query-status"], capsys)
    assert "internal error: ZeroDivisionError: division by zero; traceback in " in err
    crash = Path(err.rsplit("traceback in ", 1)[1].strip())
    assert "Traceback" in crash.read_text() and "ZeroDivisionError" in crash.read_text()
    crash.unlink()


def test_an_interrupt_exits_130(kept_lab: tuple[kept.KeptLab, Path], monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    _lab, path = kept_lab

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(kept, "qmp", interrupted)
    assert "interrupted" in one_line(["qmp", "--config", str(path), "primary", "query-status"], capsys,
                                     cli.EXIT_INTERRUPTED)


def test_a_configuration_that_selects_no_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("profiles:\n  only:\n    default: false\n"
                    "scenarios:\n  m:\n    filter: filter-mirror\n    expect: {only: gap}\n")
    err = one_line(["run", "--config", str(path)], capsys)
    assert "no profile" in err or "default: false" in err


def test_with_two_labs_up_a_command_asks_which(kept_lab: tuple[kept.KeptLab, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    lab, path = kept_lab
    other = kept.state_dir(config.load(path), "second")
    other.mkdir(parents=True)
    (other / "state.json").write_text(json.dumps({**dataclasses.asdict(lab), "name": "second"}))
    err = one_line(["qmp", "--config", str(path), "primary", "query-status"], capsys)
    assert "2 labs are up (dev, second)" in err and "--lab NAME" in err
    assert "has not been found" in one_line(["qmp", "--config", str(path), "--lab", "dev", "primary", "bogus"],
                                             capsys)
    assert "no lab named 'third' is up (up: dev, second)" in one_line(
        ["qmp", "--config", str(path), "--lab", "third", "primary", "query-status"], capsys)


def test_a_kept_lab_name_that_is_not_a_name(lab_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "is not a kept lab's name" in one_line(["up", "--config", str(lab_yaml), "--name", "../etc"], capsys)


def test_jobs_must_be_a_positive_number(capsys: pytest.CaptureFixture[str]) -> None:
    assert "is not a positive whole number" in one_line(["run", "--jobs", "0"], capsys)


def test_a_copy_of_lab_yaml_without_its_series_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """lab.yaml copied elsewhere alone: its relative series path is taken from there, and missed, in one line."""
    (tmp_path / "lab.yaml").write_text((ROOT / "lab.yaml").read_text())
    err = one_line(["build", "--config", str(tmp_path / "lab.yaml"), "--profile", "control"], capsys)
    assert "series.mbox 'series/control'" in err and str(tmp_path / "lab.yaml") in err and "copy the series" in err


def test_lab_slots_takes_off_only(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert session.takes_slots({}) and not session.takes_slots({"LAB_SLOTS": "off"})
    monkeypatch.setenv("LAB_SLOTS", "0")
    err = one_line(["run", "--config", str(ROOT / "lab.yaml"), "--profile", "baseline", "--scenario", "mirror"], capsys)
    assert "LAB_SLOTS='0' in the environment: the only value it takes is off" in err

"""`lab run --bisect`: the exit status `git bisect run` reads (0 good, 1 bad, 125 skip this commit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import cli
from lab.results.report import Row
from lab.results.verdict import Verdict

ROOT = Path(__file__).resolve().parents[2]


def row(expected: str, verdict: str) -> Row:
    return Row.of(profile="local", scenario="mirror", filter="filter-mirror", expected=expected, verdict=verdict,
                  accel="tcg")


@pytest.mark.parametrize(("rows", "status"), [
    ([row("gap", "gap"), row("continuous", "continuous")], 0),
    ([row("gap", "continuous"), row("continuous", "continuous")], 1),
    ([row("gap", "gap"), row("continuous", "error")], 125),
    ([row("continuous", "gap"), row("continuous", "error")], 125),  # an error: this commit decides nothing
    ([row("gap", "gap"), row("continuous", Verdict.NOT_RUN)], 125),
    ([row("continuous", "unsupported")], 125),  # the tree predates the property the scenario sets
    ([row("unsupported", "unsupported")], 0),
    ([], 125),
], ids=["good", "bad", "error", "error-and-mismatch", "not-run", "unsupported", "unsupported-expected", "empty"])
def test_verdicts_to_bisect_status(rows: list[Row], status: int) -> None:
    assert cli.bisect_status(rows) == status


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = cli.main(argv)
    return rc, capsys.readouterr().err


def test_a_lab_error_is_skip_under_bisect_and_2_otherwise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "absent.yaml")
    rc, err = run(["run", "--bisect", "--config", missing], capsys)
    assert rc == cli.EXIT_BISECT_SKIP == 125 and err.count("\n") == 1 and "cannot read" in err
    assert run(["run", "--config", missing], capsys)[0] == cli.EXIT_LAB_ERROR


def test_a_bad_command_line_is_skip_under_bisect(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["run", "--bisect", "--bogus"], capsys)[0] == 125
    assert run(["run", "--bogus"], capsys)[0] == 2


def test_a_lab_that_cannot_run_is_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-docker.sock'}")
    config = tmp_path / "lab.yaml"
    config.write_text((ROOT / "lab.yaml").read_text().replace("mbox: series/", f"mbox: {ROOT}/series/"))
    rc, err = run(["run", "--bisect", "--config", str(config), "--profile", "baseline"], capsys)
    assert rc == 125 and err.count("\n") == 1


def test_bisect_is_a_flag_of_run_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["build", "--bisect"], capsys)[0] == 2

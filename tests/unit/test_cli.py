"""lab's command line on bad input: one clear line on stderr, exit 2, nothing started."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import cli

REPO_CONFIG = Path(__file__).resolve().parents[2] / "lab.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = cli.main(list(argv))
    return rc, capsys.readouterr().err


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "lab.yaml"
    bad.write_text("profiles:\n  baseline: [\n")
    rc, err = run(capsys, "run", "--config", str(bad))
    assert rc == cli.EXIT_LAB_ERROR
    assert err.count("\n") == 1 and f"{bad}:" in err and "not valid YAML" in err


def test_unknown_key_names_its_path_and_the_allowed_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "lab.yaml"
    bad.write_text(REPO_CONFIG.read_text().replace("  hold_s: 3.0", "  hold_s: 3.0\n  hodl_s: 4"))
    rc, err = run(capsys, "build", "--config", str(bad))
    assert rc == cli.EXIT_LAB_ERROR
    assert "migration.hodl_s: unknown key" in err and "hold_s" in err


def test_unknown_filter_says_what_is_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "lab.yaml"
    bad.write_text(REPO_CONFIG.read_text().replace("filter: filter-mirror", "filter: filter-dump"))
    rc, err = run(capsys, "run", "--config", str(bad))
    assert rc == cli.EXIT_LAB_ERROR
    assert "scenarios.mirror.filter" in err and "filter-redirector" in err


def test_unknown_profile_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = run(capsys, "run", "--config", str(REPO_CONFIG), "--profile", "nope")
    assert rc == cli.EXIT_LAB_ERROR
    assert "--profile" in err and "'nope'" in err and "baseline" in err


def test_unknown_scenario_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = run(capsys, "run", "--config", str(REPO_CONFIG), "--scenario", "nope")
    assert rc == cli.EXIT_LAB_ERROR
    assert "--scenario" in err and "mirror" in err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = run(capsys, "doctor", "--config", str(tmp_path / "absent.yaml"))
    assert rc == cli.EXIT_LAB_ERROR
    assert "absent.yaml" in err and "--config" in err


def test_no_docker_daemon_says_how_to_start_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    rc, err = run(capsys, "build", "--config", str(REPO_CONFIG))
    assert rc == cli.EXIT_LAB_ERROR
    assert "no Docker daemon answers" in err and "dockerd" in err


def test_an_owner_of_another_machine_is_never_judged_dead_here() -> None:
    import os

    from lab.namespace import ALIVE, DEAD, ELSEWHERE, boot_id, machine_id, whose
    here, boot = machine_id(), boot_id()
    assert here, "this machine has no machine-id: nothing was checked"
    assert whose(os.getpid(), boot, here) == ALIVE
    assert whose(os.getpid(), "an earlier boot", here) == DEAD
    assert whose(1, "another boot", "0" * 32) == ELSEWHERE
    assert whose(1, "another boot", "") == ELSEWHERE  # recorded before machines were: not ours to guess


@pytest.mark.parametrize("flag", ["--push", "--pull"])
def test_push_and_pull_without_a_registry_name_the_key(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = run(capsys, "build", "--config", str(REPO_CONFIG), flag)
    assert rc == 2 and err.count("\n") == 1, err
    assert f"{REPO_CONFIG}: images.registry: not set ({flag} needs a registry" in err


def test_pull_builds_nothing_so_it_does_not_rebuild(capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = run(capsys, "build", "--config", str(REPO_CONFIG), "--pull", "--rebuild")
    assert rc == 2 and "--rebuild and --pull cannot be given together" in err and err.count("\n") == 1, err

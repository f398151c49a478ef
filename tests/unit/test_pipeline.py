"""The pipeline's files agree with each other: workflow, tox, Makefile, .ci/run and the README."""

from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "lab.yml"


def workflow() -> dict[str, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def tox_envs() -> set[str]:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    return {s.split(":", 1)[1] for s in ini.sections() if s.startswith("testenv:")}


def run_lines() -> list[str]:
    return [step["run"] for job in workflow()["jobs"].values() for step in job["steps"] if "run" in step]


def test_the_workflow_token_can_only_read() -> None:
    assert workflow()["permissions"] == {"contents": "read"}
    for name, job in workflow()["jobs"].items():
        assert job.get("permissions", {"contents": "read"}) == {"contents": "read"}, name


def test_every_tox_environment_the_workflow_runs_exists() -> None:
    named = {env for line in run_lines() for m in re.finditer(r"tox run -e ([\w,]+)", line)
             for env in m.group(1).split(",")}
    assert named, "the workflow runs no tox environment"
    assert named <= tox_envs(), f"missing in tox.ini: {named - tox_envs()}"


def test_tox_has_the_environments_people_use() -> None:
    assert {"lint", "type", "unit", "e2e", "lab"} <= tox_envs()


def test_every_action_is_pinned_to_a_commit() -> None:
    uses = [step["uses"] for job in workflow()["jobs"].values() for step in job["steps"] if "uses" in step]
    assert uses and all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in uses), uses


def test_the_e2e_matrix_is_the_profiles_lab_yaml_runs_by_default() -> None:
    from lab.config import load

    e2e = workflow()["jobs"]["e2e"]
    defaults = [p.name for p in load(ROOT / "lab.yaml").select_profiles(None)]
    assert e2e["strategy"]["matrix"]["profile"] == defaults
    uploads = [s for s in e2e["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert uploads and uploads[0]["if"] == "failure()"


def make_dry_run(target: str) -> list[str]:
    """The commands `make TARGET` would run, as make itself expands them."""
    out = subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if not line.startswith("make")]


def test_make_test_runs_the_environments_the_readme_names() -> None:
    readme = (ROOT / "README.md").read_text()
    named = re.search(r"^make test\s+# = tox run -e ([\w,]+)", readme, re.MULTILINE)
    assert named is not None, "the README no longer says what make test runs"
    commands = make_dry_run("test")
    tox = [c for c in commands if " run -e " in c]
    assert len(tox) == 1 and tox[0].split(" run -e ", 1)[1].split()[0] == named.group(1), commands
    assert set(named.group(1).split(",")) <= tox_envs()
    assert commands[0].endswith("scripts/setup-host"), "make test must prepare the machine first"


def test_ci_runs_the_readmes_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    ci = [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == ["make test"] and re.search(r"^make test\b", readme, re.MULTILINE)
    assert re.search(r"^make lab\b", readme, re.MULTILINE) and make_dry_run("lab")[-1].endswith("run -e lab")


def test_the_summary_script_the_workflow_calls_exists_and_runs_with_the_lab_installed() -> None:
    summaries = [line for line in run_lines() if "GITHUB_STEP_SUMMARY" in line]
    assert summaries
    for line in summaries:
        [script] = re.findall(r"scripts/[\w-]+", line)
        assert (ROOT / script).is_file(), script
        # lab.report gives the columns: the Python that runs it must have the lab (tox's lab or check env).
        assert line.split()[0] in (".tox/lab/bin/python", ".tox/check/bin/python"), line


def test_lab_check_by_hand_takes_the_url_as_data_and_the_token_from_the_secrets() -> None:
    # `on:` is read by YAML 1.1 as the boolean True.
    inputs = workflow()[True]["workflow_dispatch"]["inputs"]
    assert inputs["patchwork_url"]["type"] == "string"
    # An input expanded into a run: script is script injection (matrix values are the workflow's own).
    assert not any(re.search(r"\$\{\{\s*(inputs|github\.event)", line) for line in run_lines())
    [step] = [s for s in workflow()["jobs"]["check"]["steps"] if "lab check" in s.get("name", "") or
              "-e check" in s.get("run", "")]
    assert step["env"]["PATCHWORK_URL"] == "${{ inputs.patchwork_url }}"
    assert step["env"]["PATCHWORK_TOKEN"] == "${{ secrets.PATCHWORK_TOKEN }}"
    assert '"$PATCHWORK_URL"' in step["run"]
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    assert "PATCHWORK_TOKEN" in ini["testenv:check"]["passenv"] and "lab check" in ini["testenv:check"]["commands"]

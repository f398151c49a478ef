"""The pipeline's files agree with each other: workflow, tox, Makefile, .ci/run and the README."""

from __future__ import annotations

import configparser
import re
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


def test_workflow_parses_with_its_jobs_and_triggers() -> None:
    wf = workflow()
    assert set(wf["jobs"]) == {"checks", "e2e", "upstream"}
    triggers = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads the key `on` as true
    assert {"push", "pull_request", "schedule", "workflow_dispatch"} <= set(triggers)
    assert wf["permissions"] == {"contents": "read"}


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


def test_e2e_job_covers_the_ab_matrix_and_keeps_artefacts_on_failure() -> None:
    e2e = workflow()["jobs"]["e2e"]
    assert e2e["strategy"]["matrix"]["profile"] == ["baseline", "control"]
    uploads = [s for s in e2e["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert uploads and uploads[0]["if"] == "failure()"
    assert any("GITHUB_STEP_SUMMARY" in line for line in run_lines())


def test_ci_and_readme_run_the_same_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.rstrip().endswith("make test")
    assert re.search(r"^make test\b", readme, re.MULTILINE)
    assert re.search(r"^make lab\b", readme, re.MULTILINE)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: setup\n\t\$\(TOX\) run -e lint,type,unit,e2e,infra$", makefile, re.MULTILINE)
    assert re.search(r"^lab: setup\n\t\$\(TOX\) run -e lab$", makefile, re.MULTILINE)


def test_the_summary_script_the_workflow_calls_exists() -> None:
    for line in run_lines():
        for script in re.findall(r"scripts/[\w-]+", line):
            assert (ROOT / script).is_file(), script

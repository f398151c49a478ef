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
        if name != "images":
            assert job.get("permissions", {"contents": "read"}) in ({"contents": "read"},
                                                                    {"contents": "read", "packages": "read"}), name


def test_only_the_images_job_pushes_and_only_on_the_default_branch() -> None:
    job = workflow()["jobs"]["images"]
    assert job["permissions"] == {"contents": "read", "packages": "write"}
    assert job["if"] == "github.event_name == 'push' && github.ref_name == github.event.repository.default_branch"
    assert any("tox run -e build -- --config lab-ci.yaml --push" in s.get("run", "") for s in job["steps"])
    pushing = [name for name, other in workflow()["jobs"].items()
               if any("--push" in s.get("run", "") for s in other["steps"])]
    assert pushing == ["images"]
    # Every job that runs the lab pulls from the registry: it has lab-ci.yaml's registry and may read it.
    for name in lab_jobs():
        assert any(s.get("run") == "scripts/ci-config lab-ci.yaml" for s in steps(name)), name
        assert workflow()["jobs"][name]["permissions"]["packages"] == "read", name
    assert "images" in workflow()["jobs"]["e2e"]["needs"], "e2e must follow the push it pulls from"


def ci_config(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "scripts" / "ci-config"), str(tmp_path / "lab-ci.yaml")],
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, check=False)


def test_ci_config_pulls_from_the_repositorys_registry_in_lowercase(tmp_path: Path) -> None:
    from lab.config import load

    done = ci_config(tmp_path, GITHUB_REPOSITORY="Some-Owner/The.Lab")
    assert done.returncode == 0, done.stderr
    cfg = load(tmp_path / "lab-ci.yaml")
    assert cfg.images.registry == "ghcr.io/some-owner/the.lab" and cfg.images.base == "registry"
    assert ci_config(tmp_path, GITHUB_REPOSITORY="o/r", LAB_REGISTRY="127.0.0.1:5015/act").returncode == 0
    assert load(tmp_path / "lab-ci.yaml").images.registry == "127.0.0.1:5015/act"
    assert ci_config(tmp_path, GITHUB_REPOSITORY="o/r", LAB_REGISTRY="").returncode == 0
    assert load(tmp_path / "lab-ci.yaml").images.registry == ""
    refused = ci_config(tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "LAB_REGISTRY" in refused.stderr


def test_make_test_serves_the_registries_and_stops_them_whatever_happens() -> None:
    commands = make_dry_run("test")
    [up] = [i for i, c in enumerate(commands) if c == "scripts/registry up"]
    [tests] = [i for i, c in enumerate(commands) if " run -e " in c]
    assert up < tests and commands[tests].startswith("trap 'scripts/registry down' EXIT;"), commands


def test_every_tox_environment_the_workflow_runs_exists() -> None:
    named = {env for line in run_lines() for m in re.finditer(r"tox run -e ([\w,]+)", line)
             for env in m.group(1).split(",")}
    assert named, "the workflow runs no tox environment"
    assert named <= tox_envs(), f"missing in tox.ini: {named - tox_envs()}"


def test_tox_has_the_environments_people_use() -> None:
    assert {"lint", "type", "unit", "e2e", "lab"} <= tox_envs()


def test_every_action_is_pinned_to_a_commit() -> None:
    uses = [step["uses"] for job in workflow()["jobs"].values() for step in job["steps"] if "uses" in step]
    # owner/repo, or owner/repo/folder (actions/cache/restore), at a full commit
    assert uses and all(re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w.-]+)*@[0-9a-f]{40}", u) for u in uses), uses


def steps(job: str) -> list[dict[str, Any]]:
    return list(workflow()["jobs"][job]["steps"])


def uses(step: dict[str, Any], action: str) -> bool:
    return str(step.get("uses", "")).startswith(f"{action}@")


def test_the_e2e_matrix_is_the_profiles_lab_yaml_runs_by_default_in_parts() -> None:
    from lab.config import load

    e2e = workflow()["jobs"]["e2e"]
    defaults = [p.name for p in load(ROOT / "lab.yaml").select_profiles(None)]
    matrix = e2e["strategy"]["matrix"]
    assert matrix["profile"] == defaults
    parts = matrix["shard"]
    assert parts == list(range(1, len(parts) + 1))
    [run] = [s["run"] for s in steps("e2e") if "--shard" in s.get("run", "")]
    assert f"--shard ${{{{ matrix.shard }}}}/{len(parts)}" in run and "--junit" in run
    assert f"part ${{{{ matrix.shard }}}}/{len(parts)}" in e2e["name"]


def test_the_report_job_merges_what_every_part_uploaded() -> None:
    jobs = workflow()["jobs"]
    report = jobs["report"]
    assert report["needs"] == "e2e" and report["if"].startswith("always()")
    uploaded = [s["with"]["name"] for s in steps("e2e") if uses(s, "actions/upload-artifact") and
                s["if"].startswith("always()")]
    assert "lab-part-${{ matrix.profile }}-${{ matrix.shard }}" in uploaded
    assert all(s["with"].get("if-no-files-found") == "ignore" for s in steps("e2e")
               if uses(s, "actions/upload-artifact") and s["with"]["name"] in uploaded)
    [download] = [s for s in steps("report") if uses(s, "actions/download-artifact")]
    pattern, folder = download["with"]["pattern"], download["with"]["path"]
    def downloaded(name: str) -> bool:
        return re.fullmatch(pattern.replace("*", ".*"), re.sub(r"\$\{\{[^}]+\}\}", "x", name)) is not None

    assert all(downloaded(name) for name in uploaded)
    # what a failed part uploads whole (its logs, every file) is not downloaded to be merged
    assert not any(downloaded(s["with"]["name"]) for s in steps("e2e")
                   if uses(s, "actions/upload-artifact") and s["if"] == "failure()")
    merges = [s["run"] for s in steps("report") if "-e report -- merge" in s.get("run", "")]
    assert f"{folder}/lab-part-*/" in merges[0] and all("--junit lab-results/junit-" in m for m in merges)
    published = [s["with"]["path"] for s in steps("report") if uses(s, "actions/upload-artifact")]
    assert "lab-results/junit-*.xml" in published and "lab-results/" in published


def test_pull_requests_run_once_and_runs_do_not_pile_up() -> None:
    on = workflow()[True]  # YAML 1.1 reads `on:` as the boolean True
    # A pull request's commits run as the pull request; pushes only where no pull request runs them.
    assert on["push"] == {"branches": ["main"]} and "pull_request" in on
    concurrency = workflow()["concurrency"]
    assert "github.event.pull_request.number" in concurrency["group"] and "github.event_name" in concurrency["group"]
    assert "pull_request" in concurrency["cancel-in-progress"]


def test_every_job_has_a_timeout() -> None:
    for name, job in workflow()["jobs"].items():
        assert 0 < int(job["timeout-minutes"]) <= 120, name


def lab_jobs() -> list[str]:
    """The jobs that run QEMU: the lab, or lab check."""
    return [name for name, job in workflow()["jobs"].items()
            if any(re.search(r"tox run -e (lab|check)\b", s.get("run", "")) for s in job["steps"])]


def test_every_job_that_runs_qemu_opens_kvm_and_caches_its_images() -> None:
    assert {"e2e", "upstream", "check"} <= set(lab_jobs())
    for name in lab_jobs():
        job = steps(name)
        assert any(s.get("run") == "scripts/open-kvm" for s in job), name
        [restore] = [s for s in job if uses(s, "actions/cache/restore")]
        [save] = [s for s in job if uses(s, "actions/cache/save")]
        [saving] = [s for s in job if "scripts/save-images" in s.get("run", "")]
        # Saved also when the job failed, only on a miss, and only when there was something to save.
        assert saving["if"] == f"always() && steps.{restore['id']}.outputs.cache-hit != 'true'", name
        assert save["if"] == f"always() && steps.{saving['id']}.outputs.saved == 'true'", name
        assert save["with"]["key"] == f"${{{{ steps.{restore['id']}.outputs.cache-primary-key }}}}", name
        assert save["with"]["path"] == restore["with"]["path"], name
        [load] = [s for s in job if "docker load" in s.get("run", "")]
        assert load["if"] == f"steps.{restore['id']}.outputs.cache-hit == 'true'", name
        assert job.index(restore) < job.index(load) < job.index(saving) < job.index(save), name
    every = [s for job in workflow()["jobs"].values() for s in job["steps"]]
    assert not any(uses(s, "actions/cache") for s in every), "the combined cache action saves only on success"


def test_open_kvm_does_not_fail_where_there_is_no_udev(tmp_path: Path) -> None:
    done = subprocess.run([str(ROOT / "scripts" / "open-kvm")], env={"UDEV_RULES_DIR": str(tmp_path / "none"),
                          "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "no udev here" in done.stdout, done


def test_the_second_engine_has_containerd_namespaces_of_its_own() -> None:
    script = (ROOT / "scripts" / "second-engine").read_text()
    own = {flag: re.search(rf"{flag} (\S+)", script) for flag in ("--containerd-namespace",
                                                                  "--containerd-plugins-namespace")}
    names = {flag: m.group(1) for flag, m in own.items() if m}
    assert len(names) == 2 and len(set(names.values())) == 2, names
    assert not {"moby", "plugins.moby"} & set(names.values())


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


def test_the_summary_steps_run_only_with_the_lab_installed() -> None:
    summaries = [line for line in run_lines() if "GITHUB_STEP_SUMMARY" in line]
    assert summaries
    for text in summaries:
        [script] = set(re.findall(r"scripts/[\w-]+", text))
        assert (ROOT / script).is_file(), script
        # lab.results.report gives the columns: the Python that runs it must have the lab (a tox env of the
        # job); when an earlier step failed before tox made it, the step says so instead of failing.
        [python] = set(re.findall(r"\.tox/\w+/bin/python", text))
        assert f"[ -x {python} ]" in text and python.split("/")[1] in tox_envs(), text


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
    assert inputs["scenarios"]["type"] == "string" and step["env"]["SCENARIOS"] == "${{ inputs.scenarios }}"
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    assert "PATCHWORK_TOKEN" in ini["testenv:check"]["passenv"] and "lab check" in ini["testenv:check"]["commands"]


def test_lab_check_by_hand_runs_the_scenarios_named_and_nothing_else(tmp_path: Path) -> None:
    [step] = [s for s in workflow()["jobs"]["check"]["steps"] if "-e check" in s.get("run", "")]
    # tox, as the step calls it, prints the arguments it was given, one per line.
    (tmp_path / "tox").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (tmp_path / "tox").chmod(0o755)
    (tmp_path / "mirror").touch()  # a file of the scenario's name: a glob must not find it

    def given(scenarios: str) -> list[str]:
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "PATCHWORK_URL": "http://127.0.0.1/api/patches/1/",
               "SCENARIOS": scenarios}
        done = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=30, check=True)
        return done.stdout.splitlines()

    everything = ["run", "-e", "check", "--", "http://127.0.0.1/api/patches/1/", "--config", "lab-ci.yaml",
                  "--out", "lab-results/check"]
    assert given("") == everything
    assert given(" mirror  redirector-when-stopped ") == [*everything, "--scenario", "mirror",
                                                           "--scenario", "redirector-when-stopped"]
    assert given("mirr*") == [*everything, "--scenario", "mirr*"]  # the lab names what it does not know


def test_the_workflow_run_with_act_is_opt_in() -> None:
    assert "workflow" in tox_envs()
    [line] = [c for c in make_dry_run("test") if " run -e " in c]
    assert "workflow" not in line.split(" run -e ", 1)[1].split()[0].split(",")


def run_workflow(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # `false` stands in for act: every case here is refused before act or any user is touched.
    return subprocess.run([str(ROOT / "scripts" / "run-workflow"), "false", "-j", "checks"],
                          env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env},
                          capture_output=True, text=True, check=False)


def pinned_repos() -> dict[str, str]:
    """owner/repo: commit, of every action the workflow uses."""
    text = WORKFLOW.read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"uses: ([\w.-]+/[\w.-]+)[\w./-]*@([0-9a-f]{40})", text)}


def test_run_workflow_refuses_without_the_pinned_actions(tmp_path: Path) -> None:
    done = run_workflow({})
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "LAB_ACTIONS_DIR is not set" in done.stderr
    done = run_workflow({"LAB_ACTIONS_DIR": str(tmp_path)})
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "missing; clone actions/" in done.stderr


def test_run_workflow_refuses_an_action_without_its_built_entry_point(tmp_path: Path) -> None:
    for repo in pinned_repos():
        folder = tmp_path / repo.split("/")[1]
        folder.mkdir()
        (folder / "action.yml").write_text("runs:\n  using: node20\n  main: 'dist/index.js'\n")
    done = run_workflow({"LAB_ACTIONS_DIR": str(tmp_path)})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "dist/index.js is missing: build it" in done.stderr


def test_run_workflow_refuses_an_unknown_engine_before_anything_starts(tmp_path: Path) -> None:
    done = run_workflow({"LAB_ACTIONS_DIR": str(tmp_path), "LAB_WORKFLOW_ENGINE": "remote"})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "LAB_WORKFLOW_ENGINE=remote: own" in done.stderr and not done.stdout


def test_tox_passes_pytest_addopts_so_a_workflow_run_can_be_narrowed() -> None:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    # Only where the workflow's steps would be narrowed: a -k for them would deselect every unit test.
    assert "PYTEST_ADDOPTS" not in ini["testenv"]["passenv"].split()
    assert all("PYTEST_ADDOPTS" in ini[f"testenv:{env}"]["passenv"].split() for env in ("e2e", "infra"))
    assert {"LAB_WORKFLOW_ENGINE", "LAB_WORKFLOW_SEED"} <= set(ini["testenv:workflow"]["passenv"].split())


def test_the_e2e_suite_runs_once_over_every_default_profile() -> None:
    matrix = workflow()["jobs"]["e2e"]["strategy"]["matrix"]
    [cell] = [c for c in matrix.get("include", []) if c.get("suite")]
    # an include that names an existing cell adds to it, never a seventh part
    assert cell["profile"] in matrix["profile"] and cell["shard"] in matrix["shard"], cell
    [suite] = [s for s in steps("e2e") if "tox run -e e2e" in s.get("run", "")]
    assert suite["if"] == "matrix.suite" and "--lab-profile" not in suite["run"]
    [engines] = [s for s in steps("e2e") if "scripts/second-engine up" in s.get("run", "")]
    assert engines["if"] == "matrix.suite"


def test_the_image_cache_is_a_file_of_the_jobs_workspace() -> None:
    ignored = (ROOT / ".gitignore").read_text().split()
    for name in lab_jobs():
        job = steps(name)
        [path] = {s["with"]["path"] for s in job if uses(s, "actions/cache/restore") or uses(s, "actions/cache/save")}
        # Not /tmp, which two jobs on one self-hosted runner share, nor runner.temp, which act makes anew
        # for each job: the path is part of the cache's version, and a new one never hits.
        assert not path.startswith("/") and "${{" not in path, (name, path)
        assert f"{path.split('/')[0]}/" in ignored, path
        assert all(path in s["run"] for s in job if re.search(r"docker load|save-images", s.get("run", ""))), name


def test_the_workflow_run_with_act_runs_one_job_at_a_time_unless_told() -> None:
    script = (ROOT / "scripts" / "run-workflow").read_text()
    # before ACT ARGS, so that a --concurrent-jobs there wins
    assert re.search(r'--concurrent-jobs 1 "\$@"\n', script)
    # act runs a matrix 4 at a time whatever --concurrent-jobs says: the copy act reads has every
    # matrix one at a time, and is otherwise the workflow as it is.
    [function] = [line for line in script.splitlines() if line.startswith("one_at_a_time()")]
    copy = subprocess.run(["bash", "-c", f'{function}\none_at_a_time "$1"', "-", str(WORKFLOW)], check=True,
                          capture_output=True, text=True, timeout=30).stdout
    ran, ours = yaml.safe_load(copy)["jobs"], workflow()["jobs"]
    matrices = [name for name, job in ours.items() if "matrix" in job.get("strategy", {})]
    for name in matrices:  # (the workflow run under act is such a copy already)
        ours[name]["strategy"].pop("max-parallel", None)
    assert matrices and all(ran[name]["strategy"].pop("max-parallel") == 1 for name in matrices), matrices
    assert ran == ours

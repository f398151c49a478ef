"""Images from a registry, for real: Debian's docker-registry serving on loopback (scripts/registry up,
which `make test` runs), the first engine pushing, the second engine (scripts/second-engine) pulling
what it lacks, and each way a registry fails as one line.

Every test works on images of its own: a profile named for the test run (its runtime image's tag is
new, built in seconds from the cached layers of the others) and a repository path of the run's own
in the registry. Only what the tests made is removed, from both engines; the registry's storage is
the tests' own."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import requests
import yaml

from lab.config import LabConfig
from lab.pytest_plugin import need
from tests.e2e import made_images

# The tests that stop the second engine are in this group: not while these use it.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("second-engine")]

OPEN = "127.0.0.1:5015"  # scripts/registry's open registry
GUARDED = "127.0.0.1:5016"  # and the one that takes user `lab` with its password only
RUN = secrets.token_hex(3)  # this test run's profile and registry path


def answers(registry: str) -> bool:
    try:
        return requests.get(f"http://{registry}/v2/", timeout=5).status_code in (200, 401)
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def registries() -> None:
    for registry in (OPEN, GUARDED):
        if not answers(registry):
            need(f"no registry answers on {registry}; start them with scripts/registry up")


def lab(*args: str, env: dict[str, str] | None = None, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    # Wide enough that no progress line is wrapped where a test reads it.
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=timeout,
                          check=False, env={**(env or os.environ), "COLUMNS": "400"})


def registry_config(lab_config: LabConfig, folder: Path, registry: str, profile: str = "") -> Path:
    """The session's lab.yaml with ``images.registry``, both engines, and (``profile``) a profile of
    the test's own: the first profile's tree, under its own name (default: false, so nothing else
    changes)."""
    data = yaml.safe_load(lab_config.path.read_text())
    data.setdefault("lab", {})["results_dir"] = str(lab_config.results_root)
    data.setdefault("images", {}).update(prefix=lab_config.image_prefix, registry=registry)
    for spec in data["profiles"].values():
        series = spec.get("series") or {}
        if series.get("mbox"):
            series["mbox"] = str(lab_config.path.parent / series["mbox"])
    if profile:
        first = next(iter(data["profiles"].values()))
        data["profiles"][profile] = {"default": False, "qemu": first["qemu"]}
    data["engines"] = {"local": {}, "second": {"url": "ssh://nfcl-engine2"}}
    # A guest boots in seconds, and in minutes on two cores that every test run here shares; the
    # cells boot theirs (no saved guest to make first: what is tested is where the image came from).
    data.setdefault("timeouts", {})["boot_s"] = 300
    data.setdefault("guest", {})["snapshot"] = False
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def own_images(lab_docker: docker.DockerClient, lab_config: LabConfig,
               second_engine: docker.DockerClient) -> Iterator[str]:
    """The tag start of this run's images (``reg-RUN-``), removed from both engines after the test."""
    start = f"reg-{RUN}-"
    try:
        with made_images.removed_after(lab_docker, lab_config, start):
            yield start
    finally:
        for image in second_engine.images.list(filters={"reference": f"{lab_config.image_prefix}/*:{start}*"}):
            for tag in image.tags:
                second_engine.images.remove(tag)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


def registry_names(client: docker.DockerClient, registry: str) -> list[str]:
    """Tags under the registry's name left on an engine (a push or pull drops its own)."""
    return [tag for image in client.images.list() for tag in image.tags if tag.startswith(f"{registry}/")]


def test_the_second_engine_pulls_what_the_first_pushed(registries: None, lab_config: LabConfig,
                                                      lab_images: dict[str, object],
                                                      lab_docker: docker.DockerClient,
                                                      second_engine: docker.DockerClient, own_images: str,
                                                      tmp_path: Path) -> None:
    profile = f"reg-{RUN}"
    path = registry_config(lab_config, tmp_path, f"{OPEN}/e2e-{RUN}", profile)
    started = time.monotonic()
    built = lab("build", "--config", str(path), "--profile", profile, "--push")
    pushed_s = time.monotonic() - started
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-2000:]
    # Not in the registry yet: a missing manifest on the way to a build is no error.
    assert f"{OPEN}/e2e-{RUN} has no {lab_config.image_prefix}/runtime:{own_images}" in built.stdout
    runtime = next(tag for image in lab_docker.images.list(filters={"reference": f"*/runtime:{own_images}*"})
                   for tag in image.tags)
    manifest = requests.get(f"http://{OPEN}/v2/e2e-{RUN}/{runtime.split(':')[0]}/manifests/{runtime.split(':')[1]}",
                            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}, timeout=30)
    assert manifest.status_code == 200, f"{runtime} is not in the registry after lab build --push"
    with pytest.raises(docker.errors.ImageNotFound):
        second_engine.images.get(runtime)

    out = tmp_path / "run"
    done = lab("run", "--config", str(path), "--profile", profile, "--scenario", "redirector", "--engine", "second",
               "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    engines = report["lab"]["engines"]
    assert engines["second"]["image_source"] == {runtime: "pulled"}
    assert engines["local"]["image_source"][runtime] == "present"
    assert set(engines["local"]["image_source"].values()) == {"present"}
    [row] = report["results"]
    assert row["engines"] == {"primary": "second", "secondary": "second"} and row["verdict"] == "continuous", row
    assert second_engine.images.get(runtime).id == lab_docker.images.get(runtime).id
    assert not registry_names(second_engine, OPEN) and not registry_names(lab_docker, OPEN)
    print(f"registry: lab build --push {pushed_s:.0f} s; the second engine pulled the runtime in "
          f"{engines['second']['image_transfer_s']} s")

    # The first engine, lacking it now, pulls it too: before it would build it, and for --pull.
    lab_docker.images.remove(runtime)
    pulled = lab("build", "--config", str(path), "--profile", profile, "--pull")
    assert pulled.returncode == 0, pulled.stdout[-3000:] + pulled.stderr[-2000:]
    assert f"pulled {runtime} from {OPEN}/e2e-{RUN}" in pulled.stdout and "building" not in pulled.stdout
    assert lab_docker.images.get(runtime).id == second_engine.images.get(runtime).id
    assert not registry_names(lab_docker, OPEN)


def test_an_explicit_pull_of_what_the_registry_lacks_is_one_line(registries: None, lab_config: LabConfig,
                                                                 lab_images: dict[str, object],
                                                                 lab_docker: docker.DockerClient,
                                                                 own_images: str, tmp_path: Path) -> None:
    profile = f"reg-{RUN}-absent"
    path = registry_config(lab_config, tmp_path, f"{OPEN}/e2e-{RUN}", profile)
    error = one_line_error(lab("build", "--config", str(path), "--profile", profile, "--pull"))
    assert f"registry {OPEN}/e2e-{RUN} has no {lab_config.image_prefix}/runtime:{profile}-" in error
    assert "manifest unknown" in error and "lab build --push" in error
    assert not lab_docker.images.list(filters={"reference": f"*/runtime:{profile}-*"}), "--pull built the image"


def test_an_unreachable_registry_is_one_line(registries: None, lab_config: LabConfig,
                                             lab_images: dict[str, object],
                                             lab_docker: docker.DockerClient, tmp_path: Path) -> None:
    nowhere = "127.0.0.1:9"  # discard: nothing listens there
    path = registry_config(lab_config, tmp_path, f"{nowhere}/lab")
    profile = next(iter(lab_images))
    error = one_line_error(lab("build", "--config", str(path), "--profile", profile, "--push"))
    assert f"error: registry {nowhere}/lab (push of {nowhere}/lab/{lab_config.image_prefix}/" in error
    assert "unreachable" in error and "connection refused" in error
    assert not registry_names(lab_docker, nowhere), "the push left the registry's name on an image"


def test_refused_credentials_are_one_line_and_never_shown(registries: None, lab_config: LabConfig,
                                                          lab_images: dict[str, object],
                                                          lab_docker: docker.DockerClient, tmp_path: Path) -> None:
    wrong = secrets.token_hex(12)
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()
    auth = base64.b64encode(f"lab:{wrong}".encode()).decode()
    (docker_config / "config.json").write_text(json.dumps({"auths": {GUARDED: {"auth": auth}}}))
    path = registry_config(lab_config, tmp_path, f"{GUARDED}/lab")
    profile = next(iter(lab_images))
    done = lab("build", "--config", str(path), "--profile", profile, "--push",
               env={**os.environ, "DOCKER_CONFIG": str(docker_config)})
    error = one_line_error(done)
    assert "the credentials were refused" in error and f"docker login {GUARDED}" in error
    assert wrong not in done.stdout + done.stderr and auth not in done.stdout + done.stderr
    assert not registry_names(lab_docker, GUARDED)

"""Series builds for real: the control series changes the verdict, a series that does not apply
says exactly which patch and file, and leaves the baseline images alone."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from lab import images
from lab.config import LabConfig, SeriesSource
from lab.engine import Engine
from lab.errors import ImageBuildError
from lab.upstream.series import SeriesError
from tests import patchwork_server

# The archive Debian's official images (debian:bookworm) name in their apt sources.
DEBIAN_IMAGES_ARCHIVE = "http://deb.debian.org/debian"

# Failing builds: one worker for them under pytest-xdist, with the test that counts dangling images.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("image-builds")]


def seed_patch_mbox(path: Path) -> Path:
    path.write_bytes(patchwork_server.seed_patch_mbox())
    return path


def test_patch_12_alone_does_not_apply_to_the_baseline(lab_docker: docker.DockerClient, lab_engine: Engine,
                                                       lab_config: LabConfig, lab_images: dict[str, images.ImageSet],
                                                       tmp_path: Path) -> None:
    mbox = seed_patch_mbox(tmp_path / "patch-12.mbox")
    profile = replace(lab_config.profiles["baseline"], name="seed-patch-12",
                      series=SeriesSource(mbox=str(mbox)))
    events: list[images.BuildEvent] = []
    builder = images.ImageBuilder(lab_engine, lab_config, tmp_path / "logs", events.append)
    baseline = lab_images.get("baseline") or builder.ensure(lab_config.profiles["baseline"])
    baseline_qemu = lab_docker.images.get(baseline.qemu).id
    with pytest.raises(SeriesError) as failure:
        builder.ensure(profile)
    # The series was applied in a container of the builder, which is gone again.
    containers = [m.group(1) for e in events if (m := re.match(r"build container (\S+) ", e.line))]
    assert containers, "no build container was announced: nothing was checked"
    assert not lab_docker.containers.list(all=True, filters={"name": containers[0]})
    message = str(failure.value)
    assert "patch 1/1" in message and "net/filter-mirror.c" in message, message
    assert "keep mirroring while stopped" in message and "10.2.2" in message, message
    assert "\n" not in message
    # The baseline images are untouched, and no series image was tagged.
    assert lab_docker.images.get(baseline.qemu).id == baseline_qemu
    assert not lab_docker.images.list(name=f"{lab_config.image_prefix}/qemu-series",
                                      filters={"label": "io.nfcl.profile=seed-patch-12"})


def image_ids(client: docker.DockerClient) -> set[str]:
    return {str(img.id).removeprefix("sha256:")[:12] for img in client.images.list(all=True)}


def assert_committed_images_removed(client: docker.DockerClient, events: list[images.BuildEvent],
                                    before: set[str]) -> None:
    """Every image the failed build announced that was not there before it is gone again."""
    announced = {m.group(1)[:12] for e in events if (m := images.LAYER_RE.match(e.line))}
    assert announced, "the build announced no image: nothing was checked"
    left = (announced - before) & image_ids(client)
    assert not left, f"the failed build left {left} behind"


def test_a_failed_build_leaves_none_of_the_images_it_committed(lab_docker: docker.DockerClient, lab_engine: Engine,
                                                               lab_config: LabConfig, tmp_path: Path) -> None:
    events: list[images.BuildEvent] = []
    builder = images.ImageBuilder(lab_engine, lab_config, tmp_path / "logs", events.append)
    base = builder.ensure_base()
    folder = tmp_path / "context"
    folder.mkdir()
    # A file of this test's own: the COPY commits a new image, never one from the cache.
    (folder / "marker").write_text(str(tmp_path))
    (folder / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nCOPY marker /marker\nRUN echo more > /more\n"
                                       "RUN echo failing on purpose; exit 3\n")
    before = image_ids(lab_docker)
    with pytest.raises(ImageBuildError, match=r"failed at step 5/\d+ \(RUN echo failing on purpose"):
        builder._build("probe", "", images.Context(folder), {"BASE": base}, builder._labels("probe"), rebuild=True)
    assert_committed_images_removed(lab_docker, events, before)
    assert lab_docker.images.get(base)  # the base it built on stays


def test_a_registry_base_gives_the_mirror_its_own_apt_sources_name(lab_docker: docker.DockerClient,
                                                                   lab_engine: Engine, lab_config: LabConfig,
                                                                   tmp_path: Path) -> None:
    made = images.ImageBuilder(lab_engine, lab_config, tmp_path / "logs")
    base = made.ensure_base()
    # The lab's base stands in for a registry image. A debootstrap base has the apt sources debootstrap
    # wrote (the mirror it was given); a registry base (CI's lab-ci.yaml) is Debian's own image,
    # whose sources name Debian's archive, whatever this machine's own apt sources (Ubuntu's on GitHub).
    expected = made.mirror() if lab_config.images.base == "debootstrap" else DEBIAN_IMAGES_ARCHIVE
    as_registry = replace(lab_config, images=replace(lab_config.images, base="registry", registry_image=base,
                                                     mirror="auto"))
    builder = images.ImageBuilder(lab_engine, as_registry, tmp_path / "logs")
    assert builder.mirror() == expected
    assert not lab_docker.containers.list(all=True, filters={"label": "io.nfcl.role=apt-sources"})


def test_control_series_provenance(lab_images: dict[str, images.ImageSet], lab_docker: docker.DockerClient) -> None:
    control = lab_images.get("control")
    if control is None:
        pytest.skip("the control profile is not selected (--lab-profile)")
    assert control.series is not None
    [patch] = control.series["patches"]
    assert "filter-mirror" in patch["subject"] and len(patch["hash"]) == 40
    labels = lab_docker.images.get(control.runtime).labels
    provenance = json.loads(lab_docker.images.get(control.qemu).labels["io.nfcl.series"])
    assert provenance["patches"][0]["hash"] == patch["hash"]
    assert labels["io.nfcl.profile"] == "control"


def meson_tail(client: docker.DockerClient, builder: str) -> tuple[int, list[str]]:
    """The number of lines of the builder's meson.build, and its last three."""
    out = client.containers.run(builder, ["sh", "-c", "wc -l < /src/qemu/meson.build; tail -n 3 /src/qemu/meson.build"],
                                remove=True, network_disabled=True, labels={"io.nfcl.role": "test-probe"})
    count, *tail = out.decode().split("\n")[:4]
    return int(count), tail


def faking_patch(count: int, tail: list[str]) -> bytes:
    """A patch whose build step (meson's reconfigure, which ninja starts) prints the lab's markers as
    apply-series once did and as the legacy builder does, says what network and caps it has, and fails."""
    # Meson keeps a command's output in its log: the step writes to the build's own output (PID 1's).
    step = ("exec >/proc/1/fd/1; echo ' ---> 0123456789ab'; "
            "echo 'SERIES-APPLY-FAILED patch 1/1: fake: hunks do not apply at x.c:1'; "
            "echo \"NETS: $(ls /sys/class/net | tr -s [:space:] \" \")\"; "
            "echo \"PIDS-MAX: $(cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max 2>/dev/null)\"; exit 1")
    added = f"run_command('sh', '-c', '{step.replace(chr(39), chr(92) + chr(39))}', check: true)"
    body = "".join(f" {line}\n" for line in tail) + f"+{added}\n"
    return (f"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            f"From: Lab Test <lab@example.org>\nDate: Mon, 7 Dec 2026 00:00:00 +0000\n"
            f"Subject: [PATCH 1/1] meson: a build step that prints the lab's markers\n\n---\n"
            f" meson.build | 1 +\n 1 file changed, 1 insertion(+)\n\n"
            f"diff --git a/meson.build b/meson.build\n--- a/meson.build\n+++ b/meson.build\n"
            f"@@ -{count - 2},3 +{count - 2},4 @@\n{body}-- \n2.39.2\n\n").encode()


def test_a_patch_build_step_cannot_fake_the_labs_markers_and_has_no_network(
        lab_docker: docker.DockerClient, lab_engine: Engine, lab_config: LabConfig, tmp_path: Path) -> None:
    events: list[images.BuildEvent] = []
    builder = images.ImageBuilder(lab_engine, lab_config, tmp_path / "logs", events.append)
    baseline = builder.ensure(lab_config.profiles["baseline"])
    mbox = tmp_path / "faking.mbox"
    mbox.write_bytes(faking_patch(*meson_tail(lab_docker, baseline.qemu)))
    profile = replace(lab_config.profiles["baseline"], name="faking-markers", series=SeriesSource(mbox=str(mbox)))
    with pytest.raises(ImageBuildError) as failure:
        builder.ensure(profile)
    # The series applied; its build failed. What it printed is no verdict on whether it applies.
    assert not isinstance(failure.value, SeriesError), failure.value
    assert "ninja" in str(failure.value), failure.value
    lines = [e.line for e in events]
    assert any(line.startswith("applied patch 1/1") for line in lines), lines[-20:]
    nets = next((line for line in lines if line.startswith("NETS: ")), f"(none) {lines[-15:]}")
    assert nets.split() == ["NETS:", "lo"], nets  # no network but loopback
    pids = next((line for line in lines if line.startswith("PIDS-MAX: ")), f"(none) {lines[-15:]}")
    assert pids.split()[1] == str(lab_config.limits.build_pids), pids

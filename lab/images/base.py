"""The base every image starts from: Debian made with debootstrap from a mirror and imported, or an
image from a registry; and the Debian mirror the builds fetch from."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab import apt
from lab.config import LabConfig
from lab.engine import Engine, building, resources
from lab.errors import ImageBuildError
from lab.images.build import lab_step, last_line

APT_PROBE_S = 60.0  # reading an image's apt sources in a container of it


def image_mirror(engine: Engine, cfg: LabConfig, image: str) -> str:
    """The Debian mirror an image's own apt sources name, read in a short-lived container of it
    (labelled, removed after)."""
    name = f"{cfg.name}-apt-sources-{os.getpid()}"
    try:
        done = building.run_once(engine, image, ["sh", "-c", apt.LISTING_SCRIPT], name,
                                 resources.labels(cfg.name, role="apt-sources"), APT_PROBE_S)
    except building.BuildRequestFailed as exc:
        raise ImageBuildError(f"cannot read the apt sources of {image} ({exc.problem}); set images.mirror in "
                              "lab.yaml to a Debian mirror URL") from exc
    if done.status != 0:
        raise ImageBuildError(f"reading the apt sources of {image} failed (exit {done.status}); set images.mirror "
                              "in lab.yaml to a Debian mirror URL")
    return apt.mirror_of(apt.sources_in_listing(done.output), f"image {image} (its /etc/apt)")


def pull(engine: Engine, image: str) -> None:
    """A registry base, pulled as Docker's own configuration reaches it."""
    try:
        building.pull(engine, image)
    except building.BuildRequestFailed as exc:
        raise ImageBuildError(f"cannot pull {image} ({exc.explanation}); "
                              "without a registry set images.base: debootstrap") from exc


def debootstrap(engine: Engine, cfg: LabConfig, tag: str, mirror: str, log: Path, labels: dict[str, str],
                event: Callable[[str], None]) -> list[dict[str, Any]]:
    """The base image ``tag``: Debian's minbase of images.suite from ``mirror``, imported with
    ``labels``; the steps it took."""
    suite = cfg.images.suite
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("the base image needs debootstrap, which is not installed "
                              "(apt-get install debootstrap, or set images.base: registry)")
    if os.geteuid() != 0:
        raise ImageBuildError(f"the base image {tag} is made with debootstrap, which needs root: run `lab build` "
                              "once as root (the images then serve every user of this Docker engine), or set "
                              "images.base: registry")
    event(f"debootstrap {suite} from {mirror}")
    steps = []
    with tempfile.TemporaryDirectory(prefix=f"{cfg.name}-rootfs-") as tmp:
        rootfs, tarball = Path(tmp) / "rootfs", Path(tmp) / "rootfs.tar"
        started = time.monotonic()
        with log.open("w") as out:
            rc = subprocess.run(["debootstrap", "--variant=minbase", suite, str(rootfs), mirror],
                                stdout=out, stderr=subprocess.STDOUT, check=False,
                                timeout=cfg.timeouts.image_build_s).returncode
        if rc != 0:
            raise ImageBuildError(f"image {tag}: debootstrap {suite} from {mirror} failed "
                                  f"(exit {rc}): {last_line(log)}; log: {log}")
        steps.append(lab_step("base", tag, "1/2", f"debootstrap --variant=minbase {suite}", started))
        started = time.monotonic()
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
        event(f"importing {tag}")
        building.import_rootfs(engine, tarball, tag, [f"LABEL {k}={v}" for k, v in labels.items()])
        steps.append(lab_step("base", tag, "2/2", "docker import", started))
    return steps

"""The lab's images, built through the Docker SDK with live progress.

    base     Debian, from debootstrap + import (no registry needed) or from a registry
    qemu     QEMU built from a profile's tree (x86_64-softmmu, what tap/virtio-net/migration need)
    guest    Debian's cloud kernel + a busybox initramfs that brings eth0 up
    runtime  a lab host: the built QEMU, the guest, firmware, tcpdump, iproute2, the in-host helpers

Every tag carries a digest of what went into the image (its build context and arguments), so an
image present under its tag is current and is reused as it is; Docker's layer cache covers the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from lab import apt, lore, resources
from lab import series as series_mod
from lab.config import LabConfig, Profile, QemuSource, SeriesSource
from lab.errors import ImageBuildError, LabError

ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = ROOT / "images"
AGENTS_DIR = ROOT / "lab" / "agents"
MESON_VERSION = "1.9.0"
NINJA_RE = re.compile(r"^\[(\d+)/(\d+)\]")
STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)")
LAYER_RE = re.compile(r"^ ---> ([0-9a-f]{12,64})$")  # the image a step committed (or took from the cache)
APPLY_FAILED = "SERIES-APPLY-FAILED"  # printed by images/series/apply-series


@dataclass(frozen=True)
class BuildEvent:
    """One line of progress: the lab's own news (``info``), a Dockerfile ``step``, ninja's
    counter (``ninja``, with ``count`` = (done, total)), or any other ``output`` of the build."""

    image: str
    kind: str
    line: str
    count: tuple[int, int] | None = None


Progress = Callable[[BuildEvent], None]


@dataclass(frozen=True)
class ImageSet:
    profile: str
    base: str
    qemu: str  # the builder the runtime's QEMU comes from (the series one when there is a series)
    guest: str
    runtime: str
    qemu_source: str = ""
    series: dict[str, Any] | None = None
    build_seconds: dict[str, float] = field(default_factory=dict)  # per image of this set; 0: reused


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:12]


class Context:
    """A build context assembled in memory: an images/ folder plus extra files."""

    def __init__(self, folder: Path) -> None:
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, int] = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            self.add(path.relative_to(folder).as_posix(), path)

    def add(self, name: str, path: Path) -> None:
        self.files[name] = path.read_bytes()
        self.modes[name] = path.stat().st_mode & 0o777

    def add_tree(self, prefix: str, folder: Path, pattern: str = "*") -> None:
        for path in sorted(folder.glob(pattern)):
            if path.is_file():
                self.add(f"{prefix}/{path.name}", path)

    def digest(self, *args: str) -> str:
        return _digest(*args, *(f"{n}:{self.modes[n]}" for n in sorted(self.files)),
                       *(self.files[n] for n in sorted(self.files)))

    def tar(self) -> io.BytesIO:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name in sorted(self.files):
                info = tarfile.TarInfo(name)
                info.size = len(self.files[name])
                info.mode = self.modes[name]
                tar.addfile(info, io.BytesIO(self.files[name]))
        buf.seek(0)
        return buf


class ImageBuilder:
    def __init__(self, client: docker.DockerClient, cfg: LabConfig, log_dir: Path,
                 progress: Progress | None = None) -> None:
        self.client = client
        self.cfg = cfg
        self.log_dir = log_dir
        self.progress = progress or (lambda event: None)
        self._base: str | None = None
        self._mirror: str | None = None
        self.seconds: dict[str, float] = {}  # per tag: how long its build took (0: reused as it was)

    def ensure(self, profile: Profile, rebuild: bool = False) -> ImageSet:
        # The series is fetched and parsed before anything is built: bad input costs no build time.
        series = self.load_series(profile.series) if profile.series else None
        base = self.ensure_base()
        qemu = self._qemu(base, profile.qemu, rebuild)
        if series is not None:
            qemu = self._series(qemu, profile, series, rebuild)
        guest = self._guest(base, rebuild)
        runtime = self._runtime(base, qemu, guest, profile, rebuild)
        tags = [base, qemu, guest, runtime]
        return ImageSet(profile=profile.name, base=base, qemu=qemu, guest=guest, runtime=runtime,
                        qemu_source=profile.qemu.describe(), series=series.provenance() if series else None,
                        build_seconds={t: self.seconds[t] for t in tags if t in self.seconds})

    def load_series(self, source: SeriesSource) -> series_mod.Series:
        return load_series(self.cfg, source)

    def exists(self, tag: str) -> bool:
        try:
            self.client.images.get(tag)
            return True
        except docker.errors.ImageNotFound:
            return False

    # -- base ---------------------------------------------------------------------------------

    def ensure_base(self) -> str:
        if self._base is not None:
            return self._base
        images = self.cfg.images
        if images.base == "registry":
            if not self.exists(images.registry_image):
                self._event("base", f"pulling {images.registry_image}")
                try:
                    self.client.images.pull(images.registry_image)
                except docker.errors.APIError as exc:
                    raise ImageBuildError(f"cannot pull {images.registry_image} ({exc.explanation}); "
                                          "without a registry set images.base: debootstrap") from exc
            self._base = images.registry_image
            return self._base
        mirror = self.mirror()
        tag = f"{self.cfg.image_prefix}/base:{images.suite}-{_digest('debootstrap', images.suite, mirror)}"
        if not self.exists(tag):
            self._require_space("base")
            started = time.monotonic()
            self._debootstrap(tag, images.suite, mirror)
            self.seconds[tag] = round(time.monotonic() - started, 1)
        self.seconds.setdefault(tag, 0.0)
        self._base = tag
        return tag

    def mirror(self) -> str:
        """The Debian mirror: lab.yaml's, else the one debootstrap takes (this machine's apt sources),
        else, for a registry base, the one the base image's own apt sources name."""
        if self._mirror is None:
            images = self.cfg.images
            if images.mirror != "auto":
                self._mirror = images.mirror
            elif images.base == "registry":
                self._mirror = self._image_mirror(self.ensure_base())
            else:
                self._mirror = apt.debian_mirror()
        return self._mirror

    def _image_mirror(self, image: str) -> str:
        """Reads an image's apt sources in a short-lived container of it (labelled, removed after)."""
        name = f"{self.cfg.name}-apt-sources-{os.getpid()}"
        try:
            with resources.uninterrupted():
                container = self.client.containers.create(
                    image, ["sh", "-c", apt.LISTING_SCRIPT], name=name, network_disabled=True,
                    labels=resources.labels(self.cfg.name, role="apt-sources"))
            try:
                container.start()
                status = container.wait(timeout=60).get("StatusCode")
                output = container.logs(stdout=True, stderr=False).decode(errors="replace")
            finally:
                container.remove(force=True)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise ImageBuildError(f"cannot read the apt sources of {image} ({exc}); set images.mirror in "
                                  "lab.yaml to a Debian mirror URL") from exc
        if status != 0:
            raise ImageBuildError(f"reading the apt sources of {image} failed (exit {status}); set images.mirror "
                                  "in lab.yaml to a Debian mirror URL")
        return apt.mirror_of(apt.sources_in_listing(output), f"image {image} (its /etc/apt)")

    def _debootstrap(self, tag: str, suite: str, mirror: str) -> None:
        if shutil.which("debootstrap") is None:
            raise ImageBuildError("the base image needs debootstrap, which is not installed "
                                  "(apt-get install debootstrap, or set images.base: registry)")
        log = self._log_path(tag)
        self._event("base", f"debootstrap {suite} from {mirror}")
        with tempfile.TemporaryDirectory(prefix=f"{self.cfg.name}-rootfs-") as tmp:
            rootfs, tarball = Path(tmp) / "rootfs", Path(tmp) / "rootfs.tar"
            with log.open("w") as out:
                rc = subprocess.run(["debootstrap", "--variant=minbase", suite, str(rootfs), mirror],
                                    stdout=out, stderr=subprocess.STDOUT, check=False,
                                    timeout=self.cfg.timeouts.image_build_s).returncode
            if rc != 0:
                raise ImageBuildError(f"image {tag}: debootstrap {suite} from {mirror} failed "
                                      f"(exit {rc}): {_last_line(log)}; log: {log}")
            subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
            repo, _, version = tag.rpartition(":")
            self._event("base", f"importing {tag}")
            self.client.api.import_image_from_file(
                str(tarball), repository=repo, tag=version,
                changes=[f"LABEL {k}={v}" for k, v in self._labels("base").items()])

    # -- built images -------------------------------------------------------------------------

    def _qemu(self, base: str, q: QemuSource, rebuild: bool) -> str:
        ctx = Context(IMAGES_DIR / "qemu")
        ctx.files["tree/.placeholder"], ctx.modes["tree/.placeholder"] = b"", 0o644
        args = qemu_build_args(base, q, self.mirror() if q.source == "debian" else "")
        version = q.upstream_version if q.source == "debian" else ""
        if q.source == "local":
            version, local_args = local_tree(ctx, Path(q.path) if Path(q.path).is_absolute()
                                             else self.cfg.path.parent / q.path)
            args |= local_args
        with tempfile.TemporaryDirectory() as tmp:
            for wheel in self._wheels(Path(tmp)):
                ctx.add(f"wheels/{wheel.name}", wheel)
        labels = self._labels("qemu", **{"qemu.version": version, "qemu.source": q.describe()})
        return self._build("qemu", "", ctx, args, labels, rebuild)

    def _series(self, qemu: str, profile: Profile, series: series_mod.Series, rebuild: bool) -> str:
        ctx = Context(IMAGES_DIR / "series")
        for patch in series.patches:
            name = f"patches/{patch.index:04d}-of-{patch.total:04d}.patch"  # apply-series reads N/M here
            ctx.files[name], ctx.modes[name] = patch.message, 0o644
        q = self.client.images.get(qemu).labels
        labels = self._labels("qemu", profile=profile.name, **{
            "qemu.version": q.get("io.nfcl.qemu.version", ""), "qemu.source": q.get("io.nfcl.qemu.source", ""),
            "series": json.dumps(series.provenance(), separators=(",", ":"))})
        return self._build("qemu-series", f"{profile.name}-", ctx, {"QEMU_IMAGE": qemu}, labels, rebuild)

    def _wheels(self, dest: Path) -> list[Path]:
        """meson and pycotap, fetched by this machine's pip (its proxies and certificates apply)."""
        cache = self.log_dir / "wheels"
        wanted = [f"meson=={MESON_VERSION}", "pycotap"]
        have = sorted(cache.glob("*.whl"))
        if not any(w.name.startswith(f"meson-{MESON_VERSION}-") for w in have) or len(have) < 2:
            cache.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                                   "--only-binary", ":all:", "-d", str(cache), *wanted],
                                  capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise ImageBuildError(f"cannot fetch {', '.join(wanted)} for the QEMU build with pip: "
                                      f"{_tail(proc.stderr)}")
            have = sorted(cache.glob("*.whl"))
        return have

    def _guest(self, base: str, rebuild: bool) -> str:
        return self._build("guest", "", Context(IMAGES_DIR / "guest"), {"BASE": base},
                           self._labels("guest"), rebuild)

    def _runtime(self, base: str, qemu: str, guest: str, profile: Profile, rebuild: bool) -> str:
        ctx = Context(IMAGES_DIR / "runtime")
        ctx.add_tree("agents", AGENTS_DIR, "*.py")
        q = self.client.images.get(qemu).labels
        labels = self._labels("runtime", profile=profile.name, **{
            "qemu.version": q.get("io.nfcl.qemu.version", ""), "qemu.source": q.get("io.nfcl.qemu.source", "")})
        return self._build("runtime", f"{profile.name}-", ctx,
                           {"BASE": base, "QEMU_IMAGE": qemu, "GUEST_IMAGE": guest}, labels, rebuild)

    def _labels(self, image: str, **extra: str) -> dict[str, str]:
        # Images are shared by every lab name on this machine; only the managed label matters.
        return {resources.MANAGED: "true", resources.IMAGE: image, **{f"io.nfcl.{k}": v for k, v in extra.items()}}

    def _build(self, image: str, tag_prefix: str, ctx: Context, args: dict[str, str],
               labels: dict[str, str], rebuild: bool) -> str:
        # The base is named by its own digest, so it is part of this image's digest through args.
        digest = ctx.digest(*(f"{k}={v}" for k, v in sorted({**args, **labels}.items())))
        tag = f"{self.cfg.image_prefix}/{image}:{tag_prefix}{digest}"
        if not rebuild and self.exists(tag):
            self._event(image, f"{tag} is up to date")
            self.seconds.setdefault(tag, 0.0)
            return tag
        self._require_space(image)
        log = self._log_path(tag)
        self._event(image, f"building {tag} (log: {log})")
        started = time.monotonic()
        reading = BuildStream(image, tag, log)
        with log.open("w", buffering=1) as out:  # line by line: people tail it
            try:
                stream = self.client.api.build(
                    fileobj=ctx.tar(), custom_context=True, tag=tag, buildargs=args, labels=labels,
                    rm=True, forcerm=True, decode=True, timeout=int(self.cfg.timeouts.image_build_s))
                for event in reading.events(stream):
                    out.write(event.line + "\n")
                    if event.kind != "error":
                        self.progress(event)
                    if time.monotonic() - started > self.cfg.timeouts.image_build_s:
                        raise ImageBuildError(f"image {image} ({tag}) did not build within "
                                              f"{self.cfg.timeouts.image_build_s:.0f} s (at {reading.step}); "
                                              f"log: {log}")
            except docker.errors.APIError as exc:
                self._remove_layers(reading.created)
                raise ImageBuildError(f"image {image} ({tag}) failed: {exc.explanation}; log: {log}") from exc
            except (LabError, KeyboardInterrupt):  # Ctrl-C too: Docker drops the build, not its layers
                self._remove_layers(reading.created)
                raise
        self.seconds[tag] = round(time.monotonic() - started, 1)
        self._event(image, f"built {tag} in {self.seconds[tag]:.0f} s")
        return tag

    def _require_space(self, image: str) -> None:
        free, where = resources.free_gb(self.client)
        need = self.cfg.images.min_free_gb
        if free < need:
            raise ImageBuildError(f"image {image} must be built but only {free:.1f} GB are free at {where} "
                                  f"(images.min_free_gb: {need:g}); free some space (docker system prune) or "
                                  "lower that setting")

    def _remove_layers(self, created: list[str]) -> None:
        """The images a failed build committed, newest first, each only while it is still untagged:
        the legacy builder leaves them behind as dangling images. Cached layers are not in the list;
        an image something else has come to depend on stays (Docker refuses, and nothing is forced)."""
        for image_id in reversed(created):
            # An interrupted build's last step container may still be going away (Docker drops it
            # once it hears the client is gone); until then its image is in use: wait, bounded.
            deadline = time.monotonic() + 15
            while True:
                try:
                    if not self.client.images.get(image_id).tags:
                        self.client.images.remove(image_id, noprune=True)
                    break
                except docker.errors.APIError as exc:
                    in_use = exc.status_code == 409 and "container" in str(exc.explanation or "")
                    if not in_use or time.monotonic() > deadline:
                        break  # gone already, or another image's parent now: not this build's to remove
                    time.sleep(0.2)

    def _event(self, image: str, line: str) -> None:
        self.progress(BuildEvent(image, "info", line))

    def _log_path(self, tag: str) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", tag) + ".log")


@dataclass
class BuildStream:
    """Reads the decoded chunks of a legacy-builder build (``client.api.build``), without any I/O.

    ``events`` turns each line into a BuildEvent (``step``, ``ninja`` or ``output``; ``error`` for
    the build's error) and raises when the build fails: SeriesError when apply-series said which
    patch did not apply, else ImageBuildError naming the step. ``created`` lists the images the
    build committed (``" ---> <id>"`` after a step that ran, not one from the cache or a FROM).
    """

    image: str
    tag: str
    log: Path
    step: str = ""
    apply_failed: str = ""
    created: list[str] = field(default_factory=list)
    _reused: bool = False  # the current step's image is an existing one (cache, FROM)

    def events(self, chunks: Iterable[Mapping[str, Any]]) -> Iterator[BuildEvent]:
        for chunk in chunks:
            if "error" in chunk:
                error = str(chunk["error"])
                yield BuildEvent(self.image, "error", error)
                raise self._failure(error)
            for line in str(chunk.get("stream", "")).splitlines():
                yield self._read(line)

    def _read(self, line: str) -> BuildEvent:
        if m := STEP_RE.match(line):
            self.step = f"step {m.group(1)}/{m.group(2)} ({m.group(3)[:60]})"
            self._reused = m.group(3).upper().startswith("FROM ")
            return BuildEvent(self.image, "step", line, (int(m.group(1)), int(m.group(2))))
        if line.strip() == "---> Using cache":
            self._reused = True
        elif m := LAYER_RE.match(line):
            if not self._reused:
                self.created.append(m.group(1))
        elif line.startswith(APPLY_FAILED):
            self.apply_failed = line.split(" ", 1)[1] if " " in line else line
        if n := NINJA_RE.match(line):
            return BuildEvent(self.image, "ninja", line, (int(n.group(1)), int(n.group(2))))
        return BuildEvent(self.image, "output", line)

    def _failure(self, error: str) -> LabError:
        if self.apply_failed:
            return series_mod.SeriesDoesNotApply(self.apply_failed, str(self.log))
        return ImageBuildError(f"image {self.image} ({self.tag}) failed at {self.step or 'its first step'}: "
                               f"{_tail(error)}; log: {self.log}")


def load_series(cfg: LabConfig, source: SeriesSource) -> series_mod.Series:
    """A profile's series, read and checked (a local mbox or folder, or fetched from Patchwork)."""
    if source.mbox:
        path = Path(source.mbox)
        loaded = series_mod.load_local(path if path.is_absolute() else cfg.path.parent / path)
        # As lab.yaml names it: the same series gives the same image wherever the checkout lies.
        return dataclasses.replace(loaded, origin=source.mbox)
    if source.lore:
        return lore.fetch(source.lore, source.archive)
    patchwork, info = series_mod.resolve(source.ref, source.patchwork or None)
    return patchwork.fetch(info)


def check_local_series(cfg: LabConfig, profiles: list[Profile]) -> None:
    """Local series read before anything else: a bad one is refused before Docker is even asked."""
    for profile in profiles:
        if profile.series is not None and profile.series.mbox:
            load_series(cfg, profile.series)


def qemu_build_args(base: str, q: QemuSource, mirror: str) -> dict[str, str]:
    """The qemu builder's build arguments for a tree source (see images/qemu/fetch-qemu); ``mirror``
    is the Debian mirror a debian source is fetched from (ImageBuilder.mirror)."""
    args = {"BASE": base, "QEMU_SOURCE": q.source}
    if q.source == "debian":
        if not mirror:
            raise ImageBuildError(f"{q.describe()}: no Debian mirror to fetch it from; set images.mirror")
        return args | {"QEMU_DEBIAN_VERSION": q.version, "QEMU_DEBIAN_SUITE": q.suite, "MIRROR": mirror}
    args["CONFIGURE_DOWNLOAD"] = "--enable-download"  # a git tree fetches its subprojects
    if q.source == "git":
        args |= {"QEMU_GIT_URL": q.url, "QEMU_GIT_REF": q.ref}
    return args


def local_tree(ctx: Context, tree: Path) -> tuple[str, dict[str, str]]:
    """A checkout into the build context; its version, and the build arguments it needs."""
    add_checkout(ctx, tree)
    version = ctx.files.get("tree/VERSION", b"").decode(errors="replace").strip()
    if any(name.startswith("tree/subprojects/keycodemapdb/") for name in ctx.files):
        # The checkout carries its subprojects (configured before, or from a tarball): use them as
        # they are; letting meson "update" them inside a repository makes it fetch.
        return version, {"CONFIGURE_DOWNLOAD": "--disable-download"}
    return version, {}


def add_checkout(ctx: Context, tree: Path) -> None:
    """A developer's checkout as it is: tracked and untracked files, not what git ignores, except the
    subprojects meson has fetched into it (ignored by QEMU's .gitignore, needed to build offline)."""
    names: list[str] = []
    for extra in ([], ["--ignored", "--", "subprojects/"]):
        proc = subprocess.run(["git", "-C", str(tree), "ls-files", "-z", "--cached", "--others",
                               "--exclude-standard", *extra], capture_output=True, timeout=120)
        if proc.returncode != 0:
            why = _tail(proc.stderr.decode(errors="replace"))
            raise ImageBuildError(f"qemu.path {tree}: not a git checkout ({why})")
        names += filter(None, proc.stdout.decode().split("\0"))
    for name in dict.fromkeys(names):
        path = tree / name
        if path.is_file() and not path.is_symlink():
            ctx.add(f"tree/{name}", path)


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no message)"


def _last_line(path: Path) -> str:
    return _tail(path.read_text(errors="replace")) if path.exists() else "(no log)"


def lab_images(client: docker.DockerClient) -> Iterable[str]:
    for img in client.images.list(filters={"label": f"{resources.MANAGED}=true"}):
        yield from img.tags


def require(builder: ImageBuilder, profiles: list[Profile]) -> dict[str, ImageSet]:
    try:
        return {p.name: builder.ensure(p) for p in profiles}
    except docker.errors.DockerException as exc:
        raise LabError(f"image build failed: {exc}") from exc

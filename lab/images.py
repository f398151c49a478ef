"""The lab's images, built through the Docker SDK with live progress.

    base     Debian, from debootstrap + import (no registry needed) or from a registry
    qemu     QEMU built from a profile's tree (x86_64-softmmu, what tap/virtio-net/migration need)
    qemu-series  a profile's series on top of a qemu builder: built in a container of the builder,
             only the binary kept (images/series)
    qemu-tree    a profile's own tree (a local checkout, a git commit) that descends from a builder's
             tree: its diff built the same way, in seconds instead of a full compile (lab.gittree)
    guest    Debian's cloud kernel + a busybox initramfs that brings eth0 up
    host     the runtime's first stage (packages, sshd): built while QEMU compiles
    runtime  a lab host: the built QEMU, the guest, firmware, tcpdump, iproute2, the in-host helpers

Every tag carries a digest of what went into the image (its build context and arguments), so an
image present under its tag is current and is reused as it is; Docker's layer cache covers the rest.
Every build records how long each of its steps took (``ImageSet.build_steps``).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import os
import queue
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from lab import apt, gittree, lore, resources, statefile
from lab import series as series_mod
from lab.config import LabConfig, Profile, QemuSource, SeriesSource
from lab.errors import ImageBuildError, LabError
from lab.namespace import Namespace

PACKAGE = Path(__file__).resolve().parent
# What the images are built from, package data of an installed lab (in a checkout, a link to images/).
IMAGES_DIR = PACKAGE / "buildfiles"
AGENTS_DIR = PACKAGE / "agents"
MESON_VERSION = "1.9.0"
NINJA_RE = re.compile(r"^\[(\d+)/(\d+)\]")
STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)")
LAYER_RE = re.compile(r"^ ---> ([0-9a-f]{12,64})$")  # the image a step committed (or took from the cache)
APPLY_FAILED = "SERIES-APPLY-FAILED"  # printed by images/series/apply-series, with the build's nonce
NONCE_FILE = "tmp/series/.nonce"  # read, then removed, by build-series before anything of a patch runs
SERIES_BUILD = ["/usr/local/bin/build-series", "/tmp/series"]  # run in a container of the builder
BUILDER_TREES = "builder-trees.json"  # in the state folder: each builder image's tree id, read once
TREE_PROBE_S = 60.0  # reading a builder's tree id in a container of it
STOP_JOIN_S = 10.0  # how long a stopped build on another thread gets to notice and clean up


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
    # A tree of the profile's own built on a builder's (lab.gittree.TreeDiff.provenance), and the
    # commit a git ref named when the lab resolved it.
    tree: dict[str, str] | None = None
    build_seconds: dict[str, float] = field(default_factory=dict)  # per image of this set; 0: reused
    # Each step the builds of this set ran: image, tag, step (N/M), instruction, seconds, cached.
    build_steps: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class TreeSource:
    """The tree a profile builds, as the lab found it before building anything."""

    qemu: QemuSource  # as a full build takes it: a git ref pinned to the commit it resolved to
    describe: str  # provenance: what lab.yaml asked for, and what it named
    label: str  # the images' io.nfcl.qemu.source: depends only on what goes into the build
    version: str = ""
    commit: str = ""  # a git source's resolved commit
    diff: gittree.TreeDiff | None = None  # set when the tree is built on a builder's (incremental)
    build_args: dict[str, str] = field(default_factory=dict)  # extra arguments of a full build

    def provenance(self) -> dict[str, str] | None:
        if not (self.diff or self.commit):
            return None
        return {**({"commit": self.commit} if self.commit else {}), **(self.diff.provenance() if self.diff else {})}


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
        # Executable or not, as git keeps it: the same files installed under another umask (a wheel,
        # a clone) give the same tags.
        self.add_bytes(name, path.read_bytes(), 0o755 if path.stat().st_mode & 0o111 else 0o644)

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.files[name] = data
        self.modes[name] = mode

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


class _Stopped(Exception):
    """A build on another thread failed (or the foreground was interrupted): this one stops too."""


@dataclass
class _Background:
    """A build on a thread of its own, beside the one in the foreground."""

    what: str
    thread: threading.Thread | None = None
    result: str = ""
    error: BaseException | None = None


class ImageBuilder:
    def __init__(self, client: docker.DockerClient, cfg: LabConfig, log_dir: Path,
                 progress: Progress | None = None, ns: Namespace | None = None) -> None:
        self.client = client
        self.cfg = cfg
        self.log_dir = log_dir
        self._progress = progress or (lambda event: None)
        # Containers a build runs (a series build) are this namespace's: removed on failure and
        # Ctrl-C, and named by the next command as a dead run's leftovers after a SIGKILL.
        self.ns = ns or Namespace.new_run(cfg.name)
        self._base: str | None = None
        self._mirror: str | None = None
        self.seconds: dict[str, float] = {}  # per tag: how long its build took (0: reused as it was)
        self.steps: dict[str, list[dict[str, Any]]] = {}  # per tag: its build's steps and their seconds
        self._lock = threading.Lock()  # progress is called from the background builds' threads too
        self._stop = threading.Event()  # set when one of the concurrent builds fails or is interrupted

    def progress(self, event: BuildEvent) -> None:
        with self._lock:
            self._progress(event)

    def ensure_all(self, profiles: list[Profile], rebuild: bool = False) -> dict[str, ImageSet]:
        # Every profile's series first: one that cannot be had (Patchwork out of reach) is refused
        # before the profiles ahead of it have spent their build time.
        series = {p.name: self.load_series(p.series) for p in profiles if p.series}
        return {p.name: self.ensure(p, rebuild=rebuild, series=series.get(p.name)) for p in profiles}

    def ensure(self, profile: Profile, rebuild: bool = False, series: series_mod.Series | None = None) -> ImageSet:
        """``series``: the profile's, when the caller has it already."""
        # The series is fetched and parsed before anything is built: bad input costs no build time.
        if series is None and profile.series:
            series = self.load_series(profile.series)
        base = self.ensure_base()
        # A git ref is resolved, and a tree compared with the builders' trees, before any build.
        tree = self.tree_source(profile)
        # The guest and the runtime's host stage do not depend on QEMU: they build while it compiles
        # (on two cores the compile leaves room for their downloads and unpacking).
        self._stop.clear()
        guest_job = self._background("guest", lambda: self._guest(base, rebuild))
        host_job = self._background("host", lambda: self._host(base, rebuild))
        try:
            builder = tree.diff.builder if tree.diff else self._qemu(base, tree, rebuild)
            on_builder = series is not None or tree.diff is not None
            qemu = self._on_builder(builder, profile, tree, series, rebuild) if on_builder else builder
        except _Stopped:
            self._join([guest_job, host_job])  # raises the background build's own error
            raise ImageBuildError("a build stopped without saying why") from None
        except BaseException:
            self._stop.set()
            self._join([guest_job, host_job], quietly=True)
            raise
        guest, host = self._join([guest_job, host_job])
        runtime = self._runtime(base, qemu, guest, profile, rebuild)
        tags = list(dict.fromkeys([base, builder, qemu, guest, host, runtime]))
        return ImageSet(profile=profile.name, base=base, qemu=qemu, guest=guest, runtime=runtime,
                        qemu_source=tree.describe, series=series.provenance() if series else None,
                        tree=tree.provenance(),
                        build_seconds={t: self.seconds[t] for t in tags if t in self.seconds},
                        build_steps=[step for t in tags for step in self.steps.get(t, [])])

    def _background(self, what: str, build: Callable[[], str]) -> _Background:
        job = _Background(what)

        def run() -> None:
            try:
                job.result = build()
            except BaseException as exc:  # noqa: BLE001 - handed to the foreground, which raises it
                job.error = exc
                self._stop.set()  # the foreground build stops at its next line of output

        job.thread = threading.Thread(target=run, name=f"lab-build-{what}", daemon=True)
        job.thread.start()
        return job

    def _join(self, jobs: list[_Background], quietly: bool = False) -> list[str]:
        """The background builds' tags; raises the first one's error (a stop is no error of its own).
        ``quietly``: the foreground failed; they get a short while to stop and clean up, no more."""
        bound = STOP_JOIN_S if quietly else self.cfg.timeouts.image_build_s
        deadline = time.monotonic() + bound
        for job in jobs:
            assert job.thread is not None
            job.thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if job.thread.is_alive() and not quietly:
                self._stop.set()
                raise ImageBuildError(f"image {job.what} did not build within {bound:.0f} s "
                                      "(timeouts.image_build_s)")
        if not quietly:
            for job in jobs:
                if job.error is not None and not isinstance(job.error, _Stopped):
                    raise job.error
        return [job.result for job in jobs]

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
        if os.geteuid() != 0:
            raise ImageBuildError(f"the base image {tag} is made with debootstrap, which needs root: run `lab build` "
                                  "once as root (the images then serve every user of this Docker engine), or set "
                                  "images.base: registry")
        log = self._log_path(tag)
        self._event("base", f"debootstrap {suite} from {mirror}")
        steps = self.steps[tag] = []
        with tempfile.TemporaryDirectory(prefix=f"{self.cfg.name}-rootfs-") as tmp:
            rootfs, tarball = Path(tmp) / "rootfs", Path(tmp) / "rootfs.tar"
            started = time.monotonic()
            with log.open("w") as out:
                rc = subprocess.run(["debootstrap", "--variant=minbase", suite, str(rootfs), mirror],
                                    stdout=out, stderr=subprocess.STDOUT, check=False,
                                    timeout=self.cfg.timeouts.image_build_s).returncode
            if rc != 0:
                raise ImageBuildError(f"image {tag}: debootstrap {suite} from {mirror} failed "
                                      f"(exit {rc}): {_last_line(log)}; log: {log}")
            steps.append(_step("base", tag, "1/2", f"debootstrap --variant=minbase {suite}", started))
            started = time.monotonic()
            subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
            repo, _, version = tag.rpartition(":")
            self._event("base", f"importing {tag}")
            self.client.api.import_image_from_file(
                str(tarball), repository=repo, tag=version,
                changes=[f"LABEL {k}={v}" for k, v in self._labels("base").items()])
            steps.append(_step("base", tag, "2/2", "docker import", started))

    # -- built images -------------------------------------------------------------------------

    def _qemu(self, base: str, tree: TreeSource, rebuild: bool) -> str:
        q = tree.qemu
        ctx = Context(IMAGES_DIR / "qemu")
        ctx.files["tree/.placeholder"], ctx.modes["tree/.placeholder"] = b"", 0o644
        args = qemu_build_args(base, q, self.mirror() if q.source == "debian" else "") | tree.build_args
        version = q.upstream_version if q.source == "debian" else tree.version
        if q.source == "local":
            version, local_args = local_tree(ctx, self._checkout(q))
            args |= local_args
        with tempfile.TemporaryDirectory() as tmp:
            for wheel in self._wheels(Path(tmp)):
                ctx.add(f"wheels/{wheel.name}", wheel)
        labels = self._labels("qemu", **{"qemu.version": version, "qemu.source": tree.label})
        return self._build("qemu", "", ctx, args, labels, rebuild)

    def _checkout(self, q: QemuSource) -> Path:
        return Path(q.path) if Path(q.path).is_absolute() else self.cfg.path.parent / q.path

    # -- trees: what a profile builds, and whether a builder's tree is where it starts ------------

    def tree_source(self, profile: Profile) -> TreeSource:
        """The profile's tree before anything is built: a git ref resolved to its commit; a local
        checkout or git commit that descends from a builder's tree gets the diff from it."""
        q, where = profile.qemu, f"profiles.{profile.name}.qemu"
        if q.source == "git":
            return self._git_tree(q, where)
        if q.source == "local":
            return self._local_tree(q, where)
        return TreeSource(q, q.describe(), q.describe())

    def _git_tree(self, q: QemuSource, where: str) -> TreeSource:
        timeout = self.cfg.timeouts.git_s
        self._event("qemu", f"resolving {q.ref} on {q.url}")
        resolved, repo = gittree.resolve(q.url, q.ref, self.cfg.results_root / ".git-cache", timeout, where)
        self._event("qemu", f"{q.ref} is commit {resolved.commit} ({resolved.kind})")
        pinned = dataclasses.replace(q, ref=resolved.commit)
        label = f"git {q.url} commit {resolved.commit}"  # the same for every ref naming that commit
        trees = self.builder_trees()
        found = gittree.nearest_base(repo, resolved.commit, trees, timeout)
        if found is None:
            carries = gittree.subprojects_in_tree(repo, resolved.commit, timeout)
            return TreeSource(pinned, resolved.describe(), label, commit=resolved.commit,
                              build_args={"CONFIGURE_DOWNLOAD": "--disable-download"} if carries else {})
        base_commit, base_tree = found
        diff = gittree.diff(repo, base_commit, resolved.commit, timeout, f"{where}.url")
        tree = gittree.git(["-C", str(repo), "rev-parse", f"{resolved.commit}^{{tree}}"], timeout,
                           where).stdout.decode().strip()
        on = gittree.TreeDiff(trees[base_tree], base_tree, base_commit, tree, diff)
        return TreeSource(pinned, f"{resolved.describe()}, built on {on.builder}", label, commit=resolved.commit,
                          diff=on)

    def _local_tree(self, q: QemuSource, where: str) -> TreeSource:
        trees = self.builder_trees()
        full = TreeSource(q, q.describe(), q.describe())
        if not trees:
            return full
        checkout, timeout = self._checkout(q), self.cfg.timeouts.git_s
        with tempfile.TemporaryDirectory(prefix=f"{self.cfg.name}-tree-") as tmp:
            space = gittree.scratch(checkout, Path(tmp), timeout, f"{where}.path")
            tree = gittree.working_tree(checkout, space, timeout, f"{where}.path")
            found = ("", tree) if tree in trees else gittree.nearest_base(checkout, "HEAD", trees, timeout, space.env)
            if found is None:
                return full
            diff = gittree.diff(checkout, found[1], tree, timeout, f"{where}.path", space.env)
        on = gittree.TreeDiff(trees[found[1]], found[1], found[0], tree, diff)
        version = (checkout / "VERSION").read_text(errors="replace").strip() if (checkout / "VERSION").is_file() else ""
        return TreeSource(q, f"{q.describe()} (tree {tree}), built on {on.builder}",
                          f"local checkout at tree {tree}", version=version, diff=on)

    def builder_trees(self) -> dict[str, str]:
        """Tree id -> tag of a builder image under this prefix whose tree is that commit's
        (images/qemu/base-tree); the newest builder wins a tree two of them hold."""
        cache = self.cfg.state_root / BUILDER_TREES
        known = statefile.read(cache)
        trees: dict[str, str] = {}
        wanted = {"label": [f"{resources.MANAGED}=true", f"{resources.IMAGE}=qemu"]}
        found = sorted(self.client.images.list(filters=wanted), key=lambda i: str(i.attrs.get("Created", "")),
                       reverse=True)
        for image in found:
            tags = sorted(t for t in image.tags if t.startswith(f"{self.cfg.image_prefix}/qemu:"))
            if not tags:
                continue
            if str(image.id) not in known:
                known[str(image.id)] = self._probe_tree(str(image.id), tags[0])
                statefile.write(cache, known)
            if known[str(image.id)]:
                trees.setdefault(known[str(image.id)], tags[0])
        return trees

    def _probe_tree(self, image: str, tag: str) -> str:
        """The builder's tree id, read in a short-lived container of it ("" when its tree is no git
        commit: an image made before base-tree). Labelled with this build's run; removed after."""
        name = self.ns.name(f"tree-{image.removeprefix('sha256:')[:12]}")
        try:
            with resources.uninterrupted():
                container = self.client.containers.create(
                    image, ["git", "-C", "/src/qemu", "rev-parse", "--verify", "-q", "HEAD^{tree}"], name=name,
                    network_disabled=True, labels=resources.labels(self.cfg.name, self.ns, role="tree-probe"))
            try:
                container.start()
                status = container.wait(timeout=TREE_PROBE_S).get("StatusCode")
                output = container.logs(stdout=True, stderr=False).decode(errors="replace").strip()
            finally:
                _remove_container(container)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise ImageBuildError(f"cannot read the tree of builder {tag} ({_tail(str(exc))}); "
                                  "is the Docker daemon well?") from exc
        return output if status == 0 and re.fullmatch(r"[0-9a-f]{40,64}", output) else ""

    def _on_builder(self, qemu: str, profile: Profile, tree: TreeSource, series: series_mod.Series | None,
                    rebuild: bool) -> str:
        """The profile's own tree (its diff from the builder's) and its series on top of the builder
        ``qemu``: applied and compiled in a container of the builder (only what they touch is
        recompiled), the binary alone into a small image. The tag's digest covers the diff and the tree
        it must give, the series, the scripts that apply and build them, and the builder (by its tag)."""
        ctx = Context(IMAGES_DIR / "series")
        if tree.diff is not None:
            ctx.add_bytes("tree.diff", tree.diff.diff)
            ctx.add_bytes("tree.id", tree.diff.tree.encode())
        for patch in (series.patches if series else []):
            name = f"patches/{patch.index:04d}-of-{patch.total:04d}.patch"  # apply-series reads N/M here
            ctx.add_bytes(name, patch.message)
        q = self.client.images.get(qemu).labels
        extra = {"series": json.dumps(series.provenance(), separators=(",", ":"))} if series else {}
        labels = self._labels("qemu", profile=profile.name, **{
            "qemu.version": tree.version or q.get("io.nfcl.qemu.version", ""),
            "qemu.source": tree.label if tree.diff else q.get("io.nfcl.qemu.source", ""), **extra})
        image = "qemu-series" if series else "qemu-tree"
        tag = self._tag(image, f"{profile.name}-", ctx, {"QEMU_IMAGE": qemu}, labels)
        if self._up_to_date(image, tag, rebuild):
            return tag
        log = self._log_path(tag)
        self._event(image, f"building {tag} in a container of {qemu} (log: {log})")
        started = time.monotonic()
        # Only apply-series knows the nonce: what a patch's build prints cannot pass for its verdict.
        reading = BuildStream(image, tag, log, prefix="container ", nonce=secrets.token_hex(16))
        with log.open("w", buffering=1) as out:
            files = self._build_in_container(qemu, ctx, reading, out, started, profile.name)
        packed = Context(IMAGES_DIR / "series")
        for name, (data, mode) in files.items():
            packed.add_bytes(name, data, mode)
        self._build(image, "", packed, {}, labels, rebuild=True, tag=tag, append_log=True)
        self.steps[tag] = reading.steps + self.steps.get(tag, [])
        self.seconds[tag] = round(time.monotonic() - started, 1)
        self._event(image, f"built {tag} in {self.seconds[tag]:.0f} s (container and image)")
        return tag

    def _build_in_container(self, builder: str, ctx: Context, reading: BuildStream, out: io.TextIOBase,
                            started: float, profile: str) -> dict[str, tuple[bytes, int]]:
        """Runs build-series in a container of ``builder`` (labelled with this builder's namespace,
        removed whatever happens); returns the files of its /opt/qemu, named qemu/... ."""
        name = self.ns.name(f"series-{re.sub(r'[^A-Za-z0-9_.-]', '_', profile)}")
        deadline = started + self.cfg.timeouts.image_build_s
        limits = self.cfg.limits
        try:
            with resources.uninterrupted():
                # A series is untrusted code (meson and ninja run what its patches say): no network,
                # and bounded memory (no swap beyond it) and processes.
                container = self.client.containers.create(
                    builder, SERIES_BUILD, name=name, network_mode="none",
                    mem_limit=f"{limits.build_memory_mb}m", memswap_limit=f"{limits.build_memory_mb}m",
                    pids_limit=limits.build_pids,
                    labels=resources.labels(self.cfg.name, self.ns, role="series-build"))
            try:
                announced = f"build container {name} ({str(container.id)[:12]})"
                out.write(announced + "\n")
                self.progress(BuildEvent(reading.image, "output", announced))
                container.put_archive("/", _series_files(ctx, reading.nonce))
                container.start()
                self._follow(container, reading, out, deadline)
                status = int(container.wait(timeout=max(1.0, deadline - time.monotonic())).get("StatusCode", -1))
                reading.finish()
                if status != 0:
                    raise reading.failure(f"build-series exited with {status}: {reading.last_line}")
                stream, _ = container.get_archive("/opt/qemu")
                return _regular_files(b"".join(stream))
            finally:
                _remove_container(container)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise ImageBuildError(f"image {reading.image} ({reading.tag}): its build container failed: "
                                  f"{_tail(str(exc))}; log: {reading.log}") from exc

    def _follow(self, container: Any, reading: BuildStream, out: io.TextIOBase, deadline: float) -> None:
        """The container's output as build events until it ends; bounded by ``deadline``, and stopped
        when a build on another thread fails."""
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_read_logs, args=(container, lines), name="lab-build-logs", daemon=True).start()
        while True:
            if self._stop.is_set():
                raise _Stopped()
            if time.monotonic() > deadline:
                raise ImageBuildError(f"image {reading.image} ({reading.tag}) did not build within "
                                      f"{self.cfg.timeouts.image_build_s:.0f} s (at {reading.step}); "
                                      f"log: {reading.log}")
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                return
            event = reading.read(line)
            out.write(line + "\n")
            self.progress(event)

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

    def _host(self, base: str, rebuild: bool) -> str:
        """The runtime's first stage alone (its Dockerfile and sshd configuration are the context):
        the runtime build that follows takes these layers from Docker's cache."""
        return self._build("host", "", Context(IMAGES_DIR / "runtime"), {"BASE": base},
                           self._labels("host"), rebuild, target="host")

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

    def _tag(self, image: str, tag_prefix: str, ctx: Context, args: dict[str, str], labels: dict[str, str]) -> str:
        # The base is named by its own digest, so it is part of this image's digest through args.
        digest = ctx.digest(*(f"{k}={v}" for k, v in sorted({**args, **labels}.items())))
        return f"{self.cfg.image_prefix}/{image}:{tag_prefix}{digest}"

    def _up_to_date(self, image: str, tag: str, rebuild: bool) -> bool:
        """Whether ``tag`` is there to use (and said so); otherwise its build may start: there is room."""
        if not rebuild and self.exists(tag):
            self._event(image, f"{tag} is up to date")
            self.seconds.setdefault(tag, 0.0)
            return True
        self._require_space(image)
        return False

    def _build(self, image: str, tag_prefix: str, ctx: Context, args: dict[str, str],
               labels: dict[str, str], rebuild: bool, target: str = "", tag: str = "",
               append_log: bool = False) -> str:
        tag = tag or self._tag(image, tag_prefix, ctx, args, labels)
        if self._up_to_date(image, tag, rebuild):
            return tag
        log = self._log_path(tag)
        self._event(image, f"building {tag} (log: {log})")
        started, since = time.monotonic(), time.time()
        reading = BuildStream(image, tag, log)
        with log.open("a" if append_log else "w", buffering=1) as out:  # line by line: people tail it
            try:
                stream = self.client.api.build(
                    fileobj=ctx.tar(), custom_context=True, tag=tag, buildargs=args, labels=labels,
                    rm=True, forcerm=True, decode=True, timeout=int(self.cfg.timeouts.image_build_s),
                    target=target or None)
                for event in reading.events(stream):
                    out.write(event.line + "\n")
                    if event.kind != "error":
                        self.progress(event)
                    if self._stop.is_set():
                        raise _Stopped()
                    if time.monotonic() - started > self.cfg.timeouts.image_build_s:
                        raise ImageBuildError(f"image {image} ({tag}) did not build within "
                                              f"{self.cfg.timeouts.image_build_s:.0f} s (at {reading.step}); "
                                              f"log: {log}")
            except docker.errors.APIError as exc:
                self._remove_layers(reading.created, since)
                raise ImageBuildError(f"image {image} ({tag}) failed: {exc.explanation}; log: {log}") from exc
            except (LabError, _Stopped, KeyboardInterrupt):  # Ctrl-C too: Docker drops the build, not its layers
                self._remove_layers(reading.created, since)
                raise
        self.steps[tag] = reading.steps
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

    def _remove_layers(self, created: list[str], since: float) -> None:
        """The images a failed build committed, newest first, each only while it is still untagged:
        the legacy builder leaves them behind as dangling images. Cached layers are not in the list;
        an image something else has come to depend on stays (Docker refuses, and nothing is forced).
        The ids come from the build's text, which a RUN step can also print: one is removed only when
        the engine says it was made after ``since`` (the build's start, wall clock)."""
        for image_id in reversed(created):
            if not self._made_since(image_id, since):
                continue
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

    def _made_since(self, image_id: str, since: float) -> bool:
        try:
            created = str(self.client.images.get(image_id).attrs.get("Created", ""))
        except docker.errors.DockerException:
            return False
        return _timestamp(created) >= since - 1.0  # the engine's clock rounds; a second of slack

    def _event(self, image: str, line: str) -> None:
        self.progress(BuildEvent(image, "info", line))

    def _log_path(self, tag: str) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", tag) + ".log")


@dataclass
class BuildStream:
    """Reads the decoded chunks of a legacy-builder build (``client.api.build``), or the lines of a
    build run in a container, without any I/O.

    ``events`` turns each line into a BuildEvent (``step``, ``ninja`` or ``output``; ``error`` for
    the build's error) and raises when the build fails: SeriesError when apply-series said which
    patch did not apply, else ImageBuildError naming the step. ``created`` lists the images the
    build committed (``" ---> <id>"`` after a step that ran, not one from the cache or a FROM).
    ``steps`` records each step and the seconds from its line to the next one's (or the end).
    """

    image: str
    tag: str
    log: Path
    prefix: str = ""  # before each step's N/M in ``steps`` (a build in a container: "container ")
    clock: Callable[[], float] = time.monotonic
    # A build's own secret: apply-series prints "SERIES-APPLY-FAILED:<nonce> ...". Without one (a
    # Dockerfile build, where no series is applied) no line is taken for a series' failure.
    nonce: str = ""
    step: str = ""
    apply_failed: str = ""
    last_line: str = ""
    created: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    _reused: bool = False  # the current step's image is an existing one (cache, FROM)
    _step_started: float | None = None

    def events(self, chunks: Iterable[Mapping[str, Any]]) -> Iterator[BuildEvent]:
        for chunk in chunks:
            if "error" in chunk:
                error = str(chunk["error"])
                yield BuildEvent(self.image, "error", error)
                self.finish()
                raise self.failure(error)
            for line in str(chunk.get("stream", "")).splitlines():
                yield self.read(line)
        self.finish()

    def read(self, line: str) -> BuildEvent:
        if line.strip():
            self.last_line = line.strip()
        if m := STEP_RE.match(line):
            self._end_step()
            self.step = f"step {m.group(1)}/{m.group(2)} ({m.group(3)[:60]})"
            self._reused = m.group(3).upper().startswith("FROM ")
            self.steps.append({"image": self.image, "tag": self.tag, "step": f"{self.prefix}{m.group(1)}/{m.group(2)}",
                               "instruction": m.group(3)[:100], "seconds": 0.0, "cached": False})
            self._step_started = self.clock()
            return BuildEvent(self.image, "step", line, (int(m.group(1)), int(m.group(2))))
        if line.strip() == "---> Using cache":
            self._reused = True
            if self.steps:
                self.steps[-1]["cached"] = True
        elif m := LAYER_RE.match(line):
            if not self._reused:
                self.created.append(m.group(1))
        elif self.nonce and line.startswith(f"{APPLY_FAILED}:{self.nonce} "):
            self.apply_failed = line.split(" ", 1)[1]
        if n := NINJA_RE.match(line):
            return BuildEvent(self.image, "ninja", line, (int(n.group(1)), int(n.group(2))))
        return BuildEvent(self.image, "output", line)

    _read = read  # the name it had

    def finish(self) -> None:
        """The build ended: the last step's seconds run to now."""
        self._end_step()

    def _end_step(self) -> None:
        if self.steps and self._step_started is not None:
            self.steps[-1]["seconds"] = round(self.clock() - self._step_started, 1)
        self._step_started = None

    def failure(self, error: str) -> LabError:
        if self.apply_failed:
            return series_mod.SeriesDoesNotApply(self.apply_failed, str(self.log))
        return ImageBuildError(f"image {self.image} ({self.tag}) failed at {self.step or 'its first step'}: "
                               f"{_tail(error)}; log: {self.log}")

    _failure = failure


def _step(image: str, tag: str, step: str, instruction: str, started: float) -> dict[str, Any]:
    """A step the lab ran itself (not a Dockerfile's), in the form BuildStream records."""
    return {"image": image, "tag": tag, "step": step, "instruction": instruction,
            "seconds": round(time.monotonic() - started, 1), "cached": False}


def _series_files(ctx: Context, nonce: str = "") -> bytes:
    """What a build container on a builder gets: the scripts, under /tmp/series the patches and the
    profile's own tree (tree.diff, tree.id), and the build's nonce (mode 0600: read once, then gone)."""
    wanted = Context.__new__(Context)
    wanted.files, wanted.modes = {}, {}
    if nonce:
        wanted.add_bytes(NONCE_FILE, nonce.encode(), 0o600)
    for name in ("apply-series", "apply-tree", "build-series"):
        wanted.add_bytes(f"usr/local/bin/{name}", ctx.files[name], 0o755)
    for name in sorted(n for n in ctx.files if n.startswith("patches/") or n in ("tree.diff", "tree.id")):
        wanted.add_bytes(f"tmp/series/{name.removeprefix('patches/')}", ctx.files[name], 0o644)
    return wanted.tar().getvalue()


def _regular_files(archive: bytes) -> dict[str, tuple[bytes, int]]:
    """The regular files of a tar archive (``get_archive``): name -> (content, mode)."""
    files: dict[str, tuple[bytes, int]] = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None:
                files[member.name] = (extracted.read(), member.mode & 0o777)
    return files


def _read_logs(container: Any, lines: queue.Queue[str | None]) -> None:
    """A container's output, line by line, into ``lines``; None when it ends (or the container went)."""
    pending = b""
    try:
        for chunk in container.logs(stream=True, follow=True):
            pending += chunk
            *done, pending = pending.split(b"\n")
            for line in done:
                lines.put(line.decode(errors="replace").rstrip("\r"))
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        pass  # removed (an interrupt, a failure elsewhere): whoever waits decides what that means
    finally:
        if pending:
            lines.put(pending.decode(errors="replace"))
        lines.put(None)


def _remove_container(container: Any) -> None:
    # Signals wait until the daemon has answered: an interrupted removal would leave it behind.
    with resources.uninterrupted():
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            pass  # labelled with its run: `lab clean` removes it once this process is gone


def load_series(cfg: LabConfig, source: SeriesSource) -> series_mod.Series:
    """A profile's series, read and checked (a local mbox or folder, or fetched from Patchwork), or the
    part of it that ``series.patches`` names."""
    whole = _whole_series(cfg, source)
    return whole.only(source.patches) if source.patches else whole


def _whole_series(cfg: LabConfig, source: SeriesSource) -> series_mod.Series:
    if source.mbox:
        path = Path(source.mbox)
        if not path.is_absolute() and not (cfg.path.parent / path).exists():
            raise series_mod.SeriesError(
                f"series.mbox {source.mbox!r}: no such mbox file or patch folder beside {cfg.path} (a relative "
                "path is taken from the folder of lab.yaml: copy the series there, or give an absolute path)")
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


def _timestamp(iso: str) -> float:
    """Seconds since the epoch of Docker's RFC 3339 time (nanoseconds cut); 0 when unreadable."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)$", iso)
    if not m:
        return 0.0
    zone = "+00:00" if m.group(2) == "Z" else m.group(2)
    return datetime.datetime.fromisoformat(m.group(1) + zone).timestamp()


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
        return builder.ensure_all(profiles)
    except docker.errors.DockerException as exc:
        raise LabError(f"image build failed: {exc}") from exc

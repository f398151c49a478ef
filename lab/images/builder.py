"""The images a profile needs, made sure of behind ``ImageBuilder.ensure``: each present, pulled
from the registry or built, the guest and host stages beside QEMU's compile."""

from __future__ import annotations

import io
import json
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import apt
from lab.config import LabConfig, Profile, SeriesSource
from lab.engine import Engine, building, resources
from lab.engine import registry as registry_mod
from lab.errors import EngineError, ImageBuildError, LabError
from lab.images import base as base_mod
from lab.images.build import (
    AGENTS_DIR,
    IMAGES_DIR,
    SERIES_BUILD,
    BuildEvent,
    BuildStream,
    Context,
    Progress,
    build_output,
    digest,
    series_files,
    tail,
    timestamp,
)
from lab.images.sources import Trees, TreeSource, load_series, local_tree, qemu_build_args, wheels
from lab.namespace import Namespace
from lab.upstream import series as series_mod

STOP_JOIN_S = 10.0  # how long a stopped build on another thread gets to notice and clean up


@dataclass(frozen=True)
class ImageSet:
    profile: str
    base: str
    qemu: str  # the builder the runtime's QEMU comes from (the series one when there is a series)
    guest: str
    runtime: str
    qemu_source: str = ""
    series: dict[str, Any] | None = None
    # A tree of the profile's own built on a builder's (lab.upstream.gittree.TreeDiff.provenance), and the
    # commit a git ref named when the lab resolved it.
    tree: dict[str, str] | None = None
    build_seconds: dict[str, float] = field(default_factory=dict)  # per image of this set; 0: reused
    # Each step the builds of this set ran: image, tag, step (N/M), instruction, seconds, cached.
    build_steps: list[dict[str, Any]] = field(default_factory=list)
    # Per image of this set: present, pulled or built (lab.engine.registry), in the order they were needed.
    image_source: dict[str, str] = field(default_factory=dict)


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
    def __init__(self, engine: Engine, cfg: LabConfig, log_dir: Path, progress: Progress | None = None,
                 ns: Namespace | None = None, pull_only: bool = False) -> None:
        self.engine = engine
        self.cfg = cfg
        self.registry = registry_mod.of(cfg.images.registry, cfg.timeouts.image_build_s)
        # Every image the engine lacks must come from the registry: one it does not have is an error.
        self.pull_only = pull_only
        self.log_dir = log_dir
        self._progress = progress or (lambda event: None)
        # Containers a build runs (a series build) are this namespace's: removed on failure and
        # Ctrl-C, and named by the next command as a dead run's leftovers after a SIGKILL.
        self.ns = ns or Namespace.new_run(cfg.name)
        self._base: str | None = None
        self._mirror: str | None = None
        self.seconds: dict[str, float] = {}  # per tag: how long its build took (0: reused as it was)
        self.steps: dict[str, list[dict[str, Any]]] = {}  # per tag: its build's steps and their seconds
        self.sources: dict[str, str] = {}  # per tag: present, pulled or built
        self._lock = threading.Lock()  # progress is called from the background builds' threads too
        self._stop = threading.Event()  # set when one of the concurrent builds fails or is interrupted
        self.trees = Trees(engine, cfg, self.ns, self._event)

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
                        build_steps=[step for t in tags for step in self.steps.get(t, [])],
                        image_source={t: self.sources[t] for t in tags if t in self.sources})

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

    def tree_source(self, profile: Profile) -> TreeSource:
        return self.trees.tree_source(profile)

    def builder_trees(self) -> dict[str, str]:
        return self.trees.builder_trees()

    def exists(self, tag: str) -> bool:
        return self.engine.image(tag) is not None

    def labels_of(self, tag: str) -> dict[str, str]:
        found = self.engine.image(tag)
        if found is None:
            raise ImageBuildError(f"image {tag} is gone from engine {self.engine.name} while the lab builds on it; "
                                  "build again")
        return found.labels

    # -- base ---------------------------------------------------------------------------------

    def ensure_base(self) -> str:
        if self._base is not None:
            return self._base
        images = self.cfg.images
        if images.base == "registry":
            self.sources[images.registry_image] = registry_mod.PRESENT
            if not self.exists(images.registry_image):
                self.sources[images.registry_image] = registry_mod.PULLED
                self._event("base", f"pulling {images.registry_image}")
                base_mod.pull(self.engine, images.registry_image)
            self._base = images.registry_image
            return self._base
        mirror = self.mirror()
        tag = f"{self.cfg.image_prefix}/base:{images.suite}-{digest('debootstrap', images.suite, mirror)}"
        if not self._up_to_date("base", tag, rebuild=False):
            started = time.monotonic()
            self.steps[tag] = base_mod.debootstrap(self.engine, self.cfg, tag, mirror, self._log_path(tag),
                                                   self._labels("base"), lambda line: self._event("base", line))
            self.seconds[tag] = round(time.monotonic() - started, 1)
            self.sources[tag] = registry_mod.BUILT
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
                self._mirror = base_mod.image_mirror(self.engine, self.cfg, self.ensure_base())
            else:
                self._mirror = apt.debian_mirror()
        return self._mirror

    # -- built images -------------------------------------------------------------------------

    def _qemu(self, base: str, tree: TreeSource, rebuild: bool) -> str:
        q = tree.qemu
        ctx = Context(IMAGES_DIR / "qemu")
        ctx.files["tree/.placeholder"], ctx.modes["tree/.placeholder"] = b"", 0o644
        args = qemu_build_args(base, q, self.mirror() if q.source == "debian" else "") | tree.build_args
        version = q.upstream_version if q.source == "debian" else tree.version
        if q.source == "local":
            version, local_args = local_tree(ctx, self.trees.checkout(q))
            args |= local_args
        for wheel in wheels(self.log_dir / "wheels"):
            ctx.add(f"wheels/{wheel.name}", wheel)
        labels = self._labels("qemu", **{"qemu.version": version, "qemu.source": tree.label})
        return self._build("qemu", "", ctx, args, labels, rebuild)


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
        q = self.labels_of(qemu)
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
        self.sources[tag] = registry_mod.BUILT
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
            # A series is untrusted code (meson and ninja run what its patches say): no network,
            # and bounded memory and processes.
            with building.BuildContainer.create(
                    self.engine, builder, SERIES_BUILD, name,
                    resources.labels(self.cfg.name, self.ns, role="series-build"),
                    memory_mb=limits.build_memory_mb, pids=limits.build_pids) as container:
                announced = f"build container {name} ({container.id[:12]})"
                out.write(announced + "\n")
                self.progress(BuildEvent(reading.image, "output", announced))
                container.put("/", series_files(ctx, reading.nonce))
                container.start()
                self._follow(container, reading, out, deadline)
                status = container.wait(max(1.0, deadline - time.monotonic()))
                reading.finish()
                if status != 0:
                    raise reading.failure(f"build-series exited with {status}: {reading.last_line}")
                return build_output(container, reading)
        except building.BuildRequestFailed as exc:
            raise ImageBuildError(f"image {reading.image} ({reading.tag}): its build container failed: "
                                  f"{tail(exc.problem)}; log: {reading.log}") from exc

    def _follow(self, container: building.BuildContainer, reading: BuildStream, out: io.TextIOBase,
                deadline: float) -> None:
        """The container's output as build events until it ends; bounded by ``deadline``, and stopped
        when a build on another thread fails."""
        lines: queue.Queue[str | None] = queue.Queue()
        container.follow(lines)
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
        q = self.labels_of(qemu)
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
        """Whether ``tag`` is there to use (and said so), or was pulled from the registry; otherwise its
        build may start: there is room."""
        if not rebuild and self.exists(tag):
            self._event(image, f"{tag} is up to date")
            self.seconds.setdefault(tag, 0.0)
            self.sources[tag] = registry_mod.PRESENT
            return True
        if not rebuild and self._pulled(image, tag):
            return True
        self._require_space(image)
        return False

    def _pulled(self, image: str, tag: str) -> bool:
        if self.registry is None:
            return False
        where = self.registry.location
        self._event(image, f"looking for {tag} in {where}")
        seconds = building.pull_from(self.engine, self.registry, tag, required=self.pull_only)
        if seconds is None:
            self._event(image, f"{where} has no {tag}")
            return False
        self._event(image, f"pulled {tag} from {where} in {seconds:.0f} s")
        self.seconds.setdefault(tag, 0.0)
        self.sources[tag] = registry_mod.PULLED
        return True

    def push(self, image_set: ImageSet) -> dict[str, float]:
        """The set's images (not a base another registry gives) pushed to images.registry: seconds each."""
        assert self.registry is not None, "`lab build --push` checks images.registry before any build"
        pushed: dict[str, float] = {}
        for tag in image_set.image_source:
            if tag.startswith(f"{self.cfg.image_prefix}/"):
                self._event("push", f"pushing {tag} to {self.registry.location}")
                pushed[tag] = building.push_to(self.engine, self.registry, tag)
                self._event("push", f"pushed {tag} in {pushed[tag]:.0f} s")
        return pushed

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
                stream = building.build(self.engine, ctx.tar(), tag, args, labels, self.cfg.timeouts.image_build_s,
                                        target)
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
            except building.BuildRequestFailed as exc:
                self._remove_layers(reading.created, since)
                raise ImageBuildError(f"image {image} ({tag}) failed: {exc.explanation}; log: {log}") from exc
            except (LabError, _Stopped, KeyboardInterrupt):  # Ctrl-C too: Docker drops the build, not its layers
                self._remove_layers(reading.created, since)
                raise
        self.steps[tag] = reading.steps
        self.seconds[tag] = round(time.monotonic() - started, 1)
        self.sources[tag] = registry_mod.BUILT
        self._event(image, f"built {tag} in {self.seconds[tag]:.0f} s")
        return tag

    def _require_space(self, image: str) -> None:
        free, where = self.engine.free_gb()
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
            if self._made_since(image_id, since):
                building.remove_layer(self.engine, image_id)

    def _made_since(self, image_id: str, since: float) -> bool:
        try:
            found = self.engine.image(image_id)
        except EngineError:
            return False
        # The engine's clock rounds: a second of slack.
        return found is not None and timestamp(found.created) >= since - 1.0

    def _event(self, image: str, line: str) -> None:
        self.progress(BuildEvent(image, "info", line))

    def _log_path(self, tag: str) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", tag) + ".log")



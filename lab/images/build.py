"""How an image is built: its context assembled in memory and named by its digest, the build's
stream read into events and timed steps, and what a build in a container takes in and gives back."""

from __future__ import annotations

import datetime
import hashlib
import io
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from lab import bounds
from lab.engine import building
from lab.errors import ImageBuildError, LabError
from lab.upstream import series as series_mod

PACKAGE = Path(__file__).resolve().parents[1]
# What the images are built from, package data of an installed lab (in a checkout, a link to images/).
IMAGES_DIR = PACKAGE / "buildfiles"
AGENTS_DIR = PACKAGE / "agents"
NINJA_RE = re.compile(r"^\[(\d+)/(\d+)\]")
STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)")
LAYER_RE = re.compile(r"^ ---> ([0-9a-f]{12,64})$")  # the image a step committed (or took from the cache)
APPLY_FAILED = "SERIES-APPLY-FAILED"  # printed by images/series/apply-series, with the build's nonce
NONCE_FILE = "tmp/series/.nonce"  # read, then removed, by build-series before anything of a patch runs
SERIES_BUILD = ["/usr/local/bin/build-series", "/tmp/series"]  # run in a container of the builder
SERIES_OUTPUT = "/opt/qemu"  # what it installs there is the build


@dataclass(frozen=True)
class BuildEvent:
    """One line of progress: the lab's own news (``info``), a Dockerfile ``step``, ninja's
    counter (``ninja``, with ``count`` = (done, total)), or any other ``output`` of the build."""

    image: str
    kind: str
    line: str
    count: tuple[int, int] | None = None


Progress = Callable[[BuildEvent], None]


def digest(*parts: bytes | str) -> str:
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
        return digest(*args, *(f"{n}:{self.modes[n]}" for n in sorted(self.files)),
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
                               f"{tail(error)}; log: {self.log}")

    _failure = failure


def lab_step(image: str, tag: str, step: str, instruction: str, started: float) -> dict[str, Any]:
    """A step the lab ran itself (not a Dockerfile's), in the form BuildStream records."""
    return {"image": image, "tag": tag, "step": step, "instruction": instruction,
            "seconds": round(time.monotonic() - started, 1), "cached": False}


def series_files(ctx: Context, nonce: str = "") -> bytes:
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


def build_output(container: building.BuildContainer, reading: BuildStream) -> dict[str, tuple[bytes, int]]:
    """The files of a series build's /opt/qemu, read up to BUILD_OUTPUT_LIMIT: what a series builds
    is its own to say."""
    with tempfile.TemporaryFile() as spool:
        if not bounds.copy(container.archive(SERIES_OUTPUT), spool, bounds.BUILD_OUTPUT_LIMIT):
            raise reading.failure(bounds.past(f"its {SERIES_OUTPUT}", bounds.BUILD_OUTPUT_LIMIT,
                                              "of a series build's output"))
        spool.seek(0)
        return regular_files(spool)


def regular_files(archive: BinaryIO) -> dict[str, tuple[bytes, int]]:
    """The regular files of a tar archive (``get_archive``): name -> (content, mode)."""
    files: dict[str, tuple[bytes, int]] = {}
    with tarfile.open(fileobj=archive) as tar:
        for member in tar:
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None:
                files[member.name] = (extracted.read(), member.mode & 0o777)
    return files


def timestamp(iso: str) -> float:
    """Seconds since the epoch of Docker's RFC 3339 time (nanoseconds cut); 0 when unreadable."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)$", iso)
    if not m:
        return 0.0
    zone = "+00:00" if m.group(2) == "Z" else m.group(2)
    return datetime.datetime.fromisoformat(m.group(1) + zone).timestamp()


def tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no message)"


def last_line(path: Path) -> str:
    return tail(path.read_text(errors="replace")) if path.exists() else "(no log)"

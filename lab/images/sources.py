"""What an image is built from: a profile's series, and its QEMU tree (a Debian source, a git
tree, a local checkout), found before anything is built, with the builder trees it can start from."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab import statefile
from lab.config import LabConfig, Profile, QemuSource, SeriesSource
from lab.engine import Engine, building, resources
from lab.errors import ImageBuildError
from lab.images.build import Context, tail
from lab.namespace import Namespace
from lab.upstream import gittree, lore
from lab.upstream import series as series_mod

BUILDER_TREES = "builder-trees.json"  # in the state folder: each builder image's tree id, read once
MESON_VERSION = "1.9.0"  # the meson QEMU's build needs, as a wheel (not Debian's)
TREE_PROBE_S = 60.0  # reading a builder's tree id in a container of it


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


class Trees:
    """The trees a profile can build from: its own, resolved, and the builders' on this engine."""

    def __init__(self, engine: Engine, cfg: LabConfig, ns: Namespace, event: Callable[[str, str], None]) -> None:
        self.engine = engine
        self.cfg = cfg
        self.ns = ns
        self._event = event

    def checkout(self, q: QemuSource) -> Path:
        """A local source's checkout (a relative path is taken from the folder of lab.yaml)."""
        return Path(q.path) if Path(q.path).is_absolute() else self.cfg.path.parent / q.path

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
        checkout, timeout = self.checkout(q), self.cfg.timeouts.git_s
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
        found = sorted(self.engine.images(label=[f"{resources.MANAGED}=true", f"{resources.IMAGE}=qemu"]),
                       key=lambda i: i.created, reverse=True)
        for image in found:
            tags = sorted(t for t in image.tags if t.startswith(f"{self.cfg.image_prefix}/qemu:"))
            if not tags:
                continue
            if image.id not in known:
                known[image.id] = self._probe_tree(image.id, tags[0])
                statefile.write(cache, known)
            if known[image.id]:
                trees.setdefault(known[image.id], tags[0])
        return trees

    def _probe_tree(self, image: str, tag: str) -> str:
        """The builder's tree id, read in a short-lived container of it ("" when its tree is no git
        commit: an image made before base-tree). Labelled with this build's run; removed after."""
        name = self.ns.name(f"tree-{image.removeprefix('sha256:')[:12]}")
        try:
            done = building.run_once(self.engine, image, ["git", "-C", "/src/qemu", "rev-parse", "--verify", "-q",
                                                          "HEAD^{tree}"], name,
                                     resources.labels(self.cfg.name, self.ns, role="tree-probe"), TREE_PROBE_S)
        except building.BuildRequestFailed as exc:
            raise ImageBuildError(f"cannot read the tree of builder {tag} ({tail(exc.problem)}); "
                                  "is the Docker daemon well?") from exc
        output = done.output.strip()
        return output if done.status == 0 and re.fullmatch(r"[0-9a-f]{40,64}", output) else ""


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
            why = tail(proc.stderr.decode(errors="replace"))
            raise ImageBuildError(f"qemu.path {tree}: not a git checkout ({why})")
        names += filter(None, proc.stdout.decode().split("\0"))
    for name in dict.fromkeys(names):
        path = tree / name
        if path.is_file() and not path.is_symlink():
            ctx.add(f"tree/{name}", path)


def wheels(cache: Path) -> list[Path]:
    """meson and pycotap for the QEMU build, fetched once into ``cache`` by this machine's pip (its
    proxies and certificates apply)."""
    wanted = [f"meson=={MESON_VERSION}", "pycotap"]
    have = sorted(cache.glob("*.whl"))
    if not any(w.name.startswith(f"meson-{MESON_VERSION}-") for w in have) or len(have) < 2:
        cache.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                               "--only-binary", ":all:", "-d", str(cache), *wanted],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise ImageBuildError(f"cannot fetch {', '.join(wanted)} for the QEMU build with pip: "
                                  f"{tail(proc.stderr)}")
        have = sorted(cache.glob("*.whl"))
    return have


def forget(cfg: LabConfig) -> None:
    """The builders' tree ids go with the builders (`lab clean --images`)."""
    (cfg.state_root / BUILDER_TREES).unlink(missing_ok=True)

"""QEMU trees from git: a checkout's working tree, or a remote's commit; and how a tree stands to a
builder's tree.

A builder image holds its unpatched tree as a git commit (images/qemu/base-tree) beside that tree's
build directory. A tree that descends from a commit whose *tree* id equals a builder's (tree ids
depend on content only: two repositories made from the same files agree on them, whatever their
commits are called) is built as the diff from that commit, applied in a container of the builder
with an incremental ninja: seconds instead of a full compile (lab.images).

Remote refs are resolved here, in the lab's own process with this machine's git, not in a build
container: the image tag's digest must name the commit before anything is built, and the machine's
git configuration (proxies, certificates, credential helpers) applies as it does to the developer.
What is fetched goes into a partial clone kept in the results folder (``<results>/.git-cache``):
commits only, until a diff needs the trees and files it touches, which git then fetches on demand.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError

HEX_RE = re.compile(r"^[0-9a-fA-F]{4,64}$")
FULL_HASH_LENGTHS = (40, 64)  # SHA-1 and SHA-256 object names
# Where a ref name is looked for, in git's own order (gitrevisions(7): refs/, refs/tags/, refs/heads/).
REF_PLACES = ("{}", "refs/{}", "refs/tags/{}", "refs/heads/{}")
CACHE_REFS = "refs/lab"  # the cache's own refs: what it fetched stays reachable (no gc takes it)


class GitSourceError(LabError):
    """A git tree the lab cannot use: an unreachable URL, an unknown or ambiguous ref, a failed git."""


@dataclass(frozen=True)
class Resolved:
    """A profile's ``ref`` as the remote named it when the lab asked."""

    url: str
    ref: str
    commit: str  # the full hash
    kind: str  # branch, tag, ref (another ref name or HEAD), commit (a full hash), short hash

    def describe(self) -> str:
        return f"git {self.url} {self.ref} ({self.kind}) = commit {self.commit}"


@dataclass(frozen=True)
class TreeDiff:
    """A tree as the diff from a builder's tree: what an incremental build applies."""

    builder: str  # the builder image's tag
    base_tree: str  # the builder's tree id
    base_commit: str  # the commit with that tree in the source's history ("" for the working tree itself)
    tree: str  # the tree built
    diff: bytes  # `git diff --binary` from base_tree to tree

    @property
    def diff_sha256(self) -> str:
        return hashlib.sha256(self.diff).hexdigest()

    def files(self) -> int:
        return self.diff.count(b"\ndiff --git ") + (1 if self.diff.startswith(b"diff --git ") else 0)

    def provenance(self) -> dict[str, str]:
        return {"builder": self.builder, "base_tree": self.base_tree, "base_commit": self.base_commit,
                "tree": self.tree, "diff_sha256": self.diff_sha256, "files": str(self.files())}


# -- running git ---------------------------------------------------------------------------------

def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Never a prompt: a lab run has nobody to answer one (a password, an unknown ssh host key)."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GCM_INTERACTIVE="never", LC_ALL="C")
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env | dict(extra or {})


def git(args: list[str], timeout: float, what: str, cwd: Path | None = None,
        env: Mapping[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """One git command, bounded by ``timeout``; a failure (when ``check``) is one line naming ``what``."""
    exe = shutil.which("git")
    if exe is None:
        raise GitSourceError(f"{what}: git is not installed on this machine (apt-get install git)")
    try:
        proc = subprocess.run([exe, *args], cwd=cwd, env=_env(env), capture_output=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise GitSourceError(f"{what}: git {args[0]} did not finish within {timeout:g} s "
                             "(timeouts.git_s in lab.yaml)") from None
    if check and proc.returncode != 0:
        raise GitSourceError(f"{what}: git {args[0]} failed: {_last_line(proc.stderr)}")
    return proc


def _last_line(output: bytes) -> str:
    lines = [line.strip() for line in output.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


# -- a remote: resolving a ref --------------------------------------------------------------------

def ls_remote(url: str, timeout: float, where: str) -> dict[str, str]:
    """The remote's refs, each to the commit it names (an annotated tag to the commit it points at)."""
    proc = git(["ls-remote", "--", url], timeout, f"{where}.url", check=False)
    if proc.returncode != 0:
        raise GitSourceError(f"{where}.url: cannot reach {url}: {_last_line(proc.stderr)} "
                             "(check the URL, and this machine's network and proxy settings)")
    refs: dict[str, str] = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        commit, _, name = line.partition("\t")
        if name.endswith("^{}"):
            refs[name[:-3]] = commit  # the peeled tag wins over the tag object
        else:
            refs.setdefault(name, commit)
    return refs


def _kind(name: str) -> str:
    if name.startswith("refs/heads/"):
        return "branch"
    return "tag" if name.startswith("refs/tags/") else "ref"


def cache_repo(cache_root: Path, url: str, timeout: float, where: str) -> Path:
    """The partial clone of ``url`` the lab keeps (made the first time): commits, and on demand the
    trees and files a diff needs."""
    repo = cache_root / hashlib.sha256(url.encode()).hexdigest()[:16]
    if not (repo / "HEAD").exists():
        repo.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=repo.parent))
        try:
            git(["init", "--quiet", "--bare", str(tmp)], timeout, where)
            for key, value in (("remote.origin.url", url), ("remote.origin.promisor", "true"),
                               ("remote.origin.partialclonefilter", "tree:0"), ("gc.auto", "0")):
                git(["-C", str(tmp), "config", key, value], timeout, where)
            tmp.rename(repo)  # whole or not at all: a concurrent lab may have made it meanwhile
        except OSError:
            pass  # made meanwhile by that other lab: use it
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed; a half-made one otherwise
    return repo


def _fetch(repo: Path, refspecs: list[str], timeout: float, where: str, check: bool = True) -> bool:
    """Fetches commits only (tree:0): history is cheap, file contents come when a diff asks."""
    proc = git(["-C", str(repo), "fetch", "--quiet", "--no-tags", "--filter=tree:0", "origin", *refspecs],
               timeout, f"{where}.url", check=False)
    if check and proc.returncode != 0:
        raise GitSourceError(f"{where}.url: fetching from {git_url(repo, timeout)} failed: {_last_line(proc.stderr)}")
    return proc.returncode == 0


def git_url(repo: Path, timeout: float) -> str:
    return git(["-C", str(repo), "config", "remote.origin.url"], timeout, "git cache").stdout.decode().strip()


def _is_commit(repo: Path, name: str, timeout: float) -> bool:
    """Whether the cache holds commit ``name``. Never asks the remote: a plain lookup in a partial
    clone would fetch the lone object (and later its history one commit at a time)."""
    proc = git(["-C", str(repo), "rev-list", "--missing=allow-any", "--no-walk", name, "--"], timeout,
               "git cache", check=False)
    return proc.returncode == 0 and _types(repo, [name], timeout) == {name: "commit"}


def _types(repo: Path, names: list[str], timeout: float) -> dict[str, str]:
    """The type of each present object of ``names`` (present: no lazy fetch is triggered)."""
    exe = shutil.which("git") or "git"
    proc = subprocess.run([exe, "-C", str(repo), "cat-file", "--batch-check=%(objectname) %(objecttype)"],
                          input="".join(f"{n}\n" for n in names).encode(), capture_output=True, env=_env(),
                          timeout=timeout, check=False)
    found = (line.split() for line in proc.stdout.decode().splitlines())
    return {f[0]: f[1] for f in found if len(f) == 2 and f[1] != "missing"}


def _commits_with_prefix(repo: Path, prefix: str, timeout: float) -> list[str]:
    """The commits the cache holds whose hash starts with ``prefix`` (it holds commits and tags only)."""
    proc = git(["-C", str(repo), "rev-parse", f"--disambiguate={prefix.lower()}"], timeout, "git cache", check=False)
    types = _types(repo, proc.stdout.decode().split(), timeout)
    return sorted(name for name, kind in types.items() if kind == "commit")


def _keep(repo: Path, commit: str, timeout: float) -> None:
    git(["-C", str(repo), "update-ref", f"{CACHE_REFS}/commits/{commit}", commit], timeout, "git cache")


def resolve(url: str, ref: str, cache_root: Path, timeout: float, where: str) -> tuple[Resolved, Path]:
    """``ref`` (a branch, tag, full or short commit hash) to its full commit hash on ``url``, with the
    commit and its history in the lab's partial clone (returned beside it)."""
    refs = ls_remote(url, timeout, where)
    repo = cache_repo(cache_root, url, timeout, where)
    named = next((place.format(ref) for place in REF_PLACES if place.format(ref) in refs), None)
    if named is not None:
        resolved = Resolved(url, ref, refs[named], _kind(named))
    elif not HEX_RE.fullmatch(ref):
        raise GitSourceError(f"{where}.ref: {ref!r} is no branch, tag or commit of {url} "
                             f"(git ls-remote {url} lists its branches and tags)")
    elif len(ref) in FULL_HASH_LENGTHS:
        resolved = Resolved(url, ref, ref.lower(), "commit")
    else:
        resolved = Resolved(url, ref, _short_hash(repo, ref, url, refs.values(), timeout, where), "short hash")
    # By hash first (what was resolved, even if a branch has moved since); servers that refuse an
    # unadvertised commit still give it through the ref it was resolved from, or through all refs.
    if not _is_commit(repo, resolved.commit, timeout):
        fallback = [named] if named else [f"+refs/heads/*:{CACHE_REFS}/heads/*", f"+refs/tags/*:{CACHE_REFS}/tags/*"]
        if not _fetch(repo, [resolved.commit], timeout, where, check=False):
            _fetch(repo, fallback, timeout, where)
    if not _is_commit(repo, resolved.commit, timeout):
        raise GitSourceError(f"{where}.ref: {ref!r} is no commit of {url} (the server has no such commit, "
                             "or does not give it: name a branch or tag)")
    _keep(repo, resolved.commit, timeout)
    return resolved, repo


def _short_hash(repo: Path, prefix: str, url: str, tips: Iterable[str], timeout: float, where: str) -> str:
    """The one commit of ``url`` whose hash starts with ``prefix``: every branch and tag is fetched
    (commits only) to be sure no second commit shares it."""
    _fetch(repo, [f"+refs/heads/*:{CACHE_REFS}/heads/*", f"+refs/tags/*:{CACHE_REFS}/tags/*"], timeout, where)
    found = _commits_with_prefix(repo, prefix, timeout)
    found += [t for t in tips if t.startswith(prefix.lower()) and t not in found]
    if not found:
        raise GitSourceError(f"{where}.ref: no commit of {url} starts with {prefix} "
                             "(a branch, a tag or a longer hash names one)")
    if len(found) > 1:
        listed = ", ".join(c[:12] for c in found[:5])
        raise GitSourceError(f"{where}.ref: the short hash {prefix} is ambiguous on {url}: {listed} "
                             "(give more of the hash)")
    return found[0]


def subprojects_in_tree(repo: Path, commit: str, timeout: float) -> bool:
    """Whether the commit carries QEMU's subprojects (as a tarball does): then configure must not
    download them (letting meson update them inside a repository makes it fetch)."""
    proc = git(["-C", str(repo), "ls-tree", "--name-only", commit, "subprojects/keycodemapdb/"], timeout,
               "git cache", check=False)
    return proc.returncode == 0 and bool(proc.stdout.strip())


# -- a tree against the builders' trees ------------------------------------------------------------

def nearest_base(repo: Path, rev: str, trees: Mapping[str, str], timeout: float,
                 env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The nearest commit in ``rev``'s history (itself included) whose tree is one of ``trees``:
    (commit, tree), or None. Reads commits only (a partial clone needs no trees for this)."""
    if not trees:
        return None
    exe = shutil.which("git") or "git"
    with subprocess.Popen([exe, "-C", str(repo), "log", "--format=%H %T", rev, "--"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, env=_env(env), stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        try:
            return _first_match(proc.stdout, trees)
        finally:
            proc.kill()  # done reading: the rest of the history is not needed
            _wait(proc, timeout)


def _first_match(lines: Iterable[bytes], trees: Mapping[str, str]) -> tuple[str, str] | None:
    for line in lines:
        commit, _, tree = line.decode().strip().partition(" ")
        if tree in trees:
            return commit, tree
    return None


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def diff(repo: Path, base: str, target: str, timeout: float, what: str,
         env: Mapping[str, str] | None = None) -> bytes:
    """``git diff`` from ``base`` to ``target`` (trees or commits) in the form `git apply` takes,
    whatever this user's git configuration says about prefixes, renames or external tools."""
    return git(["-C", str(repo), "diff", "--binary", "--full-index", "--no-renames", "--no-ext-diff",
                "--no-textconv", "--no-color", "--src-prefix=a/", "--dst-prefix=b/", base, target, "--"],
               timeout, what, env=env).stdout


# -- a local checkout ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scratch:
    """Where the lab writes while reading a checkout: an index and objects of its own, so that the
    developer's repository is only read (its objects are reached as alternates)."""

    env: dict[str, str]


def scratch(checkout: Path, folder: Path, timeout: float, where: str) -> Scratch:
    where = f"{where} {checkout}"
    paths = git(["-C", str(checkout), "rev-parse", "--path-format=absolute", "--git-path", "objects",
                 "--git-path", "index"], timeout, where).stdout.decode().split("\n")
    objects, index = Path(paths[0]), Path(paths[1])
    own_index = folder / "index"
    if index.exists():
        shutil.copyfile(index, own_index)  # its stat data spares hashing files that did not change
    (folder / "objects").mkdir(exist_ok=True)
    return Scratch({"GIT_INDEX_FILE": str(own_index), "GIT_OBJECT_DIRECTORY": str(folder / "objects"),
                    "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(objects)})


def working_tree(checkout: Path, space: Scratch, timeout: float, where: str) -> str:
    """The tree id of the checkout as it is: tracked and untracked files, not what git ignores (what a
    full build of the checkout takes too, lab.images.add_checkout)."""
    where = f"{where} {checkout}"
    git(["-C", str(checkout), "add", "--all", "--", "."], timeout, where, env=space.env)
    return git(["-C", str(checkout), "write-tree"], timeout, where, env=space.env).stdout.decode().strip()

"""lab.yaml: what to build, what to run, what to expect.

The file is read once, validated completely, and turned into frozen dataclasses; nothing downstream
looks at raw YAML. Every error names the key path, what was found and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.errors import ConfigError
from lab.results.verdict import EXPECTABLE

FILTERS = ("filter-mirror", "filter-redirector")
NO_FILTER = "none"  # a guest-path scenario without a filter on the source: what the guest loses plainly
# Where the frames of a scenario go on the secondary, and which capture point gives the verdict: the
# mirror stream out of the destination's tap (stream), or the migrated guest itself (guest).
PATHS = ("stream", "guest")
# When the filter under test comes on: from the start; or, starting with status=off, switched on over
# QMP at the source's STOP event or just before `migrate`, or by the filter itself (a property such
# as the series' enable_when_stopped).
SWITCH_ON = ("start", "at-stop", "before-migrate", "by-filter")
# Where a frame can be lost on its way (report rows' lost_at); an expectation may accept losses at some.
LOSS_POINTS = ("generator", "stream", "destination", "guest")
PAIR_SEP = "->"  # an expectation for a migration between two builds: "source->destination"
ACCELS = ("auto", "kvm", "tcg")
BASE_SOURCES = ("debootstrap", "registry")
QEMU_SOURCES = ("debian", "git", "local")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
# A QOM property name as QEMU's -object option accepts it.
PROPERTY_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
# Set by the lab on the filter under test (lab.vm.qemu.Filter); a scenario repeating one would override it.
LAB_PROPERTIES = ("id", "netdev", "queue", "outdev", "indev", "vnet_hdr_support")
# What `git clone` is given: a URL of a network transport or an absolute path; never an option.
GIT_URL_RE = re.compile(r"^(?:(?:https?|git|ssh)://[^\s/-][^\s]*|/[^\s]*)$")
# A commit hash, tag or branch name; `..` would name a range, and a leading '-' an option.
GIT_REF_RE = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._/-]*$")
# The key of `expect` that names the verdict a series under `lab check` must give (not a profile).
CHECK = "check"
# Patchwork stores a check's context as a slug of at most 255 characters.
CONTEXT_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
HTTP_URL_RE = re.compile(r"^https?://[^\s/]\S*$")
DEFAULT_ARCHIVE = "https://lore.kernel.org/qemu-devel"  # a public-inbox archive of the list
# A Message-ID as people paste it: <local@domain> or local@domain; never an option (a leading '-')
# nor a path (a '/').
_MSGID = r"[A-Za-z0-9!#$%&'*+=?^_`{|}~.][^\s<>@/]*@[^\s<>@/]+"
PATCH_RANGE_RE = re.compile(r"^([1-9][0-9]{0,3})-([1-9][0-9]{0,3})$")
MSGID_RE = re.compile(rf"^(?:<({_MSGID})>|({_MSGID}))$")


@dataclass(frozen=True)
class ImagesConfig:
    base: str = "debootstrap"
    suite: str = "bookworm"
    registry_image: str = "debian:bookworm"
    mirror: str = "auto"
    min_free_gb: float = 10.0  # refused to start a build with less free at Docker's data root
    prefix: str = ""  # repository of the image tags (prefix/qemu:...); "" = lab.name


@dataclass(frozen=True)
class QemuSource:
    """The tree a profile builds: Debian's source package (version, suite), a git repository (url,
    ref), or a local checkout (path, used as it is, patched or not)."""

    source: str = "debian"
    version: str = "1:10.2.2+ds-1"
    suite: str = "sid"
    url: str = ""
    ref: str = ""
    path: str = ""

    def describe(self) -> str:
        if self.source == "git":
            return f"git {self.url} {self.ref}"
        if self.source == "local":
            return f"local tree {self.path}"
        return f"debian qemu={self.version} ({self.suite}), orig tarball"

    @property
    def upstream_version(self) -> str:
        """``1:10.2.2+ds-1`` -> ``10.2.2``."""
        match = re.match(r"^(?:\d+:)?([0-9.]+)", self.version)
        return match.group(1) if match else self.version


@dataclass(frozen=True)
class SeriesSource:
    """A patch series: from Patchwork (``ref``: patch/series URL or series ID), a local ``mbox``
    (a file, or a folder of `git format-patch` files, relative to lab.yaml), or a mail archive
    (``lore``: a Message-ID of the thread, fetched with b4 from ``archive``)."""

    ref: str = ""
    patchwork: str = ""
    mbox: str = ""
    note: str = ""
    lore: str = ""
    archive: str = DEFAULT_ARCHIVE
    patches: tuple[int, int] | None = None  # only patches FIRST..LAST of the series (``patches: 1-11``)

    def describe(self) -> str:
        if self.lore:
            return f"lore {self.lore}"
        return f"patchwork {self.ref}" if self.ref else f"mbox {self.mbox}"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    qemu: QemuSource
    series: SeriesSource | None = None
    default: bool = True  # run when no --profile is given


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    filter: str  # a FILTERS type, or NO_FILTER
    expect: Mapping[str, str]  # per profile, and per "source->destination" pair of profiles
    description: str = ""
    properties: tuple[tuple[str, str], ...] = ()  # extra properties of the filter under test
    path: str = "stream"
    switch_on: str = "start"
    # at-stop: how long after the source's STOP the lab switches the filter on. A fixed wait, so that
    # what reached the tap before the switch is a property of the scenario, not of the lab's speed.
    switch_after_ms: int = 0
    accept_loss: tuple[str, ...] = ()  # LOSS_POINTS whose losses do not make the verdict a gap

    def expected(self, source: str, destination: str = "") -> str:
        """The verdict expected when the guest migrates from build ``source`` to ``destination``
        ("" when no expectation names that pair: the row then reports without judging)."""
        if not destination or destination == source:
            return self.expect.get(source, "")
        return self.expect.get(f"{source}{PAIR_SEP}{destination}", "")


@dataclass(frozen=True)
class Traffic:
    rate: int = 1000
    warmup_s: float = 1.0


@dataclass(frozen=True)
class MigrationSettings:
    hold_s: float = 3.0
    settle_s: float = 0.3


@dataclass(frozen=True)
class Timeouts:
    kvm_probe_s: float = 10.0
    host_start_s: float = 30.0
    boot_s: float = 60.0
    pre_switchover_s: float = 60.0
    completion_s: float = 60.0
    drain_s: float = 10.0
    image_build_s: float = 2400.0
    git_s: float = 300.0  # each git command on a git source or local checkout (ls-remote, fetch, diff)
    slot_s: float = 1800.0  # a cell waiting for a free slot of its engine (other runs' cells hold them)


@dataclass(frozen=True)
class Guest:
    memory_mb: int = 256
    mac: str = "52:54:00:12:34:56"
    dirty_mb_s: int = 0  # a guest workload dirtying memory at this rate, so that migration iterates
    snapshot: bool = True  # boot once per build, save the guest, start every scenario's source from it


@dataclass(frozen=True)
class Limits:
    """Memory (MiB) and process caps of what the lab starts: a host container, and the container that
    builds a series (untrusted code: meson and ninja run what a patch says). Measured peaks are in
    lab.yaml; the defaults leave several times that."""
    host_memory_mb: int = 2048
    host_pids: int = 1024
    build_memory_mb: int = 8192
    build_pids: int = 4096


@dataclass(frozen=True)
class EngineSpec:
    """A Docker engine the lab may run hosts on: ``url`` is any Docker base URL (``unix://``,
    ``tcp://``, ``ssh://user@host[:port]``; empty: the local one, or DOCKER_HOST); ``address`` is
    where containers on other engines reach the ports this one publishes (empty: derived)."""

    name: str
    url: str = ""
    address: str = ""


LOCAL_ENGINE = EngineSpec("local")
ENGINE_URL_RE = re.compile(r"(unix://[^\s]+|tcp://[A-Za-z0-9.:\[\]-]+|ssh://([A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+(:\d+)?)")
ADDRESS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]*")


@dataclass(frozen=True)
class CheckSettings:
    """`lab check`: how its Patchwork checks are posted. The token itself is never part of the
    configuration: it comes from PATCHWORK_TOKEN or the file ``token_file`` names."""

    context: str = "netfilter-continuity"
    target_url: str = ""  # "" = the CI run's URL in GitHub Actions, else the artefacts folder
    token_file: str = ""  # relative to lab.yaml
    patchwork: str = ""  # the server, for a bare series ID


@dataclass(frozen=True)
class LabConfig:
    path: Path
    name: str = "nfcl"
    results_dir: str = "lab-results"
    accel: str = "auto"
    images: ImagesConfig = ImagesConfig()
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    scenarios: Mapping[str, ScenarioSpec] = field(default_factory=dict)
    traffic: Traffic = Traffic()
    migration: MigrationSettings = MigrationSettings()
    timeouts: Timeouts = Timeouts()
    guest: Guest = Guest()
    limits: Limits = Limits()
    check: CheckSettings = CheckSettings()
    engines: Mapping[str, EngineSpec] = field(default_factory=lambda: {"local": LOCAL_ENGINE})

    def select_engines(self, names: list[str] | None) -> list[EngineSpec]:
        """The engines asked for (--engine), or the first one configured."""
        if not names:
            return [next(iter(self.engines.values()))]
        return [self.engines[n] for n in self._select(names, self.engines, "--engine")]

    @property
    def image_prefix(self) -> str:
        """Image tags are ``<prefix>/<image>:...``: labs of other names may share one set of images."""
        return self.images.prefix or self.name

    @property
    def results_root(self) -> Path:
        """``lab.results_dir``, a relative one taken from lab.yaml's folder (wherever the lab runs)."""
        return (self.path.parent / self.results_dir).resolve()

    @property
    def state_root(self) -> Path:
        """What outlives a run: kept labs, the accelerator probe's outcome."""
        return self.results_root / ".labs"

    def select_profiles(self, names: list[str] | None) -> list[Profile]:
        if not names:
            return [p for p in self.profiles.values() if p.default]
        return [self.profiles[n] for n in self._select(names, self.profiles, "--profile")]

    def select_scenarios(self, names: list[str] | None) -> list[ScenarioSpec]:
        return [self.scenarios[n] for n in self._select(names, self.scenarios, "--scenario")]

    @staticmethod
    def _select(names: list[str] | None, known: Mapping[str, object], flag: str) -> list[str]:
        if not names:
            return list(known)
        for name in names:
            if name not in known:
                raise ConfigError(flag, f"unknown name {name!r}", f"known: {', '.join(known)}")
        return list(dict.fromkeys(names))


class _Reader:
    """Walks one mapping of the YAML tree, remembering the key path for error messages."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(where or "top level", f"expected a mapping, found {_kind(data)}")
        self.data: dict[str, Any] = data
        self.where = where
        self.seen: set[str] = set()

    def key_path(self, key: object) -> str:
        return f"{self.where}.{_key_text(key)}" if self.where else _key_text(key)

    def child(self, key: str, required: bool = False) -> _Reader:
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(self.key_path(key), "missing")
            return _Reader({}, self.key_path(key))
        return _Reader(self.data[key], self.key_path(key))

    def text(self, key: str, default: str, choices: tuple[str, ...] = (),
             pattern: re.Pattern[str] | None = None) -> str:
        value = self._get(key, default, str, "a string")
        if choices and value not in choices:
            raise ConfigError(self.key_path(key), f"{value!r} is not allowed", f"allowed: {', '.join(choices)}")
        if pattern and not pattern.fullmatch(value):
            raise ConfigError(self.key_path(key), f"{value!r} is malformed", f"must match {pattern.pattern}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        self.seen.add(key)
        if not isinstance(value, bool):
            raise ConfigError(self.key_path(key), f"expected true or false, found {_kind(value)}")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self._get(key, default, (int, float), "a number")
        return self._in_range(key, value, low, high)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self._get(key, default, int, "an integer")
        return int(self._in_range(key, value, low, high))

    def _in_range(self, key: str, value: float, low: float, high: float) -> float:
        if not low <= value <= high:
            raise ConfigError(self.key_path(key), f"{value} is out of range", f"allowed: {low} to {high}")
        return value

    def _get(self, key: str, default: Any, types: type | tuple[type, ...], what: str) -> Any:
        self.seen.add(key)
        value = self.data.get(key, default)
        # YAML's booleans are ints to Python; a boolean is never a valid number here.
        if isinstance(value, bool) or not isinstance(value, types):
            raise ConfigError(self.key_path(key), f"expected {what}, found {_kind(value)}")
        return value

    def names(self) -> list[str]:
        return list(self.data)

    def done(self) -> None:
        unknown = [k for k in self.data if k not in self.seen]
        if unknown:
            allowed = ", ".join(sorted(self.seen)) or "none"
            raise ConfigError(self.key_path(unknown[0]), "unknown key", f"allowed here: {allowed}")


def _key_text(key: object) -> str:
    """A key as a key path shows it: as written when it is a plain word, else quoted (one line)."""
    if isinstance(key, str) and key and all(ch.isprintable() and not ch.isspace() for ch in key):
        return key
    return repr(key)


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


class _StrictLoader(yaml.SafeLoader):
    """YAML's mappings keep the last of two equal keys; two scenarios of one name are a mistake here."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if not isinstance(key, Hashable):
                break  # SafeLoader's own construction refuses it, naming the line
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load(path: Path) -> LabConfig:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}", "pass --config FILE") from exc
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x})") from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_where(path, exc), f"not valid YAML: {_yaml_problem(exc)}") from exc
    except RecursionError as exc:
        raise ConfigError(str(path), "not valid YAML: nested too deeply") from exc
    except ValueError as exc:  # e.g. a value YAML takes for a date that is none, an integer too long
        raise ConfigError(str(path), f"not valid YAML: {' '.join(str(exc).split())}") from exc
    try:
        return parse(data, path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.where}", exc.problem, exc.hint) from None


def _yaml_where(path: Path, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return f"{path}:{mark.line + 1}"
    if isinstance(exc, yaml.reader.ReaderError):
        return f"{path}: character {exc.position + 1}"
    return str(path)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        return f"character {char!r} is not allowed in YAML"
    # PyYAML's messages run over several lines (context, marks): the problem alone, on one line.
    return " ".join(str(getattr(exc, "problem", None) or exc).split())


def parse(data: object, path: Path = Path("lab.yaml")) -> LabConfig:
    top = _Reader(data, "")
    lab = top.child("lab")
    name = lab.text("name", "nfcl", pattern=NAME_RE)
    results_dir = lab.text("results_dir", "lab-results")
    accel = lab.text("accel", "auto", ACCELS)
    lab.done()

    img = top.child("images")
    images = ImagesConfig(
        base=img.text("base", "debootstrap", BASE_SOURCES),
        suite=img.text("suite", "bookworm", pattern=NAME_RE),
        registry_image=img.text("registry_image", "debian:bookworm"),
        mirror=img.text("mirror", "auto"),
        min_free_gb=img.number("min_free_gb", 10.0, 0.0, 10000.0),
        prefix=img.text("prefix", "", pattern=re.compile(r"^$|" + NAME_RE.pattern)),
    )
    img.done()
    if images.mirror != "auto" and not re.fullmatch(r"https?://\S+", images.mirror):
        raise ConfigError("images.mirror", f"{images.mirror!r} is not a URL", "use auto or http(s)://...")

    profiles = _profiles(top.child("profiles", required=True))
    scenarios = _scenarios(top.child("scenarios", required=True), profiles)

    tr = top.child("traffic")
    traffic = Traffic(rate=tr.integer("rate", 1000, 1, 20000), warmup_s=tr.number("warmup_s", 1.0, 0.0, 60.0))
    tr.done()
    mg = top.child("migration")
    migration = MigrationSettings(hold_s=mg.number("hold_s", 3.0, 0.1, 120.0),
                                  settle_s=mg.number("settle_s", 0.3, 0.0, 10.0))
    mg.done()
    to = top.child("timeouts")
    timeouts = Timeouts(**{k: to.number(k, v, 1.0, 7200.0) for k, v in vars(Timeouts()).items()})
    to.done()
    gu = top.child("guest")
    guest = Guest(memory_mb=gu.integer("memory_mb", 256, 64, 4096),
                  mac=gu.text("mac", "52:54:00:12:34:56", pattern=MAC_RE),
                  dirty_mb_s=gu.integer("dirty_mb_s", 0, 0, 2000), snapshot=gu.boolean("snapshot", True))
    gu.done()
    li = top.child("limits")
    limits = Limits(host_memory_mb=li.integer("host_memory_mb", Limits.host_memory_mb, 256, 1 << 20),
                    host_pids=li.integer("host_pids", Limits.host_pids, 64, 1 << 22),
                    build_memory_mb=li.integer("build_memory_mb", Limits.build_memory_mb, 512, 1 << 20),
                    build_pids=li.integer("build_pids", Limits.build_pids, 64, 1 << 22))
    li.done()
    if limits.host_memory_mb < guest.memory_mb + 512:  # QEMU's own, sshd, tcpdump and the agents beside the guest
        raise ConfigError("limits.host_memory_mb", f"{limits.host_memory_mb} MiB cannot hold a guest of "
                          f"{guest.memory_mb} MiB", f"give at least guest.memory_mb + 512: {guest.memory_mb + 512}")
    engines = _engines(top.child("engines")) if "engines" in top.data else {"local": LOCAL_ENGINE}
    check = _check(top.child("check"))
    top.done()
    return LabConfig(path=path, name=name, results_dir=results_dir, accel=accel, images=images,
                     profiles=profiles, scenarios=scenarios, traffic=traffic, migration=migration,
                     timeouts=timeouts, guest=guest, limits=limits, engines=engines, check=check)


def _engines(node: _Reader) -> dict[str, EngineSpec]:
    engines: dict[str, EngineSpec] = {}
    for name in _names(node, "engine"):
        e = node.child(name)
        url = e.text("url", "")
        if url and not ENGINE_URL_RE.fullmatch(url):
            raise ConfigError(f"{node.where}.{name}.url", f"{url!r} is not a Docker engine URL",
                              "unix:///path, tcp://host:port or ssh://[user@]host[:port]")
        address = e.text("address", "")
        if address and not ADDRESS_RE.fullmatch(address):
            raise ConfigError(f"{node.where}.{name}.address", f"{address!r} is not a host address",
                              "an IP address or host name of this engine's machine")
        engines[name] = EngineSpec(name, url, address)
        e.done()
    return engines


def _check(node: _Reader) -> CheckSettings:
    settings = CheckSettings(context=node.text("context", CheckSettings.context, pattern=CONTEXT_RE),
                             target_url=node.text("target_url", ""), token_file=node.text("token_file", ""),
                             patchwork=node.text("patchwork", ""))
    node.done()
    for key in ("target_url", "patchwork"):
        value = getattr(settings, key)
        if value and not (HTTP_URL_RE.fullmatch(value) and value.isprintable()):
            raise ConfigError(node.key_path(key), f"{value!r} is not an http(s) URL", "e.g. https://...")
    return settings


def _property(node: _Reader, key: object) -> tuple[str, str]:
    """A QOM property as QEMU's command line spells it (booleans as on/off).

    The -object option is one comma-separated list of key=value: a value with a comma or an equals
    sign would set other properties than the one named, so such values are refused, not escaped.
    """
    where = node.key_path(key)
    if not isinstance(key, str) or not PROPERTY_RE.fullmatch(key):
        raise ConfigError(where, "malformed property name", f"must match {PROPERTY_RE.pattern}")
    if key in LAB_PROPERTIES:
        raise ConfigError(where, "set by the lab itself", f"leave out: {', '.join(LAB_PROPERTIES)}")
    value = node.data[key]
    node.seen.add(key)
    if isinstance(value, bool):
        return key, "on" if value else "off"
    text = str(value) if isinstance(value, (int, float, str)) else ""
    if text and all(ch.isprintable() and not ch.isspace() and ch not in ",=" for ch in text):
        return key, text
    raise ConfigError(where, f"{value!r} is not a property value",
                      "a boolean, number or word without commas, equals signs or spaces")


def _names(node: _Reader, kind: str) -> list[str]:
    names = node.names()
    if not names:
        raise ConfigError(node.where, f"no {kind} defined", "define at least one")
    for name in names:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ConfigError(node.key_path(name), f"malformed {kind} name", f"must match {NAME_RE.pattern}")
    return names


def _profiles(node: _Reader) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    for name in _names(node, "profile"):
        if name == CHECK:
            raise ConfigError(node.key_path(name), f"{CHECK!r} is reserved",
                              "scenarios' expect uses it for `lab check`; rename the profile")
        p = node.child(name)
        q = p.child("qemu")
        qemu = QemuSource(source=q.text("source", "debian", QEMU_SOURCES),
                          version=q.text("version", "1:10.2.2+ds-1"), suite=q.text("suite", "sid", pattern=NAME_RE),
                          url=q.text("url", ""), ref=q.text("ref", ""), path=q.text("path", ""))
        q.done()
        if qemu.source == "git" and not (qemu.url and qemu.ref):
            raise ConfigError(f"profiles.{name}.qemu", "source git needs url and ref", "e.g. a commit hash")
        _git_source(qemu, f"profiles.{name}.qemu")
        if qemu.source == "local" and not qemu.path:
            raise ConfigError(f"profiles.{name}.qemu.path", "missing", "source local needs the checkout's path")
        series = None
        if "series" in p.data:
            sr = p.child("series")
            # A series ID is written as a number; a URL as a string.
            ref = sr.integer("ref", 0, 1, 10**9) if isinstance(sr.data.get("ref"), int) else sr.text("ref", "")
            series = SeriesSource(ref=str(ref or ""), patchwork=sr.text("patchwork", ""), mbox=sr.text("mbox", ""),
                                  note=sr.text("note", ""), lore=sr.text("lore", ""),
                                  archive=sr.text("archive", DEFAULT_ARCHIVE, pattern=HTTP_URL_RE),
                                  patches=_patch_range(sr, f"profiles.{name}.series.patches"))
            sr.done()
            if series.lore and not MSGID_RE.fullmatch(series.lore):
                raise ConfigError(f"profiles.{name}.series.lore", f"{series.lore!r} is not a Message-ID",
                                  "write <local@domain> or local@domain")
            if [bool(series.ref), bool(series.mbox), bool(series.lore)].count(True) != 1:
                raise ConfigError(f"profiles.{name}.series",
                                  "give exactly one of ref (Patchwork), mbox (local) and lore (a Message-ID)")
            if series.ref.isdigit() and not series.patchwork:
                raise ConfigError(f"profiles.{name}.series.patchwork", "missing",
                                  "a bare series ID needs the Patchwork server URL")
        profiles[name] = Profile(name=name, description=p.text("description", ""), qemu=qemu, series=series,
                                 default=p.boolean("default", True))
        p.done()
    if not any(p.default for p in profiles.values()):
        # Plain `lab run` and `lab build` would have nothing to build.
        raise ConfigError(node.where, "every profile has default: false",
                          "set default: true (or leave default out) on at least one profile")
    return profiles


def _patch_range(series: _Reader, where: str) -> tuple[int, int] | None:
    """``patches: FIRST-LAST``: a part of the series, in its own N/M numbers."""
    text = series.text("patches", "")
    if not text:
        return None
    m = PATCH_RANGE_RE.fullmatch(text)
    if m is None or int(m.group(1)) > int(m.group(2)):
        raise ConfigError(where, f"{text!r} is not a range of patches", "write FIRST-LAST, e.g. 1-11")
    return int(m.group(1)), int(m.group(2))


def _git_source(qemu: QemuSource, where: str) -> None:
    if qemu.url and not (GIT_URL_RE.fullmatch(qemu.url) and qemu.url.isprintable()):
        raise ConfigError(f"{where}.url", f"{qemu.url!r} is not a git URL",
                          "https://, http://, git:// or ssh:// URL, or an absolute path")
    if qemu.ref and not GIT_REF_RE.fullmatch(qemu.ref):
        raise ConfigError(f"{where}.ref", f"{qemu.ref!r} is not a commit, tag or branch name",
                          f"must match {GIT_REF_RE.pattern}")


def _scenarios(node: _Reader, profiles: Mapping[str, Profile]) -> dict[str, ScenarioSpec]:
    scenarios: dict[str, ScenarioSpec] = {}
    for name in _names(node, "scenario"):
        where = f"scenarios.{name}"
        s = node.child(name)
        filt = s.text("filter", "", (*FILTERS, NO_FILTER))
        path = s.text("path", "stream", PATHS)
        switch_on = s.text("switch_on", "start", SWITCH_ON)
        switch_after_ms = s.integer("switch_after_ms", 0, 0, 10_000)
        if switch_after_ms and switch_on != "at-stop":
            raise ConfigError(f"{where}.switch_after_ms", "only switch_on: at-stop waits after the stop",
                              "leave switch_after_ms out, or set switch_on: at-stop")
        if filt == NO_FILTER and path != "guest":
            raise ConfigError(f"{where}.filter", f"{NO_FILTER} needs path: guest",
                              "a stream scenario measures the stream a filter sends")
        if filt == NO_FILTER and switch_on != "start":
            raise ConfigError(f"{where}.switch_on", "there is no filter to switch on", "leave switch_on out")
        expect = _expect(s.child("expect", required=True), where, profiles)
        accept_loss = _points(s, "accept_loss")
        pr = s.child("properties")
        props = tuple(_property(pr, k) for k in pr.names())
        pr.done()
        if props and filt == NO_FILTER:
            raise ConfigError(f"{where}.properties", "there is no filter to set properties on", "leave them out")
        if switch_on != "start" and "status" in dict(props):
            raise ConfigError(f"{where}.properties.status", "set by the lab when switch_on is given",
                              "leave status out")
        scenarios[name] = ScenarioSpec(name=name, filter=filt, expect=expect, description=s.text("description", ""),
                                       properties=props, path=path, switch_on=switch_on,
                                       switch_after_ms=switch_after_ms, accept_loss=accept_loss)
        s.done()
    return scenarios


def _points(node: _Reader, key: str) -> tuple[str, ...]:
    node.seen.add(key)
    value = node.data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v in LOSS_POINTS for v in value):
        raise ConfigError(node.key_path(key), f"{value!r} is not a list of loss points",
                          f"e.g. [destination]; points: {', '.join(LOSS_POINTS)}")
    return tuple(dict.fromkeys(value))


def _expect(ex: _Reader, where: str, profiles: Mapping[str, Profile]) -> dict[str, str]:
    """Verdicts per profile (each one required), per source->destination pair, and for `lab check`."""
    expect = {}
    for key in ex.names():
        pair = key.split(PAIR_SEP) if isinstance(key, str) else []
        if len(pair) == 2:
            for name in pair:
                if name not in profiles:
                    raise ConfigError(ex.key_path(key), f"unknown profile {name!r}", f"known: {', '.join(profiles)}")
            if pair[0] == pair[1]:
                raise ConfigError(ex.key_path(key), "a pair of one profile", f"write {pair[0]}: alone")
        elif key not in profiles and key != CHECK:
            raise ConfigError(ex.key_path(key), "unknown profile",
                              f"known: {', '.join(profiles)}; or {CHECK} (what a series under lab check must give);"
                              f" or SOURCE{PAIR_SEP}DESTINATION (a migration between two builds)")
        expect[key] = ex.text(key, "", tuple(EXPECTABLE))
    for name, profile in profiles.items():
        # A profile outside plain `lab run` may wait for its expectation until someone can measure
        # it; its rows then report without judging.
        if name not in expect and profile.default:
            raise ConfigError(f"{where}.expect", f"no expected verdict for profile {name!r}",
                              f"add {name}: continuous or gap")
    return expect

"""`lab check`: a Patchwork series judged by the lab, and the verdict posted back as a check.

The series goes on top of a base profile (a profile named ``check-<series id>``), the scenarios run
on the unpatched base and on the patched build (an A/B run, as ``lab run --profile A --profile B``),
and every patch of the series gets a check through Patchwork's REST API
(``POST /api/patches/ID/checks/``). Checks cannot be edited: each state is a new POST.

States, and what they mean:

- ``pending``: posted on every patch when the run starts;
- ``success``: every verdict as expected: the patched build gives each scenario's ``expect.check``
  (the base profile's expectation where a scenario names none) and the base gives its own. A scenario
  the patched build cannot run (``unsupported``: a property it sets does not exist) is named in the
  description and does not by itself fail the check;
- ``fail``: the patched build gives another verdict than expected, or the series does not apply (the
  description names the patch N/M): the series is broken as posted;
- ``warning``: the lab could not decide: Docker, a build error unrelated to the series, an ``error``
  verdict, or the unpatched base not giving its own expected verdicts. It says nothing about the series.

The token comes from ``PATCHWORK_TOKEN`` or the file ``check.token_file`` names (readable by its owner
only); it goes into the Authorization header and nowhere else: not printed (``--dry-run`` masks it),
not in report.json. What is posted is public: a description quotes no path, URL or user name of this
machine, and ``target_url`` is the CI run's page or nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.config import CHECK, LabConfig, Profile, SeriesSource
from lab.errors import LabError, excerpt, one_line
from lab.results.report import GUEST_VIEW, Row
from lab.results.verdict import Verdict
from lab.upstream.series import Patchwork, PatchworkHTTPError, SeriesDoesNotApply, SeriesInfo, is_http

PENDING, SUCCESS, FAIL, WARNING = "pending", "success", "fail", "warning"
EXIT_STATUS = {SUCCESS: 0, FAIL: 1, WARNING: 2}
DESCRIPTION_MAX = 255  # what a reviewer sees next to the patch: one line
TARGET_URL_MAX = 200  # Patchwork's Check.target_url is a URLField of 200 characters
TOKEN_ENV = "PATCHWORK_TOKEN"
# GitHub's owner/name; a runner elsewhere (act) may name the repository by a path of its machine
REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
MASK = "Token ********"


class CheckError(LabError):
    """A check could not be posted; the message says on which patch and what to do."""


@dataclass(frozen=True)
class Check:
    state: str
    description: str
    target_url: str
    context: str

    def body(self) -> dict[str, str]:
        body = {"state": self.state, "context": self.context, "description": self.description}
        return body | {"target_url": self.target_url} if self.target_url else body


@dataclass(frozen=True)
class Plan:
    """What `lab check` runs: ``cfg`` with the patched profile added and its expectations set."""

    cfg: LabConfig
    base: Profile
    patched: Profile
    info: SeriesInfo

    @property
    def profiles(self) -> list[str]:
        return [self.base.name, self.patched.name]


def plan(cfg: LabConfig, info: SeriesInfo, ref: str, patchwork: str, base: str | None = None) -> Plan:
    """The base profile (``base``, else ``baseline``, else the first default one) with the series on top."""
    if not info.patches:
        raise LabError(f"Patchwork series {info.id}: its record lists no patches, so there is nothing to post a "
                       f"check on; see {info.api_url}")
    base_profile = _base_profile(cfg, base)
    name = f"check-{info.id}"
    if name in cfg.profiles:
        raise LabError(f"{cfg.path}: profile {name} exists already; lab check names the patched build so, "
                       "rename that profile")
    patched = dataclasses.replace(base_profile, name=name, description=f"{base_profile.name} + series {info.id}",
                                  series=SeriesSource(ref=ref, patchwork=patchwork), default=False)
    scenarios = {s.name: dataclasses.replace(s, expect={**s.expect, name: _expected(s.expect, base_profile.name)})
                 for s in cfg.scenarios.values()}
    derived = dataclasses.replace(cfg, profiles={**cfg.profiles, name: patched}, scenarios=scenarios)
    return Plan(derived, base_profile, patched, info)


def _expected(expect: Mapping[str, str], base: str) -> str:
    # A scenario that names no `check` expects the series to leave the base's verdict as it is.
    return expect.get(CHECK, expect.get(base, ""))


def _base_profile(cfg: LabConfig, name: str | None) -> Profile:
    if name:
        if name not in cfg.profiles:
            raise LabError(f"--base {name}: no such profile in {cfg.path} (known: {', '.join(cfg.profiles)})")
        profile = cfg.profiles[name]
    else:
        profile = cfg.profiles.get("baseline") or next(p for p in cfg.profiles.values() if p.default)
    if profile.series is not None:
        raise LabError(f"--base {profile.name}: that profile has a series of its own; lab check needs an "
                       "unpatched base (e.g. --base baseline)")
    return profile


# -- the verdict --------------------------------------------------------------------------------

def judge(rows: list[Row], p: Plan) -> tuple[str, str]:
    """The final state and its description, from the A/B run's rows."""
    patched = [r for r in rows if r.profile == p.patched.name]
    base = [r for r in rows if r.profile == p.base.name]
    undecided = [r for r in rows if not r.verdict.decided]
    wrong = [r for r in patched if r.match is False and r.verdict.decided and r.verdict != Verdict.UNSUPPORTED]
    if wrong:
        state = FAIL
    elif undecided or any(r.match is False for r in base) or not patched:
        state = WARNING
    else:
        state = SUCCESS
    return state, describe(state, patched, base, p, undecided)


def describe(state: str, patched: list[Row], base: list[Row], p: Plan, undecided: list[Row]) -> str:
    ok = sum(r.match is True for r in patched)
    parts = [_scenario_text(r, next((b for b in base if b.scenario == r.scenario), None)) for r in patched]
    lead = f"{ok}/{len(patched)} as expected"
    if state == WARNING and undecided:
        lead = f"lab could not decide ({', '.join(f'{r.profile} x {r.scenario}: {r.verdict}' for r in undecided)})"
    elif state == WARNING:
        wrong_base = [f"{b.scenario} {b.verdict} (expected {b.expected})" for b in base if b.match is False]
        lead = f"base {p.base.name} off its expectations ({', '.join(wrong_base) or 'no rows'})"
    return shorten(f"{lead}: {'; '.join(parts)} | {_build_text(patched, p)}")


def _scenario_text(r: Row, b: Row | None) -> str:
    if r.verdict == Verdict.UNSUPPORTED and r.match is False:
        return f"{r.scenario} not run (build lacks a property it sets)"
    change = f"{b.verdict}->{r.verdict}" if b is not None and b.verdict != r.verdict else r.verdict
    # Lost where the scenario's verdict looks: on the stream, or on the way to the guest.
    lost_count, where = r.figures.lost, " to the guest" if r.view == GUEST_VIEW else ""
    lost = f", {lost_count} of {r.frames_sent} lost{where}" if lost_count is not None and r.frames_sent else ""
    expected = "" if r.match is not False else f" (expected {r.expected})"
    return f"{r.scenario} {change}{lost}{expected}"


def _build_text(rows: list[Row], p: Plan) -> str:
    version = next((r.qemu_version.split()[0] for r in rows if r.qemu_version), "")
    accel = next((r.accel for r in rows if r.accel), "")
    qemu = f"QEMU {version}" if version else p.base.qemu.describe()
    return f"{p.base.name} ({qemu}) + series {p.info.id} v{p.info.version}" + (f", {accel}" if accel else "")


def does_not_apply(exc: SeriesDoesNotApply, p: Plan) -> str:
    return shorten(f"series does not apply to {p.base.name}: {scrub(exc.detail)}")


def lab_failed(line: str) -> str:
    return shorten(f"the lab could not run (says nothing about the series): {scrub(line)}")


def lab_stopped(line: str) -> str:
    return shorten(f"the lab stopped (says nothing about the series): {scrub(line)}")


URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://\S*")
# An absolute or home path; not the a/b of "net/filter-mirror" or "1/2".
PATH = re.compile(r"(?<![\w.~/-])(?:~[\w.-]*)?/[^\s:;,()'\"\[\]]+")
USER_AT = re.compile(r"\b[\w.-]+@(?=[\w-])")


def scrub(text: str, env: Mapping[str, str] = os.environ) -> str:
    """An error line fit for Patchwork, where anyone reads it: the URLs (engines, servers), paths and
    user names of this machine replaced by placeholders."""
    text = URL.sub("<url>", text)
    text = PATH.sub("<path>", text)
    text = USER_AT.sub("<user>@", text)
    for name in sorted(_local_users(env), key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(name)}\b", "<user>", text)
    return text


def _local_users(env: Mapping[str, str]) -> set[str]:
    names = {env.get(k, "") for k in ("USER", "LOGNAME", "SUDO_USER")}
    with contextlib.suppress(OSError, KeyError):  # no passwd entry (a container's uid)
        names.add(getpass.getuser())
    return {n for n in names if n}


def pending(p: Plan, scenarios: list[str]) -> str:
    return shorten(f"running {', '.join(scenarios)} on {p.base.name} with and without series {p.info.id}")


def shorten(text: str, limit: int = DESCRIPTION_MAX) -> str:
    return excerpt(text, limit)


# -- where the check points, and the token ------------------------------------------------------

def target_url(configured: str, env: Mapping[str, str]) -> str:
    """lab.yaml's ``check.target_url``, else the CI run's page; else "" (none is posted): a path of
    this machine means nothing to a reviewer, and Patchwork refuses a file:// URL."""
    if configured:
        if len(configured) > TARGET_URL_MAX:
            raise LabError(f"check.target_url is {len(configured)} characters long; Patchwork takes at most "
                           f"{TARGET_URL_MAX}: give a shorter URL, or none")
        return configured
    server, repository, run_id = (env.get(k, "") for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    if not (REPOSITORY.fullmatch(repository) and run_id.isdigit()):
        return ""
    url = f"{server.rstrip('/')}/{repository}/actions/runs/{run_id}"
    return url if is_http(url) and len(url) <= TARGET_URL_MAX else ""


def read_token(cfg: LabConfig, env: Mapping[str, str] = os.environ) -> str:
    """PATCHWORK_TOKEN, else the contents of ``check.token_file``; "" when neither is set."""
    token, where = env.get(TOKEN_ENV, "").strip(), TOKEN_ENV
    if not token and cfg.check.token_file:
        path = Path(cfg.check.token_file).expanduser()
        path = path if path.is_absolute() else cfg.path.parent / path
        token, where = _read_secret(path).strip(), f"check.token_file ({path})"
    if token and not (token.isascii() and token.isprintable() and " " not in token):
        # It goes into an HTTP header: one word, or it could add headers of its own.
        raise LabError(f"the Patchwork token in {where} is not one word of printable ASCII; put the API token "
                       "alone there (Patchwork: your profile, API token)")
    return token


def _read_secret(path: Path) -> str:
    """The file's text, when only its owner may read it (mode 0600 or stricter)."""
    try:
        with path.open() as f:  # the mode looked at is that of the file read
            mode = os.fstat(f.fileno()).st_mode & 0o777
            if mode & 0o077:
                raise LabError(f"check.token_file: {path} has mode {mode:04o}, so others may read the token; "
                               f"chmod 600 {path}")
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise LabError(f"check.token_file: cannot read {path} ({getattr(exc, 'strerror', None) or exc}); "
                       f"set it to a readable file, or set {TOKEN_ENV}") from None


# -- posting ------------------------------------------------------------------------------------

@dataclass
class Poster:
    """Posts one check per patch; with ``dry_run`` it only says (through ``say``) what it would send."""

    patchwork: Patchwork
    token: str
    project: str
    dry_run: bool = False
    say: Callable[[str], None] = print
    posted: list[dict[str, Any]] = field(default_factory=list)
    tried: dict[int, str] = field(default_factory=dict)  # each patch's last state sent (answered or not)

    def __post_init__(self) -> None:
        if not self.token and not self.dry_run:
            raise LabError(f"no Patchwork token: set {TOKEN_ENV} or check.token_file in lab.yaml (a maintainer's "
                           "API token for the project), or use --dry-run")

    def post_all(self, patch_ids: tuple[int, ...], check: Check) -> None:
        for patch_id in patch_ids:
            self.post(patch_id, check)

    def still_pending(self) -> tuple[int, ...]:
        """The patches whose last check sent is ``pending``: also one whose answer never came (an
        interrupt while waiting for it), as Patchwork may have stored it all the same."""
        return tuple(patch for patch, state in self.tried.items() if state == PENDING)

    @contextlib.contextmanager
    def none_left_pending(self, stopped: Callable[[str], Check]) -> Iterator[None]:
        """However the block ends (an error, Ctrl-C, SIGTERM), a patch it left ``pending`` gets the check
        ``stopped(why)``: a reviewer must not wait for a verdict that will never come."""
        try:
            yield
        except BaseException as exc:
            why = one_line(exc)
            if isinstance(exc, KeyboardInterrupt):  # Ctrl-C says nothing; SIGTERM says "signal 15"
                why = f"interrupted ({exc})" if str(exc) else "interrupted"
            for patch_id in self.still_pending():
                # What stopped the lab is what the user must see; a post failing now adds nothing to it.
                with contextlib.suppress(LabError):
                    self.post(patch_id, stopped(why))
            raise

    def post(self, patch_id: int, check: Check) -> None:
        path = f"patches/{patch_id}/checks/"
        if self.dry_run:
            self.say(f"would POST {self.patchwork.url(path)} (Authorization: {MASK}) {check.body()}")
        else:
            before = self.tried.get(patch_id)
            self.tried[patch_id] = check.state
            try:
                self.patchwork.post_json(path, check.body(), self.token)
            except PatchworkHTTPError as exc:
                self._forget(patch_id, before)  # refused: not stored
                raise self._refused(patch_id, exc) from None
            except LabError as exc:
                raise CheckError(f"check {check.state} on patch {patch_id} not posted: {exc}") from None
        self.posted.append({"patch": patch_id, "state": check.state, "description": check.description,
                            "posted": not self.dry_run})

    def _forget(self, patch_id: int, before: str | None) -> None:
        if before is None:
            del self.tried[patch_id]
        else:
            self.tried[patch_id] = before

    def _refused(self, patch_id: int, exc: PatchworkHTTPError) -> CheckError:
        where = f"patch {patch_id} ({exc.url})"
        # Patchwork's reason, quoted short; the token is never in it, even if a server echoed it.
        said = excerpt(exc.body.replace(self.token, "********")) if self.token else excerpt(exc.body)
        status = f"HTTP {exc.code}" + (f" {said}" if said else "")
        if exc.detail.startswith("You do not have permission"):
            project = f"project {self.project}" if self.project else "this project"
            return CheckError(f"Patchwork refused the check on {where} with {status}: the token is not a "
                              f"maintainer's for {project}; use a maintainer's API token ({TOKEN_ENV} or "
                              "check.token_file)")
        if exc.code == 401 or (exc.code == 403 and re.search(r"token|credentials|user inactive", exc.detail, re.I)):
            return CheckError(f"Patchwork refused the token on {where} with {status}: the token is wrong or "
                              f"revoked; set {TOKEN_ENV} or check.token_file to your API token (Patchwork: your "
                              "profile, API token)")
        if exc.code == 404:
            return CheckError(f"Patchwork has no {where} (HTTP 404); check the series and the Patchwork URL")
        if exc.code == 400:
            return CheckError(f"Patchwork refused the check on {where} with {status}; fix what it names "
                              "(lab.yaml's check: section)")
        return CheckError(f"Patchwork answered HTTP {exc.code} to the check on {where}"
                          + (f" ({said})" if said else "") + "; try again later")

    def record(self, context: str, url: str) -> dict[str, Any]:
        """The report's ``check`` section: what was posted (never the token)."""
        return {"context": context, "target_url": url, "dry_run": self.dry_run, "patchwork": self.patchwork.base_url,
                "posted": list(self.posted)}

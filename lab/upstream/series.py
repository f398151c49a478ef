"""Patch series: from Patchwork (REST API), an mbox file, or a folder of `git format-patch` files
and Patchwork patch records.

Whatever the source, a series ends up as the same thing: an ordered list of patches, each one full
email as `git am` takes it, with its subject and a hash of its diff for the record. Patchwork is
spoken to through its REST API: a patch record names its series, a series record has an mbox link
and says whether every patch has arrived (``received_all``). A patch record kept in a folder (the
``/api/patches/ID/`` answer, as JSON) becomes the mail Patchwork's own mbox view makes of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import email
import email.policy
import email.utils
import hashlib
import http.client
import ipaddress
import itertools
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.bounds import SERVER_LIMIT, past
from lab.errors import LabError, excerpt

USER_AGENT = "netfilter-continuity-lab"
ERROR_READ = 4096  # of an error answer: Patchwork's JSON reason fits many times over
API_ROOT = re.compile(r"/api(?:/[\d.]+)?$")  # --patchwork given as the API's URL
NAME_MAX = 255  # Patchwork's own limit on a series' name
FROM_LINE = re.compile(rb"^From [^\n]*\d{4}\s*$", re.MULTILINE)
PREFIX = re.compile(r"^\s*\[[^\]]*?([0-9]{1,6})/([0-9]{1,6})\]\s*")
BRACKETS = re.compile(r"^\s*\[[^\]]*\]\s*")


class SeriesError(LabError):
    """A series could not be fetched, parsed or accepted; the message says which and why."""


class PatchworkHTTPError(SeriesError):
    """Patchwork answered with an HTTP error status (``code``); ``body`` is the start of its answer."""

    def __init__(self, message: str, code: int, url: str, body: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.url = url
        self.body = body

    @property
    def detail(self) -> str:
        """The reason Patchwork's API gives in ``{"detail": ...}`` (401, 403, 404); "" when none."""
        with contextlib.suppress(ValueError, RecursionError):
            data = json.loads(self.body)
            if isinstance(data, dict) and isinstance(data.get("detail"), str):
                return str(data["detail"])
        return ""


def http_error(exc: urllib.error.HTTPError, url: str) -> PatchworkHTTPError:
    """An error status as one line that quotes the start of the server's reason."""
    body = b""
    with contextlib.suppress(OSError, http.client.HTTPException, AttributeError):
        body = exc.read(ERROR_READ)
    text = body.decode(errors="replace")
    what = "not found" if exc.code == 404 else f"answered HTTP {exc.code}"
    said = f": {excerpt(text)}" if text.strip() and exc.code != 404 else ""
    return PatchworkHTTPError(f"Patchwork {what}: {url}{said}", exc.code, url, text)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """A redirect is followed to http(s) only, and never with the token: urllib would send the
    Authorization header on to wherever the Location points, even another host over plain http."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        if req.has_header("Authorization"):
            fp.close()
            raise SeriesError(f"Patchwork answered {req.full_url} with a redirect (HTTP {code}) to "
                              f"{excerpt(newurl)}; the token is not sent on: set check.patchwork (or --patchwork) "
                              "to the server's own https:// URL")
        if not is_http(newurl):
            fp.close()
            raise SeriesError(f"Patchwork answered {req.full_url} with a redirect to {excerpt(newurl)!r}, "
                              "not an http(s) URL; check --patchwork or series.patchwork")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class SeriesDoesNotApply(SeriesError):
    """`git am` refused a patch of the series: the series is broken as posted, not the lab.
    ``detail`` is apply-series' line: ``patch N/M: SUBJECT: why (base: QEMU X)``."""

    def __init__(self, detail: str, log: str) -> None:
        super().__init__(f"the series does not apply: {detail}; log: {log}")
        self.detail = detail


@dataclass(frozen=True)
class Patch:
    subject: str
    message: bytes  # the whole email, as `git am` takes it
    index: int
    total: int

    @property
    def msgid(self) -> str:
        return _header(self.message, "Message-ID")

    @property
    def patchwork_id(self) -> int | None:
        """Patchwork's id of the patch, as its mbox view names it (``X-Patchwork-Id``)."""
        value = _header(self.message, "X-Patchwork-Id")
        return int(value) if value.isdigit() else None

    @property
    def diff_hash(self) -> str:
        """sha1 of the patch's diff (from its first ``diff --git``), to tell versions apart."""
        text = self.message.decode(errors="replace")
        start = text.find("\ndiff --git ")
        return hashlib.sha1(text[start + 1:].encode() if start >= 0 else self.message).hexdigest()


@dataclass(frozen=True)
class Series:
    origin: str  # where it came from: a Patchwork URL, a file, a folder
    name: str
    patches: tuple[Patch, ...]
    version: int = 1
    patchwork_id: int | None = None
    mbox_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # more provenance (a mail archive's Message-ID, b4)

    def provenance(self) -> dict[str, Any]:
        return {"origin": self.origin, "name": self.name, "version": self.version,
                "patchwork_id": self.patchwork_id, "mbox": self.mbox_url,
                "patches": [_patch_provenance(p) for p in self.patches], **self.extra}

    def only(self, numbers: tuple[int, int]) -> Series:
        """The series' patches ``first..last`` (its own N/M numbers), e.g. to see what the rest adds."""
        first, last = numbers
        if last > len(self.patches):
            raise SeriesError(f"{self.origin}: patches {first}-{last} asked for, the series has "
                              f"{len(self.patches)}; fix series.patches")
        return dataclasses.replace(self, patches=self.patches[first - 1:last])


def _patch_provenance(patch: Patch) -> dict[str, Any]:
    where: dict[str, Any] = {"msgid": patch.msgid} if patch.msgid else {}
    if patch.patchwork_id is not None:
        where["patchwork_id"] = patch.patchwork_id
    return {"n": f"{patch.index}/{patch.total}", "subject": patch.subject, "hash": patch.diff_hash, **where}


@dataclass(frozen=True)
class SeriesInfo:
    """What Patchwork says of a series, before its mbox is fetched."""

    id: int
    name: str
    version: int
    mbox: str
    received_all: bool | None
    total: int | None
    api_url: str
    patches: tuple[int, ...] = ()  # the patches' Patchwork ids, in the series' order ((): not known)
    project: str = ""  # the project's link name, e.g. qemu-devel


class Patchwork:
    """Patchwork's REST API at ``base_url`` (the server's root; its API's own URL is taken as well).

    The token goes to that server alone: over https (plain http only to a loopback address, for
    tests), and never on after a redirect. No answer is read past ``read_limit`` bytes."""

    def __init__(self, base_url: str, timeout: float = 20.0, read_limit: int = SERVER_LIMIT) -> None:
        self.base_url = API_ROOT.sub("", base_url.rstrip("/"))
        self.timeout = timeout
        self.read_limit = read_limit
        self._opener = urllib.request.build_opener(_Redirects)

    def url(self, path: str) -> str:
        return path if "://" in path else f"{self.base_url}/api/{path.lstrip('/')}"

    def get(self, path: str) -> bytes:
        return self._open(self._request(path), "check --patchwork and the network, or use a local mbox (series.mbox)")

    def post_json(self, path: str, data: dict[str, Any], token: str) -> dict[str, Any]:
        """POSTs ``data`` as JSON with ``Authorization: Token <token>``; Patchwork's answer."""
        request = self._request(path, json.dumps(data).encode(), {"Content-Type": "application/json",
                                                                    "Authorization": f"Token {token}"})
        self._may_carry_token(request.full_url)
        return json_object(self._open(request, "check the network and the Patchwork URL, then try again"),
                           request.full_url)

    def _may_carry_token(self, url: str) -> None:
        target, home = urllib.parse.urlsplit(url), urllib.parse.urlsplit(self.base_url)
        if (target.scheme, target.netloc) != (home.scheme, home.netloc):
            raise SeriesError(f"{url}: not on the Patchwork server {self.base_url}; the token is sent to that "
                              "server only")
        if target.scheme != "https" and not is_loopback(target.hostname or ""):
            raise SeriesError(f"{self.base_url}: plain http would show the Patchwork token to the network; "
                              "use the server's https:// URL (check.patchwork or --patchwork)")

    def _request(self, path: str, data: bytes | None = None,
                 headers: dict[str, str] | None = None) -> urllib.request.Request:
        url = self.url(path)
        if not is_http(url):
            # urllib would open file:// and ftp:// as well: never a local file or another protocol.
            raise SeriesError(f"{url}: not an http(s) URL; Patchwork is reached over http(s) only "
                              "(check --patchwork or series.patchwork)")
        return urllib.request.Request(url, data=data, headers={"User-Agent": USER_AGENT, "Accept": "application/json",
                                                               **(headers or {})})

    def _open(self, request: urllib.request.Request, hint: str) -> bytes:
        url = request.full_url
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                data = bytes(response.read(self.read_limit + 1))
        except urllib.error.HTTPError as exc:
            raise http_error(exc, url) from None
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SeriesError(f"cannot reach Patchwork at {url} ({reason}); {hint}") from exc
        if len(data) > self.read_limit:
            raise too_large(f"Patchwork's answer at {url}", "is that Patchwork's API? (or use a local mbox, "
                            "series.mbox)", self.read_limit)
        return data

    def get_json(self, path: str) -> dict[str, Any]:
        return json_object(self.get(path), self.url(path))

    def series_of_patch(self, patch_id: int) -> SeriesInfo:
        entry = patch_series(self.get_json(f"patches/{patch_id}/"), patch_id)
        return self.series(entry["id"], fallback=entry)

    def series_of_message(self, project: str, msgid: str) -> SeriesInfo:
        """The series of the patch with Message-ID ``msgid`` (without <>) in ``project`` (its link name)."""
        query = urllib.parse.urlencode({"project": project, "msgid": msgid})
        url = self.url(f"patches/?{query}")
        found = json_value(self.get(url), url)
        if not isinstance(found, list):
            raise SeriesError(f"Patchwork's answer at {url} is not a JSON list of patches")
        record = found[0] if found else None
        if not isinstance(record, dict) or not _is_count(record.get("id"), 1):
            raise SeriesError(f"Patchwork has no patch with Message-ID <{excerpt(msgid)}> in project "
                              f"{excerpt(project)} ({url}); check the URL")
        entry = patch_series(record, record["id"])
        return self.series(entry["id"], fallback=entry)

    def series(self, series_id: int, fallback: dict[str, Any] | None = None) -> SeriesInfo:
        """The series record; when it cannot be had, what the patch record said of the series."""
        api_url = self.url(f"series/{series_id}/")
        try:
            record = self.get_json(f"series/{series_id}/")
        except SeriesError:
            if fallback is None:
                raise
            record = {**fallback, "received_all": None, "total": None}
        return series_info(record, series_id, api_url)

    def fetch(self, info: SeriesInfo) -> Series:
        require_complete(info)
        if not info.mbox:
            raise SeriesError(f"Patchwork series {info.id} has no mbox link")
        if not is_http(info.mbox):
            raise SeriesError(f"Patchwork series {info.id}: its mbox link {excerpt(info.mbox)!r} is not an http(s) "
                              "URL; the lab fetches mboxes over http(s) only (or use a local mbox, series.mbox)")
        patches = parse_mbox(self.get(info.mbox), info.mbox)
        if info.total and len(patches) != info.total:
            raise SeriesError(f"Patchwork series {info.id}: the mbox holds {len(patches)} patches, "
                              f"the series has {info.total}")
        return Series(origin=info.api_url, name=info.name, version=info.version, patchwork_id=info.id,
                      mbox_url=info.mbox, patches=tuple(patches))


def require_complete(info: SeriesInfo) -> None:
    if info.received_all is False:
        raise SeriesError(f"Patchwork series {info.id} ({excerpt(info.name)}) is incomplete: "
                          f"received_all is false (expected {info.total or '?'} patches); wait for the "
                          "missing patches or use a local mbox")


def json_value(body: bytes, url: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise SeriesError(f"Patchwork's answer at {url} is not JSON (starts with {body[:40]!r})") from exc


def json_object(body: bytes, url: str) -> dict[str, Any]:
    """Patchwork's answer at ``url`` as the JSON object every API record is."""
    data = json_value(body, url)
    if not isinstance(data, dict):
        raise SeriesError(f"Patchwork's answer at {url} is not a JSON object")
    return data


def patch_series(record: dict[str, Any], patch_id: int) -> dict[str, Any]:
    """The entry of the first series a patch record names (a mapping with an integer ``id``)."""
    series = record.get("series")
    if not series:
        name = excerpt(_one_line(record.get("name"), "?"))
        raise SeriesError(f"Patchwork patch {patch_id} ({name}) belongs to no series")
    entry = series[0] if isinstance(series, list) else None
    if not isinstance(entry, dict) or not _is_count(entry.get("id"), 1):
        raise SeriesError(f"Patchwork patch {patch_id}: its series field is not a list of series records "
                          f"with an id (found {_one_line(json.dumps(series)[:60], '')})")
    return entry


def series_info(record: dict[str, Any], series_id: int, api_url: str) -> SeriesInfo:
    """A series record as Patchwork's REST API gives it (or what a patch record says of its series)."""

    name, version, mbox = record.get("name"), record.get("version"), record.get("mbox")
    received_all, total = record.get("received_all"), record.get("total")
    checks = (("id", _is_count(record.get("id"), 1), "a series number"),
              ("name", name is None or isinstance(name, str), "a string"),
              ("version", version is None or _is_count(version, 1), "a version number"),
              ("mbox", mbox is None or isinstance(mbox, str), "a URL"),
              ("received_all", received_all is None or isinstance(received_all, bool), "true or false"),
              ("total", total is None or _is_count(total, 0), "a number of patches"))
    for key, ok, expected in checks:
        if not ok:
            found = _one_line(json.dumps(record.get(key)), "")[:60]
            raise SeriesError(f"Patchwork's answer at {api_url}: {key} is {found}, expected {expected}")
    return SeriesInfo(id=record["id"], name=_one_line(name, f"series {series_id}")[:NAME_MAX],
                      version=version or 1, mbox=mbox or "", received_all=received_all, total=total, api_url=api_url,
                      patches=_patch_ids(record.get("patches"), api_url), project=_project(record.get("project")))


def _patch_ids(patches: object, api_url: str) -> tuple[int, ...]:
    """The ids of a series record's ``patches`` list (each a record with an integer id)."""
    if patches is None:
        return ()
    if not isinstance(patches, list) or not all(isinstance(p, dict) and _is_count(p.get("id"), 1) for p in patches):
        found = _one_line(json.dumps(patches)[:60], "")
        raise SeriesError(f"Patchwork's answer at {api_url}: patches is {found}, expected a list of patch records")
    return tuple(p["id"] for p in patches)


def _project(project: object) -> str:
    name = project.get("link_name") if isinstance(project, dict) else None
    return _one_line(name, "")


def _is_count(value: object, low: int) -> bool:
    # JSON's true and false are ints to Python; never a count here.
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _one_line(text: object, default: str) -> str:
    """A text from the outside as one line of a message (names may hold line breaks)."""
    return " ".join(text.split()) or default if isinstance(text, str) else default


def _server(url: str) -> tuple[str, int]:
    """Host and port of a URL (the scheme's default port when it names none)."""
    parsed = urllib.parse.urlsplit(url)
    return (parsed.hostname or "", parsed.port or {"http": 80, "https": 443}.get(parsed.scheme, 0))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def too_large(what: str, hint: str, limit: int = SERVER_LIMIT) -> SeriesError:
    """``what``, from a server, is past the most the lab reads of one answer; the error names the cap."""
    return SeriesError(f"{past(what, limit, 'from a server')}; {hint}")


def is_http(url: str) -> bool:
    if not url.isprintable() or any(ch.isspace() for ch in url):
        return False  # urllib drops some of these silently; a URL with them is not Patchwork's
    try:
        parsed = urllib.parse.urlparse(url)
        parsed.port  # noqa: B018 (raises on a port that is no number)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def resolve(ref: str, patchwork: str | None = None) -> tuple[Patchwork, SeriesInfo]:
    """A patch or series, by API URL, web URL (a patch's by Message-ID too) or bare series ID (with
    ``patchwork``)."""
    ref = ref.strip()
    if ref.isdigit():
        if not patchwork:
            raise SeriesError(f"series {ref}: a bare ID needs the Patchwork server (--patchwork URL)")
        pw = Patchwork(patchwork)
        return pw, pw.series(int(ref))
    if not is_http(ref):
        raise SeriesError(f"{excerpt(ref)!r} is neither a Patchwork URL nor a series ID")
    parsed = urllib.parse.urlparse(ref)
    if patchwork and _server(patchwork) != _server(ref):
        # Its IDs are another server's: looked up here they would name another series.
        raise SeriesError(f"{excerpt(ref)} is on {parsed.netloc}, not on the Patchwork server {patchwork} "
                          "(--patchwork or check.patchwork); give a reference on that server, or its series ID")
    pw = Patchwork(patchwork or f"{parsed.scheme}://{parsed.netloc}")
    if m := re.search(r"/api/(?:[\d.]+/)?patches/(\d+)", parsed.path):
        return pw, pw.series_of_patch(int(m.group(1)))
    if m := re.search(r"/api/(?:[\d.]+/)?series/(\d+)", parsed.path):
        return pw, pw.series(int(m.group(1)))
    if m := re.search(r"(?:^|&)series=(\d+)", parsed.query):
        return pw, pw.series(int(m.group(1)))
    # The web page of a patch: /project/LINKNAME/patch/MSGID/ (older servers: /patch/ID/).
    if m := re.search(r"/project/([^/]+)/patch/([^/]+)", parsed.path):
        project, msgid = (urllib.parse.unquote(g) for g in m.groups())
        return pw, (pw.series_of_patch(int(msgid)) if msgid.isdigit()
                    else pw.series_of_message(project, msgid.strip("<>")))
    if m := re.search(r"/patch/(\d+)", parsed.path):
        return pw, pw.series_of_patch(int(m.group(1)))
    raise SeriesError(f"{excerpt(ref)}: not a Patchwork patch or series URL (expected .../api/patches/ID/, "
                      ".../api/series/ID/ or a patch's page .../project/NAME/patch/MESSAGE-ID/)")


@dataclass(frozen=True)
class _Message:
    """One patch email before numbering, with what names it in an error: its file or its subject."""

    subject: str
    data: bytes
    name: str


def parse_mbox(data: bytes, origin: str) -> list[Patch]:
    """The patches of an mbox, in order; a cover letter (a message without a diff) is left out."""
    return _numbered(_messages(data, None), origin)


def _messages(data: bytes, file: str | None) -> list[_Message]:
    """The messages of one mbox (or format-patch file) that have a subject and a diff."""
    starts = [m.start() for m in FROM_LINE.finditer(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise([*starts, len(data)])] if starts else [data]
    out = []
    for chunk in chunks:
        if b"\ndiff --git " not in chunk:
            continue
        subject = _subject(chunk)
        if subject:
            out.append(_Message(subject, chunk, file or repr(subject)))
    return out


def _subject(chunk: bytes) -> str:
    return _header(chunk, "Subject")


def _header(chunk: bytes, name: str) -> str:
    """One header of a mail, unfolded into one line ("" when it has none)."""
    head = chunk.split(b"\n\n", 1)[0]
    msg = email.message_from_bytes(head, policy=email.policy.compat32)
    return " ".join(str(msg.get(name, "")).split())


def _numbered(messages: list[_Message], origin: str) -> list[Patch]:
    """Patches numbered by their ``[PATCH N/M]`` subjects (then in that order), else by their order.

    A numbered series must be whole: each N of 1..M once, every patch saying the same M; otherwise
    `git am` would build something other than the series its subjects describe.
    """
    if not messages:
        raise SeriesError(f"{origin}: no patch found (no message with a subject and a diff)")
    numbers = [PREFIX.match(m.subject) for m in messages]
    if not any(numbers):
        return [Patch(subject=m.subject, message=m.data, index=i, total=len(messages))
                for i, m in enumerate(messages, start=1)]
    unnumbered = [m.name for m, n in zip(messages, numbers, strict=True) if n is None]
    if unnumbered:
        raise SeriesError(f"{origin}: {unnumbered[0]} has no N/M number while other patches do; "
                          "number every patch (git format-patch -n) or none")
    by_index: dict[int, _Message] = {}
    totals: dict[int, _Message] = {}
    for m, n in zip(messages, numbers, strict=True):
        assert n is not None
        index, total = int(n.group(1)), int(n.group(2))
        if index in by_index:
            raise SeriesError(f"{origin}: two patches numbered {index}/{total}: {by_index[index].name} and "
                              f"{m.name}; keep one of them")
        by_index[index] = m
        totals.setdefault(total, m)
        if len(totals) > 1:
            (first, a), (second, b) = list(totals.items())[:2]
            raise SeriesError(f"{origin}: the patches disagree on the series' size: {a.name} is one of {first}, "
                              f"{b.name} one of {second}; use the patches of one version of the series")
        if not 1 <= index <= total:
            raise SeriesError(f"{origin}: {m.name} is numbered {index}/{total}, outside 1..{total}")
    total = next(iter(totals))
    if len(by_index) != total:
        # Indices are distinct and within 1..total: one of 1..len+1 is missing (total may be huge).
        missing = next(k for k in range(1, len(by_index) + 2) if k not in by_index)
        have = ", ".join(f"{k}/{total}" for k in sorted(by_index)[:8])
        raise SeriesError(f"{origin}: patch {missing}/{total} is missing (have {have}"
                          f"{', ...' if len(by_index) > 8 else ''}); add it, or renumber the series")
    return [Patch(subject=by_index[k].subject, message=by_index[k].data, index=k, total=total)
            for k in sorted(by_index)]


def load_local(path: Path) -> Series:
    """An mbox file, or a folder of `git format-patch` files (``*.patch``) and Patchwork patch records
    (``*.json``), numbered by their subjects or else in name order."""
    if path.is_dir():
        files = sorted([*path.glob("*.patch"), *path.glob("*.json")])
        if not files:
            raise SeriesError(f"{path}: no *.patch file or Patchwork record (*.json) in this folder")
        messages = [m for f in files for m in _messages(_read_patch_file(f), f.name)]
        patches = _numbered(messages, str(path))
    elif path.is_file():
        patches = parse_mbox(_read(path), str(path))
    else:
        raise SeriesError(f"{path}: no such mbox file or patch folder")
    name = BRACKETS.sub("", patches[0].subject) if patches else path.name
    return Series(origin=str(path), name=name, patches=tuple(patches))


def _read_patch_file(path: Path) -> bytes:
    if path.suffix != ".json":
        return _read(path)
    return record_mail(json_object(_read(path), str(path)), str(path))


# Patchwork's mbox view (patchwork/views/utils.py) sets these itself; a record's copies are the
# original mail's, which may have been base64 or multipart.
_OWN_HEADERS = ("content-type", "content-transfer-encoding")
_POSTSCRIPT = re.compile(r"^-{2,3} ?$", re.MULTILINE)


def record_mail(record: dict[str, Any], origin: str) -> bytes:
    """A Patchwork patch record (``/api/patches/ID/``) as the mail Patchwork's mbox view makes of it:
    the original headers, the message up to its ``---``, the postscript (diffstat), then the diff."""
    fields = {key: record.get(key) for key in ("id", "content", "diff", "headers", "date")}
    if not _is_count(fields["id"], 1) or not isinstance(fields["diff"], str) or not fields["diff"]:
        raise SeriesError(f"{origin}: not a Patchwork patch record (it needs an id and a diff); keep the "
                          "/api/patches/ID/ answer as it came, or use git format-patch files")
    headers = fields["headers"] if isinstance(fields["headers"], dict) else {}
    body, postscript = _split_postscript(str(fields["content"] or ""))
    text = body + (f"---{postscript}\n" if postscript else "") + "\n" + fields["diff"]
    lines = [f"From patchwork {_ctime(fields['date'])}", f"X-Patchwork-Id: {fields['id']}"]
    for key, value in headers.items():
        if key.lower() in _OWN_HEADERS:
            continue
        for one in value if isinstance(value, list) else [value]:
            lines.append(f"{key}: {one}")
    lines += ["Content-Type: text/plain; charset=\"utf-8\"", "Content-Transfer-Encoding: 8bit"]
    return ("\n".join(lines) + "\n\n" + text).encode()


def _ctime(date: object) -> str:
    """An mbox From line's date, as Patchwork writes it (``Sat Feb  7 13:47:28 2026``)."""
    try:
        return datetime.datetime.fromisoformat(str(date)).ctime()
    except ValueError:
        return "Thu Jan  1 00:00:00 1970"


def _split_postscript(content: str) -> tuple[str, str]:
    """The commit message and what follows its ``---`` line (the diffstat), as Patchwork splits them."""
    parts = _POSTSCRIPT.split(content.strip() + "\n", maxsplit=1)
    if len(parts) == 2:
        return parts[0].strip() + "\n", parts[1].rstrip()
    return parts[0], ""


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SeriesError(f"{path}: cannot read ({exc.strerror})") from exc

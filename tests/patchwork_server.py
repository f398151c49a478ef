"""A local HTTP server that behaves like Patchwork's REST API for what the lab uses.

    GET  /api/patches/ID/           a patch record, in the shape of the recorded one
                                    (tests/fixtures/patchwork-api-patch-2194230.json)
    GET  /api/patches/?project=P&msgid=M   the patches with that Message-ID (without <>), a list
    GET  /api/series/ID/            a series record, in the shape of tests/fixtures/patchwork/series-491379.json
    GET  /series/ID/mbox/           the series as one mbox
    GET  /api/patches/ID/checks/    the checks posted on a patch
    POST /api/patches/ID/checks/    a new check: needs ``Authorization: Token <t>`` of a maintainer of the
                                    project; 201 with the check record

It answers as Patchwork does (measured against the real one, served locally), in its compact JSON
(``{"detail":"Invalid token."}``): 403 "Invalid token." for an unknown token and "Invalid token
header. No credentials provided." for an empty one (session authentication runs first, so never 401);
then 404 "No Patch matches the given query." for an unknown patch; then 403 "You do not have
permission to perform this action." for a user who is not a maintainer, or a request without a token;
then 400 with the fields it refuses (no state, a state it does not know, a context that is no slug, a
target_url that is no http(s) URL or longer than 200 characters). A GET without its trailing slash gets
a 301 to the path with it; a page that is not there outside the API is Django's HTML 404.

It listens on 127.0.0.1 only and records every request (method, path, whether it was authorised) and
every check it accepted. ``faults`` makes a path answer an error status, a redirect, or never answer.

Served by hand, for a `lab check` from elsewhere (the workflow's check job run with act, say):

    PATCHWORK_TOKEN=... python -m tests.patchwork_server offline|control [--port N]

serves that series with that token as a maintainer's, prints the URL of its last patch, and when
stopped (Ctrl-C, SIGTERM) prints every check posted: patch, state, context, description.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import email.utils
import http.server
import json
import os
import re
import signal
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.upstream.series import BRACKETS, load_local
from tests.serving import Serving

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RECORDED_PATCH = FIXTURES / "patchwork-api-patch-2194230.json"
RECORDED_SERIES = FIXTURES / "patchwork" / "series-491379.json"
RECORDED_HOST = "http://patchwork.ozlabs.org"
SERIES_DIR = Path(__file__).resolve().parents[1] / "series"
STATES = ("pending", "success", "warning", "fail")  # Patchwork's Check.STATE_CHOICES
CONTEXT_RE = re.compile(r"^[-a-zA-Z0-9_]+$")  # a SlugField
URL_RE = re.compile(r"^(?:https?|ftps?)://[^\s/?#]+\S*$", re.IGNORECASE)  # the schemes Django's URLField takes
URL_MAX = 200  # Check.target_url's max_length
MAINTAINER, USER = "maintainer", "user"


@dataclass
class ServedPatch:
    id: int
    name: str  # Patchwork's name: the subject without "[PATCH", e.g. "[1/1] net: ..."
    message: bytes  # the patch as one mbox message
    msgid: str = ""  # its Message-ID, with <>


@dataclass
class ServedSeries:
    id: int
    name: str
    patches: list[ServedPatch]
    received_all: bool = True
    version: int = 1


@dataclass
class Fault:
    status: int = 500
    hang: bool = False  # read the request, never answer (until the server closes)
    location: str = ""  # a redirect (with a 30x status) to there


@dataclass
class Posted:
    patch: int
    body: dict[str, Any]
    user: str


@dataclass
class PatchworkServer:
    """Serves ``series``; ``tokens`` maps an API token to the role of its user in the project."""

    series: list[ServedSeries]
    tokens: dict[str, str] = field(default_factory=dict)
    project: str = "qemu-devel"
    faults: dict[str, Fault] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    checks: list[Posted] = field(default_factory=list)
    port: int = 0  # a free one

    def __post_init__(self) -> None:
        self.release = threading.Event()
        self.serving = Serving("127.0.0.1", self._handler(), "patchwork", self.port)
        self.base = self.serving.base

    def close(self) -> None:
        self.release.set()
        self.serving.close()

    def __enter__(self) -> PatchworkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def checks_on(self, patch_id: int) -> list[dict[str, Any]]:
        return [c.body for c in self.checks if c.patch == patch_id]

    # -- records, in the recorded shapes ----------------------------------------------------------

    def patch_record(self, s: ServedSeries, p: ServedPatch) -> dict[str, Any]:
        record: dict[str, Any] = json.loads(RECORDED_PATCH.read_text().replace(RECORDED_HOST, self.base))
        record.update(id=p.id, url=f"{self.base}/api/patches/{p.id}/", name=p.name, check="pending", msgid=p.msgid,
                      checks=f"{self.base}/api/patches/{p.id}/checks/", series=[self._series_entry(s)],
                      mbox=f"{self.base}/patch/{p.id}/mbox/")
        return record

    def series_record(self, s: ServedSeries) -> dict[str, Any]:
        record: dict[str, Any] = json.loads(RECORDED_SERIES.read_text().replace(RECORDED_HOST, self.base))
        record.update(self._series_entry(s), total=len(s.patches), received_all=s.received_all,
                      received_total=len(s.patches) - (0 if s.received_all else 1),
                      patches=[{"id": p.id, "url": f"{self.base}/api/patches/{p.id}/", "name": p.name,
                                "mbox": f"{self.base}/patch/{p.id}/mbox/"} for p in s.patches])
        record["project"] = dict(record["project"], link_name=self.project)
        return record

    def _series_entry(self, s: ServedSeries) -> dict[str, Any]:
        return {"id": s.id, "url": f"{self.base}/api/series/{s.id}/", "name": s.name, "version": s.version,
                "mbox": f"{self.base}/series/{s.id}/mbox/",
                "web_url": f"{self.base}/project/{self.project}/list/?series={s.id}"}

    def _find(self, patch_id: int) -> tuple[ServedSeries, ServedPatch] | None:
        return next(((s, p) for s in self.series for p in s.patches if p.id == patch_id), None)

    # -- answers ----------------------------------------------------------------------------------

    def get(self, path: str, query: str = "") -> tuple[int, bytes, str]:
        if path == "/api/patches/":
            wanted = urllib.parse.parse_qs(query)
            msgid = f"<{wanted.get('msgid', [''])[0]}>"
            matches = [self.patch_record(s, p) for s in self.series for p in s.patches
                       if p.msgid == msgid and wanted.get("project", [self.project]) == [self.project]]
            return 200, _json(matches), "application/json"
        if m := re.fullmatch(r"/api/patches/(\d+)/", path):
            found = self._find(int(m.group(1)))
            return (200, _json(self.patch_record(*found)), "application/json") if found else _not_found("Patch")
        if m := re.fullmatch(r"/api/patches/(\d+)/checks/", path):
            if self._find(int(m.group(1))) is None:
                return _not_found("Patch")
            return 200, _json(self.checks_on(int(m.group(1)))), "application/json"
        if m := re.fullmatch(r"/api/series/(\d+)/", path):
            s = next((s for s in self.series if s.id == int(m.group(1))), None)
            return (200, _json(self.series_record(s)), "application/json") if s else _not_found("Series")
        if m := re.fullmatch(r"/series/(\d+)/mbox/", path):
            s = next((s for s in self.series if s.id == int(m.group(1))), None)
            if s is None:
                return _not_found()
            return 200, b"".join(p.message if p.message.endswith(b"\n") else p.message + b"\n"
                                 for p in s.patches), "text/plain; charset=utf-8"
        return _not_found()

    def post(self, path: str, authorization: str, body: bytes) -> tuple[int, bytes, str]:
        m = re.fullmatch(r"/api/patches/(\d+)/checks/", path)
        if m is None:
            return 405, _json({"detail": 'Method "POST" not allowed.'}), "application/json"
        scheme, _, token = authorization.partition(" ")
        role = None
        if scheme == "Token":  # rest_framework's TokenAuthentication; another scheme is no user at all
            if not token.strip():
                return 403, _json({"detail": "Invalid token header. No credentials provided."}), "application/json"
            role = self.tokens.get(token)
            if role is None:
                return 403, _json({"detail": "Invalid token."}), "application/json"
        if self._find(int(m.group(1))) is None:
            return _not_found("Patch")
        if role != MAINTAINER:
            return 403, _json({"detail": "You do not have permission to perform this action."}), "application/json"
        try:
            data = json.loads(body)
        except ValueError as exc:
            return 400, _json({"detail": f"JSON parse error - {exc}"}), "application/json"
        errors = self._invalid(data)
        if errors:
            return 400, _json(errors), "application/json"
        self.checks.append(Posted(int(m.group(1)), copy.deepcopy(data), MAINTAINER))
        record = {"id": len(self.checks), "url": f"{self.base}{path}{len(self.checks)}/",
                  "user": {"username": MAINTAINER}, "date": "2026-11-28T12:00:00", "target_url": None,
                  "context": "default", "description": None} | data
        return 201, _json(record), "application/json"

    @staticmethod
    def _invalid(data: dict[str, Any]) -> dict[str, list[str]]:
        """The fields of a check Patchwork refuses, with its words for why."""
        if not data.get("state"):  # its CheckSerializer asks for a state before anything else
            return {"state": ["A check must have a state."]}
        errors: dict[str, list[str]] = {}
        if data["state"] not in STATES:
            errors["state"] = [f'"{data["state"]}" is not a valid choice.']
        if not CONTEXT_RE.fullmatch(str(data.get("context", "default"))):
            errors["context"] = ['Enter a valid "slug" consisting of letters, numbers, underscores or hyphens.']
        url = str(data.get("target_url", ""))
        url_errors = ([] if not url or URL_RE.fullmatch(url) else ["Enter a valid URL."]) + (
            [f"Ensure this field has no more than {URL_MAX} characters."] if len(url) > URL_MAX else [])
        if url_errors:
            errors["target_url"] = url_errors
        return errors

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = self.path.partition("?")[2]
                self._answer("GET", lambda path: server.get(path, query))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer("POST", lambda path: server.post(path, self.headers.get("Authorization", ""), body))

            def _answer(self, method: str, answer: Any) -> None:
                path = self.path.split("?", 1)[0]
                server.requests.append((method, path))
                fault = server.faults.get(path)
                if fault is not None and fault.hang:
                    server.release.wait(timeout=30)
                    return
                query = self.path.partition("?")[2]
                if fault is None and method == "GET" and not path.endswith("/"):
                    # Django's APPEND_SLASH, as Patchwork runs it
                    fault = Fault(301, location=f"{path}/" + (f"?{query}" if query else ""))
                if fault is None:
                    status, body, content_type = answer(path)
                else:
                    status, content_type = fault.status, "text/html"
                    body = b"" if fault.location else b"<h1>Server Error</h1>"
                self.send_response(status)
                if fault is not None and fault.location:
                    self.send_header("Location", fault.location)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _json(data: object) -> bytes:
    # rest_framework's JSONRenderer writes compact JSON: an error quoted by the lab reads as Patchwork's.
    return json.dumps(data, separators=(",", ":")).encode()


def _not_found(model: str = "") -> tuple[int, bytes, str]:
    """The API's 404 for a record (``model``: Patch, Series), else Django's page for a path it has not."""
    if model:
        return 404, _json({"detail": f"No {model} matches the given query."}), "application/json"
    return 404, b"<!DOCTYPE html>\n<title>Page not found</title>", "text/html; charset=utf-8"


def seed_patch_mbox() -> bytes:
    """Patch 12/12 of series 491379 as Patchwork's mbox gives it, rebuilt from its recorded API record,
    numbered 1/1: a lone 12/12 is an incomplete series, which the lab refuses before any build."""
    rec = json.loads(RECORDED_PATCH.read_text())
    subject = rec["name"].replace("[12/12]", "[PATCH 1/1]", 1)
    assert subject != rec["name"]
    # The API gives the date in ISO 8601 (UTC); a mail has it in RFC 2822, and Patchwork's parser takes
    # no other (it would date the patch when it read it).
    date = email.utils.format_datetime(datetime.datetime.fromisoformat(rec["date"]).replace(tzinfo=datetime.UTC))
    return (f"From {rec['hash']} Mon Sep 17 00:00:00 2001\n"
            f"From: {rec['submitter']['name']} <{rec['submitter']['email']}>\n"
            f"Date: {date}\nSubject: {subject}\nMessage-Id: {rec['msgid']}\n\n"
            f"{rec['content']}\n{rec['diff']}").encode()


def control_series() -> ServedSeries:
    """The lab's control patch, posted as a one-patch series."""
    patch = next((SERIES_DIR / "control").glob("*.patch"))
    return ServedSeries(910001, "net/filter-mirror: keep the netdev reading while the VM is stopped",
                        [ServedPatch(9100011, "[1/1] net/filter-mirror: keep the netdev reading", patch.read_bytes())])


def offline_series() -> ServedSeries:
    """Series 491379 as the lab builds it offline: its 11 patches, then patch 12/12 from Patchwork's record
    (the server's mbox gives 12/12 as Patchwork's mbox view does, X-Patchwork-Id included)."""
    patches = load_local(SERIES_DIR / "491379-offline").patches
    served = [ServedPatch(p.patchwork_id or 2194200 + p.index, BRACKETS.sub(f"[{p.index:02d}/12] ", p.subject),
                          p.message) for p in patches]
    return ServedSeries(491379, "[01/12] net: introduce read_poll/write_poll", served)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.patchwork_server",
                                     description="Serve a series as Patchwork would, PATCHWORK_TOKEN a maintainer's.")
    parser.add_argument("series", choices=("offline", "control"))
    parser.add_argument("--port", type=int, default=0, help="the port on 127.0.0.1 (default: a free one)")
    args = parser.parse_args(argv)
    token = os.environ.get("PATCHWORK_TOKEN", "")
    if not token:
        print("patchwork_server: error: PATCHWORK_TOKEN is not set: the token lab check will post with",
              file=sys.stderr)
        return 2
    served = offline_series() if args.series == "offline" else control_series()
    with PatchworkServer([served], tokens={token: MAINTAINER}, port=args.port) as server:
        print(f"{server.base}/api/patches/{served.patches[-1].id}/", flush=True)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()
        for posted in server.checks:
            body = posted.body
            print(f"patch {posted.patch}: {body.get('state')} {body.get('context')}: {body.get('description', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

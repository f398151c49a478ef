"""Series intake: Patchwork (REST API) replayed by a local HTTP server, mbox files, patch folders.

Every request goes to a ThreadingHTTPServer on 127.0.0.1 that replays recorded or hand-written
answers (tests/fixtures/patchwork/README.md says which is which); `only_loopback` fails any test
that tries to connect anywhere else.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab import cli
from lab.upstream import series
from lab.upstream.series import Patchwork, SeriesError, SeriesInfo
from tests.serving import Serving

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SEED_PATCH = FIXTURES / "patchwork-api-patch-2194230.json"
SERIES_RECORD = FIXTURES / "patchwork" / "series-491379.json"
SERIES_MBOX = FIXTURES / "patchwork" / "series-491379.mbox"
CONTROL_SERIES = ROOT / "series" / "control"
RECORDED_HOST = "http://patchwork.ozlabs.org"
pytestmark = pytest.mark.usefixtures("only_loopback")

PATCH_PATH = "/api/patches/2194230/"
SERIES_PATH = "/api/series/491379/"
MBOX_PATH = "/series/491379/mbox/"
SERIES_NAME = "[01/12] net: introduce read_poll/write_poll"
SUBJECTS = ["[PATCH 01/12] net: introduce read_poll/write_poll"] + [
    f"[PATCH {n:02d}/12] lab-fixture: synthetic patch {n} of 12" for n in range(2, 12)
] + ["[PATCH 12/12] net/filter-mirror: keep mirroring while stopped"]
SHA1 = re.compile(r"[0-9a-f]{40}")


# --- the replay server ------------------------------------------------------------------------

@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    hang: bool = False  # read the request, then never answer (until the server closes)
    short_by: int = 0  # announce this many bytes more than are sent, then drop the connection
    location: str = ""  # a Location header (a redirect, with a 3xx status)


class ReplayServer:
    """Answers GETs from ``routes`` (path without query -> Reply); anything else is a 404."""

    def __init__(self) -> None:
        self.routes: dict[str, Reply] = {}
        self.requests: list[str] = []
        self.release = threading.Event()
        replay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                replay.requests.append(self.path)
                path = self.path.split("?", 1)[0]
                reply = replay.routes.get(path)
                if reply is None and f"{path}/" in replay.routes:  # Django's APPEND_SLASH, as Patchwork runs it
                    self.send_response(301)
                    self.send_header("Location", f"{path}/")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if reply is None:
                    reply = Reply(404, b'{"detail": "Not found."}')
                if reply.hang:
                    replay.release.wait(timeout=30)
                    return
                body = reply.body
                if reply.content_type == "application/json":
                    body = body.replace(RECORDED_HOST.encode(), replay.base.encode())
                self.send_response(reply.status)
                if reply.location:
                    self.send_header("Location", reply.location.replace(RECORDED_HOST, replay.base))
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(body) + reply.short_by))
                self.end_headers()
                with contextlib.suppress(ConnectionError):  # the lab hung up at its cap
                    self.wfile.write(body)
                if reply.short_by:
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.serving = Serving("127.0.0.1", Handler, "patchwork-replay")
        self.base = self.serving.base

    def json(self, path: str, record: dict[str, Any] | list[Any]) -> None:
        self.routes[path] = Reply(body=json.dumps(record).encode())

    def mbox(self, path: str, data: bytes) -> None:
        self.routes[path] = Reply(body=data, content_type="application/mbox")

    def close(self) -> None:
        self.release.set()
        self.serving.close()


def seed_patch() -> dict[str, Any]:
    record: dict[str, Any] = json.loads(SEED_PATCH.read_text())
    return record


def series_record() -> dict[str, Any]:
    record: dict[str, Any] = json.loads(SERIES_RECORD.read_text())
    return record


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    replay = ReplayServer()
    replay.json(PATCH_PATH, seed_patch())
    replay.json(SERIES_PATH, series_record())
    replay.mbox(MBOX_PATH, SERIES_MBOX.read_bytes())
    try:
        yield replay
    finally:
        replay.close()


def expected_info(base: str) -> SeriesInfo:
    return SeriesInfo(id=491379, name=SERIES_NAME, version=1, mbox=f"{base}{MBOX_PATH}", received_all=True,
                      total=12, api_url=f"{base}{SERIES_PATH}", patches=(2194230,), project="qemu-devel")


def free_port() -> int:
    """A port nothing listens on: bound, read, closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def format_patch(n: int, total: int, subject: str, diff: bool = True) -> str:
    """One message as `git format-patch` writes it (numbered ``[PATCH n/total]``)."""
    text = (f"From {hashlib.sha1(f'{n}/{total}'.encode()).hexdigest()} Mon Sep 17 00:00:00 2001\n"
            f"From: Lab Test <test@localhost>\nDate: Thu, 26 Nov 2026 12:00:0{n % 10} +0000\n"
            f"Subject: [PATCH {n}/{total}] {subject}\n\nBody of {n}.\n\n---\n")
    if diff:
        text += (f"diff --git a/f{n}.c b/f{n}.c\nindex 0000000..1111111 100644\n--- a/f{n}.c\n+++ b/f{n}.c\n"
                 f"@@ -1 +1,2 @@\n x\n+y{n}\n")
    return text + "--\n2.43.0\n\n"


# --- 1. a patch URL: its series, the mbox, the provenance ----------------------------------------

def test_patch_url_resolves_to_its_series(server: ReplayServer) -> None:
    pw, info = series.resolve(f"{server.base}{PATCH_PATH}")
    assert info == expected_info(server.base)
    assert pw.base_url == server.base
    assert server.requests == [PATCH_PATH, SERIES_PATH]  # the series record itself, not the patch's summary


def test_fetch_returns_the_twelve_patches_in_order_without_the_cover_letter(server: ReplayServer) -> None:
    pw, info = series.resolve(f"{server.base}{PATCH_PATH}")
    fetched = pw.fetch(info)
    assert [p.subject for p in fetched.patches] == SUBJECTS
    assert [(p.index, p.total) for p in fetched.patches] == [(n, 12) for n in range(1, 13)]
    assert not any("00/12" in p.subject or b"Cover letter" in p.message for p in fetched.patches)
    for n, p in enumerate(fetched.patches, start=1):
        assert p.message.startswith(b"From ") and f"diff --git a/net/fixture-{n:02d}.c".encode() in p.message
        assert SHA1.fullmatch(p.diff_hash)
        assert p.diff_hash == hashlib.sha1(p.message[p.message.index(b"diff --git "):]).hexdigest()
    assert len({p.diff_hash for p in fetched.patches}) == 12
    assert (fetched.patchwork_id, fetched.name, fetched.version) == (491379, SERIES_NAME, 1)
    assert fetched.mbox_url == f"{server.base}{MBOX_PATH}" and fetched.origin == f"{server.base}{SERIES_PATH}"
    assert server.requests[-1] == MBOX_PATH


def test_provenance_names_the_series_and_its_patches(server: ReplayServer) -> None:
    pw, info = series.resolve(f"{server.base}{PATCH_PATH}")
    provenance = pw.fetch(info).provenance()
    assert provenance["patchwork_id"] == 491379
    assert provenance["name"] == SERIES_NAME and provenance["version"] == 1
    assert provenance["mbox"] == f"{server.base}{MBOX_PATH}"
    assert [p["subject"] for p in provenance["patches"]] == SUBJECTS
    assert [p["n"] for p in provenance["patches"]] == [f"{n}/12" for n in range(1, 13)]
    assert all(SHA1.fullmatch(p["hash"]) for p in provenance["patches"])
    assert json.loads(json.dumps(provenance)) == provenance  # fit for a JSON report


# --- 2. every way of naming the series ------------------------------------------------------------

@pytest.mark.parametrize(("ref", "patchwork"), [
    ("491379", "{base}"),
    ("491379", "{base}/"),
    ("{base}/api/series/491379/", None),
    ("{base}/api/1.3/series/491379/?format=json", None),
    ("{base}/project/qemu-devel/list/?series=491379", None),
    ("{base}/api/patches/2194230/", None),
], ids=["bare-id", "bare-id-trailing-slash", "series-api-url", "versioned-api-url", "web-url", "patch-url"])
def test_every_reference_gives_the_same_series(server: ReplayServer, ref: str, patchwork: str | None) -> None:
    _, info = series.resolve(ref.format(base=server.base), patchwork and patchwork.format(base=server.base))
    assert info == expected_info(server.base)


# --- 3-5, 10. what Patchwork answers --------------------------------------------------------------

def test_unknown_patch_is_not_found_and_names_the_url(server: ReplayServer) -> None:
    url = f"{server.base}/api/patches/999999/"
    with pytest.raises(SeriesError, match="not found") as caught:
        series.resolve(url)
    assert url in str(caught.value)


def test_html_instead_of_json(server: ReplayServer) -> None:
    server.routes[PATCH_PATH] = Reply(body=b"<!DOCTYPE html><html><body>Patchwork login</body></html>",
                                      content_type="text/html")
    with pytest.raises(SeriesError, match="not JSON") as caught:
        series.resolve(f"{server.base}{PATCH_PATH}")
    assert f"{server.base}{PATCH_PATH}" in str(caught.value) and "<!DOCTYPE" in str(caught.value)


def test_json_that_is_not_an_object(server: ReplayServer) -> None:
    server.json(SERIES_PATH, [series_record()])
    with pytest.raises(SeriesError, match="not a JSON object"):
        series.resolve("491379", server.base)


def test_patch_in_no_series(server: ReplayServer) -> None:
    record = seed_patch()
    record["series"] = []
    server.json(PATCH_PATH, record)
    with pytest.raises(SeriesError, match="belongs to no series") as caught:
        series.resolve(f"{server.base}{PATCH_PATH}")
    assert "2194230" in str(caught.value)


def test_server_error_is_reported_with_its_status(server: ReplayServer) -> None:
    server.routes[SERIES_PATH] = Reply(500, b"<h1>Server Error (500)</h1>", content_type="text/html")
    with pytest.raises(SeriesError, match="HTTP 500") as caught:
        series.resolve("491379", server.base)
    assert f"{server.base}{SERIES_PATH}" in str(caught.value)


def test_series_record_unavailable_falls_back_to_what_the_patch_says(server: ReplayServer) -> None:
    server.routes[SERIES_PATH] = Reply(500, b"oops", content_type="text/plain")
    _, info = series.resolve(f"{server.base}{PATCH_PATH}")
    # From the patch record's series entry; completeness and size unknown.
    assert info == SeriesInfo(id=491379, name=SERIES_NAME, version=1, mbox=f"{server.base}{MBOX_PATH}",
                              received_all=None, total=None, api_url=f"{server.base}{SERIES_PATH}")


# --- 6-8. what the series and its mbox hold -------------------------------------------------------

def test_incomplete_series_is_refused_before_its_mbox_is_fetched(server: ReplayServer) -> None:
    record = series_record()
    record.update(received_all=False, received_total=11)
    server.json(SERIES_PATH, record)
    pw, info = series.resolve("491379", server.base)
    assert info.received_all is False
    with pytest.raises(SeriesError, match="incomplete") as caught:
        pw.fetch(info)
    assert "received_all is false" in str(caught.value) and "12" in str(caught.value)
    assert MBOX_PATH not in server.requests


COVER_ONLY = SERIES_MBOX.read_bytes().split(b"\nFrom ", 1)[0]


@pytest.mark.parametrize("mbox", [COVER_ONLY, b""], ids=["cover-letter-only", "empty"])
def test_mbox_without_patches(server: ReplayServer, mbox: bytes) -> None:
    assert b"[PATCH 00/12]" in COVER_ONLY and b"diff --git" not in COVER_ONLY  # the fixture is what it says
    server.mbox(MBOX_PATH, mbox)
    pw, info = series.resolve("491379", server.base)
    with pytest.raises(SeriesError, match="no patch found") as caught:
        pw.fetch(info)
    assert f"{server.base}{MBOX_PATH}" in str(caught.value)


def test_mbox_with_fewer_patches_than_the_series(server: ReplayServer) -> None:
    messages = [p.message for p in series.parse_mbox(SERIES_MBOX.read_bytes(), "fixture")]
    server.mbox(MBOX_PATH, b"".join(messages[:6] + messages[7:]))  # 07/12 went missing
    pw, info = series.resolve("491379", server.base)
    with pytest.raises(SeriesError, match=r"patch 7/12 is missing \(have 1/12, 2/12, .*\)") as caught:
        pw.fetch(info)
    assert f"{server.base}{MBOX_PATH}" in str(caught.value)


def test_unnumbered_mbox_with_fewer_patches_than_the_series(server: ReplayServer) -> None:
    unnumbered = [re.sub(rb"Subject: \[PATCH \d+/12\] ", b"Subject: ", p.message)
                  for p in series.parse_mbox(SERIES_MBOX.read_bytes(), "fixture")]
    server.mbox(MBOX_PATH, b"".join(unnumbered[:11]))
    pw, info = series.resolve("491379", server.base)
    with pytest.raises(SeriesError, match="holds 11 patches, the series has 12"):
        pw.fetch(info)


@pytest.mark.parametrize("mbox", ["file:///etc/passwd", "ftp://127.0.0.1/series.mbox", "/series/491379/mbox/",
                                  "data:,x", "http://[::1/mbox"])
def test_an_mbox_link_that_is_not_http_is_refused(server: ReplayServer, mbox: str) -> None:
    record = series_record()
    record["mbox"] = mbox
    server.json(SERIES_PATH, record)
    pw, info = series.resolve("491379", server.base)
    with pytest.raises(SeriesError, match="is not an http\\(s\\) URL") as caught:
        pw.fetch(info)
    assert repr(mbox) in str(caught.value) and "\n" not in str(caught.value)


def test_a_patchwork_server_that_is_not_http_is_refused(tmp_path: Path) -> None:
    (tmp_path / "api" / "series" / "1").mkdir(parents=True)
    (tmp_path / "api" / "series" / "1" / "index.json").write_text("{}")
    with pytest.raises(SeriesError, match="not an http\\(s\\) URL"):
        series.resolve("1", f"file://{tmp_path}")


# --- 9. unreachable and silent servers ------------------------------------------------------------

def test_connection_refused() -> None:
    base = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SeriesError, match="cannot reach") as caught:
        series.resolve(f"{base}{PATCH_PATH}")
    assert base in str(caught.value) and "--patchwork" in str(caught.value)


def test_silent_server_times_out_within_bounds(server: ReplayServer) -> None:
    server.routes[PATCH_PATH] = Reply(hang=True)
    pw = Patchwork(server.base, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(SeriesError, match="cannot reach"):
        pw.series_of_patch(2194230)
    assert time.monotonic() - started < 15, "the request ran on past its timeout"
    assert server.requests == [PATCH_PATH]  # it did connect and ask


def test_answer_cut_short_is_a_series_error(server: ReplayServer) -> None:
    server.routes[MBOX_PATH] = Reply(body=SERIES_MBOX.read_bytes()[:500], content_type="application/mbox",
                                     short_by=10_000)
    pw, info = series.resolve("491379", server.base)
    with pytest.raises(SeriesError):
        pw.fetch(info)


# --- 11. references that cannot be resolved ------------------------------------------------------

def test_bare_id_needs_the_patchwork_server() -> None:
    with pytest.raises(SeriesError, match="--patchwork"):
        series.resolve("491379")


@pytest.mark.parametrize("ref", ["not a url", "ftp://127.0.0.1/api/series/1/", "patchwork.ozlabs.org/api/series/1/"])
def test_not_a_reference(ref: str) -> None:
    with pytest.raises(SeriesError, match="neither a Patchwork URL nor a series ID"):
        series.resolve(ref)


def test_url_that_names_no_patch_or_series(server: ReplayServer) -> None:
    with pytest.raises(SeriesError, match="not a Patchwork patch or series URL"):
        series.resolve(f"{server.base}/project/qemu-devel/list/")
    assert server.requests == []


def test_patches_are_numbered_by_their_subjects_else_by_order() -> None:
    numbered = series.parse_mbox("".join(format_patch(n, 3, f"net: {n}") for n in (2, 1, 3)).encode(), "x")
    assert [(p.index, p.total, p.subject) for p in numbered] == [(n, 3, f"[PATCH {n}/3] net: {n}") for n in (1, 2, 3)]
    plain = [format_patch(n, 2, f"net: {n}").replace(f"[PATCH {n}/2] ", "") for n in (1, 2)]
    assert [(p.subject, p.index, p.total) for p in series.parse_mbox("".join(plain).encode(), "x")] == [
        ("net: 1", 1, 2), ("net: 2", 2, 2)]


# --- 12. local series -----------------------------------------------------------------------------

def test_the_control_series_folder() -> None:
    local = series.load_local(CONTROL_SERIES)
    assert len(local.patches) == 1
    (patch,) = local.patches
    assert "filter-mirror" in patch.subject and (patch.index, patch.total) == (1, 1)
    assert b"diff --git a/net/filter-mirror.c" in patch.message
    assert SHA1.fullmatch(patch.diff_hash)
    assert local.name.startswith("net/filter-mirror: ")  # without its [PATCH ...] prefix
    assert local.origin == str(CONTROL_SERIES) and local.patchwork_id is None


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(SeriesError, match="no such mbox file or patch folder"):
        series.load_local(tmp_path / "absent")


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(SeriesError, match=r"no \*\.patch file"):
        series.load_local(tmp_path)


def test_mbox_file_with_two_patches(tmp_path: Path) -> None:
    mbox = tmp_path / "two.mbox"
    mbox.write_text(format_patch(1, 2, "net: first") + format_patch(2, 2, "net: second"))
    local = series.load_local(mbox)
    assert [p.subject for p in local.patches] == ["[PATCH 1/2] net: first", "[PATCH 2/2] net: second"]
    assert [(p.index, p.total) for p in local.patches] == [(1, 2), (2, 2)]
    assert local.name == "net: first"


def test_folder_is_read_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "0002-second.patch").write_text(format_patch(2, 2, "net: second"))
    (tmp_path / "0001-first.patch").write_text(format_patch(1, 2, "net: first"))
    (tmp_path / "notes.txt").write_text("not a patch")
    local = series.load_local(tmp_path)
    assert [p.subject for p in local.patches] == ["[PATCH 1/2] net: first", "[PATCH 2/2] net: second"]
    assert [(p.index, p.total) for p in local.patches] == [(1, 2), (2, 2)]


def test_folder_with_a_cover_letter_leaves_it_out(tmp_path: Path) -> None:
    (tmp_path / "0000-cover-letter.patch").write_text(format_patch(0, 2, "*** SUBJECT HERE ***", diff=False))
    (tmp_path / "0001-first.patch").write_text(format_patch(1, 2, "net: first"))
    (tmp_path / "0002-second.patch").write_text(format_patch(2, 2, "net: second"))
    local = series.load_local(tmp_path)
    assert [p.subject for p in local.patches] == ["[PATCH 1/2] net: first", "[PATCH 2/2] net: second"]


# --- 13. the command line -------------------------------------------------------------------------

def test_cli_show(server: ReplayServer, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["series", "show", f"{server.base}{PATCH_PATH}"])
    out, err = capsys.readouterr()
    assert rc == 0 and err == ""
    assert f"series 491379: {SERIES_NAME}\n" in out
    assert "version 1, patches 12, received_all True" in out
    assert f"mbox {server.base}{MBOX_PATH}\n" in out


def test_cli_fetch_writes_an_mbox_of_the_series(server: ReplayServer, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "s.mbox"
    rc = cli.main(["series", "fetch", "491379", "--patchwork", server.base, "-o", str(out_file)])
    out, err = capsys.readouterr()
    assert rc == 0 and err == ""
    assert out_file.is_file()
    written = series.parse_mbox(out_file.read_bytes(), str(out_file))
    assert [p.subject for p in written] == SUBJECTS
    assert [(p.index, p.total) for p in written] == [(n, 12) for n in range(1, 13)]
    assert f"series 491379 (12 patches) written to {out_file}" in out


def test_cli_not_found_is_one_line_and_exit_2(server: ReplayServer, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["series", "show", f"{server.base}/api/patches/999999/"])
    out, err = capsys.readouterr()
    assert rc == cli.EXIT_LAB_ERROR == 2
    assert err.count("\n") == 1 and err.startswith("lab series: error:") and "not found" in err
    assert out == ""


def test_cli_show_prints_a_bracketed_name_as_is(server: ReplayServer, capsys: pytest.CaptureFixture[str]) -> None:
    record = series_record()
    record.update(name="[v2,01/12] net: introduce read_poll/write_poll", version=2)
    server.json(SERIES_PATH, record)
    assert cli.main(["series", "show", "491379", "--patchwork", server.base]) == 0
    assert "series 491379: [v2,01/12] net: introduce read_poll/write_poll\n" in capsys.readouterr().out


def test_cli_fetch_to_a_missing_folder_is_one_line_and_exit_2(server: ReplayServer, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "absent" / "s.mbox"
    rc = cli.main(["series", "fetch", "491379", "--patchwork", server.base, "-o", str(out_file)])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_LAB_ERROR and err.count("\n") == 1 and str(out_file) in err


# --- 14. numbering that does not describe one whole series ------------------------------------------

def write_folder(folder: Path, numbers: list[tuple[int, int]]) -> list[str]:
    names = []
    for i, (n, total) in enumerate(numbers, start=1):
        names.append(f"{i:04d}-patch-{n}-of-{total}.patch")
        (folder / names[-1]).write_text(format_patch(n, total, f"net: change {i}"))
    return names


def series_error(path: Path) -> str:
    with pytest.raises(SeriesError) as caught:
        series.load_local(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


def test_folder_with_two_patches_of_one_number_names_both_files(tmp_path: Path) -> None:
    names = write_folder(tmp_path, [(1, 3), (2, 3), (2, 3), (3, 3)])
    message = series_error(tmp_path)
    assert "two patches numbered 2/3" in message and names[1] in message and names[2] in message


def test_folder_with_a_gap_names_the_missing_patch(tmp_path: Path) -> None:
    write_folder(tmp_path, [(1, 4), (2, 4), (4, 4)])
    assert "patch 3/4 is missing (have 1/4, 2/4, 4/4)" in series_error(tmp_path)


def test_folder_whose_patches_disagree_on_the_total_names_the_files(tmp_path: Path) -> None:
    names = write_folder(tmp_path, [(1, 3), (2, 3), (3, 4)])
    message = series_error(tmp_path)
    assert "disagree on the series' size" in message and names[0] in message and names[2] in message


def test_folder_with_a_number_past_its_total(tmp_path: Path) -> None:
    names = write_folder(tmp_path, [(1, 2), (3, 2)])
    assert f"{names[1]} is numbered 3/2, outside 1..2" in series_error(tmp_path)


def test_folder_mixing_numbered_and_unnumbered_patches(tmp_path: Path) -> None:
    names = write_folder(tmp_path, [(1, 2), (2, 2)])
    (tmp_path / names[1]).write_text((tmp_path / names[1]).read_text().replace("[PATCH 2/2] ", ""))
    assert f"{names[1]} has no N/M number" in series_error(tmp_path)


def test_a_lone_patch_out_of_a_larger_series_is_refused(tmp_path: Path) -> None:
    (tmp_path / "only.mbox").write_text(format_patch(12, 12, "net/filter-mirror: keep mirroring"))
    assert "patch 1/12 is missing (have 12/12)" in series_error(tmp_path / "only.mbox")


def test_mbox_with_two_patches_of_one_number_names_the_mbox_and_the_subjects(tmp_path: Path) -> None:
    mbox = tmp_path / "dup.mbox"
    mbox.write_text(format_patch(1, 2, "net: one") + format_patch(1, 2, "net: other one") + format_patch(2, 2, "x"))
    message = series_error(mbox)
    assert "two patches numbered 1/2" in message
    assert "'[PATCH 1/2] net: one'" in message and "'[PATCH 1/2] net: other one'" in message


def test_mbox_with_a_total_that_disagrees(tmp_path: Path) -> None:
    mbox = tmp_path / "mixed.mbox"
    mbox.write_text(format_patch(1, 2, "net: v1") + format_patch(2, 3, "net: v2"))
    assert "'[PATCH 1/2] net: v1' is one of 2, '[PATCH 2/3] net: v2' one of 3" in series_error(mbox)


def test_a_huge_total_is_refused_without_counting_to_it(tmp_path: Path) -> None:
    mbox = tmp_path / "huge.mbox"
    mbox.write_text(format_patch(1, 999999, "net: one"))
    assert "patch 2/999999 is missing (have 1/999999)" in series_error(mbox)

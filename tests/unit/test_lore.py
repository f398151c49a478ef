"""Series by Message-ID from a mail archive, through b4, against a local server in public-inbox's layout.

The server answers ``/<list>/<msgid>/t.mbox.gz`` (the whole thread, gzipped) and ``/<list>/<msgid>/raw``
(the one message) for every message of its thread, and 404 for anything else, on 127.0.0.1. b4 runs as
the command it is, with the lab's configuration pointing it at this server.
"""

from __future__ import annotations

import gzip
import http.server
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import cli, config, images
from lab.upstream import lore
from lab.upstream.series import SeriesError, parse_mbox
from tests.serving import Serving

pytestmark = pytest.mark.usefixtures("only_loopback")
LIST = "qemu-devel"
COVER, P1, P2, REPLY = "cover.1@lab.localhost", "p1.1@lab.localhost", "p2.1@lab.localhost", "re.1@lab.localhost"


def message(mid: str, subject: str, body: str, parent: str = "", n: int = 0,
            sender: str = "Lab Test <test@lab.localhost>") -> str:
    thread = f"In-Reply-To: <{parent}>\nReferences: <{COVER}>{f' <{parent}>' if parent != COVER else ''}\n"
    return (f"From nobody Mon Sep 17 00:00:00 2001\nFrom: {sender}\n"
            f"Date: Thu, 26 Nov 2026 12:00:0{n} +0000\nSubject: {subject}\nMessage-Id: <{mid}>\n"
            f"{thread if parent else ''}\n{body}\n")


def patch(n: int, mid: str) -> str:
    diff = (f"---\ndiff --git a/net/f{n}.c b/net/f{n}.c\nindex 0000000..1111111 100644\n--- a/net/f{n}.c\n"
            f"+++ b/net/f{n}.c\n@@ -1 +1,2 @@\n x\n+y{n}\n--\n2.43.0\n")
    return message(mid, f"[PATCH {n}/2] net: change {n}", f"Change {n}.\n\nSigned-off-by: Lab Test "
                   f"<test@lab.localhost>\n{diff}", COVER, n)


THREAD = {COVER: message(COVER, "[PATCH 0/2] net: keep filters flowing", "Two changes.\n"),
          P1: patch(1, P1), P2: patch(2, P2),
          REPLY: message(REPLY, "Re: [PATCH 1/2] net: change 1", "Reviewed-by: Rev Iewer <rev@lab.localhost>\n",
                         P1, 3, sender="Rev Iewer <rev@lab.localhost>")}


class PublicInbox:
    def __init__(self) -> None:
        self.requests: list[str] = []
        inbox = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                inbox.requests.append(self.path)
                status, body = inbox.answer(urllib.parse.unquote(self.path.split("?", 1)[0]))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.serving = Serving("127.0.0.1", Handler, "public-inbox")
        self.archive = f"{self.serving.base}/{LIST}"

    def answer(self, path: str) -> tuple[int, bytes]:
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == LIST and parts[1] in THREAD:
            if parts[2] == "t.mbox.gz":
                return 200, gzip.compress("".join(THREAD.values()).encode())
            if parts[2] == "raw":
                return 200, THREAD[parts[1]].encode()
        return 404, b"404 Not Found\n"

    def close(self) -> None:
        self.serving.close()


@pytest.fixture
def inbox() -> Iterator[PublicInbox]:
    server = PublicInbox()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("given", [f"<{P2}>", P2, f" <{COVER}> "])
def test_a_message_of_the_thread_gives_its_series(inbox: PublicInbox, given: str) -> None:
    fetched = lore.fetch(given, inbox.archive)
    assert [(p.index, p.total, p.subject) for p in fetched.patches] == [
        (1, 2, "[PATCH 1/2] net: change 1"), (2, 2, "[PATCH 2/2] net: change 2")]
    assert fetched.name == "net: keep filters flowing"  # the cover letter's subject
    assert b"diff --git a/net/f1.c" in fetched.patches[0].message
    # b4 did its work: the reviewer's trailer from the reply is on patch 1.
    assert b"Reviewed-by: Rev Iewer <rev@lab.localhost>" in fetched.patches[0].message
    msgid = given.strip().strip("<>")
    assert inbox.requests == [f"/{LIST}/{urllib.parse.quote_plus(msgid)}/t.mbox.gz"]


def test_provenance_records_the_message_id_and_b4(inbox: PublicInbox) -> None:
    provenance = lore.fetch(P1, inbox.archive).provenance()
    assert provenance["message_id"] == f"<{P1}>" and provenance["archive"] == inbox.archive
    assert provenance["b4"] == lore.b4_version() and provenance["b4"][:1].isdigit()
    assert provenance["origin"] == f"{inbox.archive}/{P1}/"
    assert [p["n"] for p in provenance["patches"]] == ["1/2", "2/2"]


def test_an_unknown_message_id_is_one_line(inbox: PublicInbox) -> None:
    with pytest.raises(SeriesError) as caught:
        lore.fetch("nobody@lab.localhost", inbox.archive)
    message = str(caught.value)
    assert "\n" not in message and "nobody@lab.localhost" in message and inbox.archive in message


def test_a_series_past_the_cap_is_refused_and_says_so(inbox: PublicInbox) -> None:
    with pytest.raises(SeriesError) as caught:
        lore.fetch(P1, inbox.archive, read_limit=100)
    assert str(caught.value) == (f"the series b4 fetched from {inbox.archive}/{P1}/ is larger than 100 bytes, the "
                                 "most the lab reads from a server; use a local mbox (series.mbox)")


@pytest.mark.parametrize("text", ["--help@x", "no-at-sign", "<a@b", "a@b/c", "a b@c", "http://x@y/"])
def test_what_is_not_a_message_id_is_refused_before_b4_runs(text: str) -> None:
    with pytest.raises(SeriesError, match="not a Message-ID"):
        lore.fetch(text, "http://127.0.0.1:9/x")


def test_an_archive_that_is_not_http_is_refused() -> None:
    with pytest.raises(SeriesError, match="must be an http"):
        lore.fetch(P1, "file:///etc")


def test_lab_series_show_and_fetch_by_message_id(inbox: PublicInbox, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["series", "show", f"<{P1}>", "--archive", inbox.archive]) == 0
    out = capsys.readouterr().out
    assert f"series <{P1}>: net: keep filters flowing" in out and f"with b4 {lore.b4_version()}" in out
    assert "1/2 [PATCH 1/2] net: change 1" in out
    target = tmp_path / "s.mbox"
    assert cli.main(["series", "fetch", P1, "--archive", inbox.archive, "-o", str(target)]) == 0
    assert [p.subject for p in parse_mbox(target.read_bytes(), "x")] == [
        "[PATCH 1/2] net: change 1", "[PATCH 2/2] net: change 2"]


def test_lab_series_of_an_unknown_message_id_exits_2(inbox: PublicInbox, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["series", "show", "<nobody@lab.localhost>", "--archive", inbox.archive]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lab series: error: b4 could not fetch")


def test_a_profile_series_by_message_id(inbox: PublicInbox, tmp_path: Path) -> None:
    data = {"profiles": {"p": {"series": {"lore": f"<{P1}>", "archive": inbox.archive}}},
            "scenarios": {"mirror": {"filter": "filter-mirror", "expect": {"p": "gap"}}}}
    cfg = config.parse(data, tmp_path / "lab.yaml")
    source = cfg.profiles["p"].series
    assert source is not None and source.describe() == f"lore <{P1}>"
    loaded = images.load_series(cfg, source)
    assert loaded.extra["message_id"] == f"<{P1}>" and len(loaded.patches) == 2


def test_series_lore_in_lab_yaml() -> None:
    base = {"scenarios": {"mirror": {"filter": "filter-mirror", "expect": {"p": "gap"}}}}
    default = config.parse({"profiles": {"p": {"series": {"lore": P1}}}} | base).profiles["p"].series
    assert default is not None and default.archive == "https://lore.kernel.org/qemu-devel"
    for series, where in (({"lore": "-x@y"}, "lore"), ({"lore": P1, "archive": "ftp://x"}, "archive"),
                          ({"lore": P1, "mbox": "x.mbox"}, "")):
        with pytest.raises(config.ConfigError) as caught:
            config.parse({"profiles": {"p": {"series": series}}} | base)
        assert caught.value.where == f"profiles.p.series{'.' + where if where else ''}"

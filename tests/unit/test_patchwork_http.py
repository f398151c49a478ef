"""Patchwork over HTTP: where the token may go, what is read from a server, how its refusals read.

Every server here is a local one on a loopback address (tests/patchwork_server.py answers as the real
Patchwork does); ``only_loopback`` fails a test that tries to connect anywhere else.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab import cli
from lab.upstream import series
from lab.upstream.check import CheckError
from lab.upstream.series import Patchwork, SeriesError
from tests.patchwork_server import MAINTAINER, USER, Fault, PatchworkServer
from tests.serving import Serving
from tests.unit.test_check import CHECK, TOKEN, USER_TOKEN, lab_config, poster, two_patch_series

pytestmark = pytest.mark.usefixtures("only_loopback")
CHECKS = "/api/patches/9001/checks/"


@pytest.fixture
def server() -> Iterator[PatchworkServer]:
    served = two_patch_series()
    for p in served.patches:
        p.msgid = f"<20261207.{p.id}-1-dev@example.org>"
    with PatchworkServer([served], tokens={TOKEN: MAINTAINER, USER_TOKEN: USER}) as s:
        yield s


@dataclass
class Elsewhere:
    """Another server, on another loopback address: it records every request's headers."""

    address: str = "127.0.0.2"
    headers: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen = self.headers

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._record()

            def do_POST(self) -> None:
                self._record()

            def _record(self) -> None:
                seen.append(dict(self.headers.items()))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.serving = Serving(self.address, Handler, "elsewhere")
        self.base = self.serving.base


@pytest.fixture
def elsewhere() -> Iterator[Elsewhere]:
    other = Elsewhere()
    try:
        yield other
    finally:
        other.serving.close()


def check_command(server: PatchworkServer, tmp_path: Path, *more: str) -> list[str]:
    return ["check", "900", "--patchwork", server.base, "--config", str(lab_config(tmp_path)),
            "--out", str(tmp_path / "out"), *more]


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATCHWORK_TOKEN", TOKEN)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-docker.sock'}")
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)


# --- where the token goes ----------------------------------------------------------------------------

def test_the_token_never_follows_a_redirect(server: PatchworkServer, elsewhere: Elsewhere, tmp_path: Path,
                                            token_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    location = f"{elsewhere.base}/"
    server.faults[CHECKS] = Fault(302, location=location)
    rc = cli.main(check_command(server, tmp_path))
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "redirect (HTTP 302)" in err and location in err and TOKEN not in err
    assert not any("Authorization" in h for h in elsewhere.headers), elsewhere.headers
    assert elsewhere.headers == []  # not even a GET without it: the lab stops at the redirect


def test_a_get_follows_patchworks_redirect_to_the_trailing_slash(server: PatchworkServer) -> None:
    pw = Patchwork(server.base)
    record = pw.get_json("series/900")  # no trailing slash: Patchwork answers 301
    assert record["id"] == 900
    assert [p for m, p in server.requests] == ["/api/series/900", "/api/series/900/"]


def test_the_token_goes_to_the_patchwork_server_only(server: PatchworkServer, elsewhere: Elsewhere) -> None:
    with pytest.raises(SeriesError, match=f"not on the Patchwork server {server.base}; the token is sent to that"):
        Patchwork(server.base).post_json(f"{elsewhere.base}/api/patches/9001/checks/", CHECK.body(), TOKEN)
    assert elsewhere.headers == []


def test_a_reference_on_another_server_than_the_configured_one_is_refused(server: PatchworkServer,
                                                                         elsewhere: Elsewhere) -> None:
    with pytest.raises(SeriesError, match=f"is on 127.0.0.2:.*, not on the Patchwork server {server.base}"):
        series.resolve(f"{elsewhere.base}/api/patches/9001/", server.base)
    assert server.requests == [] and elsewhere.headers == []


@pytest.mark.parametrize("base", ["http://192.0.2.10", "http://patchwork.example.org", "http://[2001:db8::1]:8000"])
def test_plain_http_with_a_token_is_refused_off_this_machine(base: str) -> None:
    # only_loopback fails the test if anything is sent: the refusal comes first.
    with pytest.raises(SeriesError, match="plain http would show the Patchwork token to the network; use the "
                                          "server's https:// URL") as caught:
        Patchwork(base).post_json("patches/9001/checks/", CHECK.body(), TOKEN)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize("base", ["http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1"])
def test_plain_http_with_a_token_goes_to_a_loopback_address(base: str) -> None:
    # Allowed: the connection is attempted (and refused, nothing listens there) or stopped by only_loopback.
    with pytest.raises((SeriesError, AssertionError)) as caught:
        Patchwork(base).post_json("patches/9001/checks/", CHECK.body(), TOKEN)
    assert "plain http" not in str(caught.value)


# --- the server's URL, and a patch's page ----------------------------------------------------------

@pytest.mark.parametrize("suffix", ["/api/", "/api", "/api/1.3/"])
def test_the_apis_own_url_as_the_server(server: PatchworkServer, suffix: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["series", "show", "900", "--patchwork", f"{server.base}{suffix}"]) == 0
    assert "series 900: [1/2] net: change 1" in capsys.readouterr().out
    assert all("/api/api/" not in path and "/api/1.3/api/" not in path for _, path in server.requests)


def test_a_patchs_web_page_by_message_id(server: PatchworkServer) -> None:
    _, info = series.resolve(f"{server.base}/project/qemu-devel/patch/20261207.9002-1-dev@example.org/")
    assert (info.id, info.patches) == (900, (9001, 9002))
    assert ("GET", "/api/patches/") in server.requests  # found through the API's msgid filter


def test_a_web_page_of_a_message_patchwork_does_not_know(server: PatchworkServer) -> None:
    with pytest.raises(SeriesError, match="Patchwork has no patch with Message-ID <nope@example.org> in project "
                                          "qemu-devel"):
        series.resolve(f"{server.base}/project/qemu-devel/patch/nope@example.org/")


# --- what is read, and quoted ----------------------------------------------------------------------

class HugeAnswer(http.server.BaseHTTPRequestHandler):
    """Answers every GET with ``SIZE`` bytes of one JSON string, or an error status with as much HTML."""

    SIZE = 40 * 2**20

    def do_GET(self) -> None:
        error = self.path.startswith("/api/series/")
        self.send_response(500 if error else 200)
        self.send_header("Content-Length", str(self.SIZE))
        self.end_headers()
        chunk = (b"<p>" + b"x" * 65533) if error else b'"' + b"x" * 65535
        try:
            for _ in range(self.SIZE // len(chunk)):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the lab stopped reading at its cap, as it should

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def huge() -> Iterator[str]:
    serving = Serving("127.0.0.1", HugeAnswer, "huge")
    try:
        yield serving.base
    finally:
        serving.close()


def test_a_huge_answer_is_cut_at_the_cap_and_says_so(huge: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["series", "show", f"{huge}/api/patches/1/"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "larger than 32 MiB, the most the lab reads from a server" in err and len(err) < 400


def test_a_huge_error_body_is_quoted_short(huge: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["series", "show", "1", "--patchwork", huge])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert f"HTTP 500: {huge}/api/series/1/: <p>xxx" in err and err.rstrip().endswith("...") and len(err) < 400


def test_a_refused_check_quotes_what_patchwork_says(server: PatchworkServer) -> None:
    refused = dataclasses.replace(CHECK, target_url="file:///home/dev/lab-results/check-1")
    with pytest.raises(CheckError) as caught:
        poster(server).post(9001, refused)
    message = str(caught.value)
    assert 'HTTP 400 {"target_url":["Enter a valid URL."]}' in message and "try again later" not in message
    assert server.checks == []


def test_an_invalid_token_is_said_to_be_wrong(server: PatchworkServer) -> None:
    with pytest.raises(CheckError) as caught:
        poster(server, token="not-a-token-patchwork-knows").post(9001, CHECK)
    message = str(caught.value)
    assert 'HTTP 403 {"detail":"Invalid token."}: the token is wrong or revoked' in message
    assert "maintainer" not in message and "not-a-token-patchwork-knows" not in message


def test_a_users_token_is_said_not_to_be_a_maintainers(server: PatchworkServer) -> None:
    with pytest.raises(CheckError) as caught:
        poster(server, token=USER_TOKEN).post(9001, CHECK)
    assert "You do not have permission to perform this action." in str(caught.value)
    assert "the token is not a maintainer's for project qemu-devel" in str(caught.value)


def post_refused(server: PatchworkServer, patch_id: int, token: str, body: dict[str, str]) -> tuple[int, object]:
    with pytest.raises(series.PatchworkHTTPError) as caught:
        Patchwork(server.base).post_json(f"patches/{patch_id}/checks/", body, token)
    return caught.value.code, json.loads(caught.value.body)


def test_the_fake_refuses_as_patchwork_does_and_in_its_order(server: PatchworkServer) -> None:
    # Each answer as the real Patchwork gave it to the same request: the token first, then the patch,
    # then the user's rights, then the fields.
    assert post_refused(server, 9001, "", CHECK.body()) == (
        403, {"detail": "Invalid token header. No credentials provided."})
    assert post_refused(server, 404404, "wrong", CHECK.body()) == (403, {"detail": "Invalid token."})
    assert post_refused(server, 404404, USER_TOKEN, CHECK.body()) == (
        404, {"detail": "No Patch matches the given query."})
    assert post_refused(server, 9001, USER_TOKEN, {}) == (
        403, {"detail": "You do not have permission to perform this action."})
    assert post_refused(server, 9001, TOKEN, {"context": "a b"}) == (400, {"state": ["A check must have a state."]})
    assert post_refused(server, 9001, TOKEN, {"state": "pending", "context": "a b"}) == (
        400, {"context": ['Enter a valid "slug" consisting of letters, numbers, underscores or hyphens.']})
    assert server.checks == []

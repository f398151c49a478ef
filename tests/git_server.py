"""A local HTTP server that serves git repositories the way a forge does: git's smart HTTP protocol
(v0 and v2, partial clone filters, fetching a commit by its hash), through `git http-backend`.

    GET  /NAME.git/info/refs?service=git-upload-pack   the ref advertisement
    POST /NAME.git/git-upload-pack                     a fetch

Only fetching is served (no push). ``address`` is where it listens: 127.0.0.1 by default; tests that
need containers (a `docker build`) to reach it pass the Docker bridge's gateway address, which is
this machine's own. Every request is recorded (method, path).
"""

from __future__ import annotations

import gzip
import http.server
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.serving import Serving

BACKEND_TIMEOUT_S = 120  # one request of git http-backend (a pack of a few hundred MB at most)


@dataclass
class GitServer:
    """Serves the bare repositories under ``root`` (``root/NAME.git``) at ``base`` (``http://ADDR:PORT``)."""

    root: Path
    address: str = "127.0.0.1"
    requests: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.serving = Serving(self.address, self._handler(), "git-http")
        self.base = self.serving.base

    def url(self, name: str) -> str:
        return f"{self.base}/{name}.git"

    def close(self) -> None:
        self.serving.close()

    def __enter__(self) -> GitServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def backend(self, method: str, path: str, query: str, headers: Any,
                body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request through `git http-backend` (CGI): status, headers, body."""
        if headers.get("Content-Encoding", "") == "gzip":
            body = gzip.decompress(body)  # git compresses large requests; http-backend takes them plain
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": method,
            "CONTENT_TYPE": headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
            # Protocol v2 is asked for in this header; http-backend reads it from the environment.
            "GIT_PROTOCOL": headers.get("Git-Protocol", ""),
            "HOME": str(self.root),  # no user configuration of this machine's applies to the server
        }
        proc = subprocess.run([shutil.which("git") or "git", "http-backend"], input=body, env=env,
                              capture_output=True, timeout=BACKEND_TIMEOUT_S, check=False)
        head, payload = _split_cgi(proc.stdout)
        status, out_headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                out_headers.append((name.strip(), value.strip()))
        if proc.returncode != 0 and not proc.stdout:
            return 500, [("Content-Type", "text/plain")], proc.stderr
        return status, out_headers, payload

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._answer("GET", b"")

            def do_POST(self) -> None:
                self._answer("POST", self._body())

            def _body(self) -> bytes:
                """The request's body: git sends a large one in chunks (past http.postBuffer)."""
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()  # the empty line after the last chunk
                        return bytes(body)
                    body += self.rfile.read(size)
                    self.rfile.readline()  # each chunk's CRLF

            def _answer(self, method: str, body: bytes) -> None:
                path, _, query = self.path.partition("?")
                server.requests.append((method, path))
                status, headers, payload = server.backend(method, path, query, self.headers, body)
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                # One request a connection: nothing a request leaves unread can be taken for the next.
                self.send_header("Connection", "close")
                self.close_connection = True
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _split_cgi(output: bytes) -> tuple[bytes, bytes]:
    """A CGI answer's headers and body (http-backend ends its headers with CRLF CRLF)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(separator)
        if found:
            return head, body
    return output, b""


def bare_copy(work: Path, root: Path, name: str) -> Path:
    """A bare clone of the repository ``work`` served as ``NAME.git``, configured as forges are: partial
    clone filters allowed, any object fetchable by its hash (what a partial clone's lazy fetch asks)."""
    bare = root / f"{name}.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", "--", str(work), str(bare)], check=True, timeout=300)
    for key, value in (("uploadpack.allowFilter", "true"), ("uploadpack.allowAnySHA1InWant", "true"),
                       ("http.receivepack", "false")):
        subprocess.run(["git", "-C", str(bare), "config", key, value], check=True, timeout=30)
    return bare

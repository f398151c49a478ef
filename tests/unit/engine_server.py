"""An engine for tests: the Docker API's archive endpoint (``GET /containers/ID/archive``) on a
local HTTP server, answered with whatever bytes a test gives, so that the lab's own code reads it
through the Docker SDK as it reads a real engine's answer. A real engine only sends the archives it
makes; this one sends any bytes, as a broken connection, a faulty engine or a hostile one would."""

from __future__ import annotations

import http.server
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.models.containers import Container

from tests.serving import Serving

API = "1.41"


@dataclass
class Archive:
    chunks: Callable[[], Iterator[bytes]]  # the body, piece by piece (it may never end)
    short_by: int = 0  # announce this many bytes more than are sent, then hang up


@dataclass
class ArchiveEngine:
    """Answers every archive request with ``archive`` (404 when None); ``asked`` lists the paths."""

    archive: Archive | None = None
    asked: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        engine = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if not path.endswith("/archive") or engine.archive is None:
                    self._answer(404, b'{"message": "No such container:path"}')
                    return
                engine.asked.append(query)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-tar")
                if engine.archive.short_by:
                    body = b"".join(engine.archive.chunks())
                    self.send_header("Content-Length", str(len(body) + engine.archive.short_by))
                    self.end_headers()
                    self.wfile.write(body)
                    self.close_connection = True
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for chunk in engine.archive.chunks():
                        if chunk:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    self.close_connection = True  # the lab stopped reading: what it must do at its cap

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._serving = Serving("127.0.0.1", Handler, "engine-archive")
        self.client = docker.DockerClient(base_url=self._serving.base.replace("http://", "tcp://"), version=API,
                                          timeout=10)

    def container(self) -> Container:
        """A host's container as the SDK knows it (its id is all the archive endpoint needs)."""
        return self.client.containers.prepare_model({"Id": "0123456789ab", "Name": "/nfcl-test-host"})

    def close(self) -> None:
        self.client.close()
        self._serving.close()

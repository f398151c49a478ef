"""An HTTP server of a test, on a free port and a thread of its own, closed with its test."""

from __future__ import annotations

import http.server
import threading


class Serving:
    """``handler`` served at ``base`` (``http://ADDRESS:PORT``) until ``close``."""

    def __init__(self, address: str, handler: type[http.server.BaseHTTPRequestHandler], name: str,
                 port: int = 0) -> None:
        self.httpd = http.server.ThreadingHTTPServer((address, port), handler)
        self.base = f"http://{address}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name=name, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

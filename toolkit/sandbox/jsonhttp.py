"""The sandbox's small JSON servers on 127.0.0.1 (task metadata, Slack): a quiet handler that
answers JSON, and the loopback server it runs in."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and answers with :meth:`send_json`."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_json(self, body: object, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def loopback_server(handler: type[JsonHandler]) -> ThreadingHTTPServer:
    """A server for ``handler`` on 127.0.0.1, on a free port, with daemon request threads."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    return httpd

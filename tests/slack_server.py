"""A local stand-in for Slack on 127.0.0.1: records every request and answers as told.

Serves both the Web API (``POST /api/chat.postMessage`` -> ``{"ok": true, "ts": ...}``) and
incoming webhooks (any other ``POST`` -> ``ok``). Queue behaviours with :meth:`SlackServer.script`:
``"ok"``, ``"invalid_blocks"`` (also answered, as Slack does, to a button URL over 3,000
characters),
``"429"`` (with ``Retry-After``), ``"500"``, ``"hang"`` (no answer until the client gives
up or the server stops; the message is not kept), ``"landed-hang"`` (the message is kept, as if
Slack accepted it, but the answer never comes), ``"slow"`` (kept, answered after
``slow_seconds``), ``"invalid_auth"`` (Web API error body), ``"api:<error>"`` (HTTP 200 with
``{"ok": false, "error": <error>}``, e.g. ``api:channel_not_found``) and ``"http:<status>"`` (that
status with a short error body, e.g. ``http:404``). Unscripted requests get ``"ok"``.

``/api/conversations.history`` and ``/api/conversations.replies`` (GET, or POST with a form body
as slack_sdk sends them) answer from the messages kept (newest first, with their ``metadata`` when
``include_all_metadata`` is set), as Slack does; they take their mode from the same script and are
recorded with method ``LOOKUP``.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


def _too_long_url(body: Any, limit: int = 3000) -> bool:
    """Whether any ``url`` in the payload is longer than Slack accepts."""
    if isinstance(body, dict):
        return any(
            (k == "url" and isinstance(v, str) and len(v) > limit) or _too_long_url(v, limit)
            for k, v in body.items()
        )
    if isinstance(body, list):
        return any(_too_long_url(v, limit) for v in body)
    return False


LANDED = ("ok", "slow", "landed-hang")  # modes in which Slack shows the message


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    answered: str
    method: str = "POST"

    @property
    def json(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}


@dataclass
class SlackServer:
    retry_after: int = 1
    hang_seconds: float = 10.0
    slow_seconds: float = 3.5
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._script: deque[str] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ts = 1700000000
        self._kept: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # silence stderr
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", "replace")
                body: Any
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {k: v[0] for k, v in parse_qs(raw).items()} or raw
                if self.path.startswith("/api/conversations."):  # slack_sdk POSTs its reads
                    self._lookup(self.path, body if isinstance(body, dict) else {})
                    return
                mode = server._next()
                if mode == "ok" and _too_long_url(body):
                    mode = "invalid_blocks"  # what Slack answers for a button URL over 3,000
                with server._lock:
                    server.requests.append(
                        Recorded(self.path, dict(self.headers.items()), body, mode)
                    )
                    ts = server._keep(self.path, body) if mode in LANDED else None
                server._answer(self, mode, ts)

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                path, _, query = self.path.partition("?")
                self._lookup(path, {k: v[0] for k, v in parse_qs(query).items()})

            def _lookup(self, path: str, params: dict[str, Any]) -> None:
                mode = server._next()
                with server._lock:
                    server.requests.append(
                        Recorded(path, dict(self.headers.items()), params, mode, "LOOKUP")
                    )
                if mode != "ok" or not path.startswith("/api/conversations."):
                    server._answer(self, mode)
                    return
                server._send(self, 200, {"ok": True, "messages": server._history(path, params)})

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- control --

    def start(self) -> SlackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def script(self, *modes: str) -> None:
        with self._lock:
            self._script.extend(modes)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/services/T000/B000/SECRETwebhookPATH"

    def messages(self) -> list[Recorded]:
        """Posts Slack accepted (what Slack shows), whether or not their answer came back."""
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.answered in LANDED]

    def lookups(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == "LOOKUP"]

    def posts(self) -> list[Recorded]:
        """Every message POST that reached the server, accepted or not."""
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    # -- internals --

    def _next(self) -> str:
        with self._lock:
            return self._script.popleft() if self._script else "ok"

    def _keep(self, path: str, body: Any) -> str | None:
        """Keep an accepted chat.postMessage (under the lock); its ts."""
        if not path.startswith("/api/chat.postMessage") or not isinstance(body, dict):
            return None
        self._ts += 1
        ts = f"{self._ts}.000100"
        self._kept.append({**body, "ts": ts})
        return ts

    def _history(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        with self._lock:
            kept = list(self._kept)
        if path.startswith("/api/conversations.replies"):
            parent = params.get("ts")
            kept = [m for m in kept if parent in (m["ts"], m.get("thread_ts"))]
        else:
            kept = [m for m in kept if not m.get("thread_ts")]
        with_meta = params.get("include_all_metadata") in ("1", "true", "True")
        return [
            {"type": "message", "ts": m["ts"], "text": m.get("text", ""),
             **({"thread_ts": m["thread_ts"]} if m.get("thread_ts") else {}),
             **({"metadata": m["metadata"]} if with_meta and m.get("metadata") else {})}
            for m in reversed(kept)
        ]

    def _answer(
        self, handler: BaseHTTPRequestHandler, mode: str, ts: str | None = None
    ) -> None:
        is_api = handler.path.startswith("/api/")
        if mode in ("hang", "landed-hang"):
            self._stop.wait(self.hang_seconds)
            return
        if mode == "slow":
            self._stop.wait(self.slow_seconds)
        if mode == "429":
            body: Any = {"ok": False, "error": "ratelimited"} if is_api else "rate_limited"
            self._send(handler, 429, body, {"Retry-After": str(self.retry_after)})
            return
        if mode == "500":
            body = {"ok": False, "error": "internal_error"} if is_api else "error"
            self._send(handler, 500, body)
            return
        if mode == "invalid_blocks":
            if is_api:
                self._send(handler, 200, {"ok": False, "error": "invalid_blocks"})
            else:
                self._send(handler, 400, "invalid_blocks")
            return
        if mode == "invalid_auth":
            self._send(handler, 200, {"ok": False, "error": "invalid_auth"})
            return
        if mode.startswith("api:"):
            self._send(handler, 200, {"ok": False, "error": mode[4:]})
            return
        if mode.startswith("http:"):
            status = int(mode[5:])
            body = {"ok": False, "error": f"http_{status}"} if is_api else "no_service"
            self._send(handler, status, body)
            return
        if is_api:
            with self._lock:
                if ts is None:
                    self._ts += 1
                    ts = f"{self._ts}.000100"
            self._send(handler, 200, {"ok": True, "channel": "C0ALERTS", "ts": ts})
        else:
            self._send(handler, 200, "ok")

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else str(body)).encode()
        try:
            handler.send_response(status)
            handler.send_header(
                "Content-Type", "application/json" if isinstance(body, dict) else "text/plain"
            )
            handler.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

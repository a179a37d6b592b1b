"""A local Slack on 127.0.0.1: ``chat.postMessage`` answered like Slack, each message kept and
shown as it would read (:meth:`SlackMessage.plain` of its blocks), with the buttons it carries
(which the sandbox's on-call presses, :mod:`toolkit.sandbox.press`). A POST anywhere else is a
``response_url`` answer to a press, kept and shown the same way."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from toolkit.alarms.messages import SlackMessage
from toolkit.sandbox.jsonhttp import JsonHandler, loopback_server


@dataclass(frozen=True)
class Posted:
    at: float  # unix time
    text: str  # the notification text
    plain: str  # the blocks as they read
    thread_ts: str | None
    ts: str
    buttons: tuple[dict[str, Any], ...] = ()  # the message's button elements (with action_id)
    channel: str = "C0SANDBOX"


def _blocks(payload: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = payload.get("blocks")
    if isinstance(blocks, str):  # form-encoded posts carry JSON strings
        blocks = json.loads(blocks)
    attachments = payload.get("attachments")
    if isinstance(attachments, str):
        attachments = json.loads(attachments)
    if not blocks and attachments:
        blocks = [b for a in attachments for b in a.get("blocks", [])]
    return list(blocks or ())


def buttons(payload: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    return tuple(e for b in _blocks(payload) if b.get("type") == "actions"
                 for e in b.get("elements", []) if e.get("action_id"))


def render(payload: dict[str, Any]) -> str:
    message = SlackMessage(str(payload.get("text", "")), tuple(_blocks(payload)))
    # as Slack shows it: mrkdwn's three escapes (&amp; &lt; &gt;) read as the characters
    shown = message.plain() or message.text
    return shown.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class LocalSlack:
    """Answers the Web API's ``chat.postMessage``; ``on_message`` sees each message."""

    def __init__(self, on_message: Callable[[Posted], None] | None = None) -> None:
        self.messages: list[Posted] = []
        self.on_message = on_message
        self._lock = threading.Lock()
        self._n = 0
        slack = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                text = raw.decode("utf-8", "replace")
                try:
                    payload = json.loads(text)
                except ValueError:
                    payload = {k: v[0] for k, v in parse_qs(text).items()}
                body = slack._post(payload if isinstance(payload, dict) else {})
                self.send_json(body)

        self._httpd = loopback_server(Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def api_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/api/"

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._n += 1
            ts = f"{int(time.time())}.{self._n:06d}"
        thread = payload.get("thread_ts")
        posted = Posted(time.time(), str(payload.get("text", "")), render(payload),
                        str(thread) if thread else None, ts, buttons(payload))
        with self._lock:
            self.messages.append(posted)
        if self.on_message is not None:
            self.on_message(posted)
        return {"ok": True, "channel": "C0SANDBOX", "ts": ts}

    def __enter__(self) -> LocalSlack:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

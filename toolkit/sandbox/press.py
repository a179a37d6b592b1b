"""The on-call presses a button of an alert: the request Slack would send, signed, to the real
Slack actions handler as a Lambda function URL event.

:func:`block_actions` is the interactivity payload Slack posts for a button press (``type``
``block_actions``, the user, the alert's channel and ``ts``, the ``response_url``, the pressed
element with its ``action_id``, ``value`` and ``action_ts``); :func:`function_url_event` wraps a
form body as Lambda delivers it (payload format 2.0, base64 or plain) with Slack's
``X-Slack-Signature`` and ``X-Slack-Request-Timestamp`` computed by ``slack_sdk``.
:class:`OnCall` uses both to press an alert's button and waits for the handler's job. The tests
build their requests with the same functions.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from toolkit.alarms.buttons import ACTION_REDEPLOY, ACTION_STOP_TASKS

__all__ = ["ONCALL", "OnCall", "Pressed", "block_actions", "function_url_event", "on_call",
           "press_due", "sign"]

ONCALL = "U0SANDBOX"  # the sandbox on-call's Slack user ID: its SLACK_ALLOWED_USERS


def sign(secret: str, timestamp: int, body: str) -> str:
    """Slack's ``X-Slack-Signature`` of ``body`` sent at ``timestamp``."""
    from slack_sdk.signature import SignatureVerifier

    signature = SignatureVerifier(secret).generate_signature(timestamp=str(timestamp), body=body)
    assert signature is not None
    return signature


def block_actions(
    button: Mapping[str, Any], *, user: str, channel: str, message_ts: str, response_url: str,
    team: str = "T0SANDBOX", action_ts: str | None = None,
) -> dict[str, Any]:
    """The ``block_actions`` payload of a press of ``button`` (a Block Kit button element)."""
    return {
        "type": "block_actions", "team": {"id": team, "domain": "sandbox"},
        "user": {"id": user, "username": "on-call", "name": "on-call", "team_id": team},
        "api_app_id": "A0CELERYECS", "token": "legacy-verification-token-unused",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                      "is_ephemeral": False},
        "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}",
        "channel": {"id": channel, "name": "alerts"},
        "message": {"type": "message", "ts": message_ts, "text": ""},
        "response_url": response_url,
        "actions": [{
            "type": "button", "block_id": "celery-ecs-actions",
            "action_id": button.get("action_id"), "value": button.get("value"),
            "text": button.get("text"), "action_ts": action_ts or f"{time.time():.6f}",
        }],
    }


def function_url_event(
    payload: Mapping[str, Any] | str, secret: str | None, *, timestamp: int | None = None,
    encode: bool = True, signature: str | None = None,
) -> dict[str, Any]:
    """A function URL event of the form post ``payload=<JSON>`` (or the raw ``payload`` body),
    signed with ``secret`` at ``timestamp`` (now); ``secret=None`` sends no signature headers,
    ``signature`` overrides the one computed."""
    body = payload if isinstance(payload, str) else urlencode({"payload": json.dumps(payload)})
    stamp = int(time.time()) if timestamp is None else timestamp
    headers = {"content-type": "application/x-www-form-urlencoded",
               "user-agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
               "host": "abc123.lambda-url.eu-west-1.on.aws"}
    if secret is not None:
        headers["x-slack-request-timestamp"] = str(stamp)
        headers["x-slack-signature"] = signature or sign(secret, stamp, body)
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous", "apiId": "abc123", "domainName":
            "abc123.lambda-url.eu-west-1.on.aws", "requestId": str(uuid.uuid4()),
            "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": headers["user-agent"]},
            "timeEpoch": stamp * 1000,
        },
        "body": base64.b64encode(body.encode()).decode() if encode else body,
        "isBase64Encoded": encode,
    }


@dataclass(frozen=True)
class Pressed:
    at: float  # when the button was pressed (the caller's clock)
    label: str
    status: int
    ack_ms: float  # from the request to the handler's answer; the job runs on after it


class OnCall:
    """The sandbox's on-call: ``delay`` seconds after the first alert carrying the button
    ``wanted`` arrives, presses it as ``user`` through ``handler`` (the loaded Lambda module's
    ``handler``); ``wait(timeout)`` blocks until the handler's job is done (its deferrer)."""

    def __init__(self, handler: Callable[[dict[str, Any], Any], dict[str, Any]], secret: str,
                 user: str, response_url: str, wait: Callable[[float], bool], *,
                 wanted: str = ACTION_REDEPLOY, delay: float = 1.0) -> None:
        self.handler, self.secret, self.user = handler, secret, user
        self.response_url, self.wait = response_url, wait
        self.wanted, self.delay = wanted, delay
        self._due: tuple[float, Mapping[str, Any], str, str] | None = None
        self.pressed: Pressed | None = None

    def saw(self, t: float, buttons: tuple[Mapping[str, Any], ...], channel: str,
            ts: str) -> None:
        """A message reached Slack at ``t``: remember its button, if it is the one wanted."""
        button = next((b for b in buttons if b.get("action_id") == self.wanted), None)
        if button is not None and self._due is None and self.pressed is None:
            self._due = (t + self.delay, button, channel, ts)

    def tick(self, t: float) -> Pressed | None:
        """Press the button once its time has come (the answer, not the job: see ``wait``);
        what happened, else ``None``."""
        if self._due is None or t < self._due[0]:
            return None
        _, button, channel, ts = self._due
        self._due = None
        self.pressed = self.press(button, channel=channel, message_ts=ts, at=t)
        return self.pressed

    def press(self, button: Mapping[str, Any], *, channel: str, message_ts: str,
              at: float = 0.0) -> Pressed:
        payload = block_actions(button, user=self.user, channel=channel, message_ts=message_ts,
                                response_url=self.response_url)
        event = function_url_event(payload, self.secret)
        started = time.perf_counter()
        answer = self.handler(event, None)
        ack_ms = (time.perf_counter() - started) * 1000
        label = str((button.get("text") or {}).get("text", button.get("action_id")))
        return Pressed(at, label, int(answer.get("statusCode", 0)), ack_ms)


def on_call(scenario: str, slack_url: str, secret: str, load: Callable[[str], Any]) -> OnCall:
    """The sandbox's on-call for ``scenario``, pressing through the Slack actions handler module
    ``load("slack_actions")`` gives (loaded fresh; its job runs in a thread, joined by ``wait``)."""
    module = load("slack_actions")
    return OnCall(module.handler, secret, ONCALL, f"{slack_url}actions/T0SANDBOX/1/response",
                  lambda timeout: bool(module.app().deferrer.join(timeout)),
                  wanted=ACTION_STOP_TASKS if scenario == "partial" else ACTION_REDEPLOY)


def press_due(oncall: OnCall, timeline: Any, t: float, view: Any) -> None:
    """Press when it is time: the ``pressed`` event, then wait for the job (its reply)."""
    pressed = oncall.tick(t)
    if pressed is None:
        return
    view.event(timeline.add(pressed.at, "pressed", (
        f'the on-call presses "{pressed.label}" on the alert: a signed request to '
        f"lambdas/slack_actions/handler.py, answered {pressed.status} in {pressed.ack_ms:.0f} ms; "
        "its job re-checks the guards, acts and replies in the thread")))
    if not oncall.wait(20.0):
        view.event(timeline.add(t, "press-timeout", "the press's job did not finish in 20 s"))

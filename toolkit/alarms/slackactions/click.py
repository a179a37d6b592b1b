"""One button press, read from Slack's ``block_actions`` payload (after its signature held).

Slack posts ``payload=<JSON>`` form-encoded. :func:`parse_click` keeps what the handler needs:
who pressed (``user.id``), which celery-ecs button (``action_id``), its value (decoded by
:meth:`~toolkit.alarms.buttons.ButtonValue.decode`, or why it could not be), where the alert is
(channel and message ``ts``: the thread for the reply) and the ``response_url``. A value that
cannot be read still makes a :class:`Click`, so that the person is told why nothing happens.

:attr:`Click.key` names the press itself (team, user, button, ``action_ts``, message): a request
delivered twice (a retry, a replay within Slack's 5 minutes) has the same key and is done once; a
second press of the same button is another press, which the remediation guards refuse.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs

from toolkit.alarms.buttons import ACTION_IDS, ActionId, ButtonValue

__all__ = ["Click", "parse_click"]

_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")
_TS = re.compile(r"\d{1,12}\.\d{1,9}")
_CHANNEL = re.compile(r"[CGD][A-Z0-9]{2,20}")


@dataclass(frozen=True)
class Click:
    action: ActionId
    user: str  # Slack user ID (checked: U... or W...)
    user_name: str
    team: str
    action_ts: str
    channel: str | None = None
    message_ts: str | None = None  # the alert's ts: replies go in its thread
    response_url: str | None = field(default=None, repr=False)
    value: ButtonValue | None = None
    value_error: str | None = None

    @property
    def key(self) -> str:
        raw = "|".join((self.team, self.user, self.action, self.action_ts,
                        self.message_ts or "", self.channel or ""))
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def to_job(self) -> dict[str, Any]:
        data = asdict(self)
        data["value"] = None if self.value is None else {
            "alarm": self.value.alarm, "cluster": self.value.cluster,
            "service": self.value.service, "tasks": list(self.value.tasks)}
        return data

    @classmethod
    def from_job(cls, data: dict[str, Any]) -> Click:
        """The click :meth:`to_job` wrote (the deferred job); :class:`ValueError` if not one."""
        try:
            value = data.get("value")
            action = data["action"]
            if action not in ACTION_IDS:
                raise ValueError(f"unknown action {action!r}")
            return cls(
                action=cast(ActionId, action), user=str(data["user"]),
                user_name=str(data.get("user_name") or ""), team=str(data.get("team") or ""),
                action_ts=str(data["action_ts"]), channel=data.get("channel"),
                message_ts=data.get("message_ts"), response_url=data.get("response_url"),
                value=None if not isinstance(value, dict) else ButtonValue(
                    str(value["alarm"]), str(value["cluster"]), str(value["service"]),
                    tuple(str(t) for t in value.get("tasks") or ())),
                value_error=data.get("value_error"),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a click job ({type(exc).__name__})") from None


def _text(data: object, *path: str) -> str | None:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data if isinstance(data, str) else None


def parse_click(body: bytes) -> Click | str:
    """The press in a signed interactivity ``body``, or why it is not one the handler takes."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=False)
        payload = json.loads(form["payload"][0])
    except (UnicodeDecodeError, KeyError, IndexError, ValueError):
        return "not an interactivity payload (no payload=<JSON>)"
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        kind = payload.get("type") if isinstance(payload, dict) else None
        return f"an interaction of type {str(kind)[:40]!r}, not block_actions"
    actions = payload.get("actions")
    ours = [a for a in actions if isinstance(a, dict) and a.get("action_id") in ACTION_IDS] if (
        isinstance(actions, list)) else []
    if not ours:
        return "no celery-ecs button in the payload"
    action = ours[0]
    user = _text(payload, "user", "id") or ""
    if not _USER_ID.fullmatch(user):
        return "the payload names no Slack user ID"
    action_ts = _text(action, "action_ts") or ""
    if not _TS.fullmatch(action_ts):
        return "the action has no action_ts"
    channel = _text(payload, "container", "channel_id") or _text(payload, "channel", "id")
    message_ts = (_text(payload, "message", "thread_ts") or _text(payload, "container",
                  "message_ts") or _text(payload, "message", "ts"))
    value: ButtonValue | None = None
    error: str | None = None
    try:
        value = ButtonValue.decode(action.get("value"))
    except ValueError as exc:
        error = str(exc)
    return Click(
        action=cast(ActionId, action["action_id"]), user=user,
        user_name=(_text(payload, "user", "username") or _text(payload, "user", "name") or "")[:80],
        team=(_text(payload, "team", "id") or "")[:40], action_ts=action_ts,
        channel=channel if channel and _CHANNEL.fullmatch(channel) else None,
        message_ts=message_ts if message_ts and _TS.fullmatch(message_ts) else None,
        response_url=_text(payload, "response_url"), value=value, value_error=error,
    )

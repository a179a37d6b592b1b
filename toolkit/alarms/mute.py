"""Mute: an alarm the on-call silenced from its alert ("Mute 1 h").

The Slack actions handler writes ``mute#<alarm name>`` to the state table (the same
``STATE_TABLE`` as the alarm handler: a mute needs it); the alarm handler reads it before
anything else for that alarm and, while it lasts, neither posts nor remediates (``muted`` in its
log line). The record says who muted it, when, and until when; DynamoDB's TTL deletes it some
time after, so the reader compares ``until`` itself. A state table that cannot be read mutes
nothing: an alert is better than a silence nobody chose.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from toolkit.alarms.state import StateStore
from toolkit.errors import ToolkitError

__all__ = ["Mute", "mute_key", "read_mute", "write_mute"]

log = logging.getLogger("toolkit.alarms.responder")

TTL_EXTRA = timedelta(minutes=10)  # the record outlives the mute by this much


def mute_key(alarm: str) -> str:
    return f"mute#{alarm}"


@dataclass(frozen=True)
class Mute:
    alarm: str
    by: str  # the Slack user ID who pressed "Mute 1 h"
    at: datetime
    until: datetime

    def active(self, now: datetime) -> bool:
        return now < self.until

    def to_dict(self) -> dict[str, str]:
        return {"alarm": self.alarm, "by": self.by, "at": self.at.isoformat(),
                "until": self.until.isoformat()}

    @classmethod
    def from_dict(cls, data: object) -> Mute:
        if not isinstance(data, dict):
            raise ValueError("a mute record is a JSON object")
        try:
            return cls(str(data["alarm"]), str(data["by"]), datetime.fromisoformat(data["at"]),
                       datetime.fromisoformat(data["until"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed mute record ({exc})") from None


def read_mute(state: StateStore, alarm: str, now: datetime) -> Mute | None:
    """The mute of ``alarm`` in force at ``now``, else ``None``; never raises."""
    try:
        raw = state.get_record(mute_key(alarm))
    except ToolkitError as exc:
        log.error(json.dumps({"event": "state_unavailable", "error": str(exc),
                              "reading": "mute"}))
        return None
    if raw is None:
        return None
    try:
        mute = Mute.from_dict(raw)
    except ValueError as exc:
        log.warning(json.dumps({"event": "mute_malformed", "alarm": alarm[:200],
                                "error": str(exc)}))
        return None
    return mute if mute.active(now) and mute.alarm == alarm else None


def write_mute(state: StateStore, mute: Mute) -> None:
    """Record ``mute`` (a :class:`~toolkit.errors.ToolkitError` when the store fails)."""
    state.put_record(mute_key(mute.alarm), mute.to_dict(), mute.at,
                     mute.until - mute.at + TTL_EXTRA)

"""Escalate, don't go quiet: a remediating alarm back within the cooldown of our own remedy.

After a forced deployment (or stopped tasks) the alarm often goes OK while new tasks start; if it
comes back within ``COOLDOWN_SECONDS``, the remedy did not work (a poison message, a broken
dependency, a bad release) and another one would loop. The decision is then ``still-stuck``: no
further automatic action until the cooldown ends, and a follow-up that says what was done and
when and mentions ``SLACK_ESCALATION_MENTION``.

What was done is the remedy record (``remedy#<cluster>/<service>`` in the state store, written
after every remedy); without it (a new container and no ``STATE_TABLE``) the service's
``celery-ecs:remediated-at`` tag still says when. Pure: the remediator reads and writes the
record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from toolkit.alarms.decision import Decision, Target

__all__ = ["REMEDY_TTL_EXTRA", "remedy_entry", "remedy_key", "still_stuck"]

REMEDY_TTL_EXTRA = timedelta(hours=1)  # the record outlives the cooldown by this much
TAG_RESOLUTION = timedelta(seconds=1)  # the remediated-at tag is in whole seconds


def remedy_key(target: Target) -> str:
    return f"remedy#{target}"


def remedy_entry(decision: Decision, alarm_at: datetime | None = None) -> dict[str, Any]:
    """What to remember of a performed remedy (the record's ``data``); ``alarm_at`` is the time
    of the state change it answered."""
    details = decision.details
    return {
        "alarm_at": alarm_at.isoformat() if alarm_at else None,
        "action": decision.action,
        "remedy": decision.remedy,
        "at": decision.at.isoformat() if decision.at else None,
        "alarm": decision.alarm,
        "deployment": details.get("deployment"),
        "tasks": list(details.get("stopped") or []),
    }


def _hhmm(when: datetime) -> str:
    return f"{when:%H:%M} UTC"


def _since(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60} min" if seconds >= 120 else f"{seconds} s"


def _iso(raw: object) -> datetime | None:
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(raw)
    return None


def still_stuck(
    alarm_at: datetime | None, last_at: datetime | None, last: Mapping[str, Any] | None,
    cooldown_seconds: int, now: datetime,
) -> tuple[str, dict[str, Any]] | None:
    """The ``still-stuck`` reason and details when the alarm's state change (``alarm_at``) came
    after our last remedy and within its cooldown; else ``None``. ``last_at`` is the service's
    remediated-at tag (whole seconds), ``last`` the remedy record when there is one (exact, with
    the time of the state change it answered). A copy of the state change that caused the remedy
    (an SNS duplicate, the other route) is not the alarm coming back: plain ``cooldown``."""
    if alarm_at is None:
        return None
    answered = _iso(last.get("alarm_at")) if last else None
    last_at = (_iso(last.get("at")) if last else None) or last_at
    if last_at is None:
        return None
    if answered is not None:
        if alarm_at <= answered:
            return None
    elif alarm_at <= last_at + TAG_RESOLUTION:
        return None
    age = (now - last_at).total_seconds()
    if not 0 <= age < cooldown_seconds:
        return None
    until = last_at + timedelta(seconds=cooldown_seconds)
    action = (last or {}).get("action")
    tasks = [t for t in (last or {}).get("tasks") or [] if isinstance(t, str)]
    if action == "stopped":
        done = f"stopped {len(tasks)} stuck task(s)"
    elif action == "deployed":
        done = "forced a new deployment"
    else:
        done = "acted (forced a deployment or stopped tasks)"
    reason = (
        f"still stuck {_since(age)} after the handler {done} at {_hhmm(last_at)}; no further "
        f"automatic action until {_hhmm(until)} (COOLDOWN_SECONDS={cooldown_seconds})"
    )
    details: dict[str, Any] = {
        "last_action": action or "unknown", "last_at": last_at.isoformat(),
        "until": until.isoformat(),
    }
    for key in ("alarm", "deployment"):
        if isinstance((last or {}).get(key), str):
            details[f"last_{key}"] = (last or {})[key]
    if tasks:
        details["last_tasks"] = tasks
    return reason, details

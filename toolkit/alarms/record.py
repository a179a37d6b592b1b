"""The record of one state change (``outcome#<event>``): what is done and what is still owed.

Written as the work happens, read by every delivery of the same state change (the first,
Lambda's retries, SNS duplicates, the other route), which does only what it still owes:

* ``alert``: ``owed`` | ``posted`` | ``maybe`` (sent, answer lost: never sent again) | ``failed``;
  ``alert_look``: a retry looks for it in Slack before posting (bot token);
* ``remediation``: ``pending`` | ``deploying`` (the ECS action was about to start) | ``retry`` |
  ``done``; ``decision``: the decision to report; ``noted_retry``: the first retryable failure
  was reported already;
* ``follow_up``: ``none`` | ``owed`` | ``posted`` | ``maybe`` | ``failed`` (and ``follow_up_look``);
* ``thread``: the alert's Slack ``ts``; ``attempts``: deliveries that worked on it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from toolkit.alarms.decision import Decision

__all__ = ["MAX_ATTEMPTS", "OPEN", "RECORD_TTL", "decision_of", "new_record", "owed_parts"]

RECORD_TTL = timedelta(days=1)  # how long a state change's record (and de-duplication) lasts
MAX_ATTEMPTS = 3  # Lambda's first delivery and its two retries
OPEN = ("pending", "deploying", "retry")


def new_record() -> dict[str, Any]:
    return {"alert": "owed", "remediation": "pending", "follow_up": "none", "thread": None,
            "decision": None, "attempts": 0, "noted_retry": False, "alert_look": False,
            "follow_up_look": False}


def owed_parts(record: dict[str, Any]) -> tuple[str, ...]:
    """What the record still owes: ``alert``, ``remediation``, ``follow_up``."""
    parts = []
    if record.get("alert") == "owed":
        parts.append("alert")
    if record.get("remediation") in OPEN:
        parts.append("remediation")
    if record.get("follow_up") == "owed":
        parts.append("follow_up")
    return tuple(parts)


def decision_of(raw: object) -> Decision | None:
    """The decision stored in a record (``Decision.to_log``), or ``None``."""
    if not isinstance(raw, dict):
        return None
    try:
        return Decision.from_log(raw)
    except (TypeError, ValueError):
        return None

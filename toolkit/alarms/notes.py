"""Slack follow-ups, threaded under the alert: what remediation did or why it did not, and the
escalation when a stuck service is back within the cooldown of our own remedy. Pure.

Everything that can carry text from an alarm or the state table (target, reason, task ids) is
escaped; the escalation's mention comes from ``SLACK_ESCALATION_MENTION`` (checked against
Slack's mention syntax when the settings are read) and is the only markup not escaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from toolkit.alarms.decision import Decision
from toolkit.alarms.messages import SlackMessage, cut_text, esc
from toolkit.alarms.why import task_id

__all__ = ["VISIBILITY_NOTE", "broadcast", "decision_message"]

VISIBILITY_NOTE = (
    "Tasks the old worker had reserved go back to the queue only after the broker's visibility "
    "timeout (1 hour by default on Redis), so they run late, not never."
)
RUNBOOK_STILL_STUCK = "runbook: *Still stuck after a forced deployment*"


def broadcast(decision: Decision) -> bool:
    """Whether the follow-up is also shown in the channel (the escalation is)."""
    return decision.code == "still-stuck"


def _ids(arns: object) -> str:
    found = [a for a in arns if isinstance(a, str)] if isinstance(arns, list) else []
    return ", ".join(f"`{esc(task_id(a))}`" for a in found[:10]) or "none"


def _parse(raw: object) -> datetime | None:
    if isinstance(raw, str):
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            return None
    return None


def _when(raw: object) -> str:
    when = _parse(raw)
    return f"{when:%H:%M} UTC" if when is not None else "?"


def _minutes(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60} min" if seconds >= 120 else f"{seconds} s"


def _escalation(decision: Decision, target: str, mention: str | None) -> tuple[str, str, str]:
    details: Mapping[str, Any] = decision.details
    if details.get("last_action") == "stopped":
        head = f":warning: Still stuck after stopping its stuck tasks: {target}."
        done = f"The handler stopped {_ids(details.get('last_tasks'))}"
    elif details.get("last_action") == "deployed":
        head = f":warning: Still stuck after a forced deployment: {target}."
        done = "The handler forced a new deployment" + (
            f" (`{esc(details['last_deployment'])}`)" if details.get("last_deployment") else ""
        )
    else:  # only the service's remediated-at tag says it (no remedy record in this container)
        head = f":warning: Still stuck after a forced deployment: {target}."
        done = "The handler acted (forced a deployment or stopped tasks)"
    alarm = details.get("last_alarm")
    back = ""
    last = _parse(details.get("last_at"))
    if last is not None and decision.at is not None:
        back = f" {_minutes((decision.at - last).total_seconds())} later"
    body = (
        f"{done} at {_when(details.get('last_at'))}"
        + (f" for `{esc(alarm)}`" if alarm else "")
        + f", and the alarm is back{back}: the remedy did not work (a poison message, a broken "
        "dependency, a bad release?) and a person is needed. No further automatic action until "
        f"{_when(details.get('until'))} (the cooldown). See the {RUNBOOK_STILL_STUCK}."
    )
    return (f"{mention} {head}" if mention else head), body, "#E01E5A"


def _texts(decision: Decision, mention: str | None) -> tuple[str, str, str]:
    """Headline, body and colour of the follow-up for ``decision``."""
    target = f"`{esc(decision.target)}`" if decision.target else "the service"
    reason = esc(decision.reason)
    stop = decision.remedy == "stop-tasks"
    verb = f"stop the stuck tasks of {target}" if stop else f"redeploy {target}"
    refuse = f"Not stopping tasks of {target}" if stop else f"Not redeploying {target}"
    details = decision.details
    if decision.code == "still-stuck":
        return _escalation(decision, target, mention)
    if decision.action == "deployed":
        return (f":recycle: Forced a new deployment of {target}.",
                f"ECS is replacing the tasks. {VISIBILITY_NOTE}", "#36C5F0")
    if decision.action == "stopped":
        held = details.get("held_back")
        return (
            f":octagonal_sign: Stopped {len(details.get('stopped') or [])} stuck task(s) of "
            f"{target}: {_ids(details.get('stopped'))}.",
            "ECS starts a replacement for each; the other tasks keep working."
            + (f" Held back for now (at most running - 1 at once): {_ids(held)}." if held else "")
            + f" {VISIBILITY_NOTE}",
            "#36C5F0",
        )
    if decision.action == "dry-run":
        what = f"stop {_ids(details.get('stop'))} of {target}" if stop else (
            f"force a new deployment of {target}")
        return (f":test_tube: Dry run: would {what}.",
                "All guards pass. Set REMEDIATION=enabled to let the handler act.", "#ECB22E")
    if decision.code == "misconfigured":
        return (f":gear: {refuse}: the handler is misconfigured: {reason}.",
                f"Fix the setting named above (see the runbook); {verb} by hand meanwhile.",
                "#E01E5A")
    if decision.code == "no-evidence":
        return (f":mag: {refuse}: the live datapoints do not show it stuck: {reason}.",
                "An alarm's state alone proves nothing (a test, a forged reason, a service that "
                "recovered). Look at the dashboard; act by hand if it is stuck.", "#9E9E9E")
    if decision.action == "failed" and decision.retryable:
        return (f":hourglass_flowing_sand: Could not {verb} yet: {reason}.",
                "The handler will try again (Lambda retries the event); a later note in this "
                "thread says how it ended.", "#ECB22E")
    if decision.action == "failed":
        how = ("`aws ecs stop-task --cluster C --task T`" if stop
               else "`celery-ecs remediate --cluster C --service S`")
        return (f":warning: Could not {verb}: {reason}.",
                f"{'Stop them' if stop else 'Redeploy'} by hand: {how} (see the runbook).",
                "#E01E5A")
    return (f":no_entry_sign: {refuse}: {reason}.",
            "See the runbook for what to check by hand.", "#9E9E9E")


def decision_message(decision: Decision, *, mention: str | None = None,
                     key: str | None = None) -> SlackMessage:
    """The follow-up: what remediation did or why it did not; for ``still-stuck``, the
    escalation (with ``mention``, shown in the channel too)."""
    head, body, color = _texts(decision, mention)
    blocks: tuple[Mapping[str, Any], ...] = (
        {"type": "section", "text": {"type": "mrkdwn", "text": cut_text(f"{head}\n{body}", 2900)}},
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"remediation: {decision.code} · mode {decision.mode}"}
            ],
        },
    )
    if decision.code == "still-stuck":  # top-level blocks: the mention notifies from there
        return SlackMessage(text=cut_text(head.replace("`", ""), 300), blocks=blocks, key=key)
    return SlackMessage(text=cut_text(head.replace("`", ""), 300), blocks=blocks, color=color,
                        key=key)

"""What the Slack actions handler says after a press, built by pure functions.

In the alert's thread, for everyone (the channel is the audit trail people read): "Redeployed by
@user at 10:42 UTC", "Stuck tasks stopped by ...", "Dry run ...", "Muted by ... until 11:42 UTC",
or why nothing was done and what to do instead. To a person who may not press, an ephemeral
refusal only they see. Everything taken from the payload or the decision is escaped; the only
markup not escaped is the presser's mention, built from a checked user ID.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from toolkit.alarms.decision import Decision
from toolkit.alarms.messages import SlackMessage, cut_text, esc
from toolkit.alarms.mute import Mute
from toolkit.alarms.notes import VISIBILITY_NOTE
from toolkit.alarms.why import task_id
from toolkit.env import ENV_SLACK_ALLOWED_USERS

__all__ = ["decision_reply", "mute_reply", "not_allowed", "refusal_reply"]

_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")


def _who(user: str) -> str:
    return f"<@{user}>" if _USER_ID.fullmatch(user) else f"`{esc(user)}`"


def _at(when: datetime) -> str:
    return f"{when:%H:%M} UTC"


def _ids(arns: object) -> str:
    found = [a for a in arns if isinstance(a, str)] if isinstance(arns, list) else []
    return ", ".join(f"`{esc(task_id(a))}`" for a in found[:10]) or "none"


def _message(head: str, body: str, context: str, color: str) -> SlackMessage:
    blocks: tuple[Mapping[str, Any], ...] = (
        {"type": "section", "text": {"type": "mrkdwn", "text": cut_text(f"{head}\n{body}", 2900)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": cut_text(context, 300)}]},
    )
    return SlackMessage(text=cut_text(head.replace("`", ""), 300), blocks=blocks, color=color)


def decision_reply(decision: Decision, user: str, now: datetime) -> SlackMessage:
    """What a redeploy or stop press did, or why it did nothing."""
    who, at = _who(user), _at(now)
    target = f"`{esc(decision.target)}`" if decision.target else "the service"
    stop = decision.remedy == "stop-tasks"
    details = decision.details
    context = f"slack action: {decision.code} · mode {decision.mode} · by {who}"
    if decision.action == "deployed":
        return _message(f":recycle: Redeployed by {who} at {at}: forced a new deployment of "
                        f"{target}.", f"ECS is replacing the tasks. {VISIBILITY_NOTE}", context,
                        "#36C5F0")
    if decision.action == "stopped":
        held = details.get("held_back")
        return _message(
            f":octagonal_sign: Stuck tasks stopped by {who} at {at}: "
            f"{_ids(details.get('stopped'))} of {target}.",
            "ECS starts a replacement for each; the other tasks keep working."
            + (f" Held back (at most running - 1 at once): {_ids(held)}." if held else ""),
            context, "#36C5F0")
    if decision.action == "dry-run":
        what = f"stop {_ids(details.get('stop'))} of {target}" if stop else (
            f"force a new deployment of {target}")
        return _message(f":test_tube: Dry run, pressed by {who} at {at}: would {what}.",
                        "All guards pass; REMEDIATION=dry-run, so nothing was done.", context,
                        "#ECB22E")
    verb = f"stop the stuck tasks of {target}" if stop else f"redeploy {target}"
    if decision.action == "failed":
        how = ("`aws ecs stop-task --cluster C --task T`" if stop
               else "`celery-ecs remediate --cluster C --service S`")
        return _message(f":warning: Could not {verb} for {who} ({at}): {esc(decision.reason)}.",
                        ("Press again in a minute, or act" if decision.retryable else "Act")
                        + f" by hand: {how} (see the runbook).", context, "#E01E5A")
    refuse = f"Not stopping tasks of {target}" if stop else f"Not redeploying {target}"
    return _message(f":no_entry_sign: {refuse} (pressed by {who} at {at}): "
                    f"{esc(decision.reason)}.", "Nothing was done. See the runbook, *Slack "
                    "buttons*, for what each refusal means.", context, "#9E9E9E")


def mute_reply(mute: Mute, user: str, now: datetime, *, already: bool) -> SlackMessage:
    """The mute taken (or the one already in force, which a press does not extend)."""
    alarm = f"`{esc(mute.alarm)}`"
    context = f"slack action: mute · by {_who(user)}"
    if already:
        return _message(f":mute: Already muted by {_who(mute.by)} until {_at(mute.until)} "
                        f"(pressed again by {_who(user)} at {_at(now)}): nothing changed.",
                        f"The handler neither posts nor remediates {alarm} until then.",
                        context, "#9E9E9E")
    minutes = round((mute.until - mute.at).total_seconds() / 60)
    span = "1 h" if minutes == 60 else f"{minutes} min"
    return _message(f":mute: Muted by {_who(user)} at {_at(now)} for {span}: until "
                    f"{_at(mute.until)} the handler neither posts nor remediates {alarm}.",
                    "A new alarm of it in that time stays silent, its remedy too; after it, "
                    "alerts and remediation resume on their own.", context, "#9E9E9E")


def refusal_reply(what: str, user: str, now: datetime, reason: str) -> SlackMessage:
    """A press refused before any remedy was tried (an unreadable button, another
    environment's alarm, a misconfigured handler)."""
    return _message(f":no_entry_sign: Not acting on {esc(what)} (pressed by {_who(user)} at "
                    f"{_at(now)}): {esc(reason)}.", "Nothing was done.",
                    f"slack action: refused · by {_who(user)}", "#9E9E9E")


def not_allowed(user: str) -> dict[str, Any]:
    """The ephemeral refusal (``response_url``) to a person not in SLACK_ALLOWED_USERS."""
    return {
        "response_type": "ephemeral", "replace_original": False,
        "text": (f":lock: {_who(user)}, you may not use these buttons: your Slack user ID is not "
                 f"in {ENV_SLACK_ALLOWED_USERS} of the celery-ecs Slack actions. Nothing was "
                 "done. Ask the on-call, or follow the runbook by hand."),
    }

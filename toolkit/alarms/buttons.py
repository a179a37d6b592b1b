"""The alert's buttons (bot-token alerts only): what they say and what their value carries. Pure.

A ``WorkerStuck`` alert gets "Redeploy now", a ``WorkersStuck`` alert "Stop stuck tasks" (when the
collector's verdict record names the tasks), both get "Mute 1 h". Incoming webhooks cannot
receive actions, so a webhook alert has none. A press reaches ``lambdas/slack_actions/handler.py``
(:mod:`toolkit.alarms.slackactions`), which re-checks every guard server-side.

The button's ``value`` (:class:`ButtonValue`, at most 2,000 characters as Slack allows) names the
alarm, the service, its cluster and, for a stop, the task ARNs the alert showed. It is a hint of
what the person saw, never a reason to act: whoever reads it back treats every field as untrusted
text, and :meth:`ButtonValue.decode` refuses anything that is not exactly this shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from toolkit.alarms.decision import Decision
from toolkit.alarms.events import AlarmEvent
from toolkit.alarms.guards import RemediationPolicy, remediating_input, remedy_of, target_from_alarm
from toolkit.alarms.messages import cut_text, esc

__all__ = [
    "ACTION_IDS", "ACTION_MUTE", "ACTION_REDEPLOY", "ACTION_STOP_TASKS", "BLOCK_ID", "MUTE_SECONDS",
    "ActionId", "ButtonValue", "alert_buttons",
]

ActionId = Literal["celery-ecs-redeploy", "celery-ecs-stop-tasks", "celery-ecs-mute"]
ACTION_REDEPLOY: Final = "celery-ecs-redeploy"
ACTION_STOP_TASKS: Final = "celery-ecs-stop-tasks"
ACTION_MUTE: Final = "celery-ecs-mute"
ACTION_IDS: tuple[ActionId, ...] = (ACTION_REDEPLOY, ACTION_STOP_TASKS, ACTION_MUTE)
BLOCK_ID = "celery-ecs-actions"
MUTE_SECONDS = 3600
MAX_VALUE = 2000  # Slack's limit on a button's value
MAX_NAME = 255  # ECS names are at most 255 characters; alarm names too
MAX_ARN = 2048
MAX_TASKS = 20
VERSION = 1


@dataclass(frozen=True)
class ButtonValue:
    """What a button names: the alarm, its service and cluster, the tasks shown (stop only)."""

    alarm: str
    cluster: str
    service: str
    tasks: tuple[str, ...] = ()

    def encode(self) -> str:
        """Compact JSON, within :data:`MAX_VALUE` (tasks dropped from the end to fit)."""
        tasks = list(self.tasks[:MAX_TASKS])
        while True:
            text = json.dumps({"v": VERSION, "a": self.alarm, "c": self.cluster,
                               "s": self.service, "t": tasks}, separators=(",", ":"))
            if len(text) <= MAX_VALUE or not tasks:
                return text
            tasks.pop()

    @classmethod
    def decode(cls, raw: object) -> ButtonValue:
        """The value as :meth:`encode` wrote it; :class:`ValueError` for anything else."""
        if not isinstance(raw, str) or len(raw) > MAX_VALUE:
            raise ValueError("the button value is not a string of at most 2,000 characters")
        try:
            data = json.loads(raw)
        except ValueError:
            raise ValueError("the button value is not JSON") from None
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise ValueError("the button value is not a celery-ecs value (version 1)")

        def name(key: str) -> str:
            value = data.get(key)
            if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME or any(
                not ch.isprintable() for ch in value
            ):
                raise ValueError(f"the button value's {key!r} is not a name")
            return value

        tasks = data.get("t", [])
        if not isinstance(tasks, list) or len(tasks) > MAX_TASKS or not all(
            isinstance(t, str) and 0 < len(t) <= MAX_ARN for t in tasks
        ):
            raise ValueError("the button value's tasks are not a list of ARNs")
        return cls(alarm=name("a"), cluster=name("c"), service=name("s"), tasks=tuple(tasks))


def _text(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _confirm(title: str, text: str, yes: str) -> dict[str, Any]:
    return {"title": _text(cut_text(title, 100)), "text": {"type": "mrkdwn",
            "text": cut_text(text, 300)}, "confirm": _text(yes), "deny": _text("Cancel")}


def _button(label: str, action: ActionId, value: ButtonValue,
            confirm: Mapping[str, Any] | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action, "text": _text(label),
                              "value": value.encode()}
    if confirm is not None:
        button["style"] = "danger"
        button["confirm"] = dict(confirm)
    return button


def alert_buttons(
    alarm: AlarmEvent, policy: RemediationPolicy, tasks: Sequence[str] = ()
) -> tuple[dict[str, Any], ...]:
    """The actions block of a remediating alarm's alert, or nothing.

    Only for the toolkit's own ``WorkerStuck``/``WorkersStuck`` alarm of this environment in
    ALARM (the alarm guards of :func:`~toolkit.alarms.guards.target_from_alarm`: not a test, the
    toolkit's naming and namespace); ``tasks`` are the verdict record's stuck tasks.
    """
    if alarm.state != "ALARM":
        return ()
    target = target_from_alarm(alarm, policy)
    metric = remediating_input(alarm, policy)
    if isinstance(target, Decision) or metric is None:
        return ()
    where = f"`{esc(target.service)}` in `{esc(target.cluster)}`"
    buttons = []
    if remedy_of(metric.name) == "deploy":
        buttons.append(_button("Redeploy now", ACTION_REDEPLOY,
                               ButtonValue(alarm.name, target.cluster, target.service),
                               _confirm(f"Redeploy {target.service}?", (
                                   f"Forces a new deployment of {where}. The handler re-checks "
                                   "every guard first (opt-in tag, cooldown, hourly limit)."),
                                   "Redeploy")))
    elif tasks:
        buttons.append(_button("Stop stuck tasks", ACTION_STOP_TASKS,
                               ButtonValue(alarm.name, target.cluster, target.service,
                                           tuple(tasks)),
                               _confirm(f"Stop the stuck tasks of {target.service}?", (
                                   f"Stops the {len(tasks)} task(s) of {where} the collector "
                                   "judged dead or hung; ECS replaces each. Every guard is "
                                   "re-checked first."), "Stop them")))
    buttons.append(_button("Mute 1 h", ACTION_MUTE,
                           ButtonValue(alarm.name, target.cluster, target.service)))
    return ({"type": "actions", "block_id": BLOCK_ID, "elements": buttons},)

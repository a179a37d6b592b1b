"""Slack messages: the alert for an alarm state change, built by a pure function.

:func:`alarm_message` returns a :class:`SlackMessage`; the follow-ups (what remediation did, the
escalation) are in :mod:`toolkit.alarms.notes`; the senders in :mod:`toolkit.alarms.senders` post
them. ``SlackMessage.key`` identifies a message across attempts (the bot sender tags the post
with it, so that a post whose answer was lost can be found instead of posted twice).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toolkit import metricnames as m
from toolkit.alarms.events import AlarmEvent, AlarmState

STYLE: dict[AlarmState, tuple[str, str, str]] = {
    # state: (emoji, attachment colour, word)
    "ALARM": (":rotating_light:", "#E01E5A", "ALARM"),
    "OK": (":white_check_mark:", "#2EB67D", "Resolved"),
    "INSUFFICIENT_DATA": (":grey_question:", "#9E9E9E", "No data"),
}
MAX_URL = 3000  # Slack refuses a button URL longer than this (400 invalid_blocks)
MAX_TEXT = 3000  # the plain-text fallback is kept under a section's limit
TEST_NOTE = (
    "*This is a test:* the alarm's state was set by hand (`set-alarm-state`; its reason carries "
    "no datapoints). Nothing is redeployed or stopped."
)


@dataclass(frozen=True)
class SlackMessage:
    text: str  # the notification preview on a phone, and the fallback
    blocks: tuple[Mapping[str, Any], ...]
    color: str | None = None
    key: str | None = None  # the same for every attempt at posting this message

    def payload(self) -> dict[str, Any]:
        if self.color is None:
            return {"text": self.text, "blocks": [dict(b) for b in self.blocks]}
        return {
            "text": self.text,
            "attachments": [{"color": self.color, "blocks": [dict(b) for b in self.blocks]}],
        }

    def fallback_payload(self) -> dict[str, Any]:
        """Text only, no blocks: what is posted when Slack refuses the rich message (400
        ``invalid_blocks``, a URL over its limit). Every part is already mrkdwn-escaped."""
        parts = [self.text]
        for block in self.blocks:
            if block.get("type") == "section" and "text" in block:
                parts.append(block["text"]["text"])
            for f in block.get("fields", []) if block.get("type") == "section" else []:
                parts.append(f["text"].replace("\n", ": ", 1))
            if block.get("type") == "context":
                parts.extend(e.get("text", "") for e in block["elements"])
        return {"text": cut_text("\n".join(parts), MAX_TEXT)}

    def plain(self) -> str:
        """A readable rendering of the blocks (for docs, logs and tests)."""
        lines: list[str] = []
        for block in self.blocks:
            kind = block.get("type")
            if kind == "header":
                lines.append(f"# {block['text']['text']}")
            elif kind == "section":
                if "text" in block:
                    lines.append(block["text"]["text"])
                for f in block.get("fields", []):
                    lines.append("  " + f["text"].replace("\n", ": ", 1))
            elif kind == "context":
                lines.append("  _" + " — ".join(e.get("text", "") for e in block["elements"]) + "_")
            elif kind == "actions":
                links = (f"[{e['text']['text']}]" + (f"({e['url']})" if "url" in e else "")
                         for e in block["elements"])
                lines.append("  " + " | ".join(links))
        return "\n".join(lines)


# --- message builders ---------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.0f}" if value == int(value) and abs(value) < 1e15 else f"{value:.2f}"


def cut_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, never inside an ``&amp;`` entity."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:] and len(cut) - amp <= 5:
        cut = cut[:amp]
    return cut + "…"


def esc(value: object) -> str:
    """``value`` as text safe inside Slack mrkdwn (and ``text``): ``&``, ``<`` and ``>`` escaped.

    Everything taken from an alarm (name, description, reason, rule, dimension values) goes
    through here, so ``<!channel>``, ``<@U123>`` or ``<https://evil|label>`` are shown, never
    interpreted. Links are built only by the toolkit (buttons with URLs it composed).
    """
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut_esc(value: object, limit: int) -> str:
    """Escape, then cut without splitting an entity such as ``&amp;``."""
    return cut_text(esc(value), limit)


def _subject(alarm: AlarmEvent) -> str | None:
    services = alarm.named_services
    if len(services) > 1:  # metric math over several services: name them all, pick none
        listed = ", ".join(f"`{esc(s)}` in `{esc(c)}`" for c, s in services[:5])
        more = f" and {len(services) - 5} more" if len(services) > 5 else ""
        return f"{len(services)} services: {listed}{more}"
    if alarm.cluster and alarm.service:
        return f"service `{esc(alarm.service)}` in cluster `{esc(alarm.cluster)}`"
    if alarm.queue:
        return f"queue `{esc(alarm.queue)}`"
    return None


def _svc(alarm: AlarmEvent) -> str:
    return esc(alarm.service) if alarm.service else "the service"


_WORDS: dict[str, Callable[[AlarmEvent, str], str]] = {
    m.WORKER_STUCK: lambda a, v: f"Workers of {_svc(a)} stopped making progress.",
    m.WORKERS_ALIVE: lambda a, v: f"Only {v} worker(s) of {_svc(a)} are alive.",
    m.QUEUE_LENGTH: lambda a, v: f"Queue {esc(a.queue or '?')} has {v} messages waiting.",
    m.QUEUE_AGE: lambda a, v: f"The oldest message in {esc(a.queue or '?')} has waited {v} s.",
    m.BACKLOG_PER_TASK: lambda a, v: f"{v} queued messages per running task.",
    m.COLLECTOR_HEARTBEAT: lambda a, v: "The collector stopped publishing metrics.",
    m.COLLECTOR_ERRORS: lambda a, v: f"The collector reported {v} error(s) in a cycle.",
    m.UNACKED_MESSAGES: lambda a, v: f"{v} messages are reserved but not acknowledged.",
}


def reason_in_words(alarm: AlarmEvent) -> str:
    """One plain sentence a person on call understands without knowing CloudWatch (mrkdwn-safe:
    every value taken from the alarm is escaped)."""
    metric = alarm.metric.name if alarm.metric else None
    if alarm.state == "OK":
        what = esc(metric or alarm.name)
        return f"{what} is back within its threshold. No action needed."
    if alarm.state == "INSUFFICIENT_DATA":
        what = esc(metric) if metric else "this alarm"
        return (
            f"CloudWatch has no recent data for {what}: the collector may have stopped, "
            "or the service has no running task."
        )
    if alarm.kind == "composite":
        rule = esc(alarm.alarm_rule) if alarm.alarm_rule else "one of its child alarms is in ALARM"
        return f"Composite alarm fired: {rule}."
    value = _fmt(alarm.current_value)
    if metric in _WORDS and alarm.kind == "metric":
        return _WORDS[metric](alarm, value)
    label = "metric math expression" if alarm.kind == "math" else esc(metric or "the metric")
    if alarm.current_value is not None and alarm.threshold is not None:
        return f"The {label} is {value}, past its threshold of {_fmt(alarm.threshold)}."
    return f"The {label} crossed its threshold."


def _fields(alarm: AlarmEvent) -> list[str]:
    fields = []
    if alarm.current_value is not None:
        now = _fmt(alarm.current_value)
        if alarm.threshold is not None:
            now += f" (threshold {_fmt(alarm.threshold)})"
        fields.append(f"*Now*\n{now}")
    elif alarm.threshold is not None:
        fields.append(f"*Threshold*\n{_fmt(alarm.threshold)}")
    if alarm.metric is not None:
        over = "math over " if alarm.kind == "math" else ""
        fields.append(f"*Metric*\n{over}{esc(alarm.metric.namespace)} {esc(alarm.metric.name)}")
    if alarm.timestamp is not None:
        fields.append(f"*Since*\n{alarm.timestamp:%Y-%m-%d %H:%M} UTC")
    if alarm.previous_state is not None:
        fields.append(f"*Was*\n{alarm.previous_state}")
    return fields


def alarm_message(
    alarm: AlarmEvent, *, grafana_url: str | None = None, environment: str = "",
    why: str | None = None, key: str | None = None,
    actions: Sequence[Mapping[str, Any]] = (),
) -> SlackMessage:
    """The alert: state, alarm name, subject, reason in words, the collector's "why" (one line,
    already mrkdwn), numbers, links, and ``actions`` (the buttons of
    :func:`toolkit.alarms.buttons.alert_buttons`, bot token only). A ``set-alarm-state`` test
    says so."""
    emoji, color, word = STYLE[alarm.state]
    if alarm.is_test:
        emoji, color, word = ":test_tube:", "#9E9E9E", f"TEST {word}"
    subject = _subject(alarm)
    title = cut_esc(f"{emoji} {word}: {alarm.name}", 150)
    blocks: list[Mapping[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": True}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": cut_text(
                    (f"*{subject[0].upper()}{subject[1:]}*\n" if subject else "")
                    + (f"{TEST_NOTE}\n" if alarm.is_test else "")
                    + reason_in_words(alarm)
                    + (f"\n_{esc(alarm.description)}_" if alarm.description else ""),
                    2900,
                ),
            },
        },
    ]
    if why:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": cut_text(why, 2900)}})
    fields = _fields(alarm)
    if fields:
        items = [{"type": "mrkdwn", "text": cut_text(f, 1900)} for f in fields]
        blocks.append({"type": "section", "fields": items})
    buttons = []
    if alarm.console_url:
        buttons.append(("Open alarm", alarm.console_url))
    if grafana_url and len(grafana_url) <= MAX_URL:
        buttons.append(("Grafana dashboard", grafana_url))
    if buttons:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": t}, "url": u}
                    for t, u in buttons
                ],
            }
        )
    blocks.extend(actions)
    where = " · ".join(
        esc(x)
        for x in (environment, alarm.region, f"account {alarm.account}" if alarm.account else "")
        if x
    )
    context = [where] if where else []
    if alarm.reason:
        context.append(f"AWS: {cut_esc(alarm.reason, 280)}")
    if context:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": c} for c in context]}
        )
    text = f"{word}: {esc(alarm.name)}" + (f" ({subject.replace('`', '')})" if subject else "")
    return SlackMessage(text=cut_text(text, 300), blocks=tuple(blocks), color=color, key=key)

"""Posting one state change's messages to Slack: the alert and the follow-up, each at most once.

:class:`SlackPoster` builds the sender on first use (it may need Secrets Manager), posts, and
says what became of each message as a :class:`Posted`: ``posted`` (with the ``ts`` when the
transport tells it), ``owed`` (a transient failure: a retry posts it), ``maybe`` (the request
went out and its answer was lost: never sent again; with ``look_first`` a retry first looks for
it in Slack, bot token only) or ``failed`` (a permanent refusal). Every message carries a key
derived from the state change, the same on every attempt, so the bot sender can find it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from toolkit.alarms.budget import Deadline
from toolkit.alarms.decision import Decision
from toolkit.alarms.events import AlarmEvent
from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.alarms.state import StateStore
from toolkit.errors import ToolkitError

__all__ = ["Posted", "SlackFailure", "SlackPoster", "message_key"]

log = logging.getLogger("toolkit.alarms.responder")

THREAD_TTL = timedelta(days=14)
PostState = Literal["posted", "owed", "maybe", "failed"]


def message_key(dedup_key: str, part: str) -> str:
    """The key of ``part`` (``alert``, ``follow_up``) of one state change: the same on every
    delivery and retry, unrelated to anything secret."""
    return hashlib.sha256(f"{dedup_key}|{part}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class SlackFailure:
    message: str
    retryable: bool
    maybe_posted: bool = False

    @classmethod
    def of(cls, exc: Exception) -> SlackFailure:
        """``maybe_posted`` also when the last request went out unanswered (a bot sender whose
        lookup found nothing, out of retries): the next attempt looks again before posting."""
        if isinstance(exc, ToolkitError):
            maybe = getattr(exc, "maybe_posted", False) or getattr(exc, "maybe_sent", False)
            return cls(str(exc), bool(getattr(exc, "retryable", False)), bool(maybe))
        return cls(type(exc).__name__, False)


@dataclass(frozen=True)
class Posted:
    state: PostState
    ts: str | None = None
    failure: SlackFailure | None = None
    look_first: bool = False  # "maybe": look for it in Slack before posting on the next attempt

    @classmethod
    def after(cls, failure: SlackFailure) -> Posted:
        if failure.maybe_posted:
            return cls("owed" if failure.retryable else "maybe", failure=failure,
                       look_first=failure.retryable)
        return cls("owed" if failure.retryable else "failed", failure=failure)


class SlackPoster:
    """The injected sender (built on first use), posting alerts and follow-ups."""

    def __init__(
        self,
        settings: AlarmHandlerSettings,
        state: StateStore,
        deadline: Deadline,
        sender_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.deadline = deadline
        self._sender_factory = sender_factory
        self._sender: Any = None
        self._sender_error: SlackFailure | None = None

    def sender(self) -> Any:
        if self._sender is None and self._sender_factory is not None:
            try:
                self._sender = self._sender_factory()
            except Exception as exc:  # noqa: BLE001 - no Slack must not stop remediation
                failure = SlackFailure.of(exc)
                self._sender_error = SlackFailure(
                    f"Slack sender unavailable: {failure.message}", failure.retryable
                )
                log.error(json.dumps({"event": "slack_unavailable", "error": failure.message,
                                      "retryable": failure.retryable}))
                return None
            self._sender_error = None
            if self._sender is None:
                self._sender_factory = None  # nothing configured: log only
                log.warning(json.dumps({"event": "slack_not_configured"}))
            elif getattr(self._sender, "deadline", None) is not None:
                self._sender.deadline = self.deadline
        return self._sender

    @property
    def configured(self) -> bool:
        return self._sender is not None

    def alert(
        self, alarm: AlarmEvent, now: datetime, *, why: str | None, look_first: bool,
        tasks: tuple[str, ...] = (),
    ) -> Posted:
        """The alert; a bot sender's carries the buttons (``tasks``: the stuck tasks to name)."""
        from toolkit.alarms.buttons import alert_buttons
        from toolkit.alarms.guards import RemediationPolicy
        from toolkit.alarms.messages import alarm_message

        sender = self.sender()
        if sender is None:  # not configured: nothing is owed; unavailable: the error
            return Posted("posted") if self._sender_error is None else Posted.after(
                self._sender_error)
        if alarm.actions_suppressed_by:
            log.info(json.dumps({"event": "actions_suppressed", "alarm": alarm.name,
                                 "by": alarm.actions_suppressed_by}))
            return Posted("posted")
        thread = None
        if alarm.state != "ALARM" and sender.threads:
            thread = self._thread_of(alarm)
        message = alarm_message(
            alarm, grafana_url=self.settings.grafana_url, environment=self.settings.environment,
            why=why, key=message_key(alarm.dedup_key, "alert"),
            actions=alert_buttons(alarm, RemediationPolicy.from_settings(self.settings), tasks)
            if sender.threads else (),
        )
        posted = self._post(sender, message, thread, thread is not None, look_first,
                            {"alarm": alarm.name})
        if posted.ts and alarm.state == "ALARM":
            try:
                self.state.put_thread(alarm.alarm_key, posted.ts, now, THREAD_TTL)
            except ToolkitError as exc:
                log.error(json.dumps({"event": "state_unavailable", "error": str(exc)}))
        return posted

    def follow_up(
        self, alarm: AlarmEvent, decision: Decision, thread: str | None, *, look_first: bool
    ) -> Posted:
        from toolkit.alarms.notes import broadcast, decision_message

        sender = self.sender()
        if sender is None:
            return Posted("posted") if self._sender_error is None else Posted.after(
                self._sender_error)
        message = decision_message(decision, mention=self.settings.escalation_mention,
                                   key=message_key(alarm.dedup_key, "follow_up"))
        return self._post(sender, message, thread, broadcast(decision) and thread is not None,
                          look_first, {"follow_up": True, "code": decision.code})

    def _post(
        self, sender: Any, message: Any, thread: str | None, broadcast: bool, look_first: bool,
        context: dict[str, Any],
    ) -> Posted:
        if look_first and message.key and callable(getattr(sender, "find", None)):
            try:
                ts = sender.find(message.key, thread)
            except ToolkitError as exc:  # still maybe posted: look again next time
                failure = replace(SlackFailure.of(exc), maybe_posted=True)
                log.error(json.dumps({"event": "slack_lookup_failed", **context,
                                      "error": failure.message, "retryable": failure.retryable}))
                return Posted.after(failure)
            if ts is not None:
                log.info(json.dumps({"event": "slack_found_posted", **context}))
                return Posted("posted", ts)
        try:
            return Posted("posted", sender.post(message, thread_ts=thread, broadcast=broadcast))
        except ToolkitError as exc:
            failure = SlackFailure.of(exc)
            log.error(json.dumps({"event": "slack_failed", **context, "error": failure.message,
                                  "retryable": failure.retryable,
                                  "maybe_posted": failure.maybe_posted}))
            return Posted.after(failure)

    def _thread_of(self, alarm: AlarmEvent) -> str | None:
        try:
            return self.state.get_thread(alarm.alarm_key)
        except ToolkitError as exc:
            log.error(json.dumps({"event": "state_unavailable", "error": str(exc)}))
            return None

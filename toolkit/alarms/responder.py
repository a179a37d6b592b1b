"""What the alarm handler does with one event: parse, de-duplicate, alert, remediate, follow up.

:class:`AlarmResponder` holds the injected pieces (Slack sender, remediator, state store, clock);
:func:`build_responder` makes them from :class:`~toolkit.config.AlarmHandlerSettings` with boto3
and slack_sdk imported on first use, so importing this module stays cheap.

Retry contract with Lambda (async invocations are retried twice, SNS retries its deliveries):

* an unrecognised or malformed event is logged (``unrecognised_event``) and acknowledged, never
  raised;
* :class:`AlarmHandlingFailed` is raised only when Slack or ECS failed *transiently* (unreachable,
  timed out, 429 or 5xx after the SDKs' own retries) *and* no deployment was performed in this
  invocation. Permanent failures (``invalid_auth``, ``channel_not_found``, webhook 403/404, a bad
  secret, ``AccessDenied``) are logged and acknowledged: a retry would fail the same way.

Duplicates: the first delivery of a state change claims it (``claim#``), posts the alert,
remediates and posts the follow-up. It records (``outcome#``) only what a retry must finish: a
retryable remediation failure, or a follow-up Slack did not take. A repeat delivery posts no second
alert, remediates only if that record asks for it, and posts only the owed follow-up. The claim is
released only when the alert itself failed (and nothing was deployed), so the retry starts over.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from toolkit.alarms.events import AlarmEvent
from toolkit.alarms.guards import Decision, RemediationPolicy, log_decision
from toolkit.alarms.parsing import parse_event
from toolkit.alarms.remediator import Remediator
from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.alarms.state import MemoryStateStore, StateStore
from toolkit.aws.clients import client as aws_client
from toolkit.errors import AlarmEventError, ToolkitError

__all__ = ["AlarmHandlingFailed", "AlarmOutcome", "AlarmResponder", "build_responder"]

log = logging.getLogger(__name__)

CLAIM_TTL = timedelta(days=1)
THREAD_TTL = timedelta(days=14)


class AlarmHandlingFailed(ToolkitError):
    """Slack or ECS was unreachable and nothing was done: let Lambda retry the event."""


@dataclass(frozen=True)
class AlarmOutcome:
    alarm: str
    state: str
    duplicate: bool
    posted: bool
    slack_error: str | None
    decision: Decision | None
    slack_retryable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "alarm": self.alarm,
            "state": self.state,
            "duplicate": self.duplicate,
            "posted": self.posted,
            "slack_error": self.slack_error,
            "slack_retryable": self.slack_retryable,
            "remediation": self.decision.action if self.decision else None,
            "reason": self.decision.reason if self.decision else None,
        }


@dataclass(frozen=True)
class _SlackFailure:
    message: str
    retryable: bool

    @classmethod
    def of(cls, exc: Exception) -> _SlackFailure:
        if isinstance(exc, ToolkitError):
            return cls(str(exc), bool(getattr(exc, "retryable", False)))
        return cls(type(exc).__name__, False)


def _keys(event: object) -> object:
    if isinstance(event, dict):
        return sorted(str(k)[:40] for k in event)[:10]
    return type(event).__name__


class AlarmResponder:
    def __init__(
        self,
        settings: AlarmHandlerSettings,
        *,
        remediator: Remediator,
        state: StateStore,
        sender_factory: Callable[[], Any] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.remediator = remediator
        self.state = state
        self._sender_factory = sender_factory
        self._sender: Any = None
        self._sender_error: _SlackFailure | None = None
        self.clock = clock

    # The sender is built on first use (it may need Secrets Manager).
    def sender(self) -> Any:
        if self._sender is None and self._sender_factory is not None:
            try:
                self._sender = self._sender_factory()
            except Exception as exc:  # noqa: BLE001 - no Slack must not stop remediation
                failure = _SlackFailure.of(exc)
                self._sender_error = _SlackFailure(
                    f"Slack sender unavailable: {failure.message}", failure.retryable
                )
                log.error(json.dumps({"event": "slack_unavailable", "error": failure.message,
                                      "retryable": failure.retryable}))
                return None
            self._sender_error = None
            if self._sender is None:
                self._sender_factory = None  # nothing configured: log only
                log.warning(json.dumps({"event": "slack_not_configured"}))
        return self._sender

    def handle(self, event: object) -> dict[str, Any]:
        try:
            alarms = parse_event(event)
        except Exception as exc:  # noqa: BLE001 - a malformed event must be acknowledged
            # AlarmEventError for anything unrecognised; anything else is a parser bug that a
            # retry would only repeat, so it is acknowledged too (and logged with its type).
            error = str(exc) if isinstance(exc, AlarmEventError) else (
                f"{type(exc).__name__} while parsing the event"
            )
            log.warning(json.dumps(
                {"event": "unrecognised_event", "error": error, "keys": _keys(event)}, default=str
            ))
            return {"status": "ignored", "reason": error}
        outcomes = [self.handle_alarm(alarm) for alarm in alarms]
        retry = [o for o in outcomes if self._wants_retry(o)]
        if retry and not any(o.decision and o.decision.performed for o in outcomes):
            raise AlarmHandlingFailed(
                "; ".join(
                    o.slack_error or (o.decision.reason if o.decision else "failed") for o in retry
                )
            )
        return {"status": "handled", "alarms": [o.to_dict() for o in outcomes]}

    @staticmethod
    def _wants_retry(outcome: AlarmOutcome) -> bool:
        """Only transient failures are worth a Lambda retry (a permanent Slack refusal such as
        ``invalid_auth`` would fail the same way, so it is logged and acknowledged)."""
        ecs_down = outcome.decision is not None and outcome.decision.retryable
        return (outcome.slack_error is not None and outcome.slack_retryable) or ecs_down

    def handle_alarm(self, alarm: AlarmEvent) -> AlarmOutcome:
        now = self.clock()
        claim_key = f"event#{alarm.dedup_key}"
        try:
            first = self.state.claim(claim_key, now, CLAIM_TTL)
        except ToolkitError as exc:  # state table down: better a duplicate message than none
            _state_unavailable(exc)
            first = True
        outcome = self._first(alarm, claim_key, now) if first else self._repeat(alarm, now)
        log.info(json.dumps({"event": "alarm_handled", **outcome.to_dict()}, default=str))
        return outcome

    def _first(self, alarm: AlarmEvent, claim_key: str, now: datetime) -> AlarmOutcome:
        """The first delivery: alert, remediate, follow up; record what is left for a retry."""
        ts, alert_failure = self._post_alert(alarm, now)
        decision = self.remediator.remediate_alarm(alarm, now)
        log_decision(decision)
        follow_failure = None
        if decision.relevant and alert_failure is None:
            follow_failure = self._post_follow_up(decision, ts)
        if alert_failure is not None and not decision.performed:
            # The alert itself was not posted and nothing was deployed: forget this delivery so
            # the retry starts over (alert, then remediation, which the ECS guards keep safe).
            self._release(claim_key)
        else:
            owed = decision if decision.relevant and (alert_failure or follow_failure) else None
            if decision.retryable or owed is not None:
                self._put_record(alarm, now, retry=decision.retryable, owed=owed, thread=ts)
        failure = alert_failure or follow_failure
        return AlarmOutcome(
            alarm=alarm.name,
            state=alarm.state,
            duplicate=False,
            posted=alert_failure is None and self._sender is not None,
            slack_error=failure.message if failure else None,
            decision=decision,
            slack_retryable=bool(failure and failure.retryable),
        )

    def _repeat(self, alarm: AlarmEvent, now: datetime) -> AlarmOutcome:
        """A repeat delivery (SNS duplicate, Lambda retry, second route) of a claimed change.

        It posts no second alert. It remediates only when the first delivery recorded a retryable
        failure, and posts only the follow-up the first delivery still owes (or the outcome of
        its own remediation attempt, when that is final).
        """
        log.info(json.dumps({"event": "duplicate_delivery", "alarm": alarm.name,
                             "state": alarm.state}))
        record = self._get_record(alarm)
        if record is None:  # nothing left to do, or the first delivery is still at work
            return AlarmOutcome(
                alarm=alarm.name, state=alarm.state, duplicate=True, posted=False,
                slack_error=None, decision=None,
            )
        retry = record.get("retry") is True
        owed = _decision(record.get("owed"))
        thread = record.get("thread") if isinstance(record.get("thread"), str) else None
        decision: Decision | None = None
        if retry:
            decision = self.remediator.remediate_alarm(alarm, now)
            log_decision(decision)
            retry = decision.retryable
        final = decision if decision and decision.relevant and not decision.retryable else None
        to_post = final or owed
        failure = None
        if to_post is not None:
            failure = self._post_follow_up(to_post, thread or self._thread_of(alarm))
        still_owed = to_post if failure is not None else None
        if (retry, still_owed) != (record.get("retry") is True, owed) or to_post is not None:
            self._put_record(alarm, now, retry=retry, owed=still_owed, thread=thread)
        return AlarmOutcome(
            alarm=alarm.name,
            state=alarm.state,
            duplicate=True,
            posted=False,
            slack_error=failure.message if failure else None,
            decision=decision,
            slack_retryable=bool(failure and failure.retryable),
        )

    def _post_alert(
        self, alarm: AlarmEvent, now: datetime
    ) -> tuple[str | None, _SlackFailure | None]:
        from toolkit.alarms.messages import alarm_message

        sender = self.sender()
        if sender is None:
            return None, self._sender_error
        thread = None
        if alarm.state != "ALARM" and sender.threads:
            thread = self._thread_of(alarm)
        message = alarm_message(
            alarm, grafana_url=self.settings.grafana_url, environment=self.settings.environment
        )
        try:
            ts = sender.post(message, thread_ts=thread, broadcast=thread is not None)
        except ToolkitError as exc:
            failure = _SlackFailure.of(exc)
            log.error(json.dumps({"event": "slack_failed", "alarm": alarm.name,
                                  "error": failure.message, "retryable": failure.retryable}))
            return None, failure
        if ts and alarm.state == "ALARM":
            try:
                self.state.put_thread(alarm.alarm_key, ts, now, THREAD_TTL)
            except ToolkitError as exc:
                _state_unavailable(exc)
        return ts, None

    def _post_follow_up(self, decision: Decision, ts: str | None) -> _SlackFailure | None:
        from toolkit.alarms.messages import decision_message

        sender = self.sender()
        if sender is None:
            return self._sender_error
        try:
            sender.post(decision_message(decision), thread_ts=ts)
        except ToolkitError as exc:
            failure = _SlackFailure.of(exc)
            log.error(json.dumps({"event": "slack_failed", "follow_up": True,
                                  "error": failure.message, "retryable": failure.retryable}))
            return failure
        return None

    def _thread_of(self, alarm: AlarmEvent) -> str | None:
        try:
            return self.state.get_thread(alarm.alarm_key)
        except ToolkitError as exc:
            _state_unavailable(exc)
            return None

    def _get_record(self, alarm: AlarmEvent) -> dict[str, Any] | None:
        try:
            return self.state.get_record(alarm.dedup_key)
        except ToolkitError as exc:
            _state_unavailable(exc)
            return None

    def _put_record(
        self,
        alarm: AlarmEvent,
        now: datetime,
        *,
        retry: bool,
        owed: Decision | None,
        thread: str | None,
    ) -> None:
        data = {"retry": retry, "owed": owed.to_log() if owed else None, "thread": thread}
        try:
            self.state.put_record(alarm.dedup_key, data, now, CLAIM_TTL)
        except ToolkitError as exc:
            _state_unavailable(exc)

    def _release(self, key: str) -> None:
        try:
            self.state.release(key)
        except ToolkitError as exc:
            _state_unavailable(exc)


def _state_unavailable(exc: Exception) -> None:
    log.error(json.dumps({"event": "state_unavailable", "error": str(exc)}))


def _decision(raw: object) -> Decision | None:
    if not isinstance(raw, dict):
        return None
    try:
        return Decision.from_log(raw)
    except (TypeError, ValueError):
        return None



def build_responder(
    settings: AlarmHandlerSettings,
    *,
    ecs: Any = None,
    dynamodb: Any = None,
    secrets: Any = None,
    sender: Any = None,
    clock: Callable[[], datetime] | None = None,
) -> AlarmResponder:
    """Wire a responder from settings; any client passed in is used instead of a new one."""

    def make(service: str) -> Callable[[], Any]:
        def factory() -> Any:
            return aws_client(service, read_timeout=5)

        return factory

    state: StateStore
    if settings.state_table:
        from toolkit.alarms.state import DynamoStateStore

        state = DynamoStateStore(settings.state_table, dynamodb, client_factory=make("dynamodb"))
    else:
        state = MemoryStateStore()
        if settings.remediation != "off":
            log.warning(json.dumps({
                "event": "no_state_table",
                "message": "STATE_TABLE is not set: MAX_REMEDIATIONS_PER_HOUR is exact only within "
                "one container and one cluster; an exact cross-container cap (and de-duplicated "
                "Slack messages) needs STATE_TABLE",
            }))
    now = clock or (lambda: datetime.now(UTC))
    remediator = Remediator(
        RemediationPolicy.from_settings(settings), ecs, state=state, ecs_factory=make("ecs"),
        clock=now,
    )

    def sender_factory() -> Any:
        if sender is not None:
            return sender
        from toolkit.alarms.senders import build_sender, resolve_credentials

        client = secrets
        if client is None and settings.slack_secret_arn:
            client = make("secretsmanager")()
        return build_sender(resolve_credentials(settings, secrets_client=client), settings)

    return AlarmResponder(
        settings, remediator=remediator, state=state, sender_factory=sender_factory, clock=now
    )

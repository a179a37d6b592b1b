"""What the alarm handler does with one event: parse, de-duplicate, alert, remediate, follow up.

:class:`AlarmResponder` holds the injected pieces (Slack sender, remediator, state store, clock);
:func:`build_responder` makes them from :class:`~toolkit.config.AlarmHandlerSettings` with boto3
and slack_sdk imported on first use, so importing this module stays cheap.

Retry contract with Lambda (async invocations are retried twice, SNS retries its deliveries):

* an unrecognised event is logged and acknowledged, never raised;
* :class:`AlarmHandlingFailed` is raised only when Slack or ECS was unreachable (after the SDK's
  own retries) *and* no deployment was performed in this invocation, so a retry can finish the job
  without risking a second deployment.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from toolkit.alarms import AlarmEvent, parse_event
from toolkit.config import AlarmHandlerSettings
from toolkit.errors import AlarmEventError, ToolkitError
from toolkit.remediation import Decision, RemediationPolicy, Remediator, log_decision
from toolkit.state import MemoryStateStore, StateStore

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "alarm": self.alarm,
            "state": self.state,
            "duplicate": self.duplicate,
            "posted": self.posted,
            "slack_error": self.slack_error,
            "remediation": self.decision.action if self.decision else None,
            "reason": self.decision.reason if self.decision else None,
        }


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
        self._sender_error: str | None = None
        self.clock = clock

    # The sender is built on first use (it may need Secrets Manager).
    def sender(self) -> Any:
        if self._sender is None and self._sender_factory is not None:
            try:
                self._sender = self._sender_factory()
            except Exception as exc:  # noqa: BLE001 - no Slack must not stop remediation
                error = str(exc) if isinstance(exc, ToolkitError) else type(exc).__name__
                self._sender_error = f"Slack sender unavailable: {error}"
                log.error(json.dumps({"event": "slack_unavailable", "error": error}))
                return None
            if self._sender is None:
                self._sender_factory = None  # nothing configured: log only
                log.warning(json.dumps({"event": "slack_not_configured"}))
        return self._sender

    def handle(self, event: object) -> dict[str, Any]:
        try:
            alarms = parse_event(event)
        except AlarmEventError as exc:
            keys = sorted(event)[:10] if isinstance(event, dict) else type(event).__name__
            log.warning(json.dumps({"event": "unrecognised_event", "error": str(exc), "keys": keys},
                                   default=str))
            return {"status": "ignored", "reason": str(exc)}
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
        ecs_down = outcome.decision is not None and outcome.decision.retryable
        return bool(outcome.slack_error) or ecs_down

    def handle_alarm(self, alarm: AlarmEvent) -> AlarmOutcome:
        now = self.clock()
        claim_key = f"event#{alarm.dedup_key}"
        try:
            first = self.state.claim(claim_key, now, CLAIM_TTL)
        except ToolkitError as exc:  # state table down: better a duplicate message than none
            log.error(json.dumps({"event": "state_unavailable", "error": str(exc)}))
            first = True
        ts, slack_error = (None, None)
        if first:
            ts, slack_error = self._post_alert(alarm, now)
        else:
            log.info(json.dumps({"event": "duplicate_delivery", "alarm": alarm.name,
                                 "state": alarm.state}))
        decision = self.remediator.remediate_alarm(alarm, now)
        log_decision(decision)
        if first and decision.relevant and slack_error is None:
            slack_error = self._post_follow_up(decision, ts)
        elif not first and decision.performed:
            # A repeat can only deploy when an earlier delivery failed to: say it worked.
            slack_error = self._post_follow_up(decision, self._thread_of(alarm))
        if slack_error is not None and first and not decision.performed:
            self._release(claim_key)  # let the retry post the alert
        outcome = AlarmOutcome(
            alarm=alarm.name,
            state=alarm.state,
            duplicate=not first,
            posted=first and slack_error is None and self._sender is not None,
            slack_error=slack_error,
            decision=decision,
        )
        log.info(json.dumps({"event": "alarm_handled", **outcome.to_dict()}, default=str))
        return outcome

    def _post_alert(self, alarm: AlarmEvent, now: datetime) -> tuple[str | None, str | None]:
        from toolkit.slack import alarm_message

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
            log.error(json.dumps({"event": "slack_failed", "alarm": alarm.name, "error": str(exc)}))
            return None, str(exc)
        if ts and alarm.state == "ALARM":
            try:
                self.state.put_thread(alarm.alarm_key, ts, now, THREAD_TTL)
            except ToolkitError as exc:
                log.error(json.dumps({"event": "state_unavailable", "error": str(exc)}))
        return ts, None

    def _post_follow_up(self, decision: Decision, ts: str | None) -> str | None:
        from toolkit.slack import decision_message

        sender = self.sender()
        if sender is None:
            return None
        try:
            sender.post(decision_message(decision), thread_ts=ts)
        except ToolkitError as exc:
            log.error(json.dumps({"event": "slack_failed", "follow_up": True, "error": str(exc)}))
            return str(exc)
        return None

    def _thread_of(self, alarm: AlarmEvent) -> str | None:
        try:
            return self.state.get_thread(alarm.alarm_key)
        except ToolkitError as exc:
            log.error(json.dumps({"event": "state_unavailable", "error": str(exc)}))
            return None

    def _release(self, key: str) -> None:
        try:
            self.state.release(key)
        except ToolkitError as exc:
            log.error(json.dumps({"event": "state_unavailable", "error": str(exc)}))


def _boto_config() -> Any:
    from botocore.config import Config

    return Config(
        connect_timeout=3, read_timeout=5, retries={"mode": "standard", "max_attempts": 3}
    )


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
            import boto3

            return boto3.client(service, config=_boto_config())  # type: ignore[call-overload]

        return factory

    state: StateStore
    if settings.state_table:
        from toolkit.state import DynamoStateStore

        state = DynamoStateStore(settings.state_table, dynamodb, client_factory=make("dynamodb"))
    else:
        state = MemoryStateStore()
    now = clock or (lambda: datetime.now(UTC))
    remediator = Remediator(
        RemediationPolicy.from_settings(settings), ecs, state=state, ecs_factory=make("ecs"),
        clock=now,
    )

    def sender_factory() -> Any:
        if sender is not None:
            return sender
        from toolkit.slack import build_sender, resolve_credentials

        client = secrets
        if client is None and settings.slack_secret_arn:
            client = make("secretsmanager")()
        return build_sender(resolve_credentials(settings, secrets_client=client), settings)

    return AlarmResponder(
        settings, remediator=remediator, state=state, sender_factory=sender_factory, clock=now
    )

"""What the alarm handler does with one event: parse, de-duplicate, alert, remediate, follow up.

:class:`AlarmResponder` holds the injected pieces (Slack sender, remediator, state store, clock,
deadline); :func:`build_responder` makes them from
:class:`~toolkit.alarms.settings.AlarmHandlerSettings` with boto3 and slack_sdk imported on first
use, so importing this module stays cheap.

**What is owed.** Each state change has a record (``outcome#<event>``) written as the work
happens: ``alert`` (owed | posted | failed), ``remediation`` (pending | deploying | retry | done),
``follow_up`` (none | owed | posted | failed), the Slack ``thread`` and the ``decision`` to report.
Every delivery (the first, Lambda's retries, SNS duplicates, the other route) does only what the
record still owes, so the ALARM alert is posted once, even when a deployment already happened.

**Retry contract with Lambda** (async invocations are retried twice, SNS retries deliveries):

* an unrecognised or malformed event is logged (``unrecognised_event``) and acknowledged;
* :class:`AlarmHandlingFailed` is raised whenever something is still owed and a retry can deliver
  it: the alert or the follow-up after a transient Slack failure (unreachable, timeout, 429, 5xx,
  no time left), a remediation after a transient ECS or ledger failure, or work not started for
  lack of time. It is raised whether or not a deployment happened: the ECS guards (deployment in
  progress, cooldown) and the per-service lock keep a second deployment impossible.
* permanent failures (``invalid_auth``, ``channel_not_found``, webhook 403/404, a bad secret,
  ``AccessDenied``, a missing ``STATE_TABLE``) are logged and acknowledged: a retry would fail the
  same way. A retryable remediation failure still pending after the third attempt is final.

**The lease.** An invocation takes ``claim#<event>`` as a lease for the time it has left plus
:data:`LEASE_SLACK`. A delivery arriving while it is held raises while the record still owes
something (the holder may have died early with most of its time left: acknowledging would end
Lambda's retries) and is acknowledged once nothing is owed. The lease is released at the end and
on an unexpected error; if the runtime kills the invocation (timeout, OOM) it lapses on its own,
and a later retry takes over from the record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from toolkit.alarms.budget import REMEDIATION_SECONDS, Deadline, remaining_ms
from toolkit.alarms.events import AlarmEvent
from toolkit.alarms.guards import Decision, log_decision
from toolkit.alarms.parsing import parse_event
from toolkit.alarms.remediator import Remediator
from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.alarms.state import StateStore
from toolkit.errors import AlarmEventError, ToolkitError

__all__ = ["AlarmHandlingFailed", "AlarmOutcome", "AlarmResponder"]

log = logging.getLogger(__name__)

RECORD_TTL = timedelta(days=1)  # how long a state change's record (and de-duplication) lasts
DEFAULT_LEASE = timedelta(minutes=5)  # without a Lambda context
LEASE_SLACK = timedelta(seconds=20)  # the lease outlives the invocation by this much
THREAD_TTL = timedelta(days=14)
MAX_ATTEMPTS = 3  # Lambda's first delivery and its two retries
_OPEN = ("pending", "deploying", "retry")


class AlarmHandlingFailed(ToolkitError):
    """Something is still owed (alert, remediation, follow-up) and a retry can deliver it."""


@dataclass(frozen=True)
class AlarmOutcome:
    alarm: str
    state: str
    duplicate: bool
    posted: bool
    slack_error: str | None
    decision: Decision | None
    slack_retryable: bool = False
    owed: tuple[str, ...] = ()

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
            "owed": list(self.owed),
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


def _new_record() -> dict[str, Any]:
    return {"alert": "owed", "remediation": "pending", "follow_up": "none", "thread": None,
            "decision": None, "attempts": 0, "noted_retry": False}


def owed_parts(record: dict[str, Any]) -> tuple[str, ...]:
    """What the record still owes: ``alert``, ``remediation``, ``follow_up``."""
    parts = []
    if record.get("alert") == "owed":
        parts.append("alert")
    if record.get("remediation") in _OPEN:
        parts.append("remediation")
    if record.get("follow_up") == "owed":
        parts.append("follow_up")
    return tuple(parts)


class AlarmResponder:
    def __init__(
        self,
        settings: AlarmHandlerSettings,
        *,
        remediator: Remediator,
        state: StateStore,
        sender_factory: Callable[[], Any] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        deadline: Deadline | None = None,
    ) -> None:
        self.settings = settings
        self.remediator = remediator
        self.state = state
        self._sender_factory = sender_factory
        self._sender: Any = None
        self._sender_error: _SlackFailure | None = None
        self.clock = clock
        self.deadline = deadline or Deadline()

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
            elif getattr(self._sender, "deadline", None) is not None:
                self._sender.deadline = self.deadline
        return self._sender

    def handle(self, event: object, context: object = None) -> dict[str, Any]:
        """Handle one Lambda event; ``context`` (the Lambda context) bounds the time spent."""
        self.deadline.start(remaining_ms(context))
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
        owed = [o for o in outcomes if o.owed]
        if owed:
            raise AlarmHandlingFailed(
                "; ".join(
                    f"{o.alarm}: {', '.join(o.owed)} owed"
                    + (f" ({o.slack_error})" if o.slack_error else "")
                    + (f" ({o.decision.reason})" if o.decision and o.decision.retryable else "")
                    for o in owed
                )
            )
        return {"status": "handled", "alarms": [o.to_dict() for o in outcomes]}

    # -- one alarm --

    def _lease(self) -> timedelta:
        left = self.deadline.total_left_seconds
        if left == float("inf"):
            return DEFAULT_LEASE
        return timedelta(seconds=left) + LEASE_SLACK

    def handle_alarm(self, alarm: AlarmEvent) -> AlarmOutcome:
        now = self.clock()
        record = self._get_record(alarm)
        if record is not None and not owed_parts(record):
            return self._duplicate(alarm, "done")
        lease_key = f"event#{alarm.dedup_key}"
        try:
            leased = self.state.claim(lease_key, now, self._lease())
        except ToolkitError as exc:  # state table down: better a duplicate message than none
            _state_unavailable(exc)
            leased = True
        if not leased:
            # The holder may be alive (an SNS duplicate racing it) or dead (OOM early in a long
            # invocation, its lease running on): while the record still owes something, raise so
            # that Lambda comes again; acknowledging would end Lambda's retries with it unpaid.
            owed = ("in_progress",) if record is None or owed_parts(record) else ()
            return self._duplicate(alarm, "in_progress", owed)
        # Released on every return, and on an unexpected error (a retry must be able to take
        # over); if the runtime kills the invocation (timeout, OOM), the lease lapses on its own.
        try:
            outcome = self._work(alarm, record, now)
        except Exception:
            self._release(lease_key)
            raise
        self._release(lease_key)
        log.info(json.dumps({"event": "alarm_handled", **outcome.to_dict()}, default=str))
        return outcome

    def _duplicate(
        self, alarm: AlarmEvent, why: str, owed: tuple[str, ...] = ()
    ) -> AlarmOutcome:
        log.info(json.dumps({"event": "duplicate_delivery", "alarm": alarm.name,
                             "state": alarm.state, "why": why, "owed": list(owed)}))
        return AlarmOutcome(alarm=alarm.name, state=alarm.state, duplicate=True, posted=False,
                            slack_error=None, decision=None, owed=owed)

    def _work(
        self, alarm: AlarmEvent, record: dict[str, Any] | None, now: datetime
    ) -> AlarmOutcome:
        fresh = record is None
        rec = _new_record() if record is None else {**_new_record(), **record}
        alert_was_owed = rec["alert"] == "owed"
        rec["attempts"] = int(rec.get("attempts") or 0) + 1
        self._save(alarm, rec, now)
        failures: list[_SlackFailure] = []
        posted = False
        # 1. the alert
        if rec["alert"] == "owed":
            ts, failure = self._post_alert(alarm, now)
            if failure is None:
                rec["alert"], rec["thread"] = "posted", ts
                posted = self._sender is not None and not alarm.actions_suppressed_by
            else:
                failures.append(failure)
                rec["alert"] = "owed" if failure.retryable else "failed"
            self._save(alarm, rec, now)
        # 2. the remediation
        decision: Decision | None = None
        if rec["remediation"] in _OPEN:
            decision = self._remediate(alarm, rec, now)
        # 3. the follow-up, under the alert
        if rec["follow_up"] == "owed" and rec["alert"] != "owed":
            owed_decision = _decision(rec.get("decision"))
            if rec["alert"] == "failed" or owed_decision is None:
                rec["follow_up"] = "failed"
            else:
                failure = self._post_follow_up(owed_decision, rec.get("thread"))
                if failure is None:
                    rec["follow_up"] = "posted"
                else:
                    failures.append(failure)
                    rec["follow_up"] = "owed" if failure.retryable else "failed"
            self._save(alarm, rec, now)
        owed = owed_parts(rec)
        failure = failures[-1] if failures else None
        return AlarmOutcome(
            alarm=alarm.name,
            state=alarm.state,
            duplicate=not fresh and not alert_was_owed,
            posted=posted,
            slack_error=failure.message if failure else None,
            decision=decision,
            slack_retryable=bool(failure and failure.retryable),
            owed=owed,
        )

    def _remediate(self, alarm: AlarmEvent, rec: dict[str, Any], now: datetime) -> Decision:
        if self.deadline.left() < REMEDIATION_SECONDS:
            decision = Decision(
                "failed", "deadline",
                "not started: too little time left in this invocation", alarm=alarm.name,
                mode=self.settings.remediation, at=now, retryable=True,
            )
            log_decision(decision)
            return decision
        interrupted = rec["remediation"] == "deploying"

        def deploying() -> None:
            rec["remediation"] = "deploying"
            self._save(alarm, rec, now)

        decision = self.remediator.remediate_alarm(alarm, now, before_deploy=deploying)
        if interrupted and not decision.performed and decision.code in (
            "cooldown", "deployment-in-progress"
        ):
            decision = replace(decision, reason=(
                "an earlier attempt was interrupted just as it forced a deployment; "
                f"not deploying again ({decision.reason})"
            ))
        if decision.retryable and rec["attempts"] >= MAX_ATTEMPTS:
            decision = replace(decision, retryable=False, reason=(
                f"{decision.reason}, still after {rec['attempts']} attempts"
            ))
        log_decision(decision)
        if decision.retryable:
            rec["remediation"] = "retry"
            if decision.relevant and not rec.get("noted_retry"):
                rec["noted_retry"], rec["decision"], rec["follow_up"] = (
                    True, decision.to_log(), "owed"
                )
        else:
            rec["remediation"] = "done"
            if decision.relevant:
                rec["decision"], rec["follow_up"] = decision.to_log(), "owed"
        self._save(alarm, rec, now)
        return decision

    # -- Slack --

    def _post_alert(
        self, alarm: AlarmEvent, now: datetime
    ) -> tuple[str | None, _SlackFailure | None]:
        from toolkit.alarms.messages import alarm_message

        sender = self.sender()
        if sender is None:
            if self._sender_error is None:  # Slack not configured: nothing is owed
                return None, None
            return None, self._sender_error
        if alarm.actions_suppressed_by:
            log.info(json.dumps({"event": "actions_suppressed", "alarm": alarm.name,
                                 "by": alarm.actions_suppressed_by}))
            return None, None
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

    # -- state --

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

    def _save(self, alarm: AlarmEvent, rec: dict[str, Any], now: datetime) -> None:
        try:
            self.state.put_record(alarm.dedup_key, rec, now, RECORD_TTL)
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

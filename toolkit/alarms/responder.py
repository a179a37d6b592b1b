"""What the alarm handler does with one event: parse, scope, de-duplicate, remediate, alert,
follow up.

:class:`AlarmResponder` holds the injected pieces (Slack poster, remediator, state store, clock,
deadline); :func:`build_responder` makes them from
:class:`~toolkit.alarms.settings.AlarmHandlerSettings` with boto3 and slack_sdk imported on first
use, so importing this module stays cheap.

**Own environment only.** An alarm of another environment (:func:`toolkit.alarms.scope.foreign`)
is logged (``foreign_alarm``) and ignored before anything else: no state, no Slack, no AWS.

**Muted.** An alarm the on-call muted from its alert ("Mute 1 h", :mod:`toolkit.alarms.mute`)
is logged (``muted_alarm``) and ignored while the mute lasts: no Slack post, no remediation.

**Remediation first.** The remediation (evidence, guards, the ECS action) runs before the alert,
so a slow or hanging Slack cannot starve it; the Slack calls get the time that is left, each
request's timeout capped to it. The alert then carries the collector's "why" line.

**What is owed.** Each state change has a record (:mod:`toolkit.alarms.record`) written as the
work happens. Every delivery (the first, Lambda's retries, SNS duplicates, the other route) does
only what the record still owes, so the ALARM alert is posted once, even when a deployment already
happened; a message that may have landed (its answer lost) is never sent again.

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

from toolkit.alarms.budget import MIN_REMEDIATION_SECONDS, Deadline, remaining_ms
from toolkit.alarms.decision import Decision, Target, log_decision
from toolkit.alarms.events import AlarmEvent
from toolkit.alarms.guards import RemediationPolicy, remediating_input
from toolkit.alarms.mute import read_mute
from toolkit.alarms.parsing import parse_event
from toolkit.alarms.posting import SlackFailure, SlackPoster
from toolkit.alarms.record import (
    MAX_ATTEMPTS,
    OPEN,
    RECORD_TTL,
    decision_of,
    new_record,
    owed_parts,
)
from toolkit.alarms.remediator import Remediator
from toolkit.alarms.scope import foreign
from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.alarms.state import StateStore
from toolkit.alarms.why import VerdictReading, read_verdict, why_line
from toolkit.errors import AlarmEventError, ToolkitError

__all__ = ["AlarmHandlingFailed", "AlarmOutcome", "AlarmResponder", "owed_parts"]

log = logging.getLogger(__name__)

DEFAULT_LEASE = timedelta(minutes=5)  # without a Lambda context
LEASE_SLACK = timedelta(seconds=20)  # the lease outlives the invocation by this much
# An interrupted attempt's retry finds these, not a second chance to act.
_ALREADY_ACTED = ("cooldown", "deployment-in-progress", "still-stuck")


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
    ignored: str | None = None  # why the alarm is not this environment's

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
            **({"ignored": self.ignored} if self.ignored else {}),
        }


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
        deadline: Deadline | None = None,
    ) -> None:
        self.settings = settings
        self.remediator = remediator
        self.clock = clock
        self.deadline = deadline or Deadline()
        self.slack = SlackPoster(settings, state, self.deadline, sender_factory)
        self.state = state

    @property
    def state(self) -> StateStore:
        return self._state

    @state.setter
    def state(self, store: StateStore) -> None:
        self._state = store
        self.slack.state = store

    @property
    def _sender(self) -> Any:  # the sender in use (tests replace it)
        return self.slack._sender

    @_sender.setter
    def _sender(self, sender: Any) -> None:
        self.slack._sender = sender

    def sender(self) -> Any:
        return self.slack.sender()

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
        elsewhere = foreign(alarm, self.settings.environment)
        if elsewhere is not None:
            log.info(json.dumps({"event": "foreign_alarm", "alarm": alarm.name[:200],
                                 "state": alarm.state, "environment": self.settings.environment,
                                 "why": elsewhere}))
            return AlarmOutcome(alarm=alarm.name, state=alarm.state, duplicate=False,
                                posted=False, slack_error=None, decision=None, ignored=elsewhere)
        now = self.clock()
        muted = read_mute(self.state, alarm.name, now)
        if muted is not None:  # "Mute 1 h" from the alert: no post, no remediation until then
            why = f"muted by {muted.by} until {muted.until:%H:%M} UTC"
            log.info(json.dumps({"event": "muted_alarm", "alarm": alarm.name[:200],
                                 "state": alarm.state, "by": muted.by,
                                 "until": muted.until.isoformat()}))
            return AlarmOutcome(alarm=alarm.name, state=alarm.state, duplicate=False,
                                posted=False, slack_error=None, decision=None, ignored=why)
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
        rec = new_record() if record is None else {**new_record(), **record}
        alert_was_owed = rec["alert"] == "owed"
        rec["attempts"] = int(rec.get("attempts") or 0) + 1
        self._save(alarm, rec, now)
        failures: list[SlackFailure] = []
        posted = False
        verdict = None
        if rec["alert"] == "owed" or rec["remediation"] in OPEN:
            verdict = self._verdict(alarm, now)
        # 1. the remediation, first: Slack gets what time is left, never the other way round
        decision: Decision | None = None
        if rec["remediation"] in OPEN:
            decision = self._remediate(alarm, rec, now, verdict)
        # 2. the alert, with the collector's "why"
        if rec["alert"] == "owed":
            why = why_line(verdict, now) if verdict is not None else None
            stuck = verdict.record.stuck_tasks if verdict and verdict.record else ()
            sent = self.slack.alert(alarm, now, why=why, look_first=bool(rec.get("alert_look")),
                                    tasks=stuck)
            rec["alert"], rec["alert_look"] = sent.state, sent.look_first
            if sent.ts:
                rec["thread"] = sent.ts
            if sent.failure is not None:
                failures.append(sent.failure)
            posted = sent.state == "posted" and self.slack.configured and (
                not alarm.actions_suppressed_by)
            self._save(alarm, rec, now)
        # 3. the follow-up, under the alert
        if rec["follow_up"] == "owed" and rec["alert"] != "owed":
            owed_decision = decision_of(rec.get("decision"))
            if rec["alert"] == "failed" or owed_decision is None:
                rec["follow_up"] = "failed"
            else:
                sent = self.slack.follow_up(alarm, owed_decision, rec.get("thread"),
                                            look_first=bool(rec.get("follow_up_look")))
                rec["follow_up"], rec["follow_up_look"] = sent.state, sent.look_first
                if sent.failure is not None:
                    failures.append(sent.failure)
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

    def _verdict(self, alarm: AlarmEvent, now: datetime) -> VerdictReading | None:
        """The verdict record of a remediating alarm's service (its "why"), else ``None``."""
        policy = RemediationPolicy.from_settings(self.settings)
        services = alarm.named_services
        if alarm.state != "ALARM" or len(services) != 1 or not remediating_input(alarm, policy):
            return None
        return read_verdict(self.state, Target(*services[0]), self.settings.environment, now)

    def _remediate(
        self, alarm: AlarmEvent, rec: dict[str, Any], now: datetime,
        verdict: VerdictReading | None,
    ) -> Decision:
        if self.deadline.left() < MIN_REMEDIATION_SECONDS:
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

        try:
            decision = self.remediator.remediate_alarm(
                alarm, now, before_deploy=deploying, verdict=verdict
            )
        except Exception as exc:  # noqa: BLE001 - a bug must not cost the alert
            log.exception(json.dumps({"event": "remediation_crashed", "alarm": alarm.name,
                                      "error": type(exc).__name__}))
            decision = Decision("failed", "ecs-error", (
                f"unexpected {type(exc).__name__} during remediation (see the handler's log)"
            ), alarm=alarm.name, mode=self.settings.remediation, at=now)
        if interrupted and not decision.performed and decision.code in _ALREADY_ACTED:
            decision = replace(decision, code="cooldown", details={}, reason=(
                "an earlier attempt was interrupted just as it acted; "
                f"not acting again ({decision.reason})"
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

    # -- state --

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

"""The AWS side of remediation: :class:`Remediator` runs the guards of :mod:`toolkit.alarms.guards`
against CloudWatch, ECS and the state store and, when they all pass, applies the alarm's remedy:
a forced deployment (``WorkerStuck``) or stopping exactly the stuck tasks (``WorkersStuck``).

Order: the alarm guards (pure, the ``set-alarm-state`` test among them), ``REMEDIATION``, the live
datapoints (``GetMetricData``: nothing is asked of ECS before they agree), the service
(``DescribeServices``: opt-in, deployment in progress, cooldown or ``still-stuck``), for a stop
the verdict record and the tasks (``DescribeTasks``), the hourly limit, dry-run, then the lock and
the ledger slot around the ECS action.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from toolkit.alarms.decision import Action, Decision, DecisionCode, Remedy
from toolkit.alarms.ecsreads import describe_service, tag_remediated, tagged_in_cluster
from toolkit.alarms.escalation import REMEDY_TTL_EXTRA, remedy_entry, remedy_key, still_stuck
from toolkit.alarms.events import AlarmEvent
from toolkit.alarms.evidence import Evidence, LiveMetrics, check_evidence, metric_query
from toolkit.alarms.failures import Decide, aws_failure, ecs_action, error_code, state_failure
from toolkit.alarms.guards import (
    RemediationPolicy,
    ServiceSnapshot,
    Target,
    check_rate,
    check_service,
    in_minutes,
    remediating_input,
    remedy_of,
    target_from_alarm,
)
from toolkit.alarms.settings import RemediationMode
from toolkit.alarms.state import REMEDIATION_WINDOW, MemoryStateStore, StateStore
from toolkit.alarms.taskstop import (
    STOP_REASON,
    StopPlan,
    check_task_arns,
    plan_stops,
    task_states,
)
from toolkit.alarms.why import VerdictReading, read_verdict, task_id
from toolkit.aws.clients import client as aws_client
from toolkit.errors import RemediationError, ToolkitError

log = logging.getLogger("toolkit.alarms.guards")

# mypy-boto3-ecs is not installed in every environment: type the client loosely.
ECSClient = Any
Act = Callable[[ServiceSnapshot], Decision]


class Remediator:
    """Runs the guards and, when they all pass, forces a deployment or stops the stuck tasks."""

    def __init__(
        self,
        policy: RemediationPolicy,
        ecs: ECSClient | None = None,
        *,
        state: StateStore | None = None,
        ecs_factory: Callable[[], ECSClient] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: LiveMetrics | None = None,
        live_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.policy = policy
        self._ecs = ecs
        self._ecs_factory = ecs_factory
        self.state: StateStore = state if state is not None else MemoryStateStore()
        self.clock = clock
        self.metrics = metrics or LiveMetrics()
        # The live window is read on the wall clock (CloudWatch's), not on the decision clock.
        self.live_clock = live_clock
        self._before_act: Callable[[], None] | None = None
        self._alarm_at: datetime | None = None  # the state change being answered

    @property
    def ecs(self) -> ECSClient:
        if self._ecs is None:
            if self._ecs_factory is not None:
                self._ecs = self._ecs_factory()
            else:
                self._ecs = aws_client("ecs", read_timeout=5)
        return self._ecs

    def _decider(
        self, target: Target, now: datetime, alarm: str | None, mode: RemediationMode,
        remedy: Remedy,
    ) -> Decide:
        def decide(
            action: Action, code: DecisionCode, reason: str, *, retryable: bool = False,
            details: Mapping[str, Any] | None = None,
        ) -> Decision:
            return Decision(
                action=action, code=code, reason=reason, target=target, alarm=alarm, mode=mode,
                at=now, retryable=retryable, details=dict(details or {}), remedy=remedy,
            )

        return decide

    # -- entry points --

    def remediate_alarm(
        self,
        alarm: AlarmEvent,
        now: datetime | None = None,
        *,
        before_deploy: Callable[[], None] | None = None,
        verdict: VerdictReading | None = None,
    ) -> Decision:
        """Every guard, then the alarm's remedy. ``before_deploy`` runs just before the ECS
        action (the responder records "deploying" there, so a retry after a crash knows);
        ``verdict`` is the verdict record when the caller has read it already."""
        now = now or self.clock()
        target = target_from_alarm(alarm, self.policy)
        if isinstance(target, Decision):
            return replace(target, at=now)
        metric = remediating_input(alarm, self.policy)
        remedy = remedy_of(metric.name) if metric is not None else "deploy"
        decide = self._decider(target, now, alarm.name, self.policy.mode, remedy)
        if metric is None:  # target_from_alarm found one: never, but never act on a guess
            return decide("skipped", "not-remediating-metric", "no remediating metric")
        if self.policy.mode == "off":
            return decide("skipped", "remediation-off",
                          "automatic remediation is off (REMEDIATION=off)")
        query = metric_query(alarm, metric, self.policy.namespace, self.live_clock())
        try:
            values = self.metrics.read(query)
        except ToolkitError as exc:
            return aws_failure(decide, "GetMetricData", exc, service="cloudwatch")
        evidence = Evidence(query, values, alarm.threshold if alarm.threshold is not None else 1.0,
                            alarm.comparison or "GreaterThanOrEqualToThreshold")
        refused = check_evidence(evidence)
        if refused is not None:
            return decide("skipped", *refused, details={"evidence": evidence.to_details()})
        self._before_act, self._alarm_at = before_deploy, alarm.timestamp
        try:
            if remedy == "stop-tasks":
                return self._stop(target, now, decide, evidence, verdict)
            return self._remediate(target, now, decide, self.policy.mode)
        finally:
            self._before_act, self._alarm_at = None, None

    def remediate(
        self,
        target: Target,
        *,
        now: datetime | None = None,
        alarm: str | None = None,
        mode: RemediationMode | None = None,
    ) -> Decision:
        """A guarded forced deployment of ``target`` (``celery-ecs remediate``: no alarm, no
        evidence check; a person asked for it)."""
        now = now or self.clock()
        mode = mode or self.policy.mode
        decide = self._decider(target, now, alarm, mode, "deploy")
        if mode == "off":
            return decide(
                "skipped", "remediation-off", "automatic remediation is off (REMEDIATION=off)"
            )
        return self._remediate(target, now, decide, mode)

    # -- the two remedies --

    def _remediate(
        self, target: Target, now: datetime, decide: Decide, mode: RemediationMode
    ) -> Decision:
        snapshot = self._service(target, now, decide)
        if isinstance(snapshot, Decision):
            return snapshot
        refused = self._rate(target, now, decide)
        if refused is not None:
            return refused
        if mode == "dry-run":
            return decide("dry-run", "dry-run", "all guards pass: would force a new deployment")
        return self._locked(snapshot, now, decide, lambda s: self._deploy(s, now, decide))

    def _stop(
        self, target: Target, now: datetime, decide: Decide, evidence: Evidence,
        verdict: VerdictReading | None,
    ) -> Decision:
        snapshot = self._service(target, now, decide)
        if isinstance(snapshot, Decision):
            return snapshot
        reading = verdict or read_verdict(self.state, target, self.policy.environment, now)
        if reading.kind == "unreadable":
            return decide("failed", "state-error", f"{reading.problem}: nothing stopped",
                          retryable=reading.retryable)
        if not reading.usable or reading.record is None:
            return decide("skipped", "no-record", f"{reading.problem}: nothing stopped")
        record = reading.record
        refused = check_task_arns(record.stuck_tasks, target, snapshot.arn)
        if refused is not None:
            return decide("skipped", *refused)
        try:
            states = task_states(self.ecs, target.cluster, record.stuck_tasks)
        except Exception as exc:  # noqa: BLE001 - any ECS failure becomes a decision
            return aws_failure(decide, "DescribeTasks", exc)
        plan = plan_stops(record, states, target, running=snapshot.running_count,
                          live=evidence.newest or 0.0)
        if isinstance(plan, tuple):
            return decide("skipped", *plan)
        limited = self._rate(target, now, decide)
        if limited is not None:
            return limited
        ids = ", ".join(task_id(a) for a in plan.stop)
        if self.policy.mode == "dry-run":
            return decide("dry-run", "dry-run",
                          f"all guards pass: would stop {len(plan.stop)} task(s): {ids}",
                          details={"stop": list(plan.stop)})
        return self._locked(snapshot, now, decide, lambda s: self._stop_tasks(s, plan, decide))

    # -- guards needing AWS --

    def _service(
        self, target: Target, now: datetime, decide: Decide
    ) -> ServiceSnapshot | Decision:
        """DescribeServices, then guards 4 to 6; ``still-stuck`` when the alarm being answered
        came back after our own remedy, within its cooldown."""
        try:
            snapshot = describe_service(self.ecs, target)
        except Exception as exc:  # noqa: BLE001 - any ECS failure becomes a decision
            if error_code(exc) == "ClusterNotFoundException":
                return decide("skipped", "service-not-found", f"cluster {target.cluster} not found")
            return aws_failure(decide, "DescribeServices", exc)
        if snapshot is None:
            return decide("skipped", "service-not-found", "service not found in the cluster")
        refused = check_service(snapshot, self.policy, now)
        if refused is None:
            return snapshot
        if self._alarm_at is not None and refused[0] == "cooldown":
            stuck = still_stuck(self._alarm_at, snapshot.last_remediated_at,
                                self._last_remedy(target), self.policy.cooldown_seconds, now)
            if stuck is not None:
                return decide("skipped", "still-stuck", stuck[0], details=stuck[1])
        return decide("skipped", *refused)

    def _rate(self, target: Target, now: datetime, decide: Decide) -> Decision | None:
        try:
            recent = self._recent(target, now)
        except Exception as exc:  # noqa: BLE001
            if not isinstance(exc, ToolkitError):  # ECS (ListServices); the stores wrap theirs
                return aws_failure(decide, "ListServices", exc)
            return state_failure(decide, "count recent remediations", exc)
        refused = check_rate(recent, self.policy)
        return decide("skipped", *refused) if refused is not None else None

    def _locked(
        self, snapshot: ServiceSnapshot, now: datetime, decide: Decide, act: Act
    ) -> Decision:
        """Lock the service, take an hourly slot, act; give both back if nothing was done."""
        # Per-service lock, held for the cooldown: of several deliveries (or alarms) racing past
        # the ECS checks above before any deployment shows, only one reaches the ECS action.
        key = str(snapshot.target)
        lock_ttl = timedelta(seconds=max(0, self.policy.cooldown_seconds))
        try:
            locked = self.state.lock_remediation(key, now, lock_ttl)
        except Exception as exc:  # noqa: BLE001
            return state_failure(decide, "lock the service", exc)
        if not locked:
            return decide(
                "skipped", "cooldown",
                "another delivery already took this service's remediation lock within the "
                f"cooldown ({in_minutes(self.policy.cooldown_seconds)})",
            )
        try:
            reserved = self.state.reserve_remediation(key, now, self.policy.max_per_hour)
        except Exception as exc:  # noqa: BLE001
            self._unlock(key)
            return state_failure(decide, "record the remediation", exc)
        if not reserved:
            self._unlock(key)
            return decide(
                "skipped", "rate-limit", f"hourly limit of {self.policy.max_per_hour} reached"
            )
        if self._before_act is not None:
            self._before_act()
        decision = act(snapshot)
        if not decision.performed:
            # Nothing was done: give back the hourly slot and the lock so a retry may act.
            released = self._release_slot(key, now)
            self._unlock(key)
            if released is not None:
                decision = replace(decision, details={**decision.details, "ledger": released})
        else:
            self._mark(snapshot, now, decision)
        return decision

    # -- ECS actions --

    def _deploy(self, snapshot: ServiceSnapshot, now: datetime, decide: Decide) -> Decision:
        target = snapshot.target
        try:
            response = ecs_action("UpdateService", lambda: self.ecs.update_service(
                cluster=target.cluster, service=target.service, forceNewDeployment=True
            ))
        except RemediationError as exc:
            return aws_failure(decide, "UpdateService", exc)
        details: dict[str, Any] = {}
        deployments = response.get("service", {}).get("deployments", [])
        primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
        if primary:
            details["deployment"] = primary.get("id")
        if not snapshot.arn:
            details["service_arn"] = response.get("service", {}).get("serviceArn")
        return decide(
            "deployed", "deployed", "forced a new deployment (all guards passed)", details=details
        )

    def _stop_tasks(self, snapshot: ServiceSnapshot, plan: StopPlan, decide: Decide) -> Decision:
        cluster = snapshot.target.cluster
        stopped: list[str] = []
        failed: dict[str, str] = {}
        errors: list[RemediationError] = []
        for arn in plan.stop:
            try:
                ecs_action("StopTask", partial(
                    self.ecs.stop_task, cluster=cluster, task=arn, reason=STOP_REASON
                ))
            except RemediationError as exc:
                failed[arn] = exc.code or "error"
                errors.append(exc)
                continue
            stopped.append(arn)
        details: dict[str, Any] = {"stopped": stopped}
        if plan.held_back:
            details["held_back"] = list(plan.held_back)
        if failed:
            details["failed"] = failed
        if not stopped:
            failure = aws_failure(decide, "StopTask", errors[0])
            return replace(failure, details={**failure.details, **details},
                           retryable=failure.retryable and all(e.retryable for e in errors))
        ids = ", ".join(task_id(a) for a in stopped)
        more = f"; {len(plan.held_back)} more held back (at most running - 1 at once)" if (
            plan.held_back) else ""
        return decide("stopped", "stopped",
                      f"stopped {len(stopped)} stuck task(s): {ids} (all guards passed){more}",
                      details=details)

    def _mark(self, snapshot: ServiceSnapshot, now: datetime, decision: Decision) -> None:
        """After a remedy: the remediated-at tag (cooldown, also without STATE_TABLE) and the
        remedy record (what was done, for the escalation). Neither failing undoes the remedy."""
        arn = snapshot.arn or decision.details.get("service_arn")
        if arn:
            try:
                tag_remediated(self.ecs, arn, now)
            except Exception as exc:  # noqa: BLE001 - the remedy happened; the tag is a bonus
                log.warning(json.dumps({"event": "tag_failed", "target": str(snapshot.target),
                                        "error": error_code(exc)}))
        ttl = timedelta(seconds=self.policy.cooldown_seconds) + REMEDY_TTL_EXTRA
        try:
            self.state.put_record(remedy_key(snapshot.target),
                                  remedy_entry(decision, self._alarm_at), now, ttl)
        except Exception as exc:  # noqa: BLE001 - the tag still says when
            log.warning(json.dumps({"event": "remedy_record_failed",
                                    "target": str(snapshot.target), "error": error_code(exc)}))

    # -- helpers --

    def _last_remedy(self, target: Target) -> dict[str, Any] | None:
        try:
            return self.state.get_record(remedy_key(target))
        except Exception:  # noqa: BLE001 - the escalation falls back to the tag
            return None

    def _unlock(self, key: str) -> None:
        try:
            self.state.unlock_remediation(key)
        except Exception as exc:  # noqa: BLE001 - the lock expires with the cooldown anyway
            log.warning(json.dumps({"event": "unlock_failed", "target": key,
                                    "error": error_code(exc)}))

    def _release_slot(self, key: str, now: datetime) -> str | None:
        """Release the ledger slot; ``None`` when done, else the error code (slot stays used)."""
        try:
            self.state.release_remediation(key, now)
        except Exception as exc:  # noqa: BLE001
            code = error_code(exc)
            log.warning(json.dumps({"event": "ledger_release_failed", "target": key,
                                    "error": code}))
            return f"slot not released: {code}"
        return None

    def _recent(self, target: Target, now: datetime) -> int:
        recorded = self.state.recent_remediations(now)
        if self.state.durable:
            return recorded
        return max(recorded, tagged_in_cluster(self.ecs, target.cluster, now - REMEDIATION_WINDOW))

"""The ECS side of remediation: :class:`Remediator` runs the guards of :mod:`toolkit.alarms.guards`
against ECS and the state store and, when they all pass, forces a new deployment.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from toolkit.alarms.events import AlarmEvent
from toolkit.alarms.guards import (
    REMEDIATED_AT_TAG,
    Action,
    Decision,
    DecisionCode,
    RemediationPolicy,
    ServiceSnapshot,
    Target,
    check_rate,
    check_service,
    in_minutes,
    snapshot_from_ecs,
    target_from_alarm,
)
from toolkit.alarms.settings import RemediationMode
from toolkit.alarms.state import (
    LEDGER_CONTENTION,
    REMEDIATION_WINDOW,
    MemoryStateStore,
    StateStore,
)
from toolkit.aws.clients import client as aws_client
from toolkit.errors import ConfigError, ToolkitError, aws_error_code, is_transient

log = logging.getLogger("toolkit.alarms.guards")

# mypy-boto3-ecs is not installed in every environment: type the client loosely.
ECSClient = Any

class Decide(Protocol):
    """Builds the :class:`Decision` of one remediation attempt (target, alarm, mode and time
    already bound)."""

    def __call__(
        self, action: Action, code: DecisionCode, reason: str, *, retryable: bool = False,
        details: Mapping[str, Any] | None = None,
    ) -> Decision: ...


# --- I/O ----------------------------------------------------------------------------------------



def _error_code(exc: Exception) -> str:
    return aws_error_code(exc) or type(exc).__name__


# ECS answers that a retry cannot fix: the handler's role lacks a permission.
_DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"})


def _ecs_failure(decide: Decide, call: str, action: str, exc: Exception) -> Decision:
    code = _error_code(exc)
    if code in _DENIED:
        return decide(
            "failed", "misconfigured",
            f"the handler's IAM role may not call ecs:{action} ({code})",
        )
    return decide(
        "failed", "ecs-error", f"{call} failed: {code}", retryable=is_transient(exc)
    )


def _state_failure(decide: Decide, what: str, exc: Exception) -> Decision:
    if isinstance(exc, ConfigError):
        return decide("failed", "misconfigured", str(exc))
    if aws_error_code(exc) == LEDGER_CONTENTION:
        return decide(
            "failed", "state-error",
            f"could not {what}: the hourly ledger is contended by other deliveries",
            retryable=True,
        )
    cause = exc.__cause__
    transient = is_transient(exc) or (cause is not None and is_transient(cause))
    return decide(
        "failed", "state-error", f"could not {what}: {_error_code(exc)}", retryable=transient
    )


class Remediator:
    """Runs the guards against ECS and, when they all pass, forces a new deployment."""

    def __init__(
        self,
        policy: RemediationPolicy,
        ecs: ECSClient | None = None,
        *,
        state: StateStore | None = None,
        ecs_factory: Callable[[], ECSClient] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.policy = policy
        self._ecs = ecs
        self._ecs_factory = ecs_factory
        self.state: StateStore = state if state is not None else MemoryStateStore()
        self.clock = clock
        self._before_deploy: Callable[[], None] | None = None

    @property
    def ecs(self) -> ECSClient:
        if self._ecs is None:
            if self._ecs_factory is not None:
                self._ecs = self._ecs_factory()
            else:
                self._ecs = aws_client("ecs", read_timeout=5)
        return self._ecs

    def remediate_alarm(
        self,
        alarm: AlarmEvent,
        now: datetime | None = None,
        *,
        before_deploy: Callable[[], None] | None = None,
    ) -> Decision:
        """Guards, then the deployment; ``before_deploy`` runs just before ``UpdateService`` (the
        responder records "deploying" there, so a retry after a crash knows)."""
        target = target_from_alarm(alarm, self.policy)
        if isinstance(target, Decision):
            return replace(target, at=now or self.clock())
        self._before_deploy = before_deploy
        try:
            return self.remediate(target, now=now, alarm=alarm.name)
        finally:
            self._before_deploy = None

    def remediate(
        self,
        target: Target,
        *,
        now: datetime | None = None,
        alarm: str | None = None,
        mode: RemediationMode | None = None,
    ) -> Decision:
        now = now or self.clock()
        mode = mode or self.policy.mode

        def decide(
            action: Action, code: DecisionCode, reason: str, *, retryable: bool = False,
            details: Mapping[str, Any] | None = None,
        ) -> Decision:
            return Decision(
                action=action, code=code, reason=reason, target=target, alarm=alarm, mode=mode,
                at=now, retryable=retryable, details=dict(details or {}),
            )

        if mode == "off":
            return decide(
                "skipped", "remediation-off", "automatic remediation is off (REMEDIATION=off)"
            )
        try:
            snapshot = self._describe(target)
        except Exception as exc:  # noqa: BLE001 - any ECS failure becomes a decision
            code = _error_code(exc)
            if code == "ClusterNotFoundException":
                return decide("skipped", "service-not-found", f"cluster {target.cluster} not found")
            return _ecs_failure(decide, "DescribeServices", "DescribeServices", exc)
        if snapshot is None:
            return decide("skipped", "service-not-found", "service not found in the cluster")
        refused = check_service(snapshot, self.policy, now)
        if refused is not None:
            return decide("skipped", *refused)
        try:
            recent = self._recent(target, now)
        except Exception as exc:  # noqa: BLE001
            if not isinstance(exc, ToolkitError):  # ECS (ListServices); the stores wrap theirs
                return _ecs_failure(decide, "ListServices", "ListServices", exc)
            return _state_failure(decide, "count recent remediations", exc)
        refused = check_rate(recent, self.policy)
        if refused is not None:
            return decide("skipped", *refused)
        if mode == "dry-run":
            return decide("dry-run", "dry-run", "all guards pass: would force a new deployment")
        return self._locked_deploy(snapshot, now, decide)

    def _locked_deploy(
        self, snapshot: ServiceSnapshot, now: datetime, decide: Decide
    ) -> Decision:
        """Lock the service, take an hourly slot, deploy; give both back if nothing deployed."""
        # Per-service lock, held for the cooldown: of several deliveries (or alarms) racing past
        # the ECS checks above before any deployment shows, only one reaches UpdateService.
        key = str(snapshot.target)
        lock_ttl = timedelta(seconds=max(0, self.policy.cooldown_seconds))
        try:
            locked = self.state.lock_remediation(key, now, lock_ttl)
        except Exception as exc:  # noqa: BLE001
            return _state_failure(decide, "lock the service", exc)
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
            return _state_failure(decide, "record the remediation", exc)
        if not reserved:
            self._unlock(key)
            return decide(
                "skipped", "rate-limit", f"hourly limit of {self.policy.max_per_hour} reached"
            )
        decision = self._deploy(snapshot, now, decide)
        if not decision.performed:
            # Nothing was deployed: give back the hourly slot and the lock so a retry may act.
            released = self._release_slot(key, now)
            self._unlock(key)
            if released is not None:
                decision = replace(decision, details={**decision.details, "ledger": released})
        return decision

    def _unlock(self, key: str) -> None:
        try:
            self.state.unlock_remediation(key)
        except Exception as exc:  # noqa: BLE001 - the lock expires with the cooldown anyway
            log.warning(json.dumps({"event": "unlock_failed", "target": key,
                                    "error": _error_code(exc)}))

    def _release_slot(self, key: str, now: datetime) -> str | None:
        """Release the ledger slot; ``None`` when done, else the error code (slot stays used)."""
        try:
            self.state.release_remediation(key, now)
        except Exception as exc:  # noqa: BLE001
            code = _error_code(exc)
            log.warning(json.dumps({"event": "ledger_release_failed", "target": key,
                                    "error": code}))
            return f"slot not released: {code}"
        return None

    # -- helpers --

    def _describe(self, target: Target) -> ServiceSnapshot | None:
        response = self.ecs.describe_services(
            cluster=target.cluster, services=[target.service], include=["TAGS"]
        )
        services = response.get("services") or []
        if not services:
            return None
        return snapshot_from_ecs(target, services[0])

    def _recent(self, target: Target, now: datetime) -> int:
        recorded = self.state.recent_remediations(now)
        if self.state.durable:
            return recorded
        return max(recorded, self._tagged_in_cluster(target.cluster, now))

    def _tagged_in_cluster(self, cluster: str, now: datetime) -> int:
        """Services of ``cluster`` whose remediated-at tag falls within the last hour."""
        since = now - REMEDIATION_WINDOW
        arns: list[str] = []
        for page in self.ecs.get_paginator("list_services").paginate(cluster=cluster):
            arns.extend(page.get("serviceArns", []))
        count = 0
        for i in range(0, len(arns), 10):
            described = self.ecs.describe_services(
                cluster=cluster, services=arns[i : i + 10], include=["TAGS"]
            )
            for svc in described.get("services", []):
                snap = snapshot_from_ecs(Target(cluster, svc.get("serviceName", "")), svc)
                at = snap.last_remediated_at
                if at is not None and at > since:
                    count += 1
        return count

    def _deploy(
        self, snapshot: ServiceSnapshot, now: datetime, decide: Decide
    ) -> Decision:
        target = snapshot.target
        if self._before_deploy is not None:
            self._before_deploy()
        try:
            response = self.ecs.update_service(
                cluster=target.cluster, service=target.service, forceNewDeployment=True
            )
        except Exception as exc:  # noqa: BLE001
            return _ecs_failure(decide, "UpdateService", "UpdateService", exc)
        details: dict[str, Any] = {}
        deployments = response.get("service", {}).get("deployments", [])
        primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
        if primary:
            details["deployment"] = primary.get("id")
        arn = snapshot.arn or response.get("service", {}).get("serviceArn")
        if arn:
            try:
                stamp = str(int(now.timestamp()))
                self.ecs.tag_resource(
                    resourceArn=arn, tags=[{"key": REMEDIATED_AT_TAG, "value": stamp}]
                )
            except Exception as exc:  # noqa: BLE001 - the deployment happened; the tag is a bonus
                details["tag_error"] = _error_code(exc)
        return decide(
            "deployed", "deployed", "forced a new deployment (all guards passed)", details=details
        )

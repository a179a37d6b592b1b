"""The remediation guards (pure) for stuck Celery worker services.

A remedy (a forced deployment for ``WorkerStuck``, stopping the stuck tasks for ``WorkersStuck``)
happens only when every guard passes, in this order (cheap checks first, the ones needing AWS
after; :class:`~toolkit.alarms.remediator.Remediator` runs them):

1. the alarm is the toolkit's own signal: in ALARM, watching a remediating metric (``WorkerStuck``
   and ``WorkersStuck`` by default) in the configured namespace (``CELERY_ECS_NAMESPACE``, default
   ``Celery``), with an "above the threshold" comparison (``GreaterThan[OrEqualTo]Threshold``, or a
   reason saying "greater than ... the threshold" when the event carries no operator), a reason
   that is not missing data treated as breaching, dimensions naming the ECS ``ClusterName`` and
   ``ServiceName`` (a metric-math alarm: a remediating metric is among its inputs and every input
   naming a service names the same one), and the toolkit's own naming in this handler's
   environment: ``Environment`` = ``ENVIRONMENT`` and the name ``<environment>-<service>-<metric>``;
   the alarm is not a ``set-alarm-state`` test (a reason without datapoints: logged, no follow-up);
2. ``REMEDIATION`` is not ``off``;
3. the live datapoints agree (``GetMetricData``, :mod:`toolkit.alarms.evidence`), before any ECS
   call;
4. the service exists, is ACTIVE and carries the tag ``celery-ecs:remediate=true``;
5. no deployment is in progress (one deployment only, not ``IN_PROGRESS``);
6. its last deployment (and our last remedy, kept in a service tag) is older than
   ``COOLDOWN_SECONDS``: within it after our own remedy, the decision is ``still-stuck`` (the
   escalation) and nothing more is done;
7. (stop-tasks) the collector's verdict record names the stuck tasks (``alarms.taskstop``);
8. fewer than ``MAX_REMEDIATIONS_PER_HOUR`` remedies happened in the last hour;
9. ``REMEDIATION`` is ``enabled`` (``dry-run`` stops here and reports what it would do);
10. the per-service remediation lock (``remediate#<cluster>/<service>``, TTL = cooldown) is free
    and taken, then an hourly ledger slot is reserved. Both are given back if the ECS action
    fails, so a retry may act and a failure does not use up the hourly limit.

Guards 1 and 4 to 6 are pure functions over frozen dataclasses here. Every call returns a
:class:`~toolkit.alarms.decision.Decision` with a code and a reason in words.

What holds without ``STATE_TABLE``: duplicates handled one after another cannot deploy twice,
because the first deployment resets the ECS deployment ``createdAt`` (guard 6) and shows as in
progress (guard 5); copies racing in *different* containers can both pass those checks, and only
the in-memory lock of one container stands in the way. The hourly limit counts services of the
*same cluster* whose ``celery-ecs:remediated-at`` tag is recent, plus this container's own record;
concurrent containers may each pass it once before the other's tag lands. With ``STATE_TABLE`` the
lock is a conditional write shared by every container and the limit is one conditionally-written
ledger, exact across containers and clusters.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from toolkit.alarms.decision import (
    IRRELEVANT,
    Action,
    Decision,
    DecisionCode,
    Remedy,
    Target,
    log_decision,
)
from toolkit.alarms.events import AlarmEvent, MetricRef
from toolkit.alarms.settings import AlarmHandlerSettings, RemediationMode
from toolkit.env import DEFAULT_NAMESPACE, ENV_ENVIRONMENT
from toolkit.metricnames import ENVIRONMENT, WORKER_STUCK, WORKERS_STUCK

__all__ = [
    "IRRELEVANT", "OPT_IN_TAG", "REMEDIATED_AT_TAG", "Action", "Decision", "DecisionCode",
    "DeploymentInfo", "RemediationPolicy", "Remedy", "ServiceSnapshot", "Target", "check_rate",
    "check_service", "in_minutes", "log_decision", "remedy_of", "snapshot_from_ecs",
    "target_from_alarm",
]

log = logging.getLogger(__name__)

OPT_IN_TAG = "celery-ecs:remediate"
REMEDIATED_AT_TAG = "celery-ecs:remediated-at"

ABOVE_THRESHOLD = frozenset({"GreaterThanThreshold", "GreaterThanOrEqualToThreshold"})
# "... [1.0 (...)] was greater than or equal to the threshold (1.0)": not "not greater", not the
# anomaly band's "upper thresholds".
_ABOVE_REASON = re.compile(r"(?<!not )\bgreater than (?:or equal to )?the threshold \(", re.I)
_MISSING_BREACHING = re.compile(r"missing datapoints? (?:was|were) treated as \[?breaching", re.I)


@dataclass(frozen=True)
class RemediationPolicy:
    mode: RemediationMode = "off"
    cooldown_seconds: int = 900
    max_per_hour: int = 3
    remediating_metrics: tuple[str, ...] = (WORKER_STUCK, WORKERS_STUCK)
    namespace: str = DEFAULT_NAMESPACE
    # The handler's ENVIRONMENT: only alarms named ``<environment>-<service>-<metric>`` with that
    # Environment dimension are acted on ("" refuses every alarm: misconfigured).
    environment: str = ""

    @classmethod
    def from_settings(cls, settings: AlarmHandlerSettings) -> RemediationPolicy:
        return cls(
            mode=settings.remediation,
            cooldown_seconds=settings.cooldown_seconds,
            max_per_hour=settings.max_remediations_per_hour,
            remediating_metrics=settings.remediating_metrics,
            namespace=settings.namespace,
            environment=settings.environment,
        )


def remedy_of(metric: str) -> Remedy:
    """``WorkersStuck`` stops the stuck tasks; every other remediating metric deploys."""
    return "stop-tasks" if metric == WORKERS_STUCK else "deploy"


@dataclass(frozen=True)
class DeploymentInfo:
    id: str
    status: str  # PRIMARY | ACTIVE | INACTIVE
    rollout_state: str | None  # COMPLETED | IN_PROGRESS | FAILED (None for old/CODE_DEPLOY)
    created_at: datetime | None


@dataclass(frozen=True)
class ServiceSnapshot:
    """What the guards need to know about one ECS service (from DescribeServices)."""

    target: Target
    status: str = "ACTIVE"
    arn: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    deployments: tuple[DeploymentInfo, ...] = ()
    running_count: int | None = None

    def tag(self, key: str) -> str | None:
        return next((v for k, v in self.tags if k == key), None)

    @property
    def opted_in(self) -> bool:
        return (self.tag(OPT_IN_TAG) or "").strip().lower() == "true"

    @property
    def last_remediated_at(self) -> datetime | None:
        raw = self.tag(REMEDIATED_AT_TAG)
        if raw and raw.isdigit():
            try:  # a hand-edited tag ("9" * 20, "²") must not crash the guards
                return datetime.fromtimestamp(int(raw), tz=UTC)
            except (OverflowError, ValueError, OSError):
                return None
        return None

    @property
    def last_deployment_at(self) -> datetime | None:
        stamps = [d.created_at for d in self.deployments if d.created_at is not None]
        if self.last_remediated_at is not None:
            stamps.append(self.last_remediated_at)
        return max(stamps) if stamps else None


# --- pure guards --------------------------------------------------------------------------------


def in_minutes(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60} min" if seconds >= 120 else f"{seconds} s"


def remediating_input(alarm: AlarmEvent, policy: RemediationPolicy) -> MetricRef | None:
    """The alarm's input watching a remediating metric (the one naming a service first)."""
    inputs = alarm.inputs or ((alarm.metric,) if alarm.metric else ())
    found = [m for m in inputs if m.name in policy.remediating_metrics]
    named = [m for m in found if m.dimension("ClusterName") and m.dimension("ServiceName")]
    best = named or found
    return best[0] if best else None


def target_from_alarm(alarm: AlarmEvent, policy: RemediationPolicy) -> Target | Decision:
    """Guard 1: a remediating alarm in ALARM whose dimensions name an ECS service, named and
    dimensioned as the toolkit names its own alarms in this handler's environment.

    A metric-math alarm qualifies only when a remediating metric is among its inputs and every
    input that names a service names the same one (``MAX([stuck_a, stuck_b])`` names two: no).
    """

    def skip(code: DecisionCode, reason: str) -> Decision:
        return Decision("skipped", code, reason, alarm=alarm.name, mode=policy.mode)

    if alarm.state != "ALARM":
        return skip("not-alarm", f"alarm is {alarm.state}, not ALARM")
    inputs = alarm.inputs or ((alarm.metric,) if alarm.metric else ())
    names = [m.name for m in inputs]
    metric = remediating_input(alarm, policy)
    if metric is None:
        if alarm.kind == "math" and names:
            what = f"metric math over {', '.join(sorted(set(names)))}"
        elif names:
            what = f"metric {names[0]}"
        else:
            what = f"a {alarm.kind} alarm without a metric"
        return skip(
            "not-remediating-metric",
            f"{what} is not a remediating metric ({', '.join(policy.remediating_metrics)})",
        )
    if alarm.is_test:
        return skip("test-alarm", (
            "a test: the alarm's state was set by hand (set-alarm-state; its reason carries no "
            "datapoints), and a test never acts"
        ))
    signal = _own_signal(alarm, inputs, policy)
    if signal is not None:
        return skip(*signal)
    target = _target(alarm, inputs)
    if isinstance(target, tuple):
        return skip(*target)
    naming = _own_naming(alarm, metric, target, policy)
    if naming is not None:
        return Decision("skipped", naming[0], naming[1], target=target, alarm=alarm.name,
                        mode=policy.mode, remedy=remedy_of(metric.name))
    return target


def _target(
    alarm: AlarmEvent, inputs: tuple[MetricRef, ...]
) -> Target | tuple[DecisionCode, str]:
    if alarm.kind == "math":
        named = sorted(
            {
                (m.dimension("ClusterName") or "?", m.dimension("ServiceName") or "?")
                for m in inputs
                if m.dimension("ClusterName") or m.dimension("ServiceName")
            }
        )
        if len(named) > 1:
            listed = ", ".join(f"{c}/{s}" for c, s in named)
            return "no-target", f"the metric math inputs name more than one service ({listed})"
        if len(named) == 1 and "?" not in named[0]:
            return Target(*named[0])
        return "no-target", "the metric math inputs do not name both ClusterName and ServiceName"
    if not alarm.cluster or not alarm.service:
        return "no-target", "the alarm's dimensions do not name both ClusterName and ServiceName"
    return Target(alarm.cluster, alarm.service)


def _own_naming(
    alarm: AlarmEvent, metric: MetricRef, target: Target, policy: RemediationPolicy
) -> tuple[DecisionCode, str] | None:
    """The toolkit's own alarm of this environment: ``Environment`` = ENVIRONMENT and the name
    ``<environment>-<service>-<metric>`` (``prod-`` is a prefix of ``prod-eu-``: exact only)."""
    env = policy.environment
    if not env:
        return "misconfigured", (
            f"{ENV_ENVIRONMENT} is not set, so the handler cannot tell its own environment's "
            "alarms and acts on none"
        )
    found = metric.dimension(ENVIRONMENT)
    if found != env:
        return "not-own-alarm", (
            f"metric {metric.name} has Environment={found or '(none)'}, not this handler's "
            f"{env} ({ENV_ENVIRONMENT})"
        )
    expected = f"{env}-{target.service}-{metric.name}"
    if alarm.name != expected:
        return "not-own-alarm", (
            f"the alarm is not named {expected} (the toolkit names its {metric.name} alarms "
            "<environment>-<service>-<metric>)"
        )
    return None


def _own_signal(
    alarm: AlarmEvent, inputs: tuple[MetricRef, ...], policy: RemediationPolicy
) -> tuple[DecisionCode, str] | None:
    """The toolkit's own signal: namespace, "above the threshold", not missing data."""
    for metric in inputs:
        if metric.name in policy.remediating_metrics and metric.namespace != policy.namespace:
            return "foreign-namespace", (
                f"metric {metric.name} is in namespace {metric.namespace or '(none)'}, not the "
                f"configured {policy.namespace} (CELERY_ECS_NAMESPACE)"
            )
    if alarm.comparison is not None and alarm.comparison not in ABOVE_THRESHOLD:
        return "not-above-threshold", (
            f"the alarm compares with {alarm.comparison}, not above a threshold"
        )
    if _MISSING_BREACHING.search(alarm.reason):
        return "missing-data", (
            "the alarm fired on missing data treated as breaching (the collector may have "
            "stopped), not on a stuck verdict"
        )
    if alarm.comparison is None and not _ABOVE_REASON.search(alarm.reason):
        return "not-above-threshold", (
            "the alarm's reason does not say a value was above its threshold"
        )
    return None


def check_service(
    snapshot: ServiceSnapshot, policy: RemediationPolicy, now: datetime
) -> tuple[DecisionCode, str] | None:
    """Guards 3 to 5 on a described service; ``None`` when they all pass."""
    if snapshot.status != "ACTIVE":
        return "service-not-found", f"service status is {snapshot.status}"
    if not snapshot.opted_in:
        return "not-opted-in", f"service has no {OPT_IN_TAG}=true tag"
    live = [d for d in snapshot.deployments if d.status in ("PRIMARY", "ACTIVE")]
    in_progress = [d for d in live if d.rollout_state == "IN_PROGRESS"]
    if len(live) > 1 or in_progress:
        return "deployment-in-progress", (
            f"a deployment is in progress ({len(live)} active deployments"
            + (f", rollout {in_progress[0].id} IN_PROGRESS" if in_progress else "")
            + ")"
        )
    last = snapshot.last_deployment_at
    if last is not None:
        age = (now - last).total_seconds()
        if age < policy.cooldown_seconds:
            return "cooldown", (
                f"last deployment was {in_minutes(age)} ago, cooldown is "
                f"{in_minutes(policy.cooldown_seconds)}"
            )
    return None


def check_rate(recent: int, policy: RemediationPolicy) -> tuple[DecisionCode, str] | None:
    """Guard 6: the hourly limit on forced deployments."""
    if recent >= policy.max_per_hour:
        return "rate-limit", (
            f"{recent} forced deployments in the last hour, limit is {policy.max_per_hour}"
        )
    return None


def snapshot_from_ecs(target: Target, service: Mapping[str, Any]) -> ServiceSnapshot:
    """Build a :class:`ServiceSnapshot` from one DescribeServices ``services[]`` entry."""
    deployments = []
    for raw in service.get("deployments") or []:
        created = raw.get("createdAt")
        deployments.append(
            DeploymentInfo(
                id=str(raw.get("id", "")),
                status=str(raw.get("status", "")),
                rollout_state=raw.get("rolloutState"),
                created_at=created if isinstance(created, datetime) else None,
            )
        )
    tags = tuple((str(t.get("key")), str(t.get("value", ""))) for t in service.get("tags") or [])
    return ServiceSnapshot(
        target=target,
        status=str(service.get("status", "ACTIVE")),
        arn=service.get("serviceArn"),
        tags=tags,
        deployments=tuple(deployments),
        running_count=running if isinstance(running := service.get("runningCount"), int) else None,
    )

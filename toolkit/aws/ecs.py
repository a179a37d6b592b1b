"""ECS read helpers: services 10 per ``DescribeServices`` call, tasks 100 per ``DescribeTasks``.

Contract layer: boto3 clients are injected (build one with :func:`toolkit.aws.client`), every
``ClientError`` becomes an :class:`~toolkit.errors.AwsError` carrying the AWS error code, and the
only "not found" that is not an error is a service ECS lists in ``failures`` (``MISSING``) or a
cluster that does not exist: those services come back in ``ServicesRead.missing`` with a reason.
Throttling is retried by the client's standard retry mode; a final failure raises ``AwsError``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from toolkit.errors import AwsError, aws_error_code

DESCRIBE_SERVICES_BATCH = 10  # the API's limit
DESCRIBE_TASKS_BATCH = 100  # the API's limit
_T = TypeVar("_T")


@dataclass(frozen=True)
class ServiceView:
    """One ECS service as ``DescribeServices`` shows it."""

    cluster: str
    service: str
    running: int
    desired: int
    pending: int
    deploying: bool  # a rollout in progress, or more than one deployment
    rollout_state: str | None  # the PRIMARY deployment's rolloutState
    launch_type: str | None  # EC2, FARGATE, EXTERNAL (from capacity providers when unset)
    status: str = "ACTIVE"
    updated_at: float | None = None  # the PRIMARY deployment's updatedAt (unix seconds)
    placement_failure: str | None = None  # the newest "unable to place a task" service event
    placement_failure_at: float | None = None


@dataclass(frozen=True)
class TaskFacts:
    """What ``DescribeTasks`` says of one task: its service (from ``group``) and status."""

    service: str | None
    last_status: str
    desired_status: str


@dataclass(frozen=True)
class ServicesRead:
    found: dict[str, ServiceView] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # service name -> why
    calls: int = 0


def chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def short_name(arn_or_name: str) -> str:
    """``arn:aws:ecs:r:1:cluster/prod`` -> ``prod``; a plain name is returned as is."""
    return arn_or_name.rsplit("/", 1)[-1]


def wrap(exc: Exception, what: str) -> AwsError:
    code = aws_error_code(exc)
    message = getattr(exc, "response", {}).get("Error", {}).get("Message") if code else None
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else type(exc).__name__
    text = f"{code}: {message}" if message else (code or first)
    return AwsError(f"{what} failed: {text}", code=code)


def _launch_type(svc: dict[str, Any]) -> str | None:
    if svc.get("launchType"):
        return str(svc["launchType"])
    strategy = svc.get("capacityProviderStrategy") or []
    providers = [str(p.get("capacityProvider", "")) for p in strategy]
    if any("FARGATE" in p for p in providers):
        return "FARGATE"
    return "EC2" if providers else None


def _epoch(value: Any) -> float | None:
    """A boto3 timestamp (datetime) or a number -> unix seconds."""
    if value is None:
        return None
    stamp = getattr(value, "timestamp", None)
    try:
        return float(stamp()) if callable(stamp) else float(value)
    except (TypeError, ValueError):
        return None


#: ECS service events saying a task could not be placed (no capacity, not a slow start)
PLACEMENT_FAILURE = "unable to place a task"


def _placement_failure(svc: dict[str, Any]) -> tuple[str | None, float | None]:
    for event in svc.get("events") or []:  # newest first
        message = str(event.get("message") or "")
        if PLACEMENT_FAILURE in message:
            return message[:300], _epoch(event.get("createdAt"))
    return None, None


def service_view(cluster: str, svc: dict[str, Any]) -> ServiceView:
    deployments = svc.get("deployments") or []
    primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
    rollout = None if primary is None else primary.get("rolloutState")
    deploying = len(deployments) > 1 or any(
        d.get("rolloutState") == "IN_PROGRESS" for d in deployments
    )
    failure, failure_at = _placement_failure(svc)
    return ServiceView(
        cluster=cluster,
        service=str(svc["serviceName"]),
        running=int(svc.get("runningCount", 0)),
        desired=int(svc.get("desiredCount", 0)),
        pending=int(svc.get("pendingCount", 0)),
        deploying=deploying,
        rollout_state=None if rollout is None else str(rollout),
        launch_type=_launch_type(svc),
        status=str(svc.get("status", "ACTIVE")),
        updated_at=None if primary is None else _epoch(primary.get("updatedAt")),
        placement_failure=failure,
        placement_failure_at=failure_at,
    )


def describe_services(client: Any, cluster: str, names: Sequence[str]) -> ServicesRead:
    """Every named service of ``cluster``, 10 per call. Services ECS does not know (or knows only
    as INACTIVE/deleted) and every service of a cluster that does not exist are ``missing``."""
    found: dict[str, ServiceView] = {}
    missing: dict[str, str] = {}
    calls = 0
    unique = list(dict.fromkeys(names))
    for batch in chunks(unique, DESCRIBE_SERVICES_BATCH):
        calls += 1
        try:
            reply = client.describe_services(cluster=cluster, services=list(batch))
        except Exception as exc:
            if aws_error_code(exc) == "ClusterNotFoundException":
                return ServicesRead({}, {n: f"cluster {cluster} not found" for n in unique}, calls)
            raise wrap(exc, f"ECS DescribeServices in cluster {cluster}") from exc
        for svc in reply.get("services") or []:
            view = service_view(cluster, svc)
            if view.status != "ACTIVE" and view.status != "DRAINING":
                missing[view.service] = f"service {view.service} is {view.status.lower()}"
            else:
                found[view.service] = view
        for failure in reply.get("failures") or []:
            name = short_name(str(failure.get("arn", "")))
            reason = str(failure.get("reason", "MISSING"))
            if reason == "MISSING" and "cluster" in str(failure.get("detail", "")).lower():
                missing[name] = f"cluster {cluster} not found"
            else:
                why = "" if reason == "MISSING" else f" ({reason})"
                missing[name] = f"service {name} not found in cluster {cluster}{why}"
    for name in unique:
        if name not in found and name not in missing:
            missing[name] = f"service {name} not found in cluster {cluster}"
    return ServicesRead(found, missing, calls)


def describe_task_facts(client: Any, cluster: str, task_arns: Sequence[str]) -> tuple[
    dict[str, TaskFacts], int
]:
    """Each task's service (``group`` is ``service:NAME``) and status, 100 tasks per call.
    Tasks ECS does not know (``failures``, or a cluster that does not exist) are left out: ECS
    shows a stopped task for at least an hour after it stopped. Returns (facts, calls)."""
    out: dict[str, TaskFacts] = {}
    calls = 0
    for batch in chunks(list(dict.fromkeys(task_arns)), DESCRIBE_TASKS_BATCH):
        calls += 1
        try:
            reply = client.describe_tasks(cluster=cluster, tasks=list(batch))
        except Exception as exc:
            if aws_error_code(exc) == "ClusterNotFoundException":
                return out, calls
            raise wrap(exc, f"ECS DescribeTasks in cluster {cluster}") from exc
        for task in reply.get("tasks") or []:
            if not task.get("taskArn"):
                continue
            group = str(task.get("group") or "")
            out[str(task["taskArn"])] = TaskFacts(
                service=group.removeprefix("service:") if group.startswith("service:") else None,
                last_status=str(task.get("lastStatus") or ""),
                desired_status=str(task.get("desiredStatus") or ""),
            )
    return out, calls


def services_of_tasks(client: Any, cluster: str, task_arns: Sequence[str]) -> tuple[
    dict[str, str], int
]:
    """Map task ARNs to their service names, 100 per call (:func:`describe_task_facts`). Tasks
    ECS no longer knows, or not started by a service, are left out. Returns (map, calls)."""
    facts, calls = describe_task_facts(client, cluster, task_arns)
    return {arn: f.service for arn, f in facts.items() if f.service}, calls

"""ECS helpers for tests running under moto: real clusters, task definitions and tagged services,
the live WorkerStuck / WorkersStuck datapoints the handler reads before acting, the tasks of a
service, and the collector's verdict record."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ecs.models import ecs_backends
from moto.moto_api import state_manager

from toolkit.verdictrecord import VerdictRecord

REGION = "eu-west-1"
ENVIRONMENT = "prod"
STUCK_METRICS = ("WorkerStuck", "WorkersStuck")


def publish(
    cluster: str,
    service: str,
    values: Sequence[float],
    *,
    metric: str = "WorkerStuck",
    environment: str = ENVIRONMENT,
    namespace: str = "Celery",
    now: datetime | None = None,
) -> None:
    """``values`` (oldest first) one minute apart, the last one 10 s before ``now``, as the
    collector publishes them."""
    cw = boto3.client("cloudwatch", region_name=REGION)
    end = (now or datetime.now(UTC)) - timedelta(seconds=10)
    dims = [{"Name": "Environment", "Value": environment},
            {"Name": "ClusterName", "Value": cluster}, {"Name": "ServiceName", "Value": service}]
    cw.put_metric_data(Namespace=namespace, MetricData=[
        {"MetricName": metric, "Dimensions": dims, "Value": float(v), "Unit": "Count",
         "Timestamp": end - timedelta(minutes=len(values) - 1 - i)}
        for i, v in enumerate(values)
    ])


def publish_stuck(cluster: str, service: str, value: float = 1.0, **kw: Any) -> None:
    """Both remediating metrics at ``value`` for the last 4 minutes: the service is stuck now."""
    for metric in STUCK_METRICS:
        publish(cluster, service, [value] * 4, metric=metric, **kw)


def make_service(
    ecs: Any,
    cluster: str,
    service: str,
    *,
    opted_in: bool | None = True,
    deployed_ago: float | None = 3600.0,
    stuck: float | None = 1.0,
    desired: int = 1,
) -> str:
    """Create cluster (idempotent), task definition and a service; return the service ARN.

    ``deployed_ago`` back-dates the service's deployment so cooldown does not apply (moto stamps
    deployments with the real clock); ``None`` leaves it fresh. ``stuck`` is the live value of
    both remediating metrics (``None``: nothing published).
    """
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(
        family=f"{service}-td",
        containerDefinitions=[
            {"name": "worker", "image": "celery-worker:latest", "memory": 256, "essential": True}
        ],
    )
    tags = []
    if opted_in is not None:
        tags.append({"key": "celery-ecs:remediate", "value": "true" if opted_in else "false"})
    arn: str = ecs.create_service(
        cluster=cluster,
        serviceName=service,
        taskDefinition=f"{service}-td",
        desiredCount=desired,
        tags=tags,
    )["service"]["serviceArn"]
    if deployed_ago is not None:
        age_deployments(cluster, service, deployed_ago)
    if stuck is not None:
        publish_stuck(cluster, service, stuck)
    return arn


@contextmanager
def tasks_stay_running() -> Iterator[None]:
    """moto advances a task's status on every read (RUNNING, DEACTIVATING, ...): hold it."""
    state_manager.set_transition(model_name="ecs::task",
                                 transition={"progression": "manual", "times": 10**6})
    try:
        yield
    finally:
        state_manager.unset_transition("ecs::task")


def start_tasks(ecs: Any, cluster: str, service: str, count: int) -> list[str]:
    """``count`` RUNNING tasks of ``service`` (group ``service:<service>``); their ARNs."""
    reply = ecs.run_task(
        cluster=cluster, taskDefinition=f"{service}-td", count=count, launchType="FARGATE",
        group=f"service:{service}",
        networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-1"],
                                                      "securityGroups": ["sg-1"]}},
    )
    return [t["taskArn"] for t in reply["tasks"]]


def task_status(ecs: Any, cluster: str, arns: Sequence[str]) -> dict[str, str]:
    described = ecs.describe_tasks(cluster=cluster, tasks=list(arns))["tasks"]
    return {t["taskArn"]: t["lastStatus"] for t in described}


def put_verdict(
    table: str,
    cluster: str,
    service: str,
    *,
    verdict: str = "degraded",
    stuck_tasks: Sequence[str] = (),
    reasons: Sequence[str] = ("1 of 3 tasks dead or hung",),
    backlog: Sequence[int] = (3, 5, 9, 20, 42, 80, 120, 160, 200, 240, 280, 310, 330, 340, 350),
    age: float = 30.0,
    interval: float = 60.0,
    environment: str = ENVIRONMENT,
) -> VerdictRecord:
    """The collector's verdict record, written as the collector writes it."""
    record = VerdictRecord(
        environment=environment, cluster=cluster, service=service, verdict=verdict,
        at=datetime.now(UTC).timestamp() - age, interval=interval, reasons=tuple(reasons),
        stuck_tasks=tuple(stuck_tasks), backlog=tuple(backlog),
    )
    boto3.client("dynamodb", region_name=REGION).put_item(TableName=table, Item=record.to_item())
    return record


def _service_model(cluster: str, service: str) -> Any:
    return ecs_backends[DEFAULT_ACCOUNT_ID][REGION].services[f"{cluster}:{service}"]


def age_deployments(cluster: str, service: str, seconds: float) -> None:
    model = _service_model(cluster, service)
    when = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=seconds)
    for deployment in model.deployments:
        deployment["createdAt"] = when
        deployment["updatedAt"] = when


def add_second_deployment(cluster: str, service: str) -> None:
    """Simulate a rolling deployment: a PRIMARY plus the previous ACTIVE one."""
    model = _service_model(cluster, service)
    old = copy.deepcopy(model.deployments[0])
    old["status"] = "ACTIVE"
    old["id"] = "ecs-svc/old"
    model.deployments.append(old)


def deployment_ids(ecs: Any, cluster: str, service: str) -> list[str]:
    svc = ecs.describe_services(cluster=cluster, services=[service])["services"][0]
    return [d["id"] for d in svc["deployments"]]


class CountingEcs:
    """Wraps a real (moto) ECS client and counts UpdateService calls."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.updates: list[tuple[str, str]] = []

    def update_service(self, **kwargs: Any) -> Any:
        self.updates.append((kwargs["cluster"], kwargs["service"]))
        return self._client.update_service(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class Recording:
    """Wraps a real (moto) client and records the name of every API call made through it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[str] = []
        self.kwargs: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            self.kwargs.append(kwargs)
            return attr(*args, **kwargs)

        return call

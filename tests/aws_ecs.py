"""ECS helpers for tests running under moto: real clusters, task definitions and tagged services."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.ecs.models import ecs_backends

REGION = "eu-west-1"


def make_service(
    ecs: Any,
    cluster: str,
    service: str,
    *,
    opted_in: bool | None = True,
    deployed_ago: float | None = 3600.0,
) -> str:
    """Create cluster (idempotent), task definition and a service; return the service ARN.

    ``deployed_ago`` back-dates the service's deployment so cooldown does not apply (moto stamps
    deployments with the real clock); ``None`` leaves it fresh.
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
        desiredCount=1,
        tags=tags,
    )["service"]["serviceArn"]
    if deployed_ago is not None:
        age_deployments(cluster, service, deployed_ago)
    return arn


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

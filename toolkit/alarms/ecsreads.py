"""The ECS calls around a remedy that decide nothing: describe the service, count recently
remediated services of a cluster (the hourly limit without ``STATE_TABLE``), tag a service as
remediated now (its cooldown, seen by every container)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from toolkit.alarms.guards import REMEDIATED_AT_TAG, ServiceSnapshot, Target, snapshot_from_ecs

__all__ = ["describe_service", "tag_remediated", "tagged_in_cluster"]

DESCRIBE_BATCH = 10  # DescribeServices takes at most 10 services


def describe_service(ecs: Any, target: Target) -> ServiceSnapshot | None:
    """DescribeServices (with tags) of ``target``; ``None`` when ECS does not know it."""
    response = ecs.describe_services(
        cluster=target.cluster, services=[target.service], include=["TAGS"]
    )
    services = response.get("services") or []
    if not services:
        return None
    return snapshot_from_ecs(target, services[0])


def tagged_in_cluster(ecs: Any, cluster: str, since: datetime) -> int:
    """Services of ``cluster`` whose remediated-at tag is later than ``since``."""
    arns: list[str] = []
    for page in ecs.get_paginator("list_services").paginate(cluster=cluster):
        arns.extend(page.get("serviceArns", []))
    count = 0
    for i in range(0, len(arns), DESCRIBE_BATCH):
        described = ecs.describe_services(
            cluster=cluster, services=arns[i : i + DESCRIBE_BATCH], include=["TAGS"]
        )
        for svc in described.get("services", []):
            snap = snapshot_from_ecs(Target(cluster, svc.get("serviceName", "")), svc)
            at = snap.last_remediated_at
            if at is not None and at > since:
                count += 1
    return count


def tag_remediated(ecs: Any, service_arn: str, now: datetime) -> None:
    """``celery-ecs:remediated-at=<epoch>`` on the service: its cooldown, in every container."""
    stamp = str(int(now.timestamp()))
    ecs.tag_resource(resourceArn=service_arn, tags=[{"key": REMEDIATED_AT_TAG, "value": stamp}])

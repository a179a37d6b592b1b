"""The collector Lambda handler: settings from the environment, one cycle per invocation."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import redis
from moto import mock_aws

URL = "redis://127.0.0.1:6379/1"
pytestmark = pytest.mark.redis


@pytest.fixture
def handler_module(monkeypatch: pytest.MonkeyPatch, unique: str) -> Iterator[Any]:
    monkeypatch.setenv("ENVIRONMENT", f"lambda-{unique}")
    monkeypatch.setenv("CELERY_ECS_BROKER_URL", URL)
    monkeypatch.setenv("CELERY_ECS_QUEUES", f"lq-{unique}")
    monkeypatch.delenv("CELERY_ECS_CONFIG", raising=False)
    module = importlib.import_module("lambdas.collector.handler")
    module._state.clear()
    yield module
    module._state.clear()
    redis.Redis.from_url(URL).delete(f"lq-{unique}")


@mock_aws
def test_one_cycle_per_invocation(handler_module: Any, unique: str) -> None:
    redis.Redis.from_url(URL).lpush(f"lq-{unique}", "{}", "{}")
    out = handler_module.handler({"source": "aws.events"}, None)
    assert out["ok"] is True and out["queues"] == 1
    cw = boto3.client("cloudwatch", region_name="eu-west-1")
    now = datetime.now(UTC)
    stats = cw.get_metric_statistics(
        Namespace="Celery", MetricName="QueueLength",
        Dimensions=[{"Name": "Environment", "Value": f"lambda-{unique}"},
                    {"Name": "Queue", "Value": f"lq-{unique}"}],
        StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=5),
        Period=60, Statistics=["Maximum"],
    )
    assert [p["Maximum"] for p in stats["Datapoints"]] == [2.0]


@mock_aws
def test_broker_down_is_reported_not_raised(
    handler_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELERY_ECS_BROKER_URL", "redis://:pw@127.0.0.1:1/0")
    handler_module._state.clear()
    out = handler_module.handler({}, None)
    assert out["ok"] is False and "cannot reach Redis" in out["errors"][0]
    assert "pw@" not in out["errors"][0]

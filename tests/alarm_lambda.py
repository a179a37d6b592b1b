"""Setup shared by the alarm handler Lambda tests: a moto ECS service (with its live WorkerStuck
and WorkersStuck datapoints), the handler module wired to the local Slack server, a Lambda context
counting down, and Lambda's async retries."""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.aws_ecs import REGION, make_service
from toolkit.alarms.responder import AlarmHandlingFailed

HANDLER_MODULE = "lambdas.alarm_handler.handler"


class Context:
    """A Lambda context whose remaining time counts down from ``remaining_ms`` in real time."""

    def __init__(self, remaining_ms: int = 120_000) -> None:
        self.remaining_ms = remaining_ms
        self._start = time.monotonic()

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.remaining_ms - int((time.monotonic() - self._start) * 1000))


def invoke_like_lambda(
    lam: ModuleType,
    event: dict[str, Any],
    ecs: Any,
    *,
    contexts: tuple[int, ...] = (120_000,),
    new_container_each_time: bool = False,
) -> tuple[dict[str, Any] | None, int]:
    """Lambda's async invocation: the event, then up to 2 retries after a raise. Returns the last
    result (None if every attempt raised) and how many attempts were made."""
    for attempt in range(3):
        if new_container_each_time:
            lam._responder = None
        lam.responder().remediator._ecs = ecs
        ctx = Context(contexts[min(attempt, len(contexts) - 1)])
        try:
            return lam.handler(event, ctx), attempt + 1
        except AlarmHandlingFailed:
            continue
    return None, 3


@contextmanager
def ecs_service(
    monkeypatch: pytest.MonkeyPatch, cluster: str, service: str, *, stuck: float | None = 1.0,
    running: int = 1,
) -> Iterator[Any]:
    """Inside ``mock_aws``: an ECS client with ``cluster``/``service`` created (rollouts
    complete, ``running`` tasks) and its remediating metrics at ``stuck`` now."""
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", str(running))
    with mock_aws():
        ecs = boto3.client("ecs", region_name=REGION)
        make_service(ecs, cluster, service, stuck=stuck, desired=running)
        yield ecs


@contextmanager
def handler_module(
    monkeypatch: pytest.MonkeyPatch, slack_api_url: str, token: str
) -> Iterator[ModuleType]:
    """The handler module with a bot-token Slack at ``slack_api_url``, remediation enabled, and
    a fresh responder (a new Lambda container) before and after."""
    for key, value in {
        "ENVIRONMENT": "prod",
        "REMEDIATION": "enabled",
        "SLACK_BOT_TOKEN": token,
        "SLACK_CHANNEL": "C0ALERTS",
        "SLACK_API_URL": slack_api_url,
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("SLACK_WEBHOOK_URL", "SLACK_SECRET_ARN", "STATE_TABLE", "GRAFANA_DASHBOARD_URL",
                "CELERY_ECS_NAMESPACE"):
        monkeypatch.delenv(key, raising=False)
    module = importlib.import_module(HANDLER_MODULE)
    module._responder = None
    try:
        yield module
    finally:
        module._responder = None

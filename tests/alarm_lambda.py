"""Setup shared by the alarm handler Lambda tests: a moto ECS service and the handler module
wired to the local Slack server."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.aws_ecs import REGION, make_service

HANDLER_MODULE = "lambdas.alarm_handler.handler"


@contextmanager
def ecs_service(monkeypatch: pytest.MonkeyPatch, cluster: str, service: str) -> Iterator[Any]:
    """Inside ``mock_aws``: an ECS client with ``cluster``/``service`` created (rollouts
    complete)."""
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "1")
    with mock_aws():
        ecs = boto3.client("ecs", region_name=REGION)
        make_service(ecs, cluster, service)
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

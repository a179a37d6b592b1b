"""Setup shared by the Slack button tests: the Slack actions Lambda module wired to moto (ECS,
DynamoDB, Secrets Manager holding the signing secret and bot token) and the local Slack server,
and presses signed as Slack signs them (toolkit/sandbox/press.py builds the requests)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import boto3
import pytest

from tests.aws_ecs import REGION
from tests.slack_server import SlackServer
from toolkit.alarms.buttons import ButtonValue
from toolkit.alarms.credentials import clear_secret_cache
from toolkit.sandbox.press import block_actions, function_url_event

MODULE = "lambdas.slack_actions.handler"
SIGNING_SECRET = "8f14e45fceea167a5a36dedd4bea2543"  # the Slack app's signing secret (a test one)
BOT_TOKEN = "xoxb-2222-ACTIONS-SECRET"
ONCALL = "U0ONCALL1"
CHANNEL = "C0ALERTS"
ALERT_TS = "1700000001.000100"


def slack_secret(name: str) -> str:
    """The Slack secret the template names (SLACK_SECRET_ARN): bot token, channel, signing
    secret. Inside mock_aws."""
    sm = boto3.client("secretsmanager", region_name=REGION)
    arn: str = sm.create_secret(Name=name, SecretString=json.dumps({
        "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_CHANNEL": CHANNEL,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET}))["ARN"]
    return arn


@contextmanager
def actions_module(monkeypatch: pytest.MonkeyPatch, server: SlackServer, *, table: str,
                   secret_arn: str, **env: str) -> Iterator[ModuleType]:
    """The handler module as the template configures it (``env`` overrides), a fresh container
    before and after."""
    values = {"ENVIRONMENT": "prod", "REMEDIATION": "off", "STATE_TABLE": table,
              "SLACK_SECRET_ARN": secret_arn, "SLACK_API_URL": server.api_url,
              "SLACK_ALLOWED_USERS": ONCALL, "COOLDOWN_SECONDS": "900",
              "MAX_REMEDIATIONS_PER_HOUR": "3", **env}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    for key in ("SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "SLACK_CHANNEL", "SLACK_SIGNING_SECRET",
                "AWS_LAMBDA_FUNCTION_NAME", "CELERY_ECS_NAMESPACE"):
        if key not in env:
            monkeypatch.delenv(key, raising=False)
    module = importlib.import_module(MODULE)
    module._app = None
    clear_secret_cache()
    try:
        yield module
    finally:
        module._app = None
        clear_secret_cache()


def button(action: str, value: ButtonValue) -> dict[str, Any]:
    return {"type": "button", "action_id": action, "value": value.encode(),
            "text": {"type": "plain_text", "text": action}}


def press_event(server: SlackServer, action: str, value: ButtonValue | dict[str, Any], *,
                user: str = ONCALL, secret: str | None = SIGNING_SECRET,
                timestamp: int | None = None, encode: bool = True,
                action_ts: str | None = None, signature: str | None = None) -> dict[str, Any]:
    """The function URL event of ``user`` pressing ``action`` (a value, or a raw button)."""
    element = value if isinstance(value, dict) else button(action, value)
    payload = block_actions(element, user=user, channel=CHANNEL, message_ts=ALERT_TS,
                            response_url=f"{server.url}/actions/T0SANDBOX/1/SECRETresponse",
                            action_ts=action_ts)
    return function_url_event(payload, secret, timestamp=timestamp, encode=encode,
                              signature=signature)


def press(module: ModuleType, event: dict[str, Any]) -> dict[str, Any]:
    """The request, then the job it started (the deferrer's thread), as Lambda would run both."""
    answer: dict[str, Any] = module.handler(event, None)
    assert module.app().deferrer.join(20.0)
    return answer


def replies(server: SlackServer) -> list[str]:
    """Every message the Slack actions handler posted in the alert's thread (its context line
    says "slack action:"; the alarm handler's follow-ups do not)."""
    return [text for r in server.messages()
            if r.path.startswith("/api/chat.postMessage") and r.json.get("thread_ts") == ALERT_TS
            and "slack action:" in (text := json.dumps(r.json))]

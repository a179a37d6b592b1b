"""Slack messages and senders against a recording server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from moto import mock_aws

from tests.conftest import free_port, load_event
from tests.slack_server import SlackServer
from toolkit.alarms import senders
from toolkit.alarms.guards import Decision, Target
from toolkit.alarms.messages import alarm_message
from toolkit.alarms.notes import decision_message
from toolkit.alarms.parsing import parse_event
from toolkit.alarms.senders import (
    BotSender,
    SlackCredentials,
    SlackMaybePosted,
    WebhookSender,
    build_sender,
    resolve_credentials,
)
from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.errors import SlackError

TOKEN = "xoxb-0000-SECRET-TOKEN-do-not-log"


@pytest.fixture
def server() -> Iterator[SlackServer]:
    srv = SlackServer(retry_after=1, hang_seconds=5).start()
    yield srv
    srv.stop()


def alarm(name: str) -> Any:
    return parse_event(load_event(name))[0]


# --- messages ----------------------------------------------------------------------------------


def test_alarm_message_reads_well() -> None:
    msg = alarm_message(
        alarm("sns_worker_stuck_alarm"),
        grafana_url="https://grafana.example/d/celery",
        environment="prod",
    )
    payload = msg.payload()
    assert payload["attachments"][0]["color"] == "#E01E5A"
    text = msg.plain()
    assert ":rotating_light: ALARM: prod-worker-emails-WorkerStuck" in text
    assert "Service `worker-emails` in cluster `prod-cluster`" in text
    assert "Workers of worker-emails stopped making progress." in text
    assert "*Now*: 1 (threshold 1)" in text
    assert "*Since*: 2024-01-01 12:00 UTC" in text
    assert (
        "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1"
        "#alarmsV2:alarm/prod-worker-emails-WorkerStuck" in text
    )
    assert "[Grafana dashboard](https://grafana.example/d/celery)" in text
    assert msg.text == (
        "ALARM: prod-worker-emails-WorkerStuck"
        " (service worker-emails in cluster prod-cluster)"
    )
    assert "undefined" not in json.dumps(payload) and "None" not in text


def test_ok_reads_as_resolved_and_no_grafana_unless_configured() -> None:
    msg = alarm_message(alarm("sns_worker_stuck_ok"))
    assert msg.color == "#2EB67D"
    assert msg.text.startswith("Resolved: ")
    assert "back within its threshold" in msg.plain()
    assert "Grafana" not in msg.plain()


@pytest.mark.parametrize(
    ("fixture", "expect"),
    [
        (
            "eventbridge_composite_alarm",
            'Composite alarm fired: ALARM("prod-emails-QueueAge")',
        ),
        ("lambda_composite_alarm", "Composite alarm fired"),
        ("sns_composite_alarm", "Composite alarm fired"),
        ("sns_metric_math_alarm", "metric math expression is 412.50, past its threshold of 100"),
        ("sns_metric_math_alarm", "*Metric*: math over ECS/ContainerInsights RunningTaskCount"),
        ("eventbridge_metric_math_alarm", "metric math expression is 412.50"),
        ("eventbridge_insufficient_data", "no recent data for WorkerStuck"),
        ("lambda_aws_example_odd_timestamps", "The CallCount crossed its threshold."),
    ],
)
def test_every_fixture_renders(fixture: str, expect: str) -> None:
    msg = alarm_message(alarm(fixture))
    rendered = msg.plain()
    assert expect in rendered
    for bad in ("undefined", "None", "null"):
        assert bad not in rendered
    assert len(msg.blocks) <= 50
    header = msg.blocks[0]
    assert header["type"] == "header" and len(header["text"]["text"]) <= 150


def test_long_names_and_reasons_are_cut_to_slack_limits() -> None:
    event = load_event("eventbridge_worker_stuck_alarm")
    event["detail"]["alarmName"] = "x" * 400
    event["detail"]["state"]["reason"] = "y" * 5000
    msg = alarm_message(parse_event(event)[0])
    assert len(msg.blocks[0]["text"]["text"]) <= 150
    texts = [e["text"] for b in msg.blocks for e in b.get("elements", []) if "text" in e]
    assert all(len(t) <= 3000 for t in texts if isinstance(t, str))


@pytest.mark.parametrize(
    ("action", "code", "expect"),
    [
        ("deployed", "deployed", "visibility timeout"),
        ("dry-run", "dry-run", "Dry run: would force a new deployment"),
        ("skipped", "cooldown", "Not redeploying `prod/w`: last deployment was 2 min ago"),
        ("failed", "ecs-error", "Could not redeploy `prod/w`: UpdateService failed"),
    ],
)
def test_decision_messages(action: str, code: str, expect: str) -> None:
    reasons = {
        "deployed": "forced",
        "dry-run": "x",
        "cooldown": "last deployment was 2 min ago",
        "ecs-error": "UpdateService failed: AccessDeniedException",
    }
    decision = Decision(
        action, code, reasons[code], Target("prod", "w"), "a", "enabled"  # type: ignore[arg-type]
    )
    assert expect in decision_message(decision).plain()


# --- senders -----------------------------------------------------------------------------------


def test_webhook_sender_posts_the_payload(server: SlackServer) -> None:
    sender = WebhookSender(server.webhook_url)
    assert sender.post(alarm_message(alarm("sns_worker_stuck_alarm"))) is None
    (req,) = server.requests
    assert req.path == "/services/T000/B000/SECRETwebhookPATH"
    assert req.json["attachments"][0]["blocks"][0]["type"] == "header"


def test_bot_sender_threads_replies(server: SlackServer) -> None:
    sender = BotSender(TOKEN, "C0ALERTS", base_url=server.api_url)
    ts = sender.post(alarm_message(alarm("sns_worker_stuck_alarm")))
    assert ts
    follow_up = decision_message(Decision("deployed", "deployed", "ok", Target("p", "w")))
    sender.post(follow_up, thread_ts=ts)
    first, reply = server.requests
    assert first.path == "/api/chat.postMessage" and first.json["channel"] == "C0ALERTS"
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    assert reply.json["thread_ts"] == ts and "reply_broadcast" not in reply.json


def test_rate_limit_honours_retry_after(server: SlackServer) -> None:
    server.script("429")
    sender = BotSender(TOKEN, "C1", base_url=server.api_url)
    started = time.monotonic()
    assert sender.post(alarm_message(alarm("sns_worker_stuck_alarm")))
    assert time.monotonic() - started >= 0.9  # waited Retry-After: 1
    assert [r.answered for r in server.requests] == ["429", "ok"]


def test_server_errors_are_retried(server: SlackServer) -> None:
    server.script("500", "500")
    sender = WebhookSender(server.webhook_url, backoff=0.01)
    sender.post(alarm_message(alarm("sns_worker_stuck_alarm")))
    assert [r.answered for r in server.requests] == ["500", "500", "ok"]


def test_persistent_500_raises_slack_error(server: SlackServer) -> None:
    server.script(*["500"] * 5)
    sender = BotSender(TOKEN, "C1", base_url=server.api_url, backoff=0.01)
    with pytest.raises(SlackError, match="HTTP 500"):
        sender.post(alarm_message(alarm("sns_worker_stuck_alarm")))
    assert len(server.requests) == 3  # first try + 2 retries


def test_hanging_webhook_times_out_and_is_not_sent_again(server: SlackServer) -> None:
    """The request went out and no answer came: Slack may show it, so one POST, no retry."""
    server.script("hang", "hang", "hang")
    sender = WebhookSender(server.webhook_url, timeout=1, max_retries=2, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(SlackMaybePosted, match="not sent again") as info:
        sender.post(alarm_message(alarm("sns_worker_stuck_alarm")))
    assert time.monotonic() - started < 3
    assert info.value.retryable is False
    assert [r.answered for r in server.posts()] == ["hang"]


def test_refused_webhook_is_retried(server: SlackServer) -> None:
    """Nothing was sent (connection refused): retrying cannot duplicate it."""
    sender = WebhookSender(f"http://127.0.0.1:{free_port()}/x", timeout=1, max_retries=2,
                           backoff=0.01)
    with pytest.raises(SlackError, match="unreachable") as info:
        sender.post(alarm_message(alarm("sns_worker_stuck_alarm")))
    assert info.value.retryable and not isinstance(info.value, SlackMaybePosted)


def test_unreachable_slack_raises_slack_error() -> None:
    sender = BotSender(TOKEN, "C1", base_url=f"http://127.0.0.1:{free_port()}/api/", backoff=0.01)
    with pytest.raises(SlackError, match="unreachable"):
        sender.post(alarm_message(alarm("sns_worker_stuck_alarm")))


def test_api_error_is_reported_by_code(server: SlackServer) -> None:
    server.script("invalid_auth")
    with pytest.raises(SlackError, match="invalid_auth"):
        BotSender(TOKEN, "C1", base_url=server.api_url).post(
            alarm_message(alarm("sns_worker_stuck_alarm"))
        )


def test_secrets_never_appear_in_logs_or_errors(
    server: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    errors = []
    server.script("500", "500", "500", "ok", "500", "500", "500")
    bot = BotSender(TOKEN, "C1", base_url=server.api_url, backoff=0.01)
    hook = WebhookSender(server.webhook_url, backoff=0.01)
    for sender in (bot, hook, bot):
        try:
            sender.post(alarm_message(alarm("sns_worker_stuck_alarm")))
        except SlackError as exc:
            errors.append(str(exc))
    assert len(errors) == 2
    text = caplog.text + " ".join(errors)
    assert TOKEN not in text and "SECRETwebhookPATH" not in text
    assert TOKEN not in repr(SlackCredentials("https://hooks/x", TOKEN, "C1"))
    assert TOKEN not in repr(AlarmHandlerSettings(slack_bot_token=TOKEN))


SECRET_PATH = "services/T0SECRET/B0SECRET/hookTOKENxyz123"


@pytest.mark.parametrize("failure", ["refused", "hang"])
@pytest.mark.parametrize("http_level", [None, logging.DEBUG])
def test_unreachable_webhook_never_logs_its_url(
    server: SlackServer, caplog: pytest.LogCaptureFixture, failure: str, http_level: int | None
) -> None:
    """slack_sdk logs ``Going to retry the same request: POST <full URL>`` at INFO on connection
    errors, and URLs and headers at DEBUG: none of it may carry the webhook path."""
    caplog.set_level(logging.DEBUG)  # the root logger and so every propagating logger
    if http_level is not None:  # even if someone turns slack_sdk's logger all the way up
        caplog.set_level(http_level, logger="toolkit.slack.http")
    if failure == "refused":
        url = f"http://127.0.0.1:{free_port()}/{SECRET_PATH}"
    else:
        server.script("hang", "hang")
        url = f"{server.url}/{SECRET_PATH}"
    sender = WebhookSender(url, timeout=1, max_retries=1, backoff=0.01)
    with pytest.raises(SlackError) as info:
        sender.post(alarm_message(alarm("sns_worker_stuck_alarm")))
    # Refused: never sent, retried later. Hanging: sent, maybe accepted, never sent again.
    assert info.value.retryable is (failure == "refused")
    assert isinstance(info.value, SlackMaybePosted) is (failure == "hang")
    assert any(r.name == "toolkit.slack.http" for r in caplog.records)  # slack_sdk did log
    captured = caplog.text + " ".join(r.getMessage() for r in caplog.records)
    for text in (captured, str(info.value), repr(info.value)):
        for secret in ("T0SECRET", "B0SECRET", "hookTOKENxyz123"):
            assert secret not in text


def test_bot_token_is_redacted_even_at_debug(
    server: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="toolkit.slack.http")
    server.script("500", "ok")
    BotSender(TOKEN, "C1", base_url=server.api_url, backoff=0.01).post(
        alarm_message(alarm("sns_worker_stuck_alarm"))
    )
    assert any(r.name == "toolkit.slack.http" for r in caplog.records)
    assert "SECRET-TOKEN" not in caplog.text


def test_redact() -> None:
    assert senders.redact(f"POST https://hooks.slack.com/{SECRET_PATH}?x=1 done") == (
        "POST https://hooks.slack.com/[redacted] done"
    )
    assert senders.redact(f"{{'Authorization': 'Bearer {TOKEN}'}}") == (
        "{'Authorization': 'Bearer [redacted]'}"
    )
    assert "SECRET" not in senders.redact(f"token={TOKEN}")


def test_webhook_rate_limit_honours_retry_after(server: SlackServer) -> None:
    server.script("429")
    sender = WebhookSender(server.webhook_url, backoff=0.01)
    started = time.monotonic()
    sender.post(alarm_message(alarm("sns_worker_stuck_alarm")))
    assert time.monotonic() - started >= 0.9  # Retry-After: 1, not the 0.01 s backoff
    assert [r.answered for r in server.requests] == ["429", "ok"]


@pytest.mark.parametrize(
    ("transport", "script", "retryable", "match"),
    [
        ("webhook", ["http:404"], False, "HTTP 404"),
        ("webhook", ["http:403"], False, "HTTP 403"),
        ("webhook", ["500"] * 3, True, "HTTP 500"),
        ("webhook", ["429"] * 3, True, "HTTP 429"),
        ("bot", ["invalid_auth"], False, "invalid_auth"),
        ("bot", ["api:channel_not_found"], False, "channel_not_found"),
        ("bot", ["http:404"], False, "HTTP 404"),
        ("bot", ["500"] * 3, True, "HTTP 500"),
    ],
)
def test_slack_errors_say_whether_a_retry_can_help(
    server: SlackServer, transport: str, script: list[str], retryable: bool, match: str
) -> None:
    server.retry_after = 0
    server.script(*script)
    sender: Any = (
        WebhookSender(server.webhook_url, backoff=0.01) if transport == "webhook"
        else BotSender(TOKEN, "C1", base_url=server.api_url, backoff=0.01)
    )
    with pytest.raises(SlackError, match=match) as info:
        sender.post(alarm_message(alarm("sns_worker_stuck_alarm")))
    assert info.value.retryable is retryable
    assert len(server.requests) == len(script)  # permanent errors are not retried


def test_unreachable_bot_api_is_retryable() -> None:
    sender = BotSender(TOKEN, "C1", base_url=f"http://127.0.0.1:{free_port()}/api/", backoff=0.01)
    with pytest.raises(SlackError) as info:
        sender.post(alarm_message(alarm("sns_worker_stuck_alarm")))
    assert info.value.retryable


# --- credentials -------------------------------------------------------------------------------


def test_credentials_from_the_environment() -> None:
    settings = AlarmHandlerSettings.from_env(
        {
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_CHANNEL": "C1",
            "SLACK_API_URL": "http://127.0.0.1:1/api",
        }
    )
    creds = resolve_credentials(settings)
    assert creds.bot_token == TOKEN and creds.configured
    assert isinstance(build_sender(creds, settings), BotSender)
    hook = AlarmHandlerSettings.from_env({"SLACK_WEBHOOK_URL": "http://127.0.0.1:1/services/x"})
    assert isinstance(build_sender(resolve_credentials(hook), hook), WebhookSender)
    assert build_sender(resolve_credentials(AlarmHandlerSettings()), AlarmHandlerSettings()) is None


def test_credentials_from_secrets_manager_are_fetched_once() -> None:
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="eu-west-1")
        arn = sm.create_secret(
            Name="celery-ecs/slack-test-once",
            SecretString=json.dumps({"SLACK_BOT_TOKEN": TOKEN, "SLACK_CHANNEL": "C9"}),
        )["ARN"]
        settings = AlarmHandlerSettings(slack_secret_arn=arn)
        senders.clear_secret_cache(arn)
        creds = resolve_credentials(settings, secrets_client=sm)
        assert (creds.bot_token, creds.channel) == (TOKEN, "C9")
        sm.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
        assert resolve_credentials(settings, secrets_client=sm) == creds  # cached per container
        senders.clear_secret_cache(arn)
        with pytest.raises(SlackError, match="ResourceNotFoundException") as info:
            resolve_credentials(settings, secrets_client=sm)
        assert TOKEN not in str(info.value)
        assert not info.value.retryable  # a missing secret stays missing


def test_secret_that_is_not_json() -> None:
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="eu-west-1")
        arn = sm.create_secret(Name="celery-ecs/slack-bad", SecretString=TOKEN)["ARN"]
        with pytest.raises(SlackError, match="not a JSON object") as info:
            resolve_credentials(AlarmHandlerSettings(slack_secret_arn=arn), secrets_client=sm)
        assert TOKEN not in str(info.value)
        assert not info.value.retryable


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ClientError({"Error": {"Code": "AccessDeniedException"}}, "GetSecretValue"), False),
        (ClientError({"Error": {"Code": "ThrottlingException"}}, "GetSecretValue"), True),
        (EndpointConnectionError(endpoint_url="https://secretsmanager"), True),
        (NoCredentialsError(), False),
    ],
)
def test_secret_errors_say_whether_a_retry_can_help(error: Exception, retryable: bool) -> None:
    class Secrets:
        def get_secret_value(self, **_: Any) -> Any:
            raise error

    settings = AlarmHandlerSettings(slack_secret_arn="arn:aws:secretsmanager:eu-west-1:1:secret:x")
    with pytest.raises(SlackError) as info:
        resolve_credentials(settings, secrets_client=Secrets(), use_cache=False)
    assert info.value.retryable is retryable


# --- docs/alerts.md shows what the code renders -------------------------------------------------


@pytest.mark.parametrize(
    "fixture",
    [
        "sns_worker_stuck_alarm",
        "sns_worker_stuck_ok",
        "eventbridge_insufficient_data",
        "sns_metric_math_alarm",
        "eventbridge_composite_alarm",
        "sns_set_alarm_state",
    ],
)
def test_docs_examples_are_current(fixture: str) -> None:
    from pathlib import Path

    docs = (Path(__file__).parent.parent / "docs" / "alerts.md").read_text()
    rendered = alarm_message(
        alarm(fixture), grafana_url="https://grafana.example.com/d/celery-ecs", environment="prod"
    ).plain()
    assert rendered in docs, f"docs/alerts.md is stale for {fixture}"


def _docs() -> str:
    from pathlib import Path

    return (Path(__file__).parent.parent / "docs" / "alerts.md").read_text()


STOPPED_ARN = (
    "arn:aws:ecs:eu-west-1:123456789012:task/prod-cluster/5f3c9a1e0b8d4c2e9f1a7b6c5d4e3f21"
)
FOLLOW_UPS = {
    "stopped": Decision("stopped", "stopped", "x", Target("prod-cluster", "worker-emails"),
                        "prod-worker-emails-WorkersStuck", "enabled", remedy="stop-tasks",
                        details={"stopped": [STOPPED_ARN]}),
    "still-stuck": Decision(
        "skipped", "still-stuck", "x", Target("prod-cluster", "worker-emails"),
        "prod-worker-emails-WorkerStuck", "enabled", at=datetime(2024, 1, 1, 12, 9, tzinfo=UTC),
        details={"last_action": "deployed", "last_at": "2024-01-01T12:00:03+00:00",
                 "until": "2024-01-01T12:15:03+00:00",
                 "last_alarm": "prod-worker-emails-WorkerStuck",
                 "last_deployment": "ecs-svc/5839201748291047"}),
    "no-evidence": Decision(
        "skipped", "no-evidence",
        "the live WorkerStuck (Maximum per 60 s, newest first): 0, 0, 0, 0 is not at least the "
        "threshold (1): the alarm's state does not match the metric (set by hand, or already "
        "recovered)", Target("prod-cluster", "worker-emails"), "a", "enabled"),
}


@pytest.mark.parametrize("kind", sorted(FOLLOW_UPS))
def test_docs_follow_up_examples_are_current(kind: str) -> None:
    message = decision_message(FOLLOW_UPS[kind], mention="<!subteam^S0ONCALL|@oncall>")
    assert message.plain() in _docs(), f"docs/alerts.md is stale for the {kind} follow-up"

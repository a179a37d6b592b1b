"""The alarm handler Lambda end to end: moto ECS (+ DynamoDB state), Slack on loopback."""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.alarm_lambda import ecs_service, handler_module
from tests.aws_ecs import REGION, CountingEcs, make_service
from tests.conftest import free_port, load_event
from tests.slack_server import SlackServer
from tests.test_alarms import STUCK_FIXTURES, alarmish, json_values, mutated
from tests.test_remediation import RacingEcs, SerialisedDynamo, create_state_table
from toolkit.alarms import responder as responder_module
from toolkit.alarms.factory import build_responder
from toolkit.alarms.guards import (
    RemediationPolicy,
    Target,
    remediating_input,
    remedy_of,
    target_from_alarm,
)
from toolkit.alarms.parsing import try_parse_event
from toolkit.alarms.responder import AlarmHandlingFailed
from toolkit.alarms.scope import foreign
from toolkit.alarms.senders import BotSender, WebhookSender
from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.alarms.state import MemoryStateStore

CLUSTER, SERVICE = "prod-cluster", "worker-emails"
TOKEN = "xoxb-1111-HANDLER-SECRET"


@pytest.fixture
def server() -> Iterator[SlackServer]:
    srv = SlackServer(retry_after=1, hang_seconds=5).start()
    yield srv
    srv.stop()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with ecs_service(monkeypatch, CLUSTER, SERVICE) as ecs:
        yield ecs


@pytest.fixture
def lam(monkeypatch: pytest.MonkeyPatch, server: SlackServer, aws: Any) -> Iterator[ModuleType]:
    """The handler module with a bot-token Slack on loopback and remediation enabled."""
    with handler_module(monkeypatch, server.api_url, TOKEN) as module:
        yield module


def new_container(module: ModuleType) -> None:
    module._responder = None


def deployments(ecs: Any) -> list[str]:
    svc = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
    return [d["id"] for d in svc["deployments"]]


def test_alarm_posts_alert_redeploys_and_follows_up_in_thread(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    before = deployments(aws)
    result = lam.handler(load_event("sns_worker_stuck_alarm"), None)
    assert result["status"] == "handled"
    (outcome,) = result["alarms"]
    assert outcome["remediation"] == "deployed" and outcome["posted"]
    assert deployments(aws) != before
    alert, follow_up = server.requests
    assert alert.json["attachments"][0]["blocks"][0]["text"]["text"].startswith(":rotating_light:")
    assert follow_up.json["thread_ts"]
    follow_text = json.dumps(follow_up.json)
    assert "Forced a new deployment" in follow_text and "visibility timeout" in follow_text


def test_handler_result_is_small_and_json_serialisable(lam: ModuleType) -> None:
    result = lam.handler(load_event("eventbridge_composite_alarm"), None)
    assert len(json.dumps(result)) < 1000
    assert result["alarms"][0]["remediation"] == "skipped"


def test_non_remediating_alarm_gets_no_follow_up(lam: ModuleType, server: SlackServer) -> None:
    lam.handler(load_event("lambda_metric_math_alarm"), None)
    assert len(server.requests) == 1  # the alert only: nothing to say about remediation


def test_unrecognised_events_are_acknowledged(
    lam: ModuleType, server: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for event in ({}, {"Records": [{"eventSource": "aws:s3"}]}, {"detail-type": "Other"}):
        assert lam.handler(event, None)["status"] == "ignored"
    assert server.requests == []
    assert "unrecognised_event" in caplog.text


def edge_events() -> list[dict[str, Any]]:
    """Valid alarms carrying values that made the parser raise (OverflowError) before."""
    late = load_event("eventbridge_worker_stuck_alarm")
    late["detail"]["state"]["timestamp"] = "9999-12-31T23:59:59-0100"
    early = load_event("lambda_worker_stuck_alarm")
    early["alarmData"]["state"]["timestamp"] = "0001-01-01T00:00:00+0100"
    huge = load_event("sns_worker_stuck_alarm")
    message = json.loads(huge["Records"][0]["Sns"]["Message"])
    message["Trigger"]["Threshold"] = 10**400
    message["StateChangeTime"] = 10**400
    huge["Records"][0]["Sns"]["Message"] = json.dumps(message)
    return [late, early, huge]


def test_edge_of_range_values_are_handled_not_raised(lam: ModuleType) -> None:
    for event in edge_events():
        assert lam.handler(event, None)["status"] == "handled"


def test_any_parser_failure_is_logged_and_acknowledged(
    lam: ModuleType, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    def broken(event: object) -> Any:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(responder_module, "parse_event", broken)
    result = lam.handler({1: "mixed", "key": "types"}, None)
    assert result["status"] == "ignored" and "OverflowError" in result["reason"]
    assert "unrecognised_event" in caplog.text


def test_clients_are_built_once_per_container(
    lam: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    real = boto3.client

    def counting(name: str, *args: Any, **kwargs: Any) -> Any:
        made.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(boto3, "client", counting)
    for name in ("sns_worker_stuck_alarm", "sns_worker_stuck_ok", "eventbridge_composite_alarm"):
        lam.handler(load_event(name), None)
    assert made == ["cloudwatch", "ecs"]  # the live datapoints first, then ECS
    assert lam.responder() is lam.responder()


def test_duplicates_without_state_table(lam: ModuleType, server: SlackServer, aws: Any) -> None:
    counting = CountingEcs(aws)
    event = load_event("sns_worker_stuck_alarm")
    # Same warm container: the in-memory claim stops the repeats from posting again.
    lam.responder().remediator._ecs = counting
    for _ in range(5):
        lam.handler(event, None)
    assert len(counting.updates) == 1
    assert len(server.requests) == 2  # one alert, one follow-up
    # Five fresh containers: no shared memory, yet ECS cooldown still allows no second deployment.
    for _ in range(5):
        new_container(lam)
        lam.responder().remediator._ecs = counting
        lam.handler(event, None)
    assert len(counting.updates) == 1


def test_duplicates_with_state_table_post_once_and_ok_threads_under_alarm(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    create_state_table(unique)
    monkeypatch.setenv("STATE_TABLE", unique)
    counting = CountingEcs(aws)
    routes = ["sns_worker_stuck_alarm", "eventbridge_worker_stuck_alarm",
              "lambda_worker_stuck_alarm", "sns_worker_stuck_alarm", "sns_worker_stuck_alarm"]
    for name in routes:  # the same state change, 5 deliveries, each in a new container
        new_container(lam)
        lam.responder().remediator._ecs = counting
        lam.handler(load_event(name), None)
    assert len(counting.updates) == 1
    alert, follow_up = server.requests
    assert follow_up.json["thread_ts"]
    new_container(lam)
    lam.handler(load_event("sns_worker_stuck_ok"), None)
    ok = server.requests[-1]
    assert ok.json["thread_ts"] == follow_up.json["thread_ts"]  # under the ALARM message
    assert ok.json["reply_broadcast"] is True
    assert "Resolved" in ok.json["text"]


def test_concurrent_duplicate_deliveries_deploy_once(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    """SNS delivers the same state change twice at the same moment to two containers sharing
    STATE_TABLE: one alert, one deployment (before, the duplicate skipped only the alert)."""
    create_state_table(unique)
    monkeypatch.setenv("STATE_TABLE", unique)
    racing = RacingEcs(aws, threading.Barrier(2), timeout=1.0)
    start = threading.Barrier(2)
    event = load_event("sns_worker_stuck_alarm")
    results: list[Any] = []

    def container() -> None:
        responder = build_responder(
            AlarmHandlerSettings.from_env(), ecs=racing,
            dynamodb=SerialisedDynamo(boto3.client("dynamodb", region_name=REGION)),
        )
        start.wait(timeout=5)
        try:
            results.append(responder.handle(copy.deepcopy(event)))
        except AlarmHandlingFailed as exc:  # the copy that found the lease held, work owed
            results.append(exc)

    threads = [threading.Thread(target=container) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(racing.updates) == 1
    handled = [r for r in results if isinstance(r, dict)]
    raised = [r for r in results if isinstance(r, AlarmHandlingFailed)]
    # The copy that lost the lease either found everything done (acknowledged) or raised so that
    # Lambda brings it again (the holder could have died); its retry is then a plain duplicate.
    assert len(handled) + len(raised) == 2
    if raised:
        retry = build_responder(AlarmHandlerSettings.from_env(), ecs=racing)
        handled.append(retry.handle(copy.deepcopy(event)))
    assert sorted(r["alarms"][0]["duplicate"] for r in handled) == [False, True]
    assert len(racing.updates) == 1
    assert len(server.messages()) == 2  # one alert, one follow-up


def test_repeat_delivery_does_not_remediate_after_a_final_decision(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch, unique: str
) -> None:
    """The first delivery decided (not opted in). A later copy of the same state change must not
    act on it, even though the service has opted in meanwhile: only a retryable failure recorded
    by the first delivery lets a repeat remediate."""
    create_state_table(unique)
    monkeypatch.setenv("STATE_TABLE", unique)
    make_service(aws, CLUSTER, "worker-late", opted_in=False)
    event = load_event("sns_worker_stuck_alarm")
    message = json.loads(event["Records"][0]["Sns"]["Message"])
    for dim in message["Trigger"]["Dimensions"]:
        if dim["name"] == "ServiceName":
            dim["value"] = "worker-late"
    message["AlarmName"] = "prod-worker-late-WorkerStuck"
    event["Records"][0]["Sns"]["Message"] = json.dumps(message)
    counting = CountingEcs(aws)
    lam.responder().remediator._ecs = counting
    first = lam.handler(event, None)["alarms"][0]
    assert first["remediation"] == "skipped" and "celery-ecs:remediate" in first["reason"]
    arn = aws.describe_services(cluster=CLUSTER, services=["worker-late"])["services"][0][
        "serviceArn"
    ]
    aws.tag_resource(resourceArn=arn, tags=[{"key": "celery-ecs:remediate", "value": "true"}])
    new_container(lam)
    lam.responder().remediator._ecs = counting
    repeat = lam.handler(event, None)["alarms"][0]
    assert repeat["duplicate"] and repeat["remediation"] is None
    assert counting.updates == []
    assert len(server.messages()) == 2  # the alert and its "not opted in" follow-up, once


def test_failed_follow_up_is_posted_on_retry_without_a_second_alert(
    lam: ModuleType, server: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMEDIATION", "dry-run")
    lam.responder()._sender = BotSender(TOKEN, "C0ALERTS", base_url=server.api_url, backoff=0.01)
    server.script("ok", "500", "500", "500")  # the alert goes through, the follow-up does not
    event = load_event("sns_worker_stuck_alarm")
    with pytest.raises(AlarmHandlingFailed, match="HTTP 500"):
        lam.handler(event, None)
    result = lam.handler(event, None)  # Lambda's retry, same container
    assert result["alarms"][0]["duplicate"] and result["alarms"][0]["slack_error"] is None
    alert, follow_up = server.messages()
    assert alert.json["text"].startswith("ALARM: ")
    assert "Dry run: would force" in follow_up.json["text"]
    assert follow_up.json["thread_ts"] == "1700000001.000100"  # under the one alert
    lam.handler(event, None)  # a further copy: nothing is owed any more
    assert len(server.messages()) == 2


@pytest.mark.parametrize(
    "failure",
    ["invalid_auth", "api:channel_not_found", "webhook:404", "webhook:403", "secret:not-json",
     "secret:missing", "ecs:AccessDenied"],
)
def test_permanent_failures_are_logged_and_acknowledged(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, unique: str, failure: str,
) -> None:
    """A retry would fail the same way, so the handler returns instead of raising."""
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("REMEDIATION", "dry-run")  # nothing performed: only the error decides
    kind, _, detail = failure.partition(":")
    if kind in ("invalid_auth", "api"):
        server.script(failure)
    elif kind == "webhook":
        monkeypatch.delenv("SLACK_BOT_TOKEN")
        monkeypatch.setenv("SLACK_WEBHOOK_URL", server.webhook_url)
        server.script(f"http:{detail}")
    elif kind == "secret":
        monkeypatch.delenv("SLACK_BOT_TOKEN")
        sm = boto3.client("secretsmanager", region_name=REGION)
        arn = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:{unique}-AbCdEf"
        if detail == "not-json":
            arn = sm.create_secret(Name=unique, SecretString="xoxb-not-json")["ARN"]
        monkeypatch.setenv("SLACK_SECRET_ARN", arn)
    else:
        monkeypatch.setenv("REMEDIATION", "enabled")

        class Denied(CountingEcs):
            def update_service(self, **kwargs: Any) -> Any:
                from botocore.exceptions import ClientError

                raise ClientError({"Error": {"Code": "AccessDeniedException"}}, "UpdateService")

        lam.responder().remediator._ecs = Denied(aws)
    result = lam.handler(load_event("sns_worker_stuck_alarm"), None)  # does not raise
    (outcome,) = result["alarms"]
    if kind == "ecs":
        assert outcome["remediation"] == "failed" and "AccessDenied" in outcome["reason"]
    else:
        assert outcome["slack_error"] and outcome["slack_retryable"] is False
        assert "slack_failed" in caplog.text or "slack_unavailable" in caplog.text
    assert "xoxb-not-json" not in caplog.text and TOKEN not in caplog.text


def test_transient_slack_failure_still_raises_for_retry(
    lam: ModuleType, server: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMEDIATION", "off")
    lam.responder()._sender = WebhookSender(server.webhook_url, backoff=0.01)
    server.retry_after = 0
    server.script("429", "429", "429")
    with pytest.raises(AlarmHandlingFailed, match="HTTP 429"):
        lam.handler(load_event("sns_worker_stuck_alarm"), None)


def test_startup_warns_that_an_exact_cap_needs_a_state_table(
    lam: ModuleType, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING)
    lam.responder()
    assert "no_state_table" in caplog.text and "needs STATE_TABLE" in caplog.text
    caplog.clear()
    monkeypatch.setenv("STATE_TABLE", "t")
    new_container(lam)
    lam.responder()
    assert "no_state_table" not in caplog.text


def test_slack_down_remediation_still_done_and_logged(
    lam: ModuleType, monkeypatch: pytest.MonkeyPatch, aws: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("SLACK_API_URL", f"http://127.0.0.1:{free_port()}/api/")
    before = deployments(aws)
    # Changed by issue 9: the alert is still owed, so the handler raises for Lambda's retry even
    # though it deployed (before, it returned and the alert was lost).
    with pytest.raises(AlarmHandlingFailed, match="alert, follow_up owed"):
        lam.handler(load_event("sns_worker_stuck_alarm"), None)
    assert deployments(aws) != before
    decisions = [json.loads(r.getMessage()) for r in caplog.records
                 if "remediation_decision" in r.getMessage()]
    assert decisions and decisions[0]["action"] == "deployed"
    assert "slack_failed" in caplog.text and TOKEN not in caplog.text


def test_slack_down_and_nothing_done_raises_for_retry_then_retry_posts(
    lam: ModuleType, server: SlackServer, monkeypatch: pytest.MonkeyPatch, aws: Any
) -> None:
    monkeypatch.setenv("REMEDIATION", "off")
    server.script(*["500"] * 3)
    event = load_event("sns_worker_stuck_alarm")
    with pytest.raises(AlarmHandlingFailed, match="HTTP 500"):
        lam.handler(event, None)
    # Lambda retries the same event in the same container: the claim was released, so it posts.
    result = lam.handler(event, None)
    assert result["alarms"][0]["posted"] and not result["alarms"][0]["duplicate"]
    assert [r.answered for r in server.requests][-2:] == ["ok", "ok"]


def test_ecs_down_raises_for_retry_without_a_second_alert(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    from botocore.exceptions import EndpointConnectionError

    class DownEcs:
        def describe_services(self, **_: Any) -> Any:
            raise EndpointConnectionError(endpoint_url="https://ecs.eu-west-1.amazonaws.com")

    lam.responder().remediator._ecs = DownEcs()
    event = load_event("sns_worker_stuck_alarm")
    with pytest.raises(AlarmHandlingFailed, match="DescribeServices failed"):
        lam.handler(event, None)
    alert, failed = server.requests
    assert "Could not redeploy" in failed.json["text"]
    with pytest.raises(AlarmHandlingFailed):
        lam.handler(event, None)  # the retry: still down, still no deployment
    assert len(server.requests) == 2  # no second alert, no repeated failure note
    lam.responder().remediator._ecs = aws  # ECS is back for the next retry
    result = lam.handler(event, None)
    assert result["alarms"][0]["remediation"] == "deployed"
    assert result["alarms"][0]["duplicate"]
    worked = server.requests[-1]
    assert "Forced a new deployment" in worked.json["text"]
    assert worked.json["thread_ts"] == failed.json["thread_ts"]


def test_no_slack_configured_logs_only(
    lam: ModuleType, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    result = lam.handler(load_event("sns_worker_stuck_alarm"), None)
    assert result["alarms"][0]["remediation"] == "deployed"
    assert "slack_not_configured" in caplog.text


# --- property-based: garbage through the whole handler --------------------------------------------


class StubEcs:
    """Every service exists, opted in, deployed long ago: only the alarm guards can refuse."""

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []

    def describe_services(self, cluster: str, services: list[str], **_: Any) -> Any:
        long_ago = datetime.now(UTC) - timedelta(days=1)
        return {
            "services": [
                {
                    "serviceName": services[0],
                    "serviceArn": f"arn:aws:ecs:{REGION}:123456789012:service/{cluster}/x",
                    "status": "ACTIVE",
                    "tags": [{"key": "celery-ecs:remediate", "value": "true"}],
                    "deployments": [
                        {"id": "d", "status": "PRIMARY", "rolloutState": "COMPLETED",
                         "createdAt": long_ago}
                    ],
                }
            ]
        }

    def get_paginator(self, name: str) -> Any:
        class Pages:
            def paginate(self, **_: Any) -> list[dict[str, Any]]:
                return [{"serviceArns": []}]

        return Pages()

    def update_service(self, **kwargs: Any) -> Any:
        self.updates.append(kwargs)
        return {"service": {}}

    def tag_resource(self, **_: Any) -> None:
        pass


class StubCloudWatch:
    """GetMetricData without AWS: every metric is at 1 (stuck) now."""

    def get_metric_data(self, **kwargs: Any) -> Any:
        end = kwargs["EndTime"]
        stamps = [end - timedelta(minutes=i + 1) for i in range(3)]
        return {"MetricDataResults": [{"Id": "live", "Timestamps": stamps,
                                       "Values": [1.0, 1.0, 1.0]}]}


class StubSender:
    threads = True

    def __init__(self) -> None:
        self.posts = 0

    def post(self, message: Any, *, thread_ts: str | None = None, broadcast: bool = False) -> str:
        self.posts += 1
        return f"{self.posts}.0"


def stub_responder() -> tuple[Any, StubEcs]:
    ecs = StubEcs()
    responder = build_responder(
        AlarmHandlerSettings(environment="prod", remediation="enabled",
                             max_remediations_per_hour=10**9, cooldown_seconds=0),
        ecs=ecs,
        cloudwatch=StubCloudWatch(),
        sender=StubSender(),
    )
    responder.state = responder.remediator.state = MemoryStateStore()
    return responder, ecs


POLICY = RemediationPolicy(mode="enabled", max_per_hour=10**9, cooldown_seconds=0,
                           environment="prod")


def expected_targets(event: object) -> set[tuple[str, str]]:
    """The services a correct handler deploys for ``event`` when every ECS guard passes and the
    live metric says stuck: this environment's own WorkerStuck alarms, never a test."""
    targets = set()
    for alarm in try_parse_event(event) or ():
        if foreign(alarm, "prod") is not None or alarm.is_test:
            continue
        # The live value is 1 (StubCloudWatch): over the alarm's threshold, or not?
        threshold = alarm.threshold if alarm.threshold is not None else 1.0
        strict = alarm.comparison == "GreaterThanThreshold"
        if not (threshold < 1.0 if strict else threshold <= 1.0):
            continue
        target = target_from_alarm(alarm, POLICY)
        metric = remediating_input(alarm, POLICY)
        if isinstance(target, Target) and metric and remedy_of(metric.name) == "deploy":
            assert alarm.state == "ALARM" and alarm.name.startswith("prod-")
            assert any(m.name == "WorkerStuck" for m in alarm.inputs)
            targets.add((target.cluster, target.service))
    return targets


def test_garbage_and_near_valid_events_never_raise_and_act_exactly_when_valid() -> None:
    """Random JSON, alarm-shaped dicts and mutated fixtures (a third of them mutations of a valid
    WorkerStuck alarm, so many stay valid or nearly so) through the whole handler, with ECS and
    Slack stubs where every service-side guard passes: the handler never raises, and deploys
    exactly the services named by events that still parse as a remediating alarm."""
    seen: Counter[str] = Counter()

    @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    @given(st.one_of(json_values, alarmish, mutated(), mutated(STUCK_FIXTURES)))
    def run(event: object) -> None:
        responder, ecs = stub_responder()
        result = responder.handle(copy.deepcopy(event))
        assert result["status"] in ("ignored", "handled")
        assert all(u["forceNewDeployment"] is True for u in ecs.updates)
        deployed = {(u["cluster"], u["service"]) for u in ecs.updates}
        assert deployed == expected_targets(event)
        seen[result["status"]] += 1
        seen["deployed"] += bool(deployed)

    run()
    print(f"garbage/near-valid events: {dict(seen)}")
    # The generator reaches every branch: garbage ignored, valid alarms handled and acted on.
    assert seen["ignored"] >= 100 and seen["handled"] >= 100 and seen["deployed"] >= 50, seen

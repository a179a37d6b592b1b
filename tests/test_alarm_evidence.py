"""Issue 20, evidence before action: the live datapoints (GetMetricData) decide, not the alarm's
state or reason. A ``set-alarm-state`` test (shapes as AWS sends them through SNS, EventBridge and
the Lambda alarm action) posts an alert marked as a test and never deploys; a forged reason never
deploys; nothing is asked of ECS before the metric agrees."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.alarm_lambda import Context, ecs_service, handler_module, invoke_like_lambda
from tests.aws_ecs import REGION, Recording, publish
from tests.conftest import load_event
from tests.slack_server import SlackServer
from toolkit.alarms.evidence import Evidence, check_evidence, metric_query
from toolkit.alarms.parsing import parse_event

CLUSTER, SERVICE = "prod-cluster", "worker-emails"
TOKEN = "xoxb-3333-EVIDENCE-SECRET"
ROUTES = ["sns", "eventbridge", "lambda"]
STUCK_EVENTS = {r: f"{r}_worker_stuck_alarm" for r in ROUTES}
TEST_EVENTS = {r: f"{r}_set_alarm_state" for r in ROUTES}


@pytest.fixture
def server() -> Iterator[SlackServer]:
    srv = SlackServer(retry_after=1, hang_seconds=5).start()
    yield srv
    srv.stop()


@pytest.fixture
def live() -> float | None:
    """The live value of the remediating metrics (parametrised by the tests that change it)."""
    return 1.0


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, live: float | None) -> Iterator[Any]:
    with ecs_service(monkeypatch, CLUSTER, SERVICE, stuck=live) as ecs:
        yield ecs


@pytest.fixture
def lam(monkeypatch: pytest.MonkeyPatch, server: SlackServer, aws: Any) -> Iterator[ModuleType]:
    with handler_module(monkeypatch, server.api_url, TOKEN) as module:
        yield module


def wire(lam: ModuleType, aws: Any) -> tuple[Recording, Recording]:
    """Record every ECS and CloudWatch call the handler makes."""
    ecs = Recording(aws)
    cw = Recording(boto3.client("cloudwatch", region_name=REGION))
    lam.responder().remediator._ecs = ecs
    lam.responder().remediator.metrics._client = cw
    return ecs, cw


def texts(server: SlackServer) -> list[str]:
    return [r.json.get("text", "") for r in server.messages()]


# --- a set-alarm-state test -----------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_set_alarm_state_shapes_parse_as_tests(route: str) -> None:
    (alarm,) = parse_event(load_event(TEST_EVENTS[route]))
    assert alarm.state == "ALARM" and alarm.reason == "testing the Slack route"
    assert alarm.datapoints == () and alarm.is_test
    (real,) = parse_event(load_event(STUCK_EVENTS[route]))
    assert not real.is_test  # CloudWatch's own evaluation, with its datapoints


def test_cloudwatch_reasons_without_datapoints_are_not_tests() -> None:
    event = load_event("sns_worker_stuck_alarm")
    message = json.loads(event["Records"][0]["Sns"]["Message"])
    message["NewStateReason"] = ("Threshold Crossed: no datapoints were received for 3 periods "
                                 "and 3 missing datapoints were treated as [Breaching].")
    event["Records"][0]["Sns"]["Message"] = json.dumps(message)
    (alarm,) = parse_event(event)
    assert alarm.datapoints == () and not alarm.is_test
    (composite,) = parse_event(load_event("sns_composite_alarm"))
    assert not composite.is_test


@pytest.mark.parametrize("route", ROUTES)
def test_set_alarm_state_posts_a_test_alert_and_never_deploys(
    lam: ModuleType, server: SlackServer, aws: Any, route: str
) -> None:
    """The live metric says stuck (1) and the service is opted in: a test still never acts, and
    asks nothing of ECS or CloudWatch."""
    ecs, cw = wire(lam, aws)
    result = lam.handler(load_event(TEST_EVENTS[route]), Context())
    (outcome,) = result["alarms"]
    assert outcome["remediation"] == "skipped" and "a test" in outcome["reason"]
    assert ecs.calls == [] and cw.calls == []
    (alert,) = server.messages()  # the alert only: a test gets no follow-up
    assert alert.json["text"].startswith("TEST ALARM: prod-worker-emails-WorkerStuck")
    body = json.dumps(alert.json)
    assert "This is a test" in body and "set-alarm-state" in body and ":test_tube:" in body


def test_set_alarm_state_with_empty_reason_data_is_a_test_too(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    event = load_event("eventbridge_set_alarm_state")
    event["detail"]["state"]["reasonData"] = "{}"
    ecs, _ = wire(lam, aws)
    lam.handler(event, Context())
    assert ecs.calls == [] and texts(server)[0].startswith("TEST ALARM")


# --- a forged reason ------------------------------------------------------------------------


@pytest.mark.parametrize("live", [0.0])
@pytest.mark.parametrize("route", ROUTES)
def test_forged_reason_never_deploys(
    lam: ModuleType, server: SlackServer, aws: Any, route: str
) -> None:
    """The reason (and EventBridge's reasonData) quote 3 datapoints at 1.0, as CloudWatch words
    them; the live WorkerStuck is 0: no ECS call at all, and the follow-up says why."""
    ecs, cw = wire(lam, aws)
    result = lam.handler(load_event(STUCK_EVENTS[route]), Context())
    (outcome,) = result["alarms"]
    assert outcome["remediation"] == "skipped"
    assert ecs.calls == [] and cw.calls == ["get_metric_data"]
    alert, note = texts(server)
    assert alert.startswith("ALARM: prod-worker-emails-WorkerStuck")  # not marked as a test
    assert "the live datapoints do not show it stuck" in note
    # 3 or 4 of the 4 published minutes fall in the window, depending on the second it runs.
    assert "Maximum per 60 s, newest first): 0, 0, 0" in json.dumps(server.messages()[1].json)


@pytest.mark.parametrize("live", [None])
def test_forged_threshold_in_reason_data_is_not_believed(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    """set-alarm-state --state-reason-data '{"threshold": 0, ...}': the live value 0 is not
    "at least 0" evidence; below 1 nothing is stuck."""
    publish(CLUSTER, SERVICE, [0, 0, 0, 0])
    event = load_event("eventbridge_worker_stuck_alarm")
    event["detail"]["state"]["reasonData"] = json.dumps(
        {"recentDatapoints": [1.0, 1.0, 1.0], "threshold": 0.0}
    )
    ecs, _ = wire(lam, aws)
    lam.handler(event, Context())
    assert ecs.calls == []


@pytest.mark.parametrize("live", [None])
def test_a_service_that_recovered_is_not_redeployed(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    """Stuck for 3 minutes, then 0 in the newest period: the alarm is right about the past, the
    metric says it is over."""
    publish(CLUSTER, SERVICE, [1, 1, 1, 0])
    ecs, _ = wire(lam, aws)
    result = lam.handler(load_event("sns_worker_stuck_alarm"), Context())
    assert result["alarms"][0]["remediation"] == "skipped" and ecs.calls == []
    assert "newest first): 0, 1, 1" in result["alarms"][0]["reason"]


@pytest.mark.parametrize("live", [None])
def test_no_live_datapoints_is_no_evidence(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    ecs, _ = wire(lam, aws)
    result = lam.handler(load_event("lambda_worker_stuck_alarm"), Context())
    assert ecs.calls == []
    assert "has no datapoints in the last 4 min" in result["alarms"][0]["reason"]


def test_live_evidence_deploys_and_is_read_as_the_alarm_reads_it(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    ecs, cw = wire(lam, aws)
    result = lam.handler(load_event("sns_worker_stuck_alarm"), Context())
    assert result["alarms"][0]["remediation"] == "deployed"
    assert cw.calls == ["get_metric_data"] and ecs.calls[0] == "describe_services"
    assert ecs.calls.count("update_service") == 1
    (query,) = cw.kwargs[0]["MetricDataQueries"]
    stat = query["MetricStat"]
    assert stat["Metric"] == {"Namespace": "Celery", "MetricName": "WorkerStuck", "Dimensions": [
        {"Name": "Environment", "Value": "prod"}, {"Name": "ClusterName", "Value": CLUSTER},
        {"Name": "ServiceName", "Value": SERVICE}]}
    assert (stat["Period"], stat["Stat"]) == (60, "Maximum")  # SNS says "MAXIMUM"
    window = cw.kwargs[0]["EndTime"] - cw.kwargs[0]["StartTime"]
    assert window == timedelta(minutes=4)  # 3 evaluation periods and the one being filled
    assert cw.kwargs[0]["EndTime"].timestamp() % 60 == 0


# --- GetMetricData failing ----------------------------------------------------------------------


class FailingCloudWatch:
    def __init__(self, *codes: str) -> None:
        self.codes = list(codes)
        self.real = boto3.client("cloudwatch", region_name=REGION)

    def get_metric_data(self, **kwargs: Any) -> Any:
        if self.codes:
            code = self.codes.pop(0)
            raise ClientError({"Error": {"Code": code, "Message": "x"}}, "GetMetricData")
        return self.real.get_metric_data(**kwargs)


def test_get_metric_data_denied_is_misconfigured_and_not_retried(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    ecs = Recording(aws)
    lam.responder().remediator.metrics._client = FailingCloudWatch("AccessDeniedException")
    result, attempts = invoke_like_lambda(lam, load_event("sns_worker_stuck_alarm"), ecs)
    assert result is not None and attempts == 1 and ecs.calls == []
    _, note = texts(server)
    assert "may not call cloudwatch:GetMetricData (AccessDeniedException)" in note


def test_get_metric_data_throttled_then_the_retry_deploys(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    ecs = Recording(aws)
    lam.responder().remediator.metrics._client = FailingCloudWatch("ThrottlingException")
    result, attempts = invoke_like_lambda(lam, load_event("sns_worker_stuck_alarm"), ecs)
    assert result is not None and attempts == 2
    assert ecs.calls.count("update_service") == 1
    alert, pending, done = texts(server)
    assert "yet: GetMetricData failed: ThrottlingException" in pending
    assert "Forced a new deployment" in done


# --- pure -------------------------------------------------------------------------------------

NOW = datetime(2024, 1, 1, 12, 0, 30, tzinfo=UTC)


def test_metric_query_uses_the_alarms_window_and_ignores_forged_ones() -> None:
    event = load_event("sns_worker_stuck_alarm")
    message = json.loads(event["Records"][0]["Sns"]["Message"])
    message["Trigger"].update(Period=7, EvaluationPeriods=10**6, Statistic="SAMPLE_COUNT")
    event["Records"][0]["Sns"]["Message"] = json.dumps(message)
    (alarm,) = parse_event(event)
    assert alarm.metric is not None
    query = metric_query(alarm, alarm.metric, "Celery", NOW)
    assert query.period == 60  # 7 s is no CloudWatch period: the toolkit's 60
    assert query.stat == "SampleCount"
    assert query.end == datetime(2024, 1, 1, 12, 1, tzinfo=UTC)
    assert query.end - query.start == timedelta(minutes=11)  # at most 10 periods, plus one


@pytest.mark.parametrize(
    ("values", "threshold", "comparison", "acts"),
    [
        ((1.0, 1.0, 1.0), 1.0, "GreaterThanOrEqualToThreshold", True),
        ((2.0, 0.0), 1.0, "GreaterThanThreshold", True),
        ((1.0,), 1.0, "GreaterThanThreshold", False),
        ((0.0, 1.0, 1.0), 1.0, "GreaterThanOrEqualToThreshold", False),  # newest first
        ((0.0,), 0.0, "GreaterThanOrEqualToThreshold", False),  # below 1: nothing is stuck
        ((), 1.0, "GreaterThanOrEqualToThreshold", False),
    ],
)
def test_check_evidence(
    values: tuple[float, ...], threshold: float, comparison: str, acts: bool
) -> None:
    (alarm,) = parse_event(load_event("sns_worker_stuck_alarm"))
    assert alarm.metric is not None
    evidence = Evidence(metric_query(alarm, alarm.metric, "Celery", NOW), values, threshold,
                        comparison)
    refused = check_evidence(evidence)
    assert (refused is None) is acts
    if refused:
        assert refused[0] == "no-evidence" and refused[1]

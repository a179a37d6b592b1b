"""Issue 20, own environment only: an alarm of another environment is logged and ignored (no
Slack post, no AWS call), with environment names that are prefixes of each other (``prod`` and
``prod-eu``) both ways, through SNS, EventBridge and the Lambda alarm action; and the monitoring
template's EventBridge rule matches the environment exactly."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from types import ModuleType
from typing import Any

import boto3
import pytest

from tests.alarm_lambda import Context, ecs_service, handler_module
from tests.aws_ecs import REGION, Recording, make_service, publish_stuck
from tests.conftest import EVENTS_DIR
from tests.slack_server import SlackServer
from tests.test_cloudformation import ROOT, load
from toolkit.alarms.events import AlarmEvent, MetricRef
from toolkit.alarms.guards import Decision, RemediationPolicy, Target, target_from_alarm
from toolkit.alarms.parsing import parse_event
from toolkit.alarms.scope import foreign

TOKEN = "xoxb-4444-SCOPE-SECRET"
ROUTES = ["sns", "eventbridge", "lambda"]
ENVIRONMENTS = ["prod", "prod-eu"]


def event_of(env: str, route: str, fixture: str = "worker_stuck_alarm") -> dict[str, Any]:
    """The fixture as environment ``env``'s own alarm: name, Environment dimension, cluster."""
    text = (EVENTS_DIR / f"{route}_{fixture}.json").read_text()
    text = text.replace("prod-worker-emails", f"{env}-worker-emails")
    text = text.replace("prod-cluster", f"{env}-cluster")
    text = text.replace('\\"value\\": \\"prod\\", \\"name\\": \\"Environment',
                        f'\\"value\\": \\"{env}\\", \\"name\\": \\"Environment')
    text = text.replace('"Environment": "prod"', f'"Environment": "{env}"')
    event: dict[str, Any] = json.loads(text)
    return event


@pytest.fixture
def server() -> Iterator[SlackServer]:
    srv = SlackServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Both environments' services exist, opted in, and are stuck now."""
    with ecs_service(monkeypatch, "prod-cluster", "worker-emails") as ecs:
        make_service(ecs, "prod-eu-cluster", "worker-emails", stuck=None)
        publish_stuck("prod-eu-cluster", "worker-emails", environment="prod-eu")
        yield ecs


@pytest.fixture
def lam(monkeypatch: pytest.MonkeyPatch, server: SlackServer, aws: Any) -> Iterator[ModuleType]:
    with handler_module(monkeypatch, server.api_url, TOKEN) as module:
        yield module


def as_environment(lam: ModuleType, monkeypatch: pytest.MonkeyPatch, env: str,
                   aws: Any) -> tuple[Recording, Recording]:
    monkeypatch.setenv("ENVIRONMENT", env)
    lam._responder = None
    ecs = Recording(aws)
    cw = Recording(boto3.client("cloudwatch", region_name=REGION))
    lam.responder().remediator._ecs = ecs
    lam.responder().remediator.metrics._client = cw
    return ecs, cw


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("handler_env", "alarm_env"), [("prod", "prod-eu"), ("prod-eu", "prod")])
def test_another_environments_alarm_is_ignored(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, route: str, handler_env: str, alarm_env: str,
) -> None:
    caplog.set_level(logging.INFO)
    ecs, cw = as_environment(lam, monkeypatch, handler_env, aws)
    result = lam.handler(event_of(alarm_env, route), Context())
    (outcome,) = result["alarms"]
    assert outcome["ignored"] and outcome["remediation"] is None and not outcome["posted"]
    assert server.requests == [] and ecs.calls == [] and cw.calls == []
    logged = [json.loads(r.getMessage()) for r in caplog.records
              if '"event": "foreign_alarm"' in r.getMessage()]
    assert len(logged) == 1 and logged[0]["environment"] == handler_env


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_own_environments_alarm_is_acted_on(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch,
    route: str, env: str,
) -> None:
    ecs, _ = as_environment(lam, monkeypatch, env, aws)
    result = lam.handler(event_of(env, route), Context())
    assert result["alarms"][0]["remediation"] == "deployed"
    assert [k["cluster"] for c, k in zip(ecs.calls, ecs.kwargs, strict=True)
            if c == "update_service"] == [f"{env}-cluster"]
    alert = server.messages()[0]
    assert alert.json["text"].startswith(f"ALARM: {env}-worker-emails-WorkerStuck")
    assert f"{env} · eu-west-1" in json.dumps(alert.json, ensure_ascii=False)


# --- pure: the scope of an alarm ----------------------------------------------------------------


def alarm(name: str, **dims: str) -> AlarmEvent:
    metric = MetricRef("Celery", "WorkerStuck", tuple(sorted(dims.items())))
    return AlarmEvent(source="sns", kind="metric", name=name, state="ALARM", metric=metric,
                      inputs=(metric,))


@pytest.mark.parametrize(
    ("env", "event", "foreign_because"),
    [
        ("prod", alarm("prod-w-WorkerStuck", Environment="prod", ClusterName="c",
                       ServiceName="w"), None),
        ("prod", alarm("prod-eu-w-WorkerStuck", Environment="prod-eu", ClusterName="c",
                       ServiceName="w"), "Environment=prod-eu"),
        ("prod-eu", alarm("prod-w-WorkerStuck", Environment="prod", ClusterName="c",
                          ServiceName="w"), "does not start with prod-eu-"),
        # the dimension forged to match: the name still names service w of prod-eu
        ("prod", alarm("prod-eu-w-WorkerStuck", Environment="prod", ClusterName="c",
                       ServiceName="w"), "not named prod-w-"),
        # an AWS/ECS alarm has no Environment dimension: the service naming tells
        ("prod", alarm("prod-eu-w-MemoryHigh", ClusterName="c", ServiceName="w"),
         "not named prod-w-"),
        ("prod-eu", alarm("prod-eu-w-MemoryHigh", ClusterName="c", ServiceName="w"), None),
        ("prod", alarm("prod-eu-emails-QueueLength", Environment="prod-eu", Queue="emails"),
         "Environment=prod-eu"),
        ("prod", alarm("staging-w-WorkerStuck", Environment="prod"), "does not start with prod-"),
        ("", alarm("anything", Environment="x"), None),  # no ENVIRONMENT: nothing to tell apart
    ],
)
def test_foreign(env: str, event: AlarmEvent, foreign_because: str | None) -> None:
    why = foreign(event, env)
    if foreign_because is None:
        assert why is None
    else:
        assert why is not None and foreign_because in why


POLICY = RemediationPolicy(mode="enabled", environment="prod")


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (alarm("prod-w-WorkerStuck", ClusterName="c", ServiceName="w"), "not-own-alarm"),
        (alarm("prod-w-WorkerStuck-copy", Environment="prod", ClusterName="c", ServiceName="w"),
         "not-own-alarm"),
        (alarm("prod-w-WorkersStuck", Environment="prod", ClusterName="c", ServiceName="w"),
         "not-own-alarm"),  # a WorkerStuck metric under the other alarm's name
    ],
)
def test_remediating_alarms_need_the_toolkits_exact_name_and_dimension(
    event: AlarmEvent, code: str
) -> None:
    event = replace(event, comparison="GreaterThanOrEqualToThreshold", datapoints=(1.0,))
    decision = target_from_alarm(event, POLICY)
    assert isinstance(decision, Decision) and decision.code == code
    metric = MetricRef("Celery", "WorkerStuck", (
        ("ClusterName", "c"), ("Environment", "prod"), ("ServiceName", "w")))
    good = replace(event, name="prod-w-WorkerStuck", metric=metric, inputs=(metric,))
    assert target_from_alarm(good, POLICY) == Target("c", "w")


def test_without_environment_every_alarm_is_posted_and_none_acted_on(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ecs, _ = as_environment(lam, monkeypatch, "", aws)
    result = lam.handler(event_of("prod", "sns"), Context())
    assert ecs.calls == [] and result["alarms"][0]["remediation"] == "skipped"
    alert, note = (r.json["text"] for r in server.messages())
    assert alert.startswith("ALARM:") and "ENVIRONMENT is not set" in note


# --- the EventBridge rule of the monitoring template ---------------------------------------------


def _rule_for(env: str) -> Any:
    template = load(ROOT / "infrastructure" / "monitoring.yaml")
    pattern = template["Resources"]["AlarmStateChangeRule"]["Properties"]["EventPattern"]

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if node == {"Ref": "EnvironmentName"}:
                return env
            if node == {"Ref": "ClusterName"}:
                return f"{env}-cluster"
            if set(node) == {"Fn::Sub"}:
                return node["Fn::Sub"].replace("${EnvironmentName}", env)
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(pattern)


@pytest.mark.parametrize("rule_env", ENVIRONMENTS)
@pytest.mark.parametrize("alarm_env", ENVIRONMENTS)
def test_eventbridge_rule_matches_the_environment_exactly(rule_env: str, alarm_env: str) -> None:
    from tests.test_templates_aws import matches

    event = event_of(alarm_env, "eventbridge")
    assert matches(_rule_for(rule_env), event) is (rule_env == alarm_env)
    # Before: the name prefix alone, which prod- shares with prod-eu-.
    assert matches({"detail": {"alarmName": [{"prefix": "prod-"}]}}, event_of("prod-eu",
                                                                              "eventbridge"))


def test_the_handler_may_read_metrics_and_stop_only_its_clusters_tasks() -> None:
    template = load(ROOT / "infrastructure" / "monitoring.yaml")
    role = template["Resources"]["AlarmHandlerRole"]["Properties"]["Policies"][0]
    statements = {s["Sid"]: s for s in role["PolicyDocument"]["Statement"]}
    stop = statements["StopStuckTasks"]
    assert set(stop["Action"]) == {"ecs:DescribeTasks", "ecs:StopTask"}
    assert stop["Resource"]["Fn::Sub"].endswith(":task/${ClusterName}/*")
    assert statements["CheckEvidence"]["Action"] == "cloudwatch:GetMetricData"
    env = template["Resources"]["AlarmHandlerFunction"]["Properties"]["Environment"]["Variables"]
    assert env["SLACK_ESCALATION_MENTION"] == {"Ref": "SlackEscalationMention"}


def test_fixtures_carry_the_prod_environment() -> None:
    for route in ROUTES:
        (parsed,) = parse_event(event_of("prod-eu", route))
        assert parsed.name == "prod-eu-worker-emails-WorkerStuck"
        assert parsed.metric is not None and parsed.metric.dimension("Environment") == "prod-eu"

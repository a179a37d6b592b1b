"""The optional TaskFailureRate alarm: its template (metric math over the environment's sums,
10 minutes, a minimum volume, off unless configured), its route, and the handler alerting on it
without ever acting."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml  # type: ignore[import-untyped]

from tests.conftest import load_event
from tests.slack_server import SlackServer
from tests.test_alarm_handler import aws, deployments, lam, server  # noqa: F401 - fixtures
from tests.test_cloudformation import ROOT, _CfnLoader, load, resources
from toolkit.config import load_settings
from toolkit.deploy import render_master

MONITORING = ROOT / "infrastructure" / "monitoring.yaml"


def alarm() -> dict[str, Any]:
    template = load(MONITORING)
    (props,) = [p for n, p in resources(template, "AWS::CloudWatch::Alarm")
                if n == "TaskFailureRateAlarm"]
    return props


def test_the_alarm_is_failed_over_finished_tasks_over_ten_minutes() -> None:
    props = alarm()
    by_id = {m["Id"]: m for m in props["Metrics"]}
    for qid, metric in (("failed", "TasksFailed"), ("succeeded", "TasksSucceeded")):
        stat = by_id[qid]["MetricStat"]
        assert stat["Metric"]["MetricName"] == metric
        assert stat["Metric"]["Dimensions"] == [{"Name": "Environment",
                                                 "Value": {"Ref": "EnvironmentName"}}]
        assert (stat["Period"], stat["Stat"], by_id[qid]["ReturnData"]) == (600, "Sum", False)
    expression = by_id["rate"]["Expression"]["Fn::Sub"]
    assert expression == ("IF(FILL(failed, 0) + FILL(succeeded, 0) >= ${TaskFailureRateMinTasks}"
                          ", 100 * FILL(failed, 0) / (FILL(failed, 0) + FILL(succeeded, 0)), 0)")
    assert by_id["rate"]["ReturnData"] is True
    assert (props["ComparisonOperator"], props["Threshold"]) == (
        "GreaterThanThreshold", {"Ref": "TaskFailureRateThreshold"})
    assert props["TreatMissingData"] == "notBreaching"  # no tasks at all is not failing
    assert props["AlarmActions"] == props["OKActions"] == [{"Ref": "AlarmTopic"}]


def test_it_exists_only_when_configured_and_is_routed_like_the_others() -> None:
    template = load(MONITORING)
    res = template["Resources"]["TaskFailureRateAlarm"]
    assert res["Condition"] == "CreateTaskFailureRateAlarm"
    assert template["Conditions"]["CreateTaskFailureRateAlarm"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "TaskFailureRateThreshold"}, 0]}]}
    assert template["Parameters"]["TaskFailureRateThreshold"]["Default"] == 0
    names = template["Resources"]["AlarmStateChangeRule"]["Properties"]["EventPattern"][
        "detail"]["alarmName"]
    assert {"Fn::Sub": "${EnvironmentName}-TaskFailureRate"} in names


def test_the_root_stack_passes_the_configured_threshold(tmp_path: Path) -> None:
    example = load_settings(ROOT / "example.celery-ecs.toml", environ={}, require_broker=False)
    rendered = yaml.load(render_master(example), Loader=_CfnLoader)  # noqa: S506
    params = rendered["Resources"]["Monitoring"]["Properties"]["Parameters"]
    assert (params["TaskFailureRateThreshold"], params["TaskFailureRateMinTasks"]) == (10, 10)
    plain = tmp_path / "c.toml"
    plain.write_text(
        'environment = "e"\n[[services]]\ncluster = "e-cluster"\nservice = "w"\n'
        'queues = ["q"]\n[tasks]\nfailure_rate_min_tasks = 50\n')
    rendered = yaml.load(render_master(load_settings(plain, environ={}, require_broker=False)),
                         Loader=_CfnLoader)  # noqa: S506
    params = rendered["Resources"]["Monitoring"]["Properties"]["Parameters"]
    assert (params["TaskFailureRateThreshold"], params["TaskFailureRateMinTasks"]) == (0, 50)


def test_the_event_fixture_is_what_the_template_creates() -> None:
    message = json.loads(load_event("sns_task_failure_rate_alarm")["Records"][0]["Sns"]["Message"])
    by_id = {m["Id"]: m for m in message["Trigger"]["Metrics"]}
    props = alarm()
    template_rate = props["Metrics"][2]["Expression"]["Fn::Sub"].replace(
        "${TaskFailureRateMinTasks}", "10")
    assert by_id["rate"]["Expression"] == template_rate
    assert message["AlarmName"] == "prod-TaskFailureRate"


def test_the_handler_alerts_and_never_acts(
    lam: ModuleType, server: SlackServer, aws: Any,  # noqa: F811 - fixtures
) -> None:
    before = deployments(aws)
    result = lam.handler(load_event("sns_task_failure_rate_alarm"), None)
    assert result["status"] == "handled"
    (outcome,) = result["alarms"]
    assert outcome["remediation"] == "skipped" and outcome["posted"]
    assert deployments(aws) == before  # no forced deployment
    (alert,) = server.requests  # the alert, no follow-up
    assert "prod-TaskFailureRate" in json.dumps(alert.json)

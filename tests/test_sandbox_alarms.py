"""The sandbox's CloudWatch stand-in: alarms come from the templates, and are judged as
CloudWatch judges them (M of N datapoints, TreatMissingData). Pure, no servers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from toolkit.config import ServiceDeployment, ServiceSettings, Settings, Thresholds
from toolkit.sandbox.alarmdefs import AlarmDefinition, alarm_definitions
from toolkit.sandbox.cloudwatch import evaluate
from toolkit.sandbox.scenario import Event, Timeline, in_order, outcome

SETTINGS = Settings(
    environment="sbx", queues=("q1",), thresholds=Thresholds(max_length=70, max_age=45),
    services=(ServiceSettings("sbx-cluster", "svc", ("q1",), ServiceDeployment(remediate=True)),),
)


def by_name() -> dict[str, AlarmDefinition]:
    return {a.name: a for a in alarm_definitions(SETTINGS)}


def test_alarms_are_the_templates_resolved_with_the_config() -> None:
    alarms = by_name()
    assert set(alarms) == {"sbx-svc-WorkerStuck", "sbx-svc-WorkersStuck", "sbx-svc-MemoryAnomaly",
                           "sbx-svc-MemoryHigh",
                           "sbx-svc-RunningBelowDesired", "sbx-q1-QueueLength",
                           "sbx-q1-QueueAge"}
    stuck = alarms["sbx-svc-WorkerStuck"]
    assert stuck.dimensions == (("Environment", "sbx"), ("ClusterName", "sbx-cluster"),
                                ("ServiceName", "svc"))
    assert (stuck.namespace, stuck.metric, stuck.statistic, stuck.period) == (
        "Celery", "WorkerStuck", "Maximum", 60)
    assert (stuck.evaluation_periods, stuck.datapoints_to_alarm, stuck.threshold) == (3, 3, 1.0)
    assert alarms["sbx-q1-QueueLength"].threshold == 70.0  # max_length from the config
    assert alarms["sbx-q1-QueueAge"].threshold == 45.0
    assert alarms["sbx-svc-MemoryHigh"].threshold == 90.0  # [verdicts] memory_high default
    assert alarms["sbx-svc-MemoryAnomaly"].math and not stuck.math
    args = stuck.put_args("arn:topic")
    assert args["AlarmActions"] == ["arn:topic"] and args["TreatMissingData"] == "ignore"


STUCK = AlarmDefinition("a", "", "Celery", "WorkerStuck", (), "Maximum", 60, 3, 3, 1.0,
                        "GreaterThanOrEqualToThreshold", "notBreaching")
MEMORY = replace(STUCK, evaluation_periods=5, datapoints_to_alarm=3, threshold=90.0,
                 comparison="GreaterThanThreshold")


@pytest.mark.parametrize(("alarm", "values", "current", "want"), [
    (STUCK, (1.0, 1.0, 1.0), "OK", "ALARM"),
    (STUCK, (1.0, 1.0, 0.0), "ALARM", "OK"),
    (STUCK, (1.0, None, 1.0), "OK", "OK"),  # missing is not breaching
    (replace(STUCK, treat_missing="breaching"), (1.0, None, 1.0), "OK", "ALARM"),
    (replace(STUCK, treat_missing="missing"), (None, None, None), "OK", "INSUFFICIENT_DATA"),
    (replace(STUCK, treat_missing="ignore"), (None, None, None), "ALARM", "ALARM"),
    # a deploying service publishes no WorkerStuck: the newest datapoints present still say 1
    (replace(STUCK, treat_missing="ignore"), (1.0, 1.0, 1.0, None, None, None), "ALARM",
     "ALARM"),
    (replace(STUCK, treat_missing="ignore"), (1.0, 1.0, 1.0, 0.0, None, None), "ALARM", "OK"),
    (replace(STUCK, treat_missing="ignore"), (0.0, 0.0, 1.0, 1.0, None, 1.0), "OK", "ALARM"),
    (STUCK, (1.0, 1.0, 1.0, 1.0, 1.0, None), "ALARM", "OK"),  # notBreaching: the newest 3
    (MEMORY, (40.0, 96.0, None, 96.0, 96.0), "OK", "ALARM"),  # 3 of 5
    (MEMORY, (40.0, 96.0, 90.0, 96.0, 40.0), "OK", "OK"),  # 90 is not > 90
])
def test_evaluation_follows_cloudwatch(alarm: AlarmDefinition, values: tuple[float | None, ...],
                                       current: str, want: str) -> None:
    state, reason = evaluate(values, alarm, current)  # type: ignore[arg-type]
    assert state == want, reason


def test_stuck_outcome_needs_one_deployment_and_the_order() -> None:
    tl = Timeline([Event(float(i), n, "") for i, n in enumerate(
        ["frozen", "alarm", "deployment", "recovered", "resolved"])])
    assert in_order(tl.events, ["frozen", "resolved"])
    assert outcome("stuck", tl, 1) == (True, "the stuck worker was detected, redeployed and "
                                              "recovered")
    assert outcome("stuck", tl, 2)[0] is False
    swapped = Timeline([tl.events[0], tl.events[2], tl.events[1], *tl.events[3:]])
    assert outcome("stuck", swapped, 1)[0] is False
    assert outcome("healthy", Timeline(), 0)[0] is True
    assert outcome("healthy", Timeline([Event(1.0, "alarm", "x")]), 0)[0] is False

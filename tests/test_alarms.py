"""Parsing the three alarm event shapes, their variants, timestamps and garbage."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import load_event
from toolkit.alarms import AlarmEvent, parse_event, parse_timestamp, try_parse_event
from toolkit.errors import AlarmEventError

NOON = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fixture", "source", "kind", "state", "previous", "service"),
    [
        ("sns_worker_stuck_alarm", "sns", "metric", "ALARM", "OK", "worker-emails"),
        ("sns_worker_stuck_ok", "sns", "metric", "OK", "ALARM", "worker-emails"),
        ("sns_metric_math_alarm", "sns", "math", "ALARM", "OK", "worker-emails"),
        ("sns_composite_alarm", "sns", "composite", "ALARM", "OK", None),
        ("eventbridge_worker_stuck_alarm", "eventbridge", "metric", "ALARM", "OK", "worker-emails"),
        ("eventbridge_insufficient_data", "eventbridge", "metric", "INSUFFICIENT_DATA", "ALARM",
         "worker-emails"),
        ("eventbridge_metric_math_alarm", "eventbridge", "math", "ALARM", "OK", "worker-emails"),
        ("eventbridge_composite_alarm", "eventbridge", "composite", "ALARM", "OK", None),
        ("lambda_worker_stuck_alarm", "lambda", "metric", "ALARM", "OK", "worker-emails"),
        ("lambda_metric_math_alarm", "lambda", "math", "ALARM", "OK", "worker-emails"),
        ("lambda_composite_alarm", "lambda", "composite", "ALARM", "OK", None),
        ("lambda_aws_example_odd_timestamps", "lambda", "metric", "ALARM", "INSUFFICIENT_DATA",
         None),
    ],
)
def test_fixtures_parse(
    fixture: str, source: str, kind: str, state: str, previous: str, service: str | None
) -> None:
    (alarm,) = parse_event(load_event(fixture))
    assert (alarm.source, alarm.kind, alarm.state, alarm.previous_state) == (
        source, kind, state, previous,
    )
    assert alarm.service == service
    assert alarm.timestamp is not None and alarm.timestamp.tzinfo is not None
    assert alarm.region and alarm.account and alarm.arn
    assert alarm.console_url and alarm.region in alarm.console_url
    if kind == "composite":
        assert alarm.metric is None and alarm.alarm_rule


def test_single_metric_details() -> None:
    (alarm,) = parse_event(load_event("eventbridge_worker_stuck_alarm"))
    assert alarm.metric is not None
    assert (alarm.metric.namespace, alarm.metric.name) == ("Celery", "WorkerStuck")
    assert dict(alarm.metric.dimensions) == {
        "ClusterName": "prod-cluster", "Environment": "prod", "ServiceName": "worker-emails",
    }
    assert alarm.datapoints == (1.0, 1.0, 1.0) and alarm.threshold == 1.0
    assert alarm.timestamp == NOON and alarm.region == "eu-west-1"


def test_sns_region_comes_from_the_arn_not_the_long_name() -> None:
    (alarm,) = parse_event(load_event("sns_worker_stuck_alarm"))
    assert alarm.region == "eu-west-1"  # the message says "EU (Ireland)"
    assert alarm.datapoints == (1.0,)  # read from the reason text: SNS has no reasonData


def test_metric_math_prefers_the_input_naming_a_service() -> None:
    (alarm,) = parse_event(load_event("sns_metric_math_alarm"))
    assert alarm.metric is not None and alarm.metric.name == "RunningTaskCount"
    assert (alarm.cluster, alarm.service) == ("prod-cluster", "worker-emails")
    event = load_event("eventbridge_metric_math_alarm")
    del event["detail"]["configuration"]["metrics"][2]
    (alarm,) = parse_event(event)
    assert alarm.kind == "math" and alarm.metric is not None and alarm.metric.name == "QueueLength"
    assert alarm.queue == "emails" and alarm.service is None


def test_the_same_state_change_has_one_dedup_key_whatever_the_route() -> None:
    keys = {
        parse_event(load_event(name))[0].dedup_key
        for name in ("sns_worker_stuck_alarm", "eventbridge_worker_stuck_alarm",
                     "lambda_worker_stuck_alarm")
    }
    assert len(keys) == 1
    ok = parse_event(load_event("sns_worker_stuck_ok"))[0]
    assert ok.dedup_key not in keys
    assert ok.alarm_key == parse_event(load_event("sns_worker_stuck_alarm"))[0].alarm_key


def test_sns_batch_with_a_foreign_record() -> None:
    event = load_event("sns_worker_stuck_alarm")
    other = copy.deepcopy(event["Records"][0])
    other["Sns"]["Message"] = "plain text notification"
    event["Records"].insert(0, other)
    assert [a.name for a in parse_event(event)] == ["celery-prod-worker-emails-WorkerStuck"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-01-01T12:00:00.000+0000", NOON),
        ("2024-01-01T12:00:00Z", NOON),
        ("2024-01-01T12:00:00+00:00", NOON),
        ("2024-01-01T12:00:00", NOON),
        ("2024-01-01T12:00Z", NOON),
        ("2024-01-01T13:00:00.000+0100", NOON),
        ("2024-01-01T07:00:00-05:00", NOON),
        ("2024-01-01T12: 00: 00.000+0000", NOON),
        ("2024-01-01 12:00:00", NOON),
        ("2024-01-01T12:00:00.123456789Z", datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        (1704110400, NOON),
        (1704110400000, NOON),
        ("", None),
        ("yesterday", None),
        ("2024-13-01T12:00:00Z", None),
        ("2024-01-01T12:00:00+9900", None),
        (None, None),
        (True, None),
        (float("nan"), None),
        ([], None),
    ],
)
def test_parse_timestamp(raw: object, expected: datetime | None) -> None:
    assert parse_timestamp(raw) == expected


@pytest.mark.parametrize(
    "event",
    [
        None,
        [],
        "ALARM",
        {},
        {"Records": []},
        {"Records": [{"Sns": {"Message": "not json"}}]},
        {"Records": [{"Sns": {"Message": json.dumps({"AlarmName": "x"})}}]},
        {"Records": [{"Sns": {"Message": json.dumps({"AlarmName": "x", "NewStateValue": "BAD"})}}]},
        {"Records": [{"s3": {"bucket": {"name": "b"}}, "eventSource": "aws:s3"}]},
        {"detail-type": "EC2 Instance State-change Notification", "detail": {}},
        {"detail-type": "CloudWatch Alarm State Change", "detail": "x"},
        {"detail-type": "CloudWatch Alarm State Change", "detail": {"alarmName": "x"}},
        {"source": "aws.cloudwatch", "alarmData": None},
        {"source": "aws.cloudwatch", "alarmData": {"alarmName": "x", "state": {"value": 3}}},
        {"source": "aws.events", "detail-type": "Scheduled Event"},
    ],
)
def test_unrecognised_events(event: object) -> None:
    with pytest.raises(AlarmEventError):
        parse_event(event)
    assert try_parse_event(event) is None


# --- property-based: garbage in, AlarmEventError or a valid AlarmEvent out ------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
KEYS = ["Records", "Sns", "Message", "detail-type", "detail", "source", "alarmData", "alarmName",
        "state", "value", "configuration", "metrics", "Trigger", "AlarmName", "NewStateValue"]
alarmish = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)

FIXTURES = [
    "sns_worker_stuck_alarm", "eventbridge_worker_stuck_alarm", "lambda_worker_stuck_alarm",
    "sns_metric_math_alarm", "eventbridge_composite_alarm", "lambda_metric_math_alarm",
]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _sns_inner(event: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """For SNS, mutate the JSON inside Message (then re-encode), else the event itself."""
    if "Records" in event:
        return json.loads(event["Records"][0]["Sns"]["Message"]), event
    return event, None


@st.composite
def mutated(draw: st.DrawFn) -> object:
    event = load_event(draw(st.sampled_from(FIXTURES)))
    target, outer = _sns_inner(event)
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(target) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = target
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    if outer is not None:
        outer["Records"][0]["Sns"]["Message"] = json.dumps(target)
        return outer
    return target


def _check(event: object) -> None:
    try:
        alarms = parse_event(event)
    except AlarmEventError:
        return
    for alarm in alarms:
        assert isinstance(alarm, AlarmEvent)
        assert alarm.state in ("OK", "ALARM", "INSUFFICIENT_DATA")
        assert isinstance(alarm.name, str) and alarm.name
        assert alarm.dedup_key and isinstance(alarm.reason, str)
        if alarm.metric is not None:
            dims = alarm.metric.dimensions
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in dims)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.one_of(json_values, alarmish))
def test_arbitrary_json_never_crashes_the_parser(event: object) -> None:
    _check(event)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(mutated())
def test_mutated_fixtures_never_crash_the_parser(event: object) -> None:
    _check(event)

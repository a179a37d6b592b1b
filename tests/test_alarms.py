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
from toolkit.alarms.events import AlarmEvent, parse_timestamp
from toolkit.alarms.parsing import parse_event, try_parse_event
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


def test_huge_numbers_and_out_of_range_timestamps_are_dropped_not_raised() -> None:
    event = load_event("sns_worker_stuck_alarm")
    message = json.loads(event["Records"][0]["Sns"]["Message"])
    message["Trigger"]["Threshold"] = 10**400
    message["StateChangeTime"] = "0001-01-01T00:00:00+0100"
    event["Records"][0]["Sns"]["Message"] = json.dumps(message)
    (alarm,) = parse_event(event)
    assert alarm.threshold is None and alarm.timestamp is None
    event = load_event("eventbridge_worker_stuck_alarm")
    event["detail"]["state"]["reasonData"] = json.dumps(
        {"recentDatapoints": [10**400, 2.0], "threshold": -(10**400)}
    )
    event["detail"]["state"]["timestamp"] = "9999-12-31T23:59:59-0100"
    event["time"] = 10**400
    (alarm,) = parse_event(event)
    assert alarm.datapoints == (2.0,) and alarm.threshold is None and alarm.timestamp is None


def test_every_input_of_a_metric_math_alarm_is_kept() -> None:
    (alarm,) = parse_event(load_event("eventbridge_metric_math_alarm"))
    assert alarm.kind == "math" and len(alarm.inputs) >= 2
    assert alarm.metric in alarm.inputs
    (single,) = parse_event(load_event("sns_worker_stuck_alarm"))
    assert single.inputs == (single.metric,)
    (composite,) = parse_event(load_event("eventbridge_composite_alarm"))
    assert composite.inputs == ()


def test_sns_batch_with_a_foreign_record() -> None:
    event = load_event("sns_worker_stuck_alarm")
    other = copy.deepcopy(event["Records"][0])
    other["Sns"]["Message"] = "plain text notification"
    event["Records"].insert(0, other)
    assert [a.name for a in parse_event(event)] == ["prod-worker-emails-WorkerStuck"]


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
        # Valid local times whose UTC equivalent falls outside datetime's range.
        ("0001-01-01T00:00:00+0100", None),
        ("0001-01-01T00:00:00.000+01:00", None),
        ("9999-12-31T23:59:59-0100", None),
        ("9999-12-31T23:59:59.999Z", datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
        (10**400, None),  # float(10**400) raises OverflowError
        (-(10**400), None),
        (2**63, None),
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

# Values that broke the parser before: integers beyond float range (OverflowError from float())
# and timestamps at the edges of datetime's range (OverflowError from astimezone()).
huge_integers = st.integers(min_value=10**300, max_value=10**400) | st.integers(
    max_value=-(10**300), min_value=-(10**400)
)
EDGE_TIMESTAMPS = [
    "0001-01-01T00:00:00+0100", "0001-01-01T00:59:59.999-0000", "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-0100", "9999-12-31T23:59:59.999999-23:59", "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z", "2024-02-30T12:00:00Z", "2024-01-01T24:00:00Z",
    "2024-01-01T12:00:00+2400",
]
edge_timestamps = st.sampled_from(EDGE_TIMESTAMPS) | st.builds(
    lambda when, tz: when.strftime("%Y-%m-%dT%H:%M:%S.000") + tz,
    st.datetimes(),
    st.sampled_from(["Z", "+0000", "+0100", "-0100", "+23:59", "-23:59", ""]),
)
leaves = (
    st.none() | st.booleans() | st.integers() | huge_integers | st.floats()
    | st.text(max_size=20) | edge_timestamps
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=12), children, max_size=4
    )


json_values = st.recursive(leaves, _containers, max_leaves=20)
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


STUCK_FIXTURES = [
    "sns_worker_stuck_alarm", "eventbridge_worker_stuck_alarm", "lambda_worker_stuck_alarm",
]
# Replacements that keep an event near-valid: real states, metric names, dimension values,
# timestamps in and out of range, huge numbers. Mixed with arbitrary JSON.
plausible = st.sampled_from(
    ["ALARM", "OK", "INSUFFICIENT_DATA", "WorkerStuck", "QueueLength", "ClusterName",
     "ServiceName", "prod-cluster", "worker-emails", "worker-other", "", "CloudWatch Alarm "
     "State Change", "aws.cloudwatch", "2024-01-01T12:00:00.000+0000", 1.0, 0, None]
) | edge_timestamps | huge_integers
replacements = plausible | json_values


@st.composite
def mutated(draw: st.DrawFn, fixtures: list[str] = FIXTURES) -> object:
    event = load_event(draw(st.sampled_from(fixtures)))
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
            parent[path[-1]] = draw(replacements)
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


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.one_of(json_values, alarmish))
def test_arbitrary_json_never_crashes_the_parser(event: object) -> None:
    _check(event)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(mutated())
def test_mutated_fixtures_never_crash_the_parser(event: object) -> None:
    _check(event)

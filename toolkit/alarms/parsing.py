"""Parse CloudWatch alarm events into one read-only :class:`AlarmEvent`.

Three delivery shapes reach the alarm handler (see the design page):

1. SNS: ``Records[].Sns.Message`` is a JSON *string* with ``AlarmName``, ``NewStateValue``,
   ``OldStateValue``, ``NewStateReason``, ``StateChangeTime`` and ``Trigger`` (absent for composite
   alarms; metric-math alarms carry ``Trigger.Metrics`` instead of ``Trigger.MetricName``).
2. EventBridge: ``detail-type`` "CloudWatch Alarm State Change" with ``detail.alarmName``,
   ``detail.state``, ``detail.previousState`` and ``detail.configuration.metrics[]``.
3. Lambda alarm action: ``source`` "aws.cloudwatch", ``alarmArn`` and ``alarmData`` (the same
   inner structure as the EventBridge ``detail``).

Anything else raises :class:`~toolkit.errors.AlarmEventError` (or returns ``None`` from
:func:`try_parse_event`). Parsing never performs I/O and never trusts a field's type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from toolkit.alarms.events import (
    ALARM_STATES,
    EVENTBRIDGE_DETAIL_TYPE,
    SERVICE_DIMENSIONS,
    AlarmEvent,
    AlarmKind,
    AlarmState,
    EventSource,
    MetricRef,
    parse_timestamp,
)
from toolkit.errors import AlarmEventError

# --- small typed getters ------------------------------------------------------------------------


def _map(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _text(container: Mapping[str, Any] | None, key: str) -> str | None:
    if container is None:
        return None
    value = container.get(key)
    return value if isinstance(value, str) and value else None


def _state(value: object) -> AlarmState | None:
    if isinstance(value, str):
        for state in ALARM_STATES:
            if value == state:
                return state
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: an int beyond float range
        return None
    return number if number == number and abs(number) != float("inf") else None


def _arn_part(arn: str | None, index: int) -> str | None:
    """Field ``index`` of an ARN (3: region, 4: account), or ``None`` when absent or empty."""
    parts = arn.split(":") if arn else []
    return parts[index] if len(parts) > 5 and parts[0] == "arn" and parts[index] else None


def _dims_from_pairs(raw: object) -> tuple[tuple[str, str], ...]:
    """SNS style: ``[{"name": "ClusterName", "value": "prod"}]`` (either key case)."""
    out: dict[str, str] = {}
    if isinstance(raw, list):
        for item in raw:
            item_map = _map(item)
            if item_map is None:
                continue
            name = _text(item_map, "name") or _text(item_map, "Name")
            value = item_map.get("value", item_map.get("Value"))
            if name and isinstance(value, str):
                out[name] = value
    return tuple(sorted(out.items()))


def _dims_from_mapping(raw: object) -> tuple[tuple[str, str], ...]:
    """EventBridge / Lambda style: ``{"ClusterName": "prod"}``."""
    raw_map = _map(raw)
    if raw_map is None:
        return _dims_from_pairs(raw)
    pairs = ((k, v) for k, v in raw_map.items() if isinstance(k, str) and isinstance(v, str))
    return tuple(sorted(pairs))


# SNS spells statistics in capitals (``"Statistic": "MAXIMUM"``); the APIs in CamelCase.
_STATISTICS = {s.upper(): s for s in ("Maximum", "Minimum", "Average", "Sum", "SampleCount")}
_STATISTICS["SAMPLE_COUNT"] = "SampleCount"
_PERCENTILE = re.compile(r"p\d{1,2}(\.\d{1,2})?")


def _stat(value: object) -> str | None:
    """A statistic GetMetricData accepts (``Maximum``, ``p99``), else ``None``."""
    if not isinstance(value, str):
        return None
    if value.upper() in _STATISTICS:
        return _STATISTICS[value.upper()]
    return value if _PERCENTILE.fullmatch(value) else None


def _count(value: object) -> int | None:
    """A positive whole number (periods, evaluation periods), else ``None``."""
    number = _number(value)
    if number is None or number != int(number) or not 0 < number <= 10**6:
        return None
    return int(number)


def _sns_metric(
    raw: Mapping[str, Any] | None, stat_of: Mapping[str, Any] | None = None
) -> MetricRef | None:
    """SNS style (a ``Trigger`` or a ``MetricStat.Metric``): ``Namespace``, ``MetricName`` and
    ``Dimensions`` pairs; ``None`` without a metric name. ``stat_of`` holds ``Period`` and
    ``Statistic`` (the ``Trigger``) or ``Stat`` (a ``MetricStat``); ``raw`` itself by default."""
    name = _text(raw, "MetricName")
    if raw is None or name is None:
        return None
    stats = raw if stat_of is None else stat_of
    return MetricRef(
        namespace=_text(raw, "Namespace") or "",
        name=name,
        dimensions=_dims_from_pairs(raw.get("Dimensions")),
        period=_count(stats.get("Period")),
        stat=_stat(stats.get("Statistic") or stats.get("ExtendedStatistic") or stats.get("Stat")),
    )


def _alarm_data_metric(
    raw: Mapping[str, Any] | None, stat: Mapping[str, Any] | None = None
) -> MetricRef | None:
    """EventBridge / Lambda style ``metricStat.metric``: ``namespace``, ``name``, ``dimensions``;
    ``stat`` is the enclosing ``metricStat`` (``period``, ``stat``)."""
    name = _text(raw, "name")
    if raw is None or name is None:
        return None
    return MetricRef(
        namespace=_text(raw, "namespace") or "",
        name=name,
        dimensions=_dims_from_mapping(raw.get("dimensions")),
        period=_count(stat.get("period")) if stat else None,
        stat=_stat(stat.get("stat")) if stat else None,
    )


def _pick(metrics: list[MetricRef]) -> MetricRef | None:
    """Of a metric-math alarm's inputs, prefer the one naming an ECS service."""
    for metric in metrics:
        if all(metric.dimension(d) for d in SERVICE_DIMENSIONS):
            return metric
    return metrics[0] if metrics else None


_DATAPOINT = re.compile(r"\[\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*\(")


def _datapoints(reason: str, reason_data: object) -> tuple[tuple[float, ...], float | None]:
    """Recent datapoints and threshold from ``reasonData`` (a JSON string), else from the text."""
    if isinstance(reason_data, str) and reason_data:
        try:
            data = json.loads(reason_data)
        except ValueError:
            data = None
        data_map = _map(data)
        if data_map is not None:
            points = data_map.get("recentDatapoints")
            numbers = (_number(p) for p in (points if isinstance(points, list) else []))
            values = tuple(v for v in numbers if v is not None)
            threshold = _number(data_map.get("threshold"))
            if values or threshold is not None:
                return values, threshold
    match = _DATAPOINT.search(reason)
    if match:
        value = _number(match.group(1))
        return ((value,) if value is not None else ()), None
    return (), None


# --- the three shapes ---------------------------------------------------------------------------


def _from_sns_message(message: Mapping[str, Any]) -> AlarmEvent:
    name = _text(message, "AlarmName")
    state = _state(message.get("NewStateValue"))
    if name is None or state is None:
        raise AlarmEventError("SNS message is not a CloudWatch alarm notification")
    arn = _text(message, "AlarmArn")
    reason = _text(message, "NewStateReason") or ""
    trigger = _map(message.get("Trigger"))
    kind: AlarmKind = "composite"
    metric: MetricRef | None = None
    threshold: float | None = None
    inputs: tuple[MetricRef, ...] = ()
    if trigger is not None:
        threshold = _number(trigger.get("Threshold"))
        metric = _sns_metric(trigger)
        if metric is not None:
            kind = "metric"
            inputs = (metric,)
        elif isinstance(trigger.get("Metrics"), list):
            kind = "math"
            found = []
            for item in trigger["Metrics"]:
                item_map = _map(item)
                stat = _map(item_map.get("MetricStat")) if item_map else None
                ref = _sns_metric(_map(stat.get("Metric")) if stat else None, stat)
                if ref is not None:
                    found.append(ref)
            metric = _pick(found)
            inputs = tuple(found)
    points, parsed_threshold = _datapoints(reason, None)
    return AlarmEvent(
        source="sns",
        kind=kind,
        name=name,
        state=state,
        previous_state=_state(message.get("OldStateValue")),
        reason=reason,
        timestamp=parse_timestamp(message.get("StateChangeTime")),
        arn=arn,
        region=_arn_part(arn, 3),
        account=_text(message, "AWSAccountId") or _arn_part(arn, 4),
        description=_text(message, "AlarmDescription"),
        metric=metric,
        threshold=threshold if threshold is not None else parsed_threshold,
        datapoints=points,
        alarm_rule=_text(message, "AlarmRule"),
        inputs=inputs,
        comparison=_text(trigger, "ComparisonOperator"),
        evaluation_periods=_count(trigger.get("EvaluationPeriods")) if trigger else None,
        datapoints_to_alarm=_count(trigger.get("DatapointsToAlarm")) if trigger else None,
    )


def _from_alarm_data(
    data: Mapping[str, Any],
    *,
    source: EventSource,
    arn: str | None,
    region: str | None,
    account: str | None,
    time: object,
) -> AlarmEvent:
    name = _text(data, "alarmName")
    state_map = _map(data.get("state"))
    state = _state(state_map.get("value")) if state_map else None
    if name is None or state_map is None or state is None:
        raise AlarmEventError(f"{source} event has no alarm name or valid state")
    previous = _map(data.get("previousState"))
    config = _map(data.get("configuration"))
    reason = _text(state_map, "reason") or ""
    kind: AlarmKind = "composite"
    metric: MetricRef | None = None
    inputs: tuple[MetricRef, ...] = ()
    raw_metrics = config.get("metrics") if config else None
    if isinstance(raw_metrics, list) and raw_metrics:
        found = []
        has_expression = False
        for item in raw_metrics:
            item_map = _map(item)
            if item_map is None:
                continue
            if _text(item_map, "expression"):
                has_expression = True
            stat = _map(item_map.get("metricStat"))
            ref = _alarm_data_metric(_map(stat.get("metric")) if stat else None, stat)
            if ref is not None:
                found.append(ref)
        if found or has_expression:
            kind = "math" if has_expression or len(found) > 1 else "metric"
            metric = _pick(found)
            inputs = tuple(found)
    points, threshold = _datapoints(reason, state_map.get("reasonData"))
    return AlarmEvent(
        source=source,
        kind=kind,
        name=name,
        state=state,
        previous_state=_state(previous.get("value")) if previous else None,
        reason=reason,
        timestamp=parse_timestamp(state_map.get("timestamp")) or parse_timestamp(time),
        arn=arn,
        region=region or _arn_part(arn, 3),
        account=account or _arn_part(arn, 4),
        description=_text(config, "description"),
        metric=metric,
        threshold=threshold,
        datapoints=points,
        alarm_rule=_text(config, "alarmRule"),
        inputs=inputs,
        comparison=_text(config, "comparisonOperator"),
        actions_suppressed_by=_text(state_map, "actionsSuppressedBy"),
    )


def _sns_records(event: Mapping[str, Any]) -> tuple[AlarmEvent, ...]:
    records = event.get("Records")
    if not isinstance(records, list) or not records:
        raise AlarmEventError("event has an empty Records list")
    alarms: list[AlarmEvent] = []
    for record in records:
        record_map = _map(record)
        sns = _map(record_map.get("Sns")) if record_map else None
        body = _text(sns, "Message")
        if body is None:
            continue
        try:
            message = json.loads(body)
        except ValueError:
            continue
        message_map = _map(message)
        if message_map is None:
            continue
        try:
            if message_map.get("detail-type") == EVENTBRIDGE_DETAIL_TYPE:
                # An EventBridge rule targeting an SNS topic: the event is the message.
                alarms.extend(_eventbridge(message_map))
            else:
                alarms.append(_from_sns_message(message_map))
        except AlarmEventError:
            continue
    if not alarms:
        raise AlarmEventError("no SNS record holds a CloudWatch alarm notification")
    return tuple(alarms)


def _eventbridge(event_map: Mapping[str, Any]) -> tuple[AlarmEvent, ...]:
    detail = _map(event_map.get("detail"))
    if detail is None:
        raise AlarmEventError("EventBridge alarm event without a detail object")
    resources = event_map.get("resources")
    arn = next(
        (r for r in resources if isinstance(r, str) and ":alarm:" in r), None
    ) if isinstance(resources, list) else None
    return (
        _from_alarm_data(
            detail,
            source="eventbridge",
            arn=arn,
            region=_text(event_map, "region"),
            account=_text(event_map, "account"),
            time=event_map.get("time"),
        ),
    )


def parse_event(event: object) -> tuple[AlarmEvent, ...]:
    """Every alarm state change in ``event`` (SNS may batch records); raise if there is none."""
    event_map = _map(event)
    if event_map is None:
        raise AlarmEventError(f"event is a {type(event).__name__}, not an object")
    if "Records" in event_map:
        return _sns_records(event_map)
    if event_map.get("detail-type") == EVENTBRIDGE_DETAIL_TYPE:
        return _eventbridge(event_map)
    if event_map.get("source") == "aws.cloudwatch" and "alarmData" in event_map:
        data = _map(event_map.get("alarmData"))
        if data is None:
            raise AlarmEventError("Lambda alarm action without an alarmData object")
        return (
            _from_alarm_data(
                data,
                source="lambda",
                arn=_text(event_map, "alarmArn"),
                region=_text(event_map, "region"),
                account=_text(event_map, "accountId"),
                time=event_map.get("time"),
            ),
        )
    raise AlarmEventError("not a CloudWatch alarm event (SNS, EventBridge or Lambda action)")


def try_parse_event(event: object) -> tuple[AlarmEvent, ...] | None:
    """Like :func:`parse_event` but ``None`` for anything unrecognised."""
    try:
        return parse_event(event)
    except AlarmEventError:
        return None

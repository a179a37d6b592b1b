"""The local stand-in for CloudWatch's alarm evaluation (moto stores alarms but never evaluates).

:func:`evaluate` is the decision, pure: the last ``EvaluationPeriods`` period values (None where
a period has no datapoint), ``DatapointsToAlarm``, the threshold and comparison, and
``TreatMissingData``, as CloudWatch applies them. :class:`AlarmEvaluator` does the I/O once per
tick: one ``GetMetricData`` for every single-metric alarm, with each period scaled down by
``scale`` (60 s becomes 3 s at the sandbox's scale of 20), then ``SetAlarmState`` on a change so
moto shows the state, and a :class:`Transition` for the caller to hand to the alarm handler.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from toolkit.sandbox.alarmdefs import AlarmDefinition

State = Literal["OK", "ALARM", "INSUFFICIENT_DATA"]
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanThreshold": lambda v, t: v > t,
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
}
_WORDS = {
    "GreaterThanThreshold": "greater than",
    "GreaterThanOrEqualToThreshold": "greater than or equal to",
    "LessThanThreshold": "less than",
    "LessThanOrEqualToThreshold": "less than or equal to",
}
_STAT = {"Maximum": "Maximum", "Minimum": "Minimum", "Average": "Average", "Sum": "Sum",
         "SampleCount": "SampleCount"}


@dataclass(frozen=True)
class Transition:
    alarm: AlarmDefinition
    old: State
    new: State
    reason: str
    values: tuple[float | None, ...]
    at: datetime


def evaluate(
    values: Sequence[float | None], alarm: AlarmDefinition, current: State
) -> tuple[State, str]:
    """The state CloudWatch gives ``alarm`` for these period values (oldest first, the
    evaluation range: possibly more periods than ``EvaluationPeriods``), and why.

    ``breaching``/``notBreaching`` judge the newest ``EvaluationPeriods`` periods, missing ones
    counted as the option says. ``missing``/``ignore`` skip missing periods and judge the newest
    ``EvaluationPeriods`` datapoints present in the range, as CloudWatch does when it retrieves
    more datapoints than the evaluation periods; with none present, ``missing`` goes to
    INSUFFICIENT_DATA and ``ignore`` keeps the state.
    """
    breach = _COMPARE[alarm.comparison]
    m, n = alarm.datapoints_to_alarm, alarm.evaluation_periods
    treat = alarm.treat_missing
    if treat in ("missing", "ignore"):
        judged: Sequence[float | None] = [v for v in values if v is not None][-n:]
        if not judged:
            if treat == "ignore":
                return current, "no data: state kept (TreatMissingData ignore)"
            return "INSUFFICIENT_DATA", f"no datapoints in the last {len(values)} periods"
    else:
        judged = list(values[-n:])
    present = [v for v in judged if v is not None]
    missing = len(judged) - len(present)
    bad = sum(1 for v in present if breach(v, alarm.threshold))
    if treat == "breaching":
        bad += missing
    shown = ", ".join("-" if v is None else f"{v:g}" for v in reversed(judged))  # newest first
    words = _WORDS[alarm.comparison]
    points = f"{bad} out of the last {n} datapoints [{shown}]"
    # CloudWatch's own wording: the alarm handler reads "greater than ... the threshold (" from it
    if bad >= m:
        return "ALARM", (f"Threshold Crossed: {points} {'was' if bad == 1 else 'were'} {words} "
                         f"the threshold ({alarm.threshold:g}) (minimum {m} datapoint"
                         f"{'' if m == 1 else 's'} for OK -> ALARM transition).")
    return "OK", (f"Threshold Crossed: {points} {'was' if bad == 1 else 'were'} {words} the "
                  f"threshold ({alarm.threshold:g}), fewer than the {m} needed for ALARM.")


class AlarmEvaluator:
    """Evaluates every single-metric alarm once per call to :meth:`tick`."""

    def __init__(self, cloudwatch: Any, alarms: Sequence[AlarmDefinition], scale: float,
                 start: datetime) -> None:
        self.cw = cloudwatch
        self.alarms = [a for a in alarms if not a.math]
        self.scale = scale
        self.start = start.replace(microsecond=0)
        self.states: dict[str, State] = {a.name: "OK" for a in self.alarms}

    def period_of(self, alarm: AlarmDefinition) -> int:
        return max(1, round(alarm.period / self.scale))

    def _window(self, alarm: AlarmDefinition, now: datetime) -> tuple[datetime, datetime, int]:
        """The evaluation range: the last ``RANGE_FACTOR x EvaluationPeriods`` complete periods,
        aligned on the sandbox's start."""
        period = self.period_of(alarm)
        done = int((now - self.start).total_seconds() // period)
        end = self.start + timedelta(seconds=done * period)
        return end - timedelta(seconds=period * _range(alarm)), end, period

    def read(self, now: datetime) -> dict[str, tuple[float | None, ...]]:
        queries, windows = [], {}
        for i, alarm in enumerate(self.alarms):
            start, end, period = self._window(alarm, now)
            windows[alarm.name] = (start, end, period, f"m{i}")
            queries.append({"Id": f"m{i}", "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": alarm.namespace, "MetricName": alarm.metric,
                           "Dimensions": alarm.dims()},
                "Period": period, "Stat": _STAT[alarm.statistic]}})
        earliest = min(w[0] for w in windows.values())
        latest = max(w[1] for w in windows.values())
        if earliest >= latest:
            return {}
        got: dict[str, dict[datetime, float]] = {}
        for chunk in range(0, len(queries), 500):
            reply = self.cw.get_metric_data(MetricDataQueries=queries[chunk:chunk + 500],
                                            StartTime=earliest, EndTime=latest)
            for r in reply["MetricDataResults"]:
                got[r["Id"]] = {t.astimezone(UTC): v
                                for t, v in zip(r["Timestamps"], r["Values"], strict=True)}
        out = {}
        for alarm in self.alarms:
            start, end, period, qid = windows[alarm.name]
            series = got.get(qid, {})
            out[alarm.name] = tuple(
                _value_at(series, start, earliest, period, k) for k in range(_range(alarm)))
        return out

    def tick(self, now: datetime | None = None) -> list[Transition]:
        at = now or datetime.now(UTC)
        if not self.alarms:
            return []
        values = self.read(at)
        changes = []
        for alarm in self.alarms:
            if alarm.name not in values:
                continue
            old = self.states[alarm.name]
            new, reason = evaluate(values[alarm.name], alarm, old)
            if new == old:
                continue
            self.states[alarm.name] = new
            self.cw.set_alarm_state(AlarmName=alarm.name, StateValue=new, StateReason=reason,
                                    StateReasonData=json.dumps({"sandbox": True}))
            changes.append(Transition(alarm, old, new, reason, values[alarm.name], at))
        return changes


#: how many times EvaluationPeriods the local evaluation range spans (CloudWatch's own range is
#: longer than the evaluation periods too; its exact length depends on the period)
RANGE_FACTOR = 2


def _range(alarm: AlarmDefinition) -> int:
    return RANGE_FACTOR * alarm.evaluation_periods


def _value_at(series: dict[datetime, float], start: datetime, earliest: datetime, period: int,
              k: int) -> float | None:
    """The value of the k-th period of a window starting at ``start``. GetMetricData buckets
    from ``earliest``; every window starts on the same period grid (aligned on the start)."""
    want = start + timedelta(seconds=k * period)
    if (want - earliest).total_seconds() % period:
        return None
    return series.get(want)

"""Evidence before action: the alarm metric's live datapoints, read with ``GetMetricData``.

An alarm's state is not proof: ``aws cloudwatch set-alarm-state`` sets any state with any reason
(and any ``--state-reason-data``), so a reason quoting "3 datapoints [1.0 ...]" proves nothing.
Before any ECS call the handler reads the metric itself, in the toolkit's namespace, with the
alarm's statistic and period over its evaluation window (plus one period, for the one still being
filled), and acts only when the newest datapoint is over the threshold, and at least 1 (both
remediating metrics count stuck things: below 1 nothing is stuck, whatever threshold an event
claims).

:func:`metric_query` and :func:`check_evidence` are pure; :class:`LiveMetrics` does the I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from toolkit.alarms.decision import DecisionCode
from toolkit.alarms.events import AlarmEvent, MetricRef
from toolkit.errors import AwsError, aws_error_code
from toolkit.metricnames import SERVICE_DIMS

__all__ = ["Evidence", "LiveMetrics", "MetricQuery", "check_evidence", "metric_query"]

DEFAULT_PERIOD = 60  # the toolkit's alarms: 60 s periods, 3 of 3
DEFAULT_EVALUATION_PERIODS = 3
MAX_EVALUATION_PERIODS = 10  # an event claiming more is not believed
MAX_PERIOD = 3600
MIN_EVIDENCE = 1.0  # WorkerStuck and WorkersStuck count stuck things: below 1 none is
ABOVE = {"GreaterThanThreshold": "greater than", "GreaterThanOrEqualToThreshold": "at least"}


@dataclass(frozen=True)
class MetricQuery:
    """One ``GetMetricData`` query for the alarm's metric (``start``/``end`` on the period grid)."""

    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]
    stat: str
    period: int
    start: datetime
    end: datetime

    def request(self) -> dict[str, Any]:
        return {
            "MetricDataQueries": [{
                "Id": "live",
                "ReturnData": True,
                "MetricStat": {
                    "Metric": {
                        "Namespace": self.namespace,
                        "MetricName": self.name,
                        "Dimensions": [{"Name": k, "Value": v} for k, v in self.dimensions],
                    },
                    "Period": self.period,
                    "Stat": self.stat,
                },
            }],
            "StartTime": self.start,
            "EndTime": self.end,
            "ScanBy": "TimestampDescending",
        }


@dataclass(frozen=True)
class Evidence:
    """What the metric says now: its values newest first, and what the alarm compares them to."""

    query: MetricQuery
    values: tuple[float, ...]
    threshold: float
    comparison: str = "GreaterThanOrEqualToThreshold"

    @property
    def newest(self) -> float | None:
        return self.values[0] if self.values else None

    @property
    def breaching(self) -> bool:
        value = self.newest
        if value is None or value < MIN_EVIDENCE:
            return False
        if self.comparison == "GreaterThanThreshold":
            return value > self.threshold
        return value >= self.threshold

    def summary(self) -> str:
        """``WorkerStuck (Maximum per 60 s, newest first): 1, 1, 0``."""
        shown = ", ".join(f"{v:g}" for v in self.values[:6]) or "no datapoints"
        return (
            f"live {self.query.name} ({self.query.stat} per {self.query.period} s, newest "
            f"first): {shown}"
        )

    def to_details(self) -> dict[str, Any]:
        return {"metric": self.query.name, "stat": self.query.stat, "period": self.query.period,
                "values": list(self.values[:6]), "threshold": self.threshold}


def _dimension_order(pair: tuple[str, str]) -> tuple[int, str]:
    """The collector's order (Environment, ClusterName, ServiceName), then the rest by name.
    CloudWatch ignores the order; moto (the tests, the sandbox) matches only the order used when
    the datapoints were published."""
    name = pair[0]
    return (SERVICE_DIMS.index(name), name) if name in SERVICE_DIMS else (len(SERVICE_DIMS), name)


def _period(metric: MetricRef) -> int:
    period = metric.period or DEFAULT_PERIOD
    if period in (1, 5, 10, 20, 30) or (period % 60 == 0 and 60 <= period <= MAX_PERIOD):
        return period
    return DEFAULT_PERIOD


def metric_query(
    alarm: AlarmEvent, metric: MetricRef, namespace: str, now: datetime
) -> MetricQuery:
    """The alarm's evaluation window (``EvaluationPeriods`` when SNS says it, else 3) plus the
    period being filled now, aligned on the period grid, in the toolkit's ``namespace``."""
    period = _period(metric)
    periods = alarm.evaluation_periods or DEFAULT_EVALUATION_PERIODS
    periods = max(1, min(periods, MAX_EVALUATION_PERIODS))
    epoch = math.floor(now.timestamp() / period) * period + period
    end = datetime.fromtimestamp(epoch, tz=now.tzinfo)
    return MetricQuery(
        namespace=namespace,
        name=metric.name,
        dimensions=tuple(sorted(metric.dimensions, key=_dimension_order)),
        stat=metric.stat or "Maximum",
        period=period,
        start=end - timedelta(seconds=period * (periods + 1)),
        end=end,
    )


def check_evidence(evidence: Evidence) -> tuple[DecisionCode, str] | None:
    """``None`` when the newest live datapoint is over the threshold, else why not."""
    if evidence.breaching:
        return None
    query = evidence.query
    if evidence.newest is None:
        window = (query.end - query.start).total_seconds()
        return "no-evidence", (
            f"{query.name} has no datapoints in the last {window / 60:g} min, so nothing shows "
            "the service stuck now (the alarm's state alone proves nothing)"
        )
    words = ABOVE.get(evidence.comparison, "at least")
    return "no-evidence", (
        f"the {evidence.summary()} is not {words} the threshold "
        f"({max(evidence.threshold, MIN_EVIDENCE):g}): the alarm's state does not match the "
        "metric (set by hand, or already recovered)"
    )


class LiveMetrics:
    """Reads a :class:`MetricQuery` with ``GetMetricData`` (one call, one query)."""

    def __init__(self, client: Any = None, *, factory: Callable[[], Any] | None = None) -> None:
        self._client = client
        self._factory = factory

    @property
    def client(self) -> Any:
        if self._client is None:
            if self._factory is None:
                from toolkit.aws.clients import client as aws_client

                self._client = aws_client("cloudwatch", read_timeout=5)
            else:
                self._client = self._factory()
        return self._client

    def read(self, query: MetricQuery) -> tuple[float, ...]:
        """The query's values, newest first; :class:`~toolkit.errors.AwsError` on failure
        (``__cause__`` is botocore's error)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = self.client.get_metric_data(**query.request())
        except (ClientError, BotoCoreError) as exc:
            code = aws_error_code(exc) or type(exc).__name__
            raise AwsError(f"GetMetricData failed: {code}", aws_error_code(exc)) from exc
        results = reply.get("MetricDataResults") or []
        pairs: list[tuple[datetime, float]] = []
        for result in results:
            stamps, values = result.get("Timestamps") or [], result.get("Values") or []
            pairs.extend(zip(stamps, values, strict=False))
        pairs.sort(key=lambda p: p[0], reverse=True)  # whatever order the service used
        return tuple(float(v) for _, v in pairs if isinstance(v, int | float) and math.isfinite(v))

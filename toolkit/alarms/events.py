"""Alarm events as the handler sees them: one read-only :class:`AlarmEvent` per alarm state change,
whatever route delivered it (SNS, EventBridge, a Lambda alarm action). Parsing is in
:mod:`toolkit.alarms.parsing`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal
from urllib.parse import quote

AlarmState = Literal["OK", "ALARM", "INSUFFICIENT_DATA"]
EventSource = Literal["sns", "eventbridge", "lambda"]
AlarmKind = Literal["metric", "math", "composite"]

ALARM_STATES: tuple[AlarmState, ...] = ("OK", "ALARM", "INSUFFICIENT_DATA")
EVENTBRIDGE_DETAIL_TYPE = "CloudWatch Alarm State Change"
SERVICE_DIMENSIONS = ("ClusterName", "ServiceName")
# Console hosts per partition ({region} filled in); GovCloud and China have their own.
CONSOLE_HOSTS = {
    "aws": "{region}.console.aws.amazon.com",
    "aws-cn": "console.amazonaws.cn",
    "aws-us-gov": "console.amazonaws-us-gov.com",
}
MAX_BUTTON_URL = 3000  # Slack refuses a longer button URL with 400 invalid_blocks
# How CloudWatch's own evaluations word a state change (missing data treated as breaching too).
_CLOUDWATCH_REASON = re.compile(r"\s*(Thresholds? Crossed|Insufficient Data|Unchecked)\b")

__all__ = [
    "ALARM_STATES",
    "AlarmEvent",
    "AlarmKind",
    "AlarmState",
    "EventSource",
    "MetricRef",
    "parse_timestamp",
]


@dataclass(frozen=True)
class MetricRef:
    """The metric an alarm watches: namespace, name and dimensions (sorted name/value pairs),
    with the alarm's period (seconds) and statistic for it when the event says them."""

    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...] = ()
    period: int | None = None
    stat: str | None = None

    def dimension(self, name: str) -> str | None:
        for key, value in self.dimensions:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class AlarmEvent:
    """One alarm state change, whatever shape it arrived in."""

    source: EventSource
    kind: AlarmKind
    name: str
    state: AlarmState
    previous_state: AlarmState | None = None
    reason: str = ""
    timestamp: datetime | None = None
    arn: str | None = None
    region: str | None = None
    account: str | None = None
    description: str | None = None
    metric: MetricRef | None = None
    threshold: float | None = None
    datapoints: tuple[float, ...] = ()
    alarm_rule: str | None = None
    # Every metric the alarm reads: one for a single-metric alarm, each input of a metric-math
    # expression, none for a composite alarm. ``metric`` is the one chosen for display.
    inputs: tuple[MetricRef, ...] = ()
    # SNS ``Trigger.ComparisonOperator`` (EventBridge and Lambda events do not carry it: the
    # reason text says "greater than the threshold" instead).
    comparison: str | None = None
    # EventBridge / Lambda ``state.actionsSuppressedBy`` (composite alarms): actions are off.
    actions_suppressed_by: str | None = None
    # SNS ``Trigger.EvaluationPeriods`` / ``DatapointsToAlarm`` (the other routes do not carry
    # them): the alarm's evaluation window.
    evaluation_periods: int | None = None
    datapoints_to_alarm: int | None = None

    @property
    def is_test(self) -> bool:
        """A state set by hand (``aws cloudwatch set-alarm-state``): a metric or metric-math
        alarm whose reason carries no datapoints (no ``reasonData``, none in the text) and is
        not one of CloudWatch's own evaluations ("Threshold Crossed: ...", "Insufficient Data:
        ..."). Never a reason to act; the alert says it is a test."""
        if self.kind == "composite" or self.datapoints:
            return False
        return _CLOUDWATCH_REASON.match(self.reason) is None

    @property
    def named_services(self) -> tuple[tuple[str, str], ...]:
        """Every (cluster, service) the alarm's inputs name, sorted."""
        found = {
            (c, s)
            for m in (self.inputs or ((self.metric,) if self.metric else ()))
            if (c := m.dimension("ClusterName")) and (s := m.dimension("ServiceName"))
        }
        return tuple(sorted(found))

    @property
    def cluster(self) -> str | None:
        return self.metric.dimension("ClusterName") if self.metric else None

    @property
    def service(self) -> str | None:
        return self.metric.dimension("ServiceName") if self.metric else None

    @property
    def queue(self) -> str | None:
        return self.metric.dimension("Queue") if self.metric else None

    @property
    def current_value(self) -> float | None:
        """The most recent datapoint AWS reported with the state change, when it did."""
        return self.datapoints[0] if self.datapoints else None

    @property
    def alarm_key(self) -> str:
        """Identifies the alarm across its state changes (Slack threads hang off this)."""
        return self.arn or f"{self.region or '?'}:{self.account or '?'}:{self.name}"

    @property
    def dedup_key(self) -> str:
        """Identical for every delivery of the same state change (SNS, retries, both routes)."""
        when = self.timestamp.isoformat() if self.timestamp else self.reason[:200]
        return f"{self.alarm_key}|{self.state}|{when}"

    @property
    def partition(self) -> str:
        """``aws``, ``aws-cn`` or ``aws-us-gov``: from the ARN, else from the region name."""
        if self.arn and self.arn.startswith("arn:") and self.arn.count(":") >= 5:
            return self.arn.split(":")[1] or "aws"
        region = self.region or ""
        if region.startswith("cn-"):
            return "aws-cn"
        if region.startswith("us-gov-"):
            return "aws-us-gov"
        return "aws"

    @property
    def console_url(self) -> str | None:
        """The alarm in the CloudWatch console, for this partition's console host; the alarm
        list when the alarm's own URL would pass Slack's 3,000-character limit for a button."""
        if not self.region or not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d{1,2}", self.region):
            return None
        host = CONSOLE_HOSTS.get(self.partition)
        if host is None:
            return None
        base = f"https://{host.format(region=self.region)}/cloudwatch/home?region={self.region}"
        url = f"{base}#alarmsV2:alarm/{quote(self.name, safe='')}"
        return url if len(url) <= MAX_BUTTON_URL else f"{base}#alarmsV2:"


# --- timestamps ---------------------------------------------------------------------------------

_TS = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"(Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?$"
)


def parse_timestamp(raw: object) -> datetime | None:
    """Parse the timestamp formats CloudWatch uses, returning an aware UTC datetime or ``None``.

    Handles ``2024-01-01T12:00:00.000+0000`` (SNS, alarm data), ``2024-01-01T12:00:00Z``
    (EventBridge), ``+00:00`` offsets, missing milliseconds or seconds, and the stray spaces some
    documented examples carry (``12: 36: 15.490+0000``). Epoch seconds/milliseconds are accepted.
    """
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        try:
            value = float(raw)
        except (OverflowError, ValueError):  # an int too large for a float
            return None
        if value != value or abs(value) > 1e14:
            return None
        if value > 1e11:  # milliseconds
            value /= 1000.0
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(raw, str):
        return None
    text = re.sub(r"\s+", "", raw) if "T" in raw else raw.strip()
    match = _TS.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, frac, tz = match.groups()
    micros = int((frac or "0")[:6].ljust(6, "0"))
    tzinfo: timezone = UTC
    if tz and tz not in ("Z", "z", "UTC"):
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        if offset >= timedelta(hours=24):
            return None
        tzinfo = timezone(sign * offset)
    try:
        parsed = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micros,
            tzinfo=tzinfo,
        )
        # 0001-01-01T00:00+0100 and 9999-12-31T23:59-0100 fall outside datetime's range in UTC.
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None

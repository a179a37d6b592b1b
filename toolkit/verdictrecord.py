"""The verdict record: what the collector last concluded about one service, kept in the state table.

Contract layer (no Celery, no collector, no alarm code): the collector writes one record per
configured service each cycle when a state table is configured; the alarm handler reads it to
explain an alert ("why") and to learn exactly which ECS tasks a ``WorkersStuck`` alarm may stop.

Item in the ``STATE_TABLE`` (partition key ``pk`` of type S, TTL attribute ``expires_at``)::

    pk          S  "verdict#<cluster>/<service>"
    data        S  JSON: {"version": 1, "environment", "cluster", "service", "verdict",
                          "reasons": [str], "stuck_tasks": [task ARN], "backlog": [int, oldest
                          first, at most 15], "at": unix seconds of the cycle, "interval": the
                          collector's cycle length in seconds}
    expires_at  N  unix seconds; DynamoDB deletes the item some time after it

A record is *stale* when it is older than :data:`STALE_CYCLES` cycles: whoever reads it then
treats it as absent (a handler must never stop tasks on an old record). Anything malformed
raises :class:`ValueError` from :meth:`VerdictRecord.from_item`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RECORD_PREFIX = "verdict#"
RECORD_VERSION = 1
HISTORY = 15  # backlog values kept, one per cycle
STALE_CYCLES = 3
#: a record outlives its cycle by at least this long before DynamoDB's TTL may delete it
MIN_RETENTION = 3600.0
SPARK = "▁▂▃▄▅▆▇█"


def record_key(cluster: str, service: str) -> str:
    return f"{RECORD_PREFIX}{cluster}/{service}"


@dataclass(frozen=True)
class VerdictRecord:
    environment: str
    cluster: str
    service: str
    verdict: str
    at: float  # unix seconds, when the cycle judged it
    interval: float  # seconds between cycles
    reasons: tuple[str, ...] = ()
    stuck_tasks: tuple[str, ...] = ()
    backlog: tuple[int, ...] = field(default=())  # oldest first, the newest last

    @property
    def key(self) -> str:
        return record_key(self.cluster, self.service)

    def age(self, now: float) -> float:
        return now - self.at

    def stale(self, now: float, cycles: int = STALE_CYCLES) -> bool:
        """Older than ``cycles`` collector cycles (or from the future by as much)."""
        return abs(self.age(now)) > cycles * max(self.interval, 1.0)

    def with_backlog(self, history: Sequence[int], value: int | None) -> VerdictRecord:
        """This record with ``history`` plus ``value`` (when read) as its backlog, trimmed."""
        values = [*history, *([] if value is None else [value])][-HISTORY:]
        return VerdictRecord(
            self.environment, self.cluster, self.service, self.verdict, self.at, self.interval,
            self.reasons, self.stuck_tasks, tuple(int(v) for v in values),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "environment": self.environment,
            "cluster": self.cluster,
            "service": self.service,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "stuck_tasks": list(self.stuck_tasks),
            "backlog": list(self.backlog),
            "at": round(self.at, 3),
            "interval": self.interval,
        }

    def to_item(self) -> dict[str, Any]:
        """The DynamoDB item (low-level attribute values)."""
        expires = self.at + max(MIN_RETENTION, (STALE_CYCLES + 1) * self.interval)
        return {
            "pk": {"S": self.key},
            "data": {"S": json.dumps(self.to_dict(), separators=(",", ":"))},
            "expires_at": {"N": str(int(expires))},
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> VerdictRecord:
        raw = item.get("data", {}).get("S") if isinstance(item.get("data"), Mapping) else None
        if not isinstance(raw, str):
            raise ValueError("verdict record has no data")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"verdict record is not JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> VerdictRecord:
        if not isinstance(data, dict):
            raise ValueError("verdict record is not a JSON object")

        def text(name: str) -> str:
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"verdict record: {name} must be a non-empty string")
            return value

        def strings(name: str) -> tuple[str, ...]:
            value = data.get(name, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"verdict record: {name} must be a list of strings")
            return tuple(value)

        def number(name: str) -> float:
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"verdict record: {name} must be a number")
            if not math.isfinite(value):
                raise ValueError(f"verdict record: {name} must be finite")
            return float(value)

        backlog = data.get("backlog", [])
        if not isinstance(backlog, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in backlog
        ):
            raise ValueError("verdict record: backlog must be a list of counts")
        if data.get("version") != RECORD_VERSION:
            raise ValueError(f"verdict record: unknown version {data.get('version')!r}")
        return cls(
            environment=text("environment"),
            cluster=text("cluster"),
            service=text("service"),
            verdict=text("verdict"),
            at=number("at"),
            interval=number("interval"),
            reasons=strings("reasons"),
            stuck_tasks=strings("stuck_tasks"),
            backlog=tuple(backlog[-HISTORY:]),
        )


def sparkline(values: Sequence[int]) -> str:
    """``▁▂▄▆█`` for a backlog history (empty for none); a flat series is all ``▁``."""
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return SPARK[0] * len(values)
    scale = (len(SPARK) - 1) / (high - low)
    return "".join(SPARK[round((v - low) * scale)] for v in values)

"""What moto's CloudWatch received, metric by metric, with an exact dimension set.

moto's GetMetricStatistics matches every metric whose dimensions *include* the ones asked for
(CloudWatch matches the exact set), so a sum over ``Environment`` alone would add up the
per-task metrics too. The tests that need the exact set read moto's store instead.
"""

from __future__ import annotations

from datetime import UTC, datetime

from moto.cloudwatch.models import cloudwatch_backends
from moto.core import DEFAULT_ACCOUNT_ID

REGION = "eu-west-1"


def datapoints(namespace: str, metric: str, dims: dict[str, str],
               region: str = REGION) -> list[tuple[datetime, float]]:
    """(timestamp, value) of every value put for exactly ``dims`` (Values/Counts expanded)."""
    backend = cloudwatch_backends[DEFAULT_ACCOUNT_ID][region]
    out = []
    for datum in backend.metric_data:
        if datum.namespace != namespace or datum.name != metric:
            continue
        if {d.name: d.value for d in datum.dimensions} != dims:
            continue
        stamp = datum.timestamp
        if isinstance(stamp, str):
            stamp = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        out.append((stamp, float(getattr(datum, "value", 0.0))))
    return sorted(out)


def total(namespace: str, metric: str, dims: dict[str, str], region: str = REGION) -> float:
    return sum(v for _, v in datapoints(namespace, metric, dims, region))

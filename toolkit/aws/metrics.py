"""``AWS/ECS`` utilization in one ``GetMetricData`` call (500 queries per call, batched beyond).

Per service (ClusterName + ServiceName): ``MemoryUtilization`` and ``CPUUtilization``, Average per
``period`` over ``window`` periods. Per EC2 cluster (ClusterName only; Fargate has none):
``MemoryReservation`` and ``CPUReservation``. Facts respected: utilization may exceed 100 (soft
memory limits); no datapoints are sent while no task runs (the value is then None); the newest
period may still be filling, so it is dropped (periods are aligned to ``period``).
``ClientError`` becomes :class:`~toolkit.errors.AwsError` (throttling is retried by the client).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from toolkit.aws.ecs import chunks, wrap

MAX_QUERIES_PER_CALL = 500  # the API's limit
NAMESPACE = "AWS/ECS"
SERVICE_METRICS = ("MemoryUtilization", "CPUUtilization")
CLUSTER_METRICS = ("MemoryReservation", "CPUReservation")


@dataclass(frozen=True)
class Series:
    """Complete datapoints of one metric, newest first."""

    values: tuple[float, ...] = ()

    @property
    def latest(self) -> float | None:
        return self.values[0] if self.values else None

    @property
    def minimum(self) -> float | None:
        return min(self.values) if self.values else None


@dataclass(frozen=True)
class UtilizationRead:
    # (cluster, service) -> metric name -> series; (cluster) -> metric name -> series
    services: dict[tuple[str, str], dict[str, Series]] = field(default_factory=dict)
    clusters: dict[str, dict[str, Series]] = field(default_factory=dict)
    calls: int = 0
    queries: int = 0


def _query(qid: str, metric: str, dims: list[dict[str, str]], period: int) -> dict[str, Any]:
    return {
        "Id": qid,
        "MetricStat": {
            "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dims},
            "Period": period,
            "Stat": "Average",
        },
        "ReturnData": True,
    }


def _queries(
    services: Sequence[tuple[str, str]], ec2_clusters: Sequence[str], period: int
) -> tuple[list[dict[str, Any]], list[tuple[str, tuple[str, ...], str]]]:
    targets: list[tuple[str, tuple[str, ...], str]] = []  # (kind, key, metric) per query
    queries: list[dict[str, Any]] = []
    for cluster, service in dict.fromkeys(services):
        dims = [{"Name": "ClusterName", "Value": cluster},
                {"Name": "ServiceName", "Value": service}]
        for metric in SERVICE_METRICS:
            queries.append(_query(f"q{len(queries)}", metric, dims, period))
            targets.append(("service", (cluster, service), metric))
    for cluster in dict.fromkeys(ec2_clusters):
        dims = [{"Name": "ClusterName", "Value": cluster}]
        for metric in CLUSTER_METRICS:
            queries.append(_query(f"q{len(queries)}", metric, dims, period))
            targets.append(("cluster", (cluster,), metric))
    return queries, targets


def _fetch(
    client: Any, batch: Sequence[dict[str, Any]], start: datetime, end: datetime,
    complete_before: float, values: dict[str, list[tuple[float, float]]],
) -> int:
    """One batch of queries (following NextToken); returns the number of calls."""
    token: str | None = None
    calls = 0
    while True:
        kwargs: dict[str, Any] = {
            "MetricDataQueries": list(batch), "StartTime": start, "EndTime": end,
            "ScanBy": "TimestampDescending",
        }
        if token:
            kwargs["NextToken"] = token
        calls += 1
        try:
            reply = client.get_metric_data(**kwargs)
        except Exception as exc:
            raise wrap(exc, "CloudWatch GetMetricData (AWS/ECS)") from exc
        for result in reply.get("MetricDataResults") or []:
            points = values.setdefault(str(result["Id"]), [])
            for ts, value in zip(result.get("Timestamps") or [], result.get("Values") or [],
                                 strict=False):
                stamp = ts.timestamp() if isinstance(ts, datetime) else float(ts)
                if stamp <= complete_before + 1e-6:  # not the newest period
                    points.append((stamp, float(value)))
        token = reply.get("NextToken")
        if not token:
            return calls


def read_utilization(
    client: Any,
    services: Sequence[tuple[str, str]],
    ec2_clusters: Sequence[str] = (),
    *,
    now: float,
    period: int = 60,
    window: int = 5,
) -> UtilizationRead:
    """Read the last ``window`` periods before ``now`` (unix seconds) in ceil(queries / 500)
    calls (more only if CloudWatch pages its answer). Periods are aligned to ``period``; the
    newest one, which AWS/ECS may still be filling, is dropped."""
    queries, targets = _queries(services, ec2_clusters, period)
    aligned = now - now % period
    end = datetime.fromtimestamp(aligned, UTC)
    start = end - timedelta(seconds=period * (window + 1))
    values: dict[str, list[tuple[float, float]]] = {}
    calls = sum(
        _fetch(client, batch, start, end, aligned - 2 * period, values)
        for batch in chunks(queries, MAX_QUERIES_PER_CALL)
    )
    out = UtilizationRead(calls=calls, queries=len(queries))
    for i, (kind, key, metric) in enumerate(targets):
        points = sorted(values.get(f"q{i}", []), reverse=True)[:window]
        series = Series(tuple(v for _, v in points))
        if kind == "service":
            out.services.setdefault((key[0], key[1]), {})[metric] = series
        else:
            out.clusters.setdefault(key[0], {})[metric] = series
    return out

"""CloudWatch publisher: batched ``PutMetricData`` within the API's limits.

A request carries at most :data:`MAX_METRICS_PER_CALL` (1,000) metrics and must stay under 1 MB;
the publisher packs samples into as few requests as those limits allow, so a cycle costs
``ceil(metrics / 1000)`` calls in the common case. The boto3 client uses the standard retry mode
(throttling and 5xx are retried with back-off). Names and dimensions follow the contract in
``docs/configuration.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from toolkit.aws.clients import client as aws_client
from toolkit.errors import PublishError, aws_error_code
from toolkit.metricnames import Unit

log = logging.getLogger(__name__)

MAX_METRICS_PER_CALL = 1000
MAX_REQUEST_BYTES = 1_000_000
# Headroom for the request envelope (Action, Version, Namespace, signing headers).
_BUDGET_BYTES = MAX_REQUEST_BYTES - 16_384

@dataclass(frozen=True)
class Sample:
    """One metric value, ready to publish; or, with ``values``, a distribution: each value
    with its count (``Values``/``Counts``), ``value`` then unused.

    ``group``: samples that must reach CloudWatch in the same request (one minute of task
    counts, committed as a whole once published); they are kept adjacent and never split."""

    name: str
    value: float
    unit: Unit
    dimensions: tuple[tuple[str, str], ...]
    timestamp: datetime | None = None
    values: tuple[float, ...] = ()
    counts: tuple[float, ...] = ()
    group: int | None = None

    def dimension(self, key: str) -> str | None:
        return next((v for k, v in self.dimensions if k == key), None)


def dimension_value(text: str) -> str:
    """A CloudWatch-safe dimension value: printable ASCII, 1-1024 characters.

    Queue names with other characters are escaped (``\\xNN``, ``\\uNNNN``) rather than dropped,
    so the metric stays recognisable and distinct.
    """
    if text and text.isascii() and text.isprintable() and text.strip():
        return text[:1024]
    escaped = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    escaped = escaped.replace(" ", "\\x20") if not escaped.strip() else escaped
    return (escaped or "(empty)")[:1024]


def to_datum(sample: Sample, high_resolution: bool = False) -> dict[str, Any]:
    datum: dict[str, Any] = {
        "MetricName": sample.name,
        "Dimensions": [{"Name": k, "Value": dimension_value(v)} for k, v in sample.dimensions],
        "Unit": sample.unit,
    }
    if sample.values:
        datum["Values"] = [float(v) for v in sample.values]
        datum["Counts"] = [float(c) for c in sample.counts]
    else:
        datum["Value"] = float(sample.value)
    if sample.timestamp is not None:
        datum["Timestamp"] = sample.timestamp
    if high_resolution:
        datum["StorageResolution"] = 1
    return datum


def _encoded_size(datum: dict[str, Any], index: int) -> int:
    """Upper estimate of one datum's size in a form-encoded (query protocol) request."""
    prefix = len(f"MetricData.member.{index}.") + 2
    size = prefix + 12 + len(quote(datum["MetricName"], safe=""))
    for j, dim in enumerate(datum["Dimensions"], 1):
        size += 2 * (prefix + len(f"Dimensions.member.{j}.Name")) + len(quote(dim["Name"], safe=""))
        size += len(quote(dim["Value"], safe=""))
    size += prefix + 6 + 24  # Value
    for j in range(len(datum.get("Values", ()))):  # Values.member.J and Counts.member.J
        size += 2 * (prefix + 15 + len(str(j + 1)) + 24)
    size += prefix + 5 + len(datum["Unit"])
    if "Timestamp" in datum:
        size += prefix + 10 + 32
    if "StorageResolution" in datum:
        size += prefix + 18 + 2
    return size


def batches(
    data: Sequence[dict[str, Any]], groups: Sequence[int | None] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Split metric data into requests of at most 1,000 metrics and under 1 MB each. Adjacent
    data of one group (``groups[i]``, not None) go into one request when the group fits one."""
    keys = list(groups) if groups is not None else [None] * len(data)
    chunks: list[list[dict[str, Any]]] = []
    keys_of: list[int | None] = []
    for datum, key in zip(data, keys, strict=True):
        if key is not None and chunks and keys_of[-1] == key:
            chunks[-1].append(datum)
            continue
        chunks.append([datum])
        keys_of.append(key)
    batch: list[dict[str, Any]] = []
    size = 0
    for chunk in chunks:
        chunk_size = sum(_encoded_size(d, len(batch) + 1 + i) for i, d in enumerate(chunk))
        if batch and (len(batch) + len(chunk) > MAX_METRICS_PER_CALL
                      or size + chunk_size > _BUDGET_BYTES):
            yield batch
            batch, size = [], 0
        for datum in chunk:  # a chunk larger than one request is split after all
            datum_size = _encoded_size(datum, len(batch) + 1)
            if batch and (len(batch) >= MAX_METRICS_PER_CALL
                          or size + datum_size > _BUDGET_BYTES):
                yield batch
                batch, size = [], 0
                datum_size = _encoded_size(datum, 1)
            batch.append(datum)
            size += datum_size
    if batch:
        yield batch


def cloudwatch_client(region: str | None = None) -> Any:
    """A CloudWatch client with the toolkit's retry and timeout policy (:mod:`toolkit.aws`)."""
    return aws_client("cloudwatch", region=region)


@dataclass(frozen=True)
class PublishReport:
    metrics: int
    calls: int


class CloudWatchPublisher:
    """Publishes samples to one namespace. The boto3 client is injected or built on first use."""

    def __init__(
        self,
        namespace: str,
        *,
        client: Any = None,
        high_resolution: bool = False,
        region: str | None = None,
    ) -> None:
        self.namespace = namespace
        self.high_resolution = high_resolution
        self._client = client
        self._region = region

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = cloudwatch_client(self._region)
        return self._client

    def publish(self, samples: Sequence[Sample]) -> PublishReport:
        """Publish every sample. On a failure, :class:`PublishError` says which groups went
        out whole before it (``sent_groups``): their requests were accepted."""
        data = [to_datum(s, self.high_resolution) for s in samples]
        calls = sent = 0
        groups = [s.group for s in samples]
        for batch in batches(data, groups):
            try:
                self.client.put_metric_data(Namespace=self.namespace, MetricData=batch)
            except Exception as exc:
                raise PublishError(
                    f"PutMetricData to namespace {self.namespace!r} failed: {_aws_message(exc)}",
                    sent_groups=_whole_groups(groups, sent),
                ) from exc
            calls += 1
            sent += len(batch)
        log.debug("published %d metrics in %d call(s)", len(data), calls)
        return PublishReport(metrics=len(data), calls=calls)


def _whole_groups(groups: Sequence[int | None], sent: int) -> frozenset[int]:
    """The groups all of whose samples are among the first ``sent``."""
    done = {g for g in groups[:sent] if g is not None}
    return frozenset(done - {g for g in groups[sent:] if g is not None})


def _aws_message(exc: Exception) -> str:
    code = aws_error_code(exc)
    if code:
        message = getattr(exc, "response", {}).get("Error", {}).get("Message")
        return f"{code}: {message}" if message else code
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

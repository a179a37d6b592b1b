from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from toolkit.collector.publisher import (
    MAX_REQUEST_BYTES,
    CloudWatchPublisher,
    Sample,
    batches,
    dimension_value,
    to_datum,
)
from toolkit.errors import PublishError


def samples(n: int, queue_len: int = 8) -> list[Sample]:
    return [
        Sample("QueueLength", i, "Count", (("Environment", "t"), ("Queue", f"q{i:0{queue_len}d}")))
        for i in range(n)
    ]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def put_metric_data(self, **kw: Any) -> None:
        self.calls.append(kw)


def test_batches_respect_the_count_limit() -> None:
    rec = Recorder()
    report = CloudWatchPublisher("NS", client=rec).publish(samples(2500))
    assert (report.metrics, report.calls) == (2500, 3)
    assert [len(c["MetricData"]) for c in rec.calls] == [1000, 1000, 500]
    assert all(c["Namespace"] == "NS" for c in rec.calls)


def test_batches_respect_the_size_limit() -> None:
    # 1,000 metrics with 1,000-character dimension values would be ~2 MB: split by size
    data = [to_datum(s) for s in samples(1000, queue_len=1000)]
    out = list(batches(data))
    assert len(out) >= 2
    assert sum(len(b) for b in out) == 1000
    from urllib.parse import urlencode

    for batch in out:  # the real query-protocol encoding of each batch is under 1 MB
        flat = {}
        for i, d in enumerate(batch, 1):
            flat[f"MetricData.member.{i}.MetricName"] = d["MetricName"]
            for j, dim in enumerate(d["Dimensions"], 1):
                flat[f"MetricData.member.{i}.Dimensions.member.{j}.Name"] = dim["Name"]
                flat[f"MetricData.member.{i}.Dimensions.member.{j}.Value"] = dim["Value"]
            flat[f"MetricData.member.{i}.Value"] = str(d["Value"])
            flat[f"MetricData.member.{i}.Unit"] = d["Unit"]
        assert len(urlencode(flat)) < MAX_REQUEST_BYTES


def test_high_resolution_and_timestamp() -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    d = to_datum(Sample("QueueAge", 3.5, "Seconds", (("Environment", "e"),), ts), True)
    assert d["StorageResolution"] == 1 and d["Timestamp"] == ts and d["Unit"] == "Seconds"
    assert "StorageResolution" not in to_datum(Sample("X", 1, "Count", ()))


def test_dimension_values_are_ascii_and_distinct() -> None:
    assert dimension_value("emails") == "emails"
    assert dimension_value("caf\u00e9") == "caf\\xe9"
    assert dimension_value("a\nb") == "a\\nb"
    assert dimension_value("") == "(empty)"
    assert dimension_value("caf\u00e9") != dimension_value("cafe")
    assert len(dimension_value("x" * 5000)) == 1024


@mock_aws
def test_publishes_to_cloudwatch_and_reads_back() -> None:
    cw = boto3.client("cloudwatch", region_name="eu-west-1")
    pub = CloudWatchPublisher("Celery", client=cw)
    pub.publish([Sample("QueueLength", 42, "Count", (("Environment", "t"), ("Queue", "emails")))])
    now = datetime.now(UTC)
    stats = cw.get_metric_statistics(
        Namespace="Celery", MetricName="QueueLength",
        Dimensions=[{"Name": "Environment", "Value": "t"}, {"Name": "Queue", "Value": "emails"}],
        StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=5),
        Period=60, Statistics=["Maximum"],
    )
    assert [p["Maximum"] for p in stats["Datapoints"]] == [42.0]


def test_api_failure_becomes_publish_error() -> None:
    class Refusing:
        def put_metric_data(self, **kw: Any) -> None:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "nope"}},
                              "PutMetricData")

    with pytest.raises(PublishError, match="AccessDenied: nope"):
        CloudWatchPublisher("NS", client=Refusing()).publish(samples(1))

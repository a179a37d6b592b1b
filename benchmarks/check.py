"""AWS API calls and wall time for one `check` of 100 services x 3 queues, against a moto server.

Prints the toolkit's calls next to the target ceil(services/10) + ceil(queries/500) and the naive
baseline measured in the same run (one DescribeServices per service, one GetMetricStatistics per
service and metric). Run: .venv/bin/python benchmarks/check.py [--services N]
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from toolkit.aws.clients import client as aws_client
from toolkit.collector.brokers.base import BrokerReading, QueueReading
from toolkit.collector.services import ServiceChecker
from toolkit.config import ServiceSettings, Settings
from toolkit.registry import WorkerHeartbeat


def counted(service: str, calls: dict[str, int]) -> Any:
    c = aws_client(service)
    c.meta.events.register("before-call", lambda model, **_: calls.__setitem__(
        model.name, calls.get(model.name, 0) + 1))
    return c


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=100)
    n = parser.parse_args().services
    for key, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                       "AWS_DEFAULT_REGION": "eu-west-1", "MOTO_ECS_SERVICE_RUNNING": "1"}.items():
        os.environ[key] = value
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    try:
        ecs = boto3.client("ecs")
        ecs.create_cluster(clusterName="prod")
        ecs.register_task_definition(family="w", containerDefinitions=[
            {"name": "w", "image": "w", "memory": 256, "essential": True}])
        names = [f"svc-{i:03d}" for i in range(n)]
        for name in names:
            ecs.create_service(cluster="prod", serviceName=name, taskDefinition="w",
                               desiredCount=1)
        settings = Settings(environment="bench", services=tuple(
            ServiceSettings("prod", name, tuple(f"{name}-q{j}" for j in range(3)))
            for name in names))
        now = time.time()
        reading = BrokerReading(
            queues=tuple(QueueReading(q, 1) for s in settings.services for q in s.queues),
            workers=tuple(WorkerHeartbeat(f"w@{name}", (), now - 1, ttl=30, ecs_cluster="prod",
                                          ecs_service=name, last_task_started=now - 2)
                          for name in names))
        calls: dict[str, int] = {}
        checker = ServiceChecker(settings, ecs=counted("ecs", calls),
                                 cloudwatch=counted("cloudwatch", calls))
        started = time.perf_counter()
        result = checker.check(reading, now)
        toolkit_s = time.perf_counter() - started
        toolkit_calls = sum(calls.values())
        verdicts = {v.verdict for v in result.verdicts}
        queries = 2 * n + 2  # two metrics per service, two reservations for the EC2 cluster
        target = math.ceil(n / 10) + math.ceil(queries / 500)

        naive: dict[str, int] = {}
        necs, ncw = counted("ecs", naive), counted("cloudwatch", naive)
        end = datetime.now(UTC)
        started = time.perf_counter()
        for name in names:
            necs.describe_services(cluster="prod", services=[name])
            for metric in ("MemoryUtilization", "CPUUtilization"):
                ncw.get_metric_statistics(
                    Namespace="AWS/ECS", MetricName=metric, Period=60, Statistics=["Average"],
                    Dimensions=[{"Name": "ClusterName", "Value": "prod"},
                                {"Name": "ServiceName", "Value": name}],
                    StartTime=end - timedelta(minutes=6), EndTime=end)
        naive_s = time.perf_counter() - started
        naive_calls = sum(naive.values())
        print(f"{n} services x 3 queues, {queries} metric queries, verdicts {sorted(verdicts)}")
        print(f"toolkit: {toolkit_calls} calls {dict(sorted(calls.items()))}, "
              f"{toolkit_s * 1000:.0f} ms; target ceil({n}/10) + ceil({queries}/500) = {target}")
        print(f"naive:   {naive_calls} calls {dict(sorted(naive.items()))}, "
              f"{naive_s * 1000:.0f} ms")
        print(f"ratio:   {naive_calls / toolkit_calls:.0f}x fewer calls, "
              f"{naive_s / toolkit_s:.1f}x faster")
    finally:
        server.stop()


if __name__ == "__main__":
    main()

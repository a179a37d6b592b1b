"""AWS API calls and wall time for one `check` of 100 services x 3 queues, against a moto server.

Prints the toolkit's calls next to the target ceil(services/10) + ceil(queries/500) and the naive
baseline measured in the same run (one DescribeServices per service, one GetMetricStatistics per
service and metric). Each of ``--runs`` rounds runs both, alternating which goes first, with
fresh clients and a fresh checker (clients built outside the timer); one warm-up round first is
not measured. Times are medians with min-max. The moto server listens on 127.0.0.1 only.
Run: .venv/bin/python benchmarks/check.py [--services N] [--runs 5]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import statistics
import sys
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
from summary import record, spread  # noqa: E402


def counted(service: str, calls: dict[str, int]) -> Any:
    c = aws_client(service)
    c.meta.events.register("before-call", lambda model, **_: calls.__setitem__(
        model.name, calls.get(model.name, 0) + 1))
    return c


def toolkit_check(settings: Settings, reading: BrokerReading,
                  now: float) -> tuple[float, dict[str, int], set[str]]:
    calls: dict[str, int] = {}
    checker = ServiceChecker(settings, ecs=counted("ecs", calls),
                             cloudwatch=counted("cloudwatch", calls))
    started = time.perf_counter()
    result = checker.check(reading, now)
    return time.perf_counter() - started, calls, {v.verdict for v in result.verdicts}


def naive_check(names: list[str]) -> tuple[float, dict[str, int]]:
    calls: dict[str, int] = {}
    necs, ncw = counted("ecs", calls), counted("cloudwatch", calls)
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
    return time.perf_counter() - started, calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    n = args.services
    for key, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                       "AWS_DEFAULT_REGION": "eu-west-1", "MOTO_ECS_SERVICE_RUNNING": "1"}.items():
        os.environ[key] = value
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request
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
        toolkit_check(settings, reading, now)  # warm-up: botocore models, moto's first answers
        naive_check(names)
        toolkit_t: list[float] = []
        naive_t: list[float] = []
        for r in range(args.runs):
            for which in (("toolkit", "naive") if r % 2 == 0 else ("naive", "toolkit")):
                if which == "toolkit":
                    took, calls, verdicts = toolkit_check(settings, reading, now)
                    toolkit_t.append(took)
                else:
                    took, naive = naive_check(names)
                    naive_t.append(took)
        toolkit_calls, naive_calls = sum(calls.values()), sum(naive.values())
        queries = 2 * n + 2  # two metrics per service, two reservations for the EC2 cluster
        target = math.ceil(n / 10) + math.ceil(queries / 500)
        speed = statistics.median(naive_t) / statistics.median(toolkit_t)
        print(f"{n} services x 3 queues, {queries} metric queries, verdicts {sorted(verdicts)}, "
              f"{args.runs} rounds, medians (min-max)")
        print(f"toolkit: {toolkit_calls} calls {dict(sorted(calls.items()))}, "
              f"{spread(toolkit_t, 1000, 0)} ms; target ceil({n}/10) + ceil({queries}/500) = "
              f"{target}")
        print(f"naive:   {naive_calls} calls {dict(sorted(naive.items()))}, "
              f"{spread(naive_t, 1000, 0)} ms")
        print(f"ratio:   {naive_calls / toolkit_calls:.0f}x fewer calls, {speed:.1f}x faster")
        record("check", f"AWS calls per check, {n} services x 3 queues (moto)",
               f"{toolkit_calls} calls", f"naive loop: {naive_calls} calls",
               f"{naive_calls / toolkit_calls:.0f}x fewer", f"<= {target} calls",
               toolkit_calls <= target)
        record("check", f"wall time of one check, {n} services (moto on loopback)",
               f"{spread(toolkit_t, 1000, 0)} ms", f"naive loop: {spread(naive_t, 1000, 0)} ms",
               f"{speed:.1f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    main()

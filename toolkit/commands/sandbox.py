"""``celery-ecs sandbox``: the loop on this machine, with no AWS account.

Today it runs the queue-metrics part of the loop end to end: an embedded Redis broker (or
``--broker``), a real Celery producer filling three queues at several priorities, collection
cycles published to a loopback CloudWatch (moto), and the metrics read back from it. Later
stages (workers, verdicts, alarms, Slack) join it as they land.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

DEMO_QUEUES = {"default": 40, "emails": 250, "reports": 12}
# what the pretend workers take per cycle: "emails" has no worker consuming it
DRAIN_PER_CYCLE = {"default": 15, "reports": 5}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", metavar="URL",
                        help="use this Redis instead of the embedded one (keys are prefixed "
                             "with 'sandbox:' and removed afterwards)")
    parser.add_argument("--environment", default="sandbox", metavar="NAME")
    parser.add_argument("--cycles", type=int, default=3, help="collection cycles to run")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S")
    parser.add_argument("-v", "--verbose", action="store_true")


def run(args: argparse.Namespace) -> int:
    from celery import Celery

    import toolkit
    from toolkit.collector.brokers import open_reader
    from toolkit.collector.cycle import QueueSource, run_cycle
    from toolkit.collector.publisher import CloudWatchPublisher
    from toolkit.collector.render import render_table
    from toolkit.config import BrokerSettings, Settings, Thresholds
    from toolkit.sandbox import EmbeddedRedis, LocalAws

    out = sys.stdout
    prefix = "sandbox:" if args.broker else ""
    with EmbeddedRedis() as embedded, LocalAws() as aws:
        url = args.broker or embedded.url
        print(f"broker      {'--broker' if args.broker else 'embedded Redis'} on "
              f"{url if not args.broker else BrokerSettings(url).safe_url}", file=out)
        print(f"CloudWatch  moto on {aws.endpoint} (nothing leaves this machine)", file=out)

        app = Celery("sandbox", broker=url, set_as_current=False)
        app.conf.broker_transport_options = {"global_keyprefix": prefix}
        toolkit.install(app)
        rng = random.Random(7)
        with app.producer_or_acquire() as producer:
            for queue, count in DEMO_QUEUES.items():
                for i in range(count):
                    app.send_task("sandbox.work", args=[i], queue=queue,
                                  priority=rng.choice([0, 3, 6, 9]), producer=producer)
        print(f"published   {sum(DEMO_QUEUES.values())} tasks to {len(DEMO_QUEUES)} queues "
              "at priorities 0-9, stamped for QueueAge\n", file=out)

        settings = Settings(
            environment=args.environment,
            broker=BrokerSettings(url=url, global_keyprefix=prefix),
            thresholds=Thresholds(max_length=100, max_age=600),
        )
        reader = open_reader(settings.broker)  # type: ignore[arg-type]
        cloudwatch = aws.client("cloudwatch")
        publisher = CloudWatchPublisher(settings.namespace, client=cloudwatch)
        source = QueueSource(settings)
        try:
            failed = 0
            for n in range(args.cycles):
                if n:
                    time.sleep(args.interval)
                    _drain(url, prefix)
                result = run_cycle(reader, settings, publisher, source=source)
                print(f"cycle {n + 1}/{args.cycles}", file=out)
                print(render_table(result, settings) + "\n", file=out)
                failed += 0 if result.ok else 1
                for err in result.errors:
                    print(f"error: {err}", file=sys.stderr)
            _read_back(cloudwatch, settings.namespace, args.environment)
        finally:
            if prefix:
                _cleanup(url, prefix)
            reader.close()
    return 1 if failed else 0


def _drain(url: str, prefix: str) -> None:
    """Consume and acknowledge a few tasks, as the workers of two of the queues would."""
    import importlib

    connection_cls: Any = importlib.import_module("kombu").Connection  # partially typed
    with connection_cls(url, transport_options={"global_keyprefix": prefix}) as conn:
        for queue, count in DRAIN_PER_CYCLE.items():
            simple = conn.SimpleQueue(queue)
            for _ in range(count):
                try:
                    simple.get(timeout=0.5).ack()
                except simple.Empty:
                    break
            simple.close()


def _read_back(cw: Any, namespace: str, environment: str) -> None:
    now = datetime.now(UTC)
    metrics = cw.list_metrics(Namespace=namespace,
                              Dimensions=[{"Name": "Environment", "Value": environment}])
    print(f"read back from CloudWatch (namespace {namespace}):")
    rows = []
    unique = {(m["MetricName"], tuple((d["Name"], d["Value"]) for d in m["Dimensions"])): m
              for m in metrics["Metrics"]}
    for _, m in sorted(unique.items()):
        stats = cw.get_metric_statistics(
            Namespace=namespace, MetricName=m["MetricName"], Dimensions=m["Dimensions"],
            StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=5),
            Period=300, Statistics=["Minimum", "Maximum", "SampleCount"],
        )
        for p in stats["Datapoints"]:
            queue = next((d["Value"] for d in m["Dimensions"] if d["Name"] == "Queue"), "")
            rows.append(f"  {m['MetricName']:<20}{queue:<10}min {p['Minimum']:>7.1f}   max "
                        f"{p['Maximum']:>7.1f}   datapoints {int(p['SampleCount'])}")
    print("\n".join(rows))
    print("\nThe QueueLength graph tells the story: 'default' and 'reports' drain, 'emails' "
          "never moves:\nits worker needs attention.")


def _cleanup(url: str, prefix: str) -> None:
    """Remove the sandbox's keys (all under ``prefix``) from a Redis given with --broker."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()

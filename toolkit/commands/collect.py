"""``celery-ecs collect``: read queue backlogs and publish them to CloudWatch."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from toolkit.collector import CycleResult, Loop, run_cycle
from toolkit.config import Settings, check_interval, load_settings

EXIT_OK, EXIT_FAILURE = 0, 1
FROM_CONFIG = object()  # `--interval` given without a value (not a str: argparse leaves it)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="celery-ecs.toml (default: ./celery-ecs.toml or $CELERY_ECS_CONFIG)")
    parser.add_argument("--broker", metavar="URL", help="broker URL (redis://, rediss://, amqp://)")
    parser.add_argument("--environment", metavar="NAME", help="value of the Environment dimension")
    parser.add_argument("--queue", metavar="Q", action="append", dest="queues",
                        help="a queue to read (repeatable); default: discover from the broker")
    parser.add_argument("--namespace", metavar="NS", help="CloudWatch namespace (default Celery)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run one cycle and exit (the default)")
    mode.add_argument("--interval", metavar="S", type=float, nargs="?", const=FROM_CONFIG,
                      help="run a cycle every S seconds until SIGTERM (no value: the config "
                           "file's interval, default 60)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be published, publish nothing")
    parser.add_argument("--high-resolution", action="store_true", default=None,
                        help="publish with StorageResolution 1 (per-second metrics)")
    parser.add_argument("--no-queue-age", action="store_true",
                        help="skip QueueAge (Redis: reads lengths only, about 4x cheaper)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")


def settings_from_args(args: argparse.Namespace) -> Settings:
    interval = None if args.interval is None or args.interval is FROM_CONFIG else args.interval
    if interval is not None:
        check_interval(interval, "--interval")
    return load_settings(
        args.config,
        environment=args.environment,
        broker_url=args.broker,
        namespace=args.namespace,
        queues=args.queues,
        high_resolution=args.high_resolution,
        interval=interval,
        queue_age=False if args.no_queue_age else None,
    )


def run(args: argparse.Namespace) -> int:
    from toolkit.brokers import open_reader
    from toolkit.metrics import CloudWatchPublisher

    settings = settings_from_args(args)
    assert settings.broker is not None  # load_settings requires one
    reader = open_reader(settings.broker)
    publisher = None if args.dry_run else CloudWatchPublisher(
        settings.namespace, high_resolution=settings.high_resolution
    )

    def show(result: CycleResult) -> None:
        print(render_json(result, settings) if args.json else render_table(result, settings,
              dry_run=args.dry_run))
        sys.stdout.flush()
        for err in result.errors:
            print(f"celery-ecs collect: error: {err}", file=sys.stderr)

    try:
        if args.interval is None:
            result = run_cycle(reader, settings, publisher)
            show(result)
            if result.ok and not result.queues:
                print(f"celery-ecs collect: error: no queues found on {settings.broker.safe_url}"
                      " and none configured (check the database number and global_keyprefix, "
                      "or name queues with --queue)", file=sys.stderr)
                return EXIT_FAILURE
            return EXIT_OK if result.ok else EXIT_FAILURE
        loop = Loop(reader, settings, publisher, on_cycle=show)
        loop.install_signal_handlers()
        loop.run()
        return EXIT_OK
    finally:
        reader.close()


def _age(age: float | None) -> str:
    if age is None:
        return "-"
    if age < 120:
        return f"{age:.0f}s"
    if age < 7200:
        return f"{age / 60:.0f}m"
    return f"{age / 3600:.1f}h"


def render_table(result: CycleResult, settings: Settings, *, dry_run: bool = False) -> str:
    rows = [("QUEUE", "LENGTH", "AGE", "CONSUMERS", "STATUS")]
    for q in result.queues:
        status = q.state if not q.reasons or q.state == "missing" else f"{q.state}: " + "; ".join(
            q.reasons)
        rows.append((_printable(q.queue), str(q.length), _age(q.age),
                     "-" if q.consumers is None else str(q.consumers), status))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(r[i].ljust(widths[i]) if i == 0 else r[i].rjust(widths[i])
                       for i in range(4)) + "  " + r[4] for r in rows]
    lines = [line.rstrip() for line in lines]
    if not result.queues and result.ok:
        lines.append("(no queues found: the broker is empty and none are configured)")
    footer = [f"environment {settings.environment}"]
    if result.unacked is not None:
        footer.append(f"unacked {result.unacked}")
    footer.append(f"{len(result.samples)} metrics")
    if dry_run:
        footer.append(f"dry run: nothing published to {settings.namespace}")
    elif result.published is not None:
        footer.append(f"published to {settings.namespace} in {result.published.calls} call(s)")
    footer.append(f"{result.duration * 1000:.0f} ms")
    lines.append(" | ".join(footer))
    return "\n".join(lines)


def render_json(result: CycleResult, settings: Settings) -> str:
    doc: dict[str, Any] = {
        "environment": settings.environment,
        "namespace": settings.namespace,
        "ok": result.ok,
        "errors": list(result.errors),
        "unacked": result.unacked,
        "queues": [
            {"queue": q.queue, "length": q.length, "age": q.age, "consumers": q.consumers,
             "status": q.state, "reasons": list(q.reasons)}
            for q in result.queues
        ],
        "metrics": [
            {"name": s.name, "value": s.value, "unit": s.unit, "dimensions": dict(s.dimensions)}
            for s in result.samples
        ],
        "published_calls": result.published.calls if result.published else 0,
        "duration_ms": round(result.duration * 1000, 1),
    }
    return json.dumps(doc, ensure_ascii=True)


def _printable(name: str) -> str:
    return name if name.isprintable() else name.encode("unicode_escape").decode("ascii")

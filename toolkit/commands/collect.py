"""``celery-ecs collect``: read queue backlogs and publish them to CloudWatch."""

from __future__ import annotations

import argparse
import sys

from toolkit.collector.cycle import CycleResult, Loop, run_cycle
from toolkit.collector.render import render_json, render_table
from toolkit.config import Settings, load_settings
from toolkit.env import check_interval

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
    from toolkit.collector.brokers import open_reader
    from toolkit.collector.publisher import CloudWatchPublisher

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
            if result.ok and all(q.state == "missing" for q in result.queues):
                print(f"celery-ecs collect: error: no queues found on {settings.broker.safe_url}"
                      f" and none configured ({reader.discovery_hint()})", file=sys.stderr)
                return EXIT_FAILURE
            return EXIT_OK if result.ok else EXIT_FAILURE
        loop = Loop(reader, settings, publisher, on_cycle=show)
        loop.install_signal_handlers()
        failed = loop.run()
        print(f"celery-ecs collect: stopped; {failed} cycle(s) had errors", file=sys.stderr)
        return EXIT_OK
    finally:
        reader.close()

"""``celery-ecs inspect-queue QUEUE``: what waits in one queue, by task name, without taking it.

Exit codes: 0 read (a queue the broker does not have: total 0), 1 the broker could not be read,
2 configuration or usage (``--limit`` 0 or negative; RabbitMQ without its management API).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from toolkit.env import check_queue_name

DEFAULT_LIMIT = 10_000


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queue", metavar="QUEUE", help="the queue to read")
    parser.add_argument("--config", metavar="FILE",
                        help="celery-ecs.toml (default: ./celery-ecs.toml or $CELERY_ECS_CONFIG)"
                             ": the broker, its key prefix, priority steps, management URL")
    parser.add_argument("--broker", metavar="URL", help="broker URL (redis://, rediss://, amqp://)")
    parser.add_argument("--limit", metavar="N", type=_limit, default=DEFAULT_LIMIT,
                        help=f"read at most N messages, the oldest first (default "
                             f"{DEFAULT_LIMIT:,}); the total counts them all")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")


def run(args: argparse.Namespace) -> int:
    from toolkit.collector.brokers import peek_queue
    from toolkit.collector.composition import render_table
    from toolkit.config import load_settings

    queue = check_queue_name(args.queue, "QUEUE")
    # the environment names nothing here: no metric is published
    settings = load_settings(args.config, environment="inspect-queue", broker_url=args.broker)
    assert settings.broker is not None  # load_settings requires one
    comp = peek_queue(settings.broker, queue, args.limit)
    now = time.time()
    if args.json:
        print(json.dumps(comp.to_dict(now), ensure_ascii=True))
        for note in comp.notes:
            print(f"celery-ecs inspect-queue: {note}", file=sys.stderr)
    else:
        print(render_table(comp, now))
    return 0

"""``celery-ecs check``: each configured worker service's verdict, with its reasons.

Exit codes: 0 every service healthy, 1 any is not (or nothing could be read), 2 configuration.
Reads the broker once, the registry, ECS and the AWS/ECS metrics once; publishes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time

from toolkit.errors import ConfigError, ToolkitError

EXIT_OK, EXIT_FAILURE = 0, 1


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="celery-ecs.toml (default: ./celery-ecs.toml or $CELERY_ECS_CONFIG)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")


def run(args: argparse.Namespace) -> int:
    from toolkit.collector.brokers import open_reader
    from toolkit.collector.health import EvictionCounter, assess
    from toolkit.collector.render import render_verdicts, verdicts_json
    from toolkit.collector.services import ServiceChecker, open_registry, with_registry
    from toolkit.config import load_settings

    settings = load_settings(args.config)
    if not settings.services:
        raise ConfigError("no [[services]] in the config file: nothing to check")
    assert settings.broker is not None  # load_settings requires one
    now = time.time()
    queues = list(dict.fromkeys(q for s in settings.services for q in s.queues))
    reader = open_reader(settings.broker)
    reading = None
    broker_error = None
    try:
        reading = reader.read(queues)
    except ToolkitError as exc:
        broker_error = str(exc)
    finally:
        reader.close()
    errors = [broker_error] if broker_error else []
    registry = open_registry(settings)
    if registry is not None and reading is not None:
        reading, registry_error = with_registry(reading, registry, now)
        errors.extend([registry_error] if registry_error else [])
    # one look: the broker's memory and alarms (evictions need two cycles: `collect` counts them)
    health = None if reading is None else assess(reading, EvictionCounter(), now)
    if health is not None:
        errors.extend(health.errors)
    checked = ServiceChecker(settings).check(reading, now, broker_error=broker_error,
                                             warnings=() if health is None else health.warnings)
    errors.extend(checked.errors)
    if args.json:
        print(verdicts_json(checked.verdicts, settings.environment))
    else:
        print(render_verdicts(checked.verdicts, settings.environment))
    for err in errors:
        print(f"celery-ecs check: error: {err}", file=sys.stderr)
    healthy = all(v.verdict == "healthy" for v in checked.verdicts)
    return EXIT_OK if healthy else EXIT_FAILURE

"""``celery-ecs healthcheck ping|heartbeat|beat``: the ECS container probe.

Kept import-light: the heartbeat mode imports only :mod:`toolkit.worker.healthcheck` (standard
library and core), the beat mode :mod:`toolkit.worker.beatcheck` too, and the ping mode imports
kombu lazily. See ``docs/healthcheck.md`` for
which mode to choose.
"""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

from toolkit.env import (
    BEAT_FILE_NAME,
    DEFAULT_HEARTBEAT_FILE,
    ENV_BEAT_FILE,
    ENV_BROKER_URL,
    ENV_BROKER_URL_FALLBACK,
    ENV_HEARTBEAT_FILE,
)
from toolkit.worker import healthcheck


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {text!r}")
    return value


def _one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Usage errors also print the probe's one line on stdout (ECS shows stdout in the health
    check output), then argparse's usage on stderr and exit status 2."""
    original = parser.error

    def error(message: str) -> NoReturn:
        print(f"misconfigured: {' '.join(message.split())}", flush=True)
        original(message)

    parser.error = error  # type: ignore[method-assign]
    return parser


def _add_max_age(parser: argparse.ArgumentParser, when: str = "") -> None:
    parser.add_argument(
        "--max-age",
        metavar="S",
        type=_positive_float,
        default=healthcheck.DEFAULT_MAX_AGE,
        help=f"{when}oldest acceptable heartbeat in seconds "
        f"(default: {healthcheck.DEFAULT_MAX_AGE:g})",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "exit status: 0 healthy, 1 unhealthy, 2 misconfigured"
    _one_line_errors(parser)
    modes = parser.add_subparsers(dest="mode", metavar="MODE", required=True)

    ping = modes.add_parser(
        "ping",
        help="ping this worker's node through the broker (no app import)",
        description="Ping one Celery node through the broker's control channel. With "
        "--heartbeat-file: healthy when the node answers OR that heartbeat file is fresh.",
    )
    _one_line_errors(ping)
    ping.add_argument(
        "--broker",
        metavar="URL",
        help=f"broker URL (default: ${ENV_BROKER_URL}, "
        f"then ${ENV_BROKER_URL_FALLBACK})",
    )
    ping.add_argument(
        "--node", metavar="NAME", help="node to ping (default: celery@$HOSTNAME)"
    )
    ping.add_argument(
        "--keyprefix",
        metavar="PREFIX",
        default="",
        help="the workers' Redis broker_transport_options global_keyprefix, if they set one",
    )
    ping.add_argument(
        "--timeout",
        metavar="S",
        type=_positive_float,
        default=healthcheck.DEFAULT_PING_TIMEOUT,
        help=f"seconds to wait for the reply (default: {healthcheck.DEFAULT_PING_TIMEOUT:g})",
    )
    ping.add_argument(
        "--heartbeat-file",
        metavar="PATH",
        help="combined mode: also healthy when this heartbeat file is fresh (a busy solo-pool "
        "worker cannot answer pings while a task runs)",
    )
    _add_max_age(ping, "with --heartbeat-file: ")

    beat = modes.add_parser(
        "heartbeat",
        help="check the age of the heartbeat file written by toolkit.heartbeat",
        description="Check the age of the worker's heartbeat file (stdlib only, ~60 ms).",
    )
    _one_line_errors(beat)
    beat.add_argument(
        "--file",
        metavar="PATH",
        help=f"heartbeat file (default: ${ENV_HEARTBEAT_FILE}, "
        f"then {DEFAULT_HEARTBEAT_FILE})",
    )
    _add_max_age(beat)

    sched = modes.add_parser(
        "beat",
        help="check that celery beat still ticks (its beat file, written by toolkit.install)",
        description="Check the last scheduler tick celery beat wrote to its beat file "
        "(stdlib only). Default limit: 3 x the interval beat announced, at least 30 s.",
    )
    _one_line_errors(sched)
    sched.add_argument(
        "--file",
        metavar="PATH",
        help=f"beat file (default: ${ENV_BEAT_FILE}, then {BEAT_FILE_NAME} in the temp folder)",
    )
    sched.add_argument(
        "--max-age",
        metavar="S",
        type=_positive_float,
        default=None,
        help="oldest acceptable tick in seconds (default: 3 x the interval beat announced at "
        "its last tick, at least 30)",
    )


def run(args: argparse.Namespace) -> int:
    if args.mode == "heartbeat":
        result = healthcheck.check_heartbeat(args.file, args.max_age)
    elif args.mode == "beat":
        from toolkit.worker.beatcheck import check_beat

        result = check_beat(args.file, args.max_age)
    else:
        broker = args.broker or healthcheck.default_broker_url()
        if args.heartbeat_file:
            result = healthcheck.ping_or_heartbeat(
                broker, args.node, args.timeout, args.heartbeat_file, args.max_age,
                global_keyprefix=args.keyprefix,
            )
        else:
            result = healthcheck.ping(
                broker, args.node, args.timeout, global_keyprefix=args.keyprefix
            )
    print(result.line, flush=True)
    return result.exit_code

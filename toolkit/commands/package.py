"""``celery-ecs package [--lambda NAME] [--output PATH] [--pip]``: build a Lambda zip reproducibly.

Prints one line with the path, size, file count and SHA-256. ``celery-ecs deploy`` reuses
:func:`toolkit.packaging.build_lambda_zip`.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lambda", dest="name", default="alarm_handler",
        help="which Lambda to package: alarm_handler, slack_actions or collector (default: "
        "alarm_handler)",
    )
    parser.add_argument(
        "--output", help="zip path (default: build/NAME.zip in the current directory)"
    )
    parser.add_argument(
        "--pip", action="store_true",
        help="install dependencies with pip --target instead of copying them from this environment",
    )
    parser.add_argument(
        "--no-deps", action="store_true", help="package the sources only (no dependencies)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    from toolkit.packaging import build_lambda_zip

    result = build_lambda_zip(
        args.name,
        args.output,
        dependencies=() if args.no_deps else None,
        source="pip" if args.pip else "venv",
    )
    print(result.line())
    return 0

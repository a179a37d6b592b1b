"""``celery-ecs dashboard``: print the Grafana or CloudWatch dashboard of an environment."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toolkit.config import load_settings
from toolkit.errors import ConfigError

EXIT_OK = 0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="celery-ecs.toml (default: ./celery-ecs.toml or $CELERY_ECS_CONFIG)")
    parser.add_argument("--environment", metavar="NAME",
                        help="the environment to draw (default: the config's)")
    parser.add_argument("--format", required=True, choices=("grafana", "cloudwatch"),
                        help="grafana: a dashboard JSON model; cloudwatch: a dashboard body")
    parser.add_argument("--region", metavar="REGION",
                        help="cloudwatch: region of the metrics (default: the AWS configuration's)")
    parser.add_argument("--output", metavar="FILE", help="write here instead of stdout")


def _region(explicit: str | None) -> str:
    if explicit:
        return explicit
    import boto3

    region = boto3.session.Session().region_name
    if not region:
        raise ConfigError("no AWS region: pass --region or configure one (AWS_REGION, a profile)")
    return region


def run(args: argparse.Namespace) -> int:
    from toolkit.dashboards import (
        cloudwatch_dashboard,
        compact,
        grafana_dashboard,
    )

    settings = load_settings(args.config, environment=args.environment, require_broker=False)
    if args.format == "grafana":
        text = json.dumps(grafana_dashboard(settings), indent=2) + "\n"
    else:
        text = compact(cloudwatch_dashboard(settings, _region(args.region))) + "\n"
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            raise ConfigError(f"cannot write {args.output}: {exc.strerror}") from None
    else:
        sys.stdout.write(text)
    return EXIT_OK

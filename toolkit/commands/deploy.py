"""``celery-ecs deploy --config FILE --stack-name NAME --bucket BUCKET [--dry-run]``.

Renders the root stack from the config, builds and uploads the Lambda zips and the templates
(content-addressed S3 keys), creates or updates the stack through a change set, prints its
summary and streams the stack's events. Exit 0 deployed (or nothing to change, or a dry run),
1 the deployment failed (the failing resource and its reason on stderr), 2 bad input. AWS
credentials, region and endpoint come from boto3's usual chain (``AWS_ENDPOINT_URL`` included).
"""

from __future__ import annotations

import argparse
import sys


def _parameter(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the celery-ecs.toml to deploy")
    parser.add_argument("--stack-name", required=True, help="root stack name")
    parser.add_argument("--bucket", required=True,
                        help="S3 bucket (same region) for the templates and Lambda zips")
    parser.add_argument(
        "--parameter", action="append", type=_parameter, default=[], metavar="KEY=VALUE",
        help="root stack parameter (repeatable): WorkerImage, CeleryApp, SlackSecretArn, "
             "Remediation, LaunchType, BrokerMode, ...; on an update, omitted ones keep "
             "their previous value",
    )
    parser.add_argument("--dry-run", action="store_true",
                        help="print the change set, then delete it without executing")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    from toolkit.aws import client
    from toolkit.deploy.run import deploy
    from toolkit.deploy.stack import DeployError

    cfn = client("cloudformation")
    s3 = client("s3")
    try:
        result = deploy(
            args.config, args.stack_name, args.bucket,
            parameters=dict(args.parameter), dry_run=args.dry_run,
            s3=s3, cfn=cfn, region=cfn.meta.region_name,
            echo=lambda line: print(line, flush=True),
        )
    except DeployError as exc:
        print(f"celery-ecs deploy: failed: {exc}", file=sys.stderr)
        return 1
    return 0 if result.status else 1

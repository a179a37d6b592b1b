"""``celery-ecs deploy --config FILE --stack-name NAME --bucket BUCKET [--dry-run]``.

Renders the root stack from the config, builds and uploads the Lambda zips and the templates
(content-addressed S3 keys), creates or updates the stack through a change set, prints its
summary and streams the stack's events. Exit 0 deployed (or nothing to change, or a dry run),
1 the deployment failed (the failing resource and its reason on stderr), 2 bad input. AWS
credentials, region and endpoint come from boto3's usual chain (``AWS_ENDPOINT_URL`` included).
"""

from __future__ import annotations

import argparse
import contextlib
import os
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

    try:
        cfn = client("cloudformation")
        result = deploy(
            args.config, args.stack_name, args.bucket,
            parameters=dict(args.parameter), dry_run=args.dry_run,
            s3=client("s3"), cfn=cfn, iam=client("iam"), region=cfn.meta.region_name,
            echo=lambda line: print(line, flush=True),
        )
    except DeployError as exc:
        print(f"celery-ecs deploy: failed: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `deploy --dry-run | head`: the reader went away; the change set is already deleted.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        with contextlib.suppress(OSError, ValueError, AttributeError):  # stdout replaced
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("celery-ecs deploy: output closed: stopped, the unexecuted change set was "
              "deleted", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("celery-ecs deploy: interrupted: the unexecuted change set was deleted (a stack "
              "already executing goes on: see its events)", file=sys.stderr)
        return 130
    except Exception as exc:
        line = aws_failure(exc)
        if line is None:
            raise
        print(f"celery-ecs deploy: failed: {line}", file=sys.stderr)
        return 1
    return 0 if result.status else 1


def aws_failure(exc: BaseException) -> str | None:
    """One line for AWS being unreachable, credentials missing or a call refused; else None."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ("no AWS credentials found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY)")
    if isinstance(exc, EndpointConnectionError):
        return f"AWS is unreachable: {exc}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        operation = getattr(exc, "operation_name", "a call")
        return f"AWS refused {operation}: {error.get('Code', '?')}: {error.get('Message', '')}"
    if isinstance(exc, BotoCoreError):
        return f"AWS call failed: {exc}"
    return None

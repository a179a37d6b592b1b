"""``celery-ecs deploy`` from start to end, with every client and file source injected.

1. load and check the config (one-line ConfigError, exit 2), render the root template, and
   check every ``--parameter`` and every service's Fargate size (:mod:`.validate`): all of
   this before any AWS call;
2. check the bucket (exists, readable, in the stack's region) and the ECS service-linked role
   (:mod:`.account`: created when missing, a dry run only says so);
3. build the Lambda zips (collector, alarm handler, Slack actions; the collector with the config
   bundled as ``celery-ecs.toml``);
4. upload zips, nested templates and the root template under content-addressed keys;
5. create a change set (CREATE or UPDATE), print its summary; ``dry_run`` deletes it and stops;
6. execute it and stream the stack's events until a terminal status.

A run interrupted before the change set is executed (Ctrl-C, or ``| head`` closing the pipe)
deletes the change set, and for a new stack the empty stack, before it leaves.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from toolkit import assets
from toolkit.config import Settings, load_settings, read_config_file
from toolkit.deploy import artifacts, stack, validate
from toolkit.deploy.account import ensure_ecs_service_linked_role
from toolkit.deploy.master import BUNDLED_CONFIG, render_master
from toolkit.errors import ConfigError
from toolkit.packaging import build_lambda_zip

LAMBDAS = ("collector", "alarm_handler", "slack_actions")
# Parameters deploy fills itself; the user passes the others with --parameter KEY=VALUE.
OWN_PARAMETERS = ("TemplateURLPrefix", "LambdaCodeBucket", "CollectorCodeKey",
                  "AlarmHandlerCodeKey", "SlackActionsCodeKey")


@dataclass(frozen=True)
class DeployResult:
    stack: str
    status: str  # final stack status, "DRY_RUN" or "NO_CHANGES"
    uploaded: tuple[str, ...]
    change_set: str | None


def load_deploy_settings(config: str | Path) -> tuple[Settings, bytes]:
    """The config as the deployed collector reads it (file only, no environment) and its bytes."""
    read_config_file(config)  # one-line errors for a missing or malformed file
    settings = load_settings(config, environ={}, require_broker=False)
    if settings.broker is not None and artifacts.broker_url_has_password(settings.broker.url):
        raise ConfigError(
            f"{config}: [broker] url holds a password and would be bundled into the collector "
            "zip; remove it (the deployed collector reads the broker URL from Secrets Manager)"
        )
    return settings, Path(config).read_bytes()


def config_parameters(settings: Settings, given: Mapping[str, str]) -> dict[str, str]:
    """``EnvironmentName`` and ``MetricNamespace`` as the config says; a contradiction is refused.

    The collector reads the bundled config, whose ``environment`` and ``namespace`` win over the
    Lambda's environment variables, so a stack parameter that differs would leave every alarm
    and the dashboard watching metrics nobody publishes.
    """
    own = {"EnvironmentName": ("environment", settings.environment),
           "MetricNamespace": ("namespace", settings.namespace)}
    for key, (config_key, value) in own.items():
        if key in given and given[key] != value:
            raise ConfigError(f"--parameter {key}={given[key]} contradicts the config "
                              f"({config_key} = {value!r}); change the config instead")
    return {key: value for key, (_, value) in own.items()}


def build_zips(
    config_bytes: bytes, build: Callable[..., Any] = build_lambda_zip
) -> dict[str, bytes]:
    out = {}
    with tempfile.TemporaryDirectory(prefix="celery-ecs-deploy-") as tmp:
        for name in LAMBDAS:
            extra = {BUNDLED_CONFIG: config_bytes} if name == "collector" else None
            result = build(name, Path(tmp) / f"{name}.zip", extra_files=extra)
            out[name] = Path(result.path).read_bytes()
    return out


def deploy(
    config: str | Path,
    stack_name: str,
    bucket: str,
    *,
    parameters: Mapping[str, str] | None = None,
    dry_run: bool = False,
    s3: Any,
    cfn: Any,
    region: str,
    iam: Any = None,
    echo: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
    templates: Traversable | None = None,
    render: Callable[[Settings], str] | None = None,
    zips: Mapping[str, bytes] | None = None,
    poll: float = 5.0,
) -> DeployResult:
    settings, config_bytes = load_deploy_settings(config)
    template = (render or (lambda s: render_master(s, source=Path(config).name)))(settings)
    given = dict(parameters or {})
    specs = validate.root_parameters(template)
    validate.check_parameters(specs, given, OWN_PARAMETERS)
    validate.check_sizes(settings)
    from_config = config_parameters(settings, given)
    # ---- AWS from here on ----
    artifacts.check_bucket(s3, bucket, region)
    if iam is not None:
        ensure_ecs_service_linked_role(iam, create=not dry_run, echo=echo)
    current = stack.stack_status(cfn, stack_name)
    kind = stack.change_set_kind(stack_name, current[0] if current else None)
    previous = current[1] if current and kind == "UPDATE" else None
    if "ApplyDesiredCount" in specs and "ApplyDesiredCount" not in given:
        # the config's desired_count on creation only: an update keeps autoscaling's count
        given["ApplyDesiredCount"] = "true" if kind == "CREATE" else "false"

    code = dict(zips) if zips is not None else build_zips(config_bytes)
    lambda_files = {name: artifacts.lambda_artifact(name, code[name]) for name in LAMBDAS}
    nested = artifacts.nested_templates(templates or assets.templates())
    prefix, template_files = artifacts.template_artifacts(nested)
    root = artifacts.root_artifact(template)
    given.update(
        TemplateURLPrefix=artifacts.s3_url(bucket, region, prefix),
        LambdaCodeBucket=bucket,
        CollectorCodeKey=lambda_files["collector"].key,
        AlarmHandlerCodeKey=lambda_files["alarm_handler"].key,
        SlackActionsCodeKey=lambda_files["slack_actions"].key,
    )
    declared = {name: spec.default is not None for name, spec in specs.items()}
    given.update({key: value for key, value in from_config.items() if key in declared})
    stack_params = stack.stack_parameters(declared, given, previous)
    done = artifacts.upload(s3, bucket, [*lambda_files.values(), *template_files, root])
    uploaded = tuple(key for key, state in done if state == "uploaded")
    echo(f"s3://{bucket}: {len(uploaded)} uploaded, {len(done) - len(uploaded)} already there "
         f"(templates under {prefix}/)")
    for name, artifact in lambda_files.items():
        echo(f"  {name}: {artifact.key} ({len(artifact.body):,} bytes)")

    try:
        change_set = stack.create_change_set(
            cfn, stack_name, artifacts.s3_url(bucket, region, root.key), stack_params, kind,
            sleep=sleep,
        )
    except stack.NoChanges as exc:
        echo(str(exc))
        return DeployResult(stack_name, "NO_CHANGES", uploaded, None)
    try:
        for line in stack.summary_lines(change_set):
            echo(line)
        if dry_run:
            stack.delete_change_set(cfn, change_set.id, change_set.stack_id)
            if kind == "CREATE":  # leave no empty stack in REVIEW_IN_PROGRESS behind
                cfn.delete_stack(StackName=change_set.stack_id)
            echo("dry run: change set deleted, nothing executed")
            return DeployResult(stack_name, "DRY_RUN", uploaded, change_set.id)
    except BaseException:
        # interrupted (Ctrl-C, a closed pipe) before anything ran: leave nothing behind
        stack.discard_change_set(cfn, change_set)
        raise
    status = stack.execute_and_stream(cfn, change_set, echo=echo, sleep=sleep, poll=poll)
    echo(f"stack {stack_name}: {status}")
    return DeployResult(stack_name, status, uploaded, change_set.id)

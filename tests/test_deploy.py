"""``celery-ecs deploy`` against a moto server on 127.0.0.1 (AWS_ENDPOINT_URL), for what moto runs.

Exercised on moto: the S3 uploads and their content-addressed keys, the collector zip with the
config inside, change set creation (CREATE, then UPDATE) and its summary for the real rendered
root stack, dry-run deletion, "no changes", execution and streamed stack events for a stack moto
can create, and an execution moto refuses. Not exercised on moto: executing the real root stack
(moto cannot resolve nested-stack outputs; it answers 500), resource-level failure events (moto
raises from ExecuteChangeSet instead): those are tested below with events in the shape
CloudFormation sends, and the templates' wiring in tests/test_cloudformation.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.conftest import free_port
from toolkit.cli import main
from toolkit.deploy import stack
from toolkit.deploy.run import OWN_PARAMETERS, config_parameters, deploy, load_deploy_settings

ROOT = Path(__file__).resolve().parent.parent / "cloudformation"
EXAMPLE = ROOT / "example.celery-ecs.toml"
REGION = "eu-west-1"
USER_PARAMETERS = ["--parameter", "WorkerImage=123.dkr.ecr.eu-west-1.amazonaws.com/proj:1",
                   "--parameter", "CeleryApp=proj",
                   "--parameter", "SlackSecretArn=arn:aws:secretsmanager:eu-west-1:1:secret:s"]
FAKE_ZIPS = {"collector": b"collector-zip", "alarm_handler": b"handler-zip",
             "slack_actions": b"actions-zip"}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(endpoint: str, monkeypatch: pytest.MonkeyPatch, unique: str) -> dict[str, Any]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    s3 = boto3.client("s3", region_name=REGION)
    bucket = f"deploy-{unique}".lower()[:60]
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    return {"s3": s3, "cfn": boto3.client("cloudformation", region_name=REGION),
            "bucket": bucket, "stack": f"celery-{unique}"[:60]}


def _keys(s3: Any, bucket: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def test_dry_run_uploads_content_addressed_files_prints_the_change_set_and_deletes_it(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["deploy", "--config", str(EXAMPLE), "--stack-name", aws["stack"],
               "--bucket", aws["bucket"], "--dry-run", *USER_PARAMETERS])
    out = capsys.readouterr().out
    assert rc == 0, out
    objects = _keys(aws["s3"], aws["bucket"])
    # every key carries the sha256 of its bytes (templates: of the tree, checked below)
    for key, body in objects.items():
        if key.startswith(("celery-ecs/lambdas/", "celery-ecs/root/")):
            assert hashlib.sha256(body).hexdigest() in key, key
    nested = sorted(k.split("/", 3)[3] for k in objects if k.startswith("celery-ecs/templates/"))
    assert nested == sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("*/**/*.yaml"))
    root = next(body for key, body in objects.items() if key.startswith("celery-ecs/root/"))
    assert b"WorkerEmailsService:" in root and b"EmailsQueueAlarms:" in root
    collector = next(b for k, b in objects.items() if "/collector-" in k)
    with zipfile.ZipFile(io.BytesIO(collector)) as archive:
        assert archive.read("celery-ecs.toml") == EXAMPLE.read_bytes()
        assert "handler.py" in archive.namelist()
    # moto lists the conditional stacks too (Redis, Beat): real CloudFormation skips them
    assert "change set (CREATE): 12 add" in out
    for logical in ("VPC", "Monitoring", "WorkerDefaultService", "ReportsQueueAlarms"):
        assert f"Add     {logical} " in out
    assert "dry run: change set deleted" in out
    # nothing is left behind: no change set, and no empty stack in REVIEW_IN_PROGRESS
    assert stack.stack_status(aws["cfn"], aws["stack"]) is None

    # the same deploy again uploads nothing: same bytes, same keys
    rc = main(["deploy", "--config", str(EXAMPLE), "--stack-name", aws["stack"],
               "--bucket", aws["bucket"], "--dry-run", *USER_PARAMETERS])
    assert rc == 0
    assert f"0 uploaded, {len(objects)} already there" in capsys.readouterr().out


def _runnable(folder: Path) -> str:
    """A root stack moto can execute: the deploy-owned parameters and one SQS queue."""
    (folder / "infrastructure").mkdir()
    (folder / "services").mkdir()
    (folder / "infrastructure" / "x.yaml").write_text("Resources: {}\n")
    (folder / "services" / "y.yaml").write_text("Resources: {}\n")
    params = "\n".join(f"  {p}:\n    Type: String" for p in OWN_PARAMETERS)
    return (f"Parameters:\n{params}\n  QueueName:\n    Type: String\n    Default: q\n\n"
            "Resources:\n  Queue:\n    Type: AWS::SQS::Queue\n"
            "    Properties:\n      QueueName: !Ref QueueName\n")


def test_deploy_executes_streams_events_then_reports_no_changes_and_updates(
    aws: dict[str, Any], tmp_path: Path, unique: str
) -> None:
    template = _runnable(tmp_path)
    lines: list[str] = []
    kwargs: dict[str, Any] = dict(
        s3=aws["s3"], cfn=aws["cfn"], region=REGION, echo=lines.append, sleep=lambda s: None,
        templates=tmp_path, render=lambda s: template, zips=FAKE_ZIPS, poll=0.0,
    )
    result = deploy(EXAMPLE, aws["stack"], aws["bucket"],
                    parameters={"QueueName": f"q-{unique}"}, **kwargs)
    assert result.status == "CREATE_COMPLETE"
    assert any("CREATE_IN_PROGRESS" in line and aws["stack"] in line for line in lines)
    assert lines[-1] == f"stack {aws['stack']}: CREATE_COMPLETE"
    sqs = boto3.client("sqs", region_name=REGION)
    assert sqs.get_queue_url(QueueName=f"q-{unique}")["QueueUrl"]

    lines.clear()
    again = deploy(EXAMPLE, aws["stack"], aws["bucket"], **kwargs)  # QueueName: previous value
    assert again.status == "NO_CHANGES"
    assert f"stack {aws['stack']} is up to date: the change set has no changes" in lines

    lines.clear()
    updated = deploy(EXAMPLE, aws["stack"], aws["bucket"],
                     parameters={"QueueName": f"r-{unique}"}, **kwargs)
    assert updated.status == "UPDATE_COMPLETE"
    assert any(line.startswith("change set (UPDATE)") for line in lines)


def test_a_refused_execution_exits_1_with_the_aws_reason(
    aws: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a bucket name that is taken: moto refuses the execution (real CloudFormation would report
    # CREATE_FAILED on the resource; that path is tested with recorded-shape events below)
    template = _runnable(tmp_path).replace(
        "  Queue:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: !Ref QueueName\n",
        f"  Taken:\n    Type: AWS::S3::Bucket\n    Properties:\n      BucketName: {aws['bucket']}\n"
        "      Tags: [{Key: q, Value: !Ref QueueName}]\n")
    import toolkit.deploy.run as run_module

    monkeypatch.setattr(run_module, "render_master", lambda settings, source: template)
    monkeypatch.setattr(run_module.assets, "templates", lambda: tmp_path)
    monkeypatch.setattr(run_module, "build_zips", lambda config_bytes: FAKE_ZIPS)
    rc = main(["deploy", "--config", str(EXAMPLE), "--stack-name", aws["stack"],
               "--bucket", aws["bucket"]])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err == [f"celery-ecs deploy: failed: executing the change set failed: "
                   f"BucketAlreadyExists: {err[0].split('BucketAlreadyExists: ', 1)[1]}"]


@pytest.mark.parametrize("args,message", [
    (["--bucket", "no-such-bucket-here"], "bucket no-such-bucket-here does not exist"),
    ([], "missing stack parameters: SlackSecretArn, WorkerImage, CeleryApp"),
    (["--parameter", "Nope=1"], "unknown stack parameter Nope"),
    (["--parameter", "CollectorCodeKey=x"], "--parameter CollectorCodeKey is set by celery-ecs"),
    # the bundled config decides the collector's Environment dimension and namespace: a stack
    # parameter that differs would leave every alarm watching metrics nobody publishes
    (["--parameter", "EnvironmentName=staging", *USER_PARAMETERS],
     "--parameter EnvironmentName=staging contradicts the config (environment = 'production')"),
    (["--parameter", "MetricNamespace=Other", *USER_PARAMETERS],
     "--parameter MetricNamespace=Other contradicts the config (namespace = 'Celery')"),
])
def test_bad_input_is_one_line_and_exit_2(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = ["deploy", "--config", str(EXAMPLE), "--stack-name", aws["stack"],
            "--bucket", aws["bucket"], "--dry-run", *args]
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and message in err[0], err


def test_environment_and_namespace_always_come_from_the_config() -> None:
    # passed on every change set, so an update never keeps a previous, different value
    settings, _ = load_deploy_settings(EXAMPLE)
    assert config_parameters(settings, {}) == {"EnvironmentName": "production",
                                               "MetricNamespace": "Celery"}
    same = {"EnvironmentName": "production", "MetricNamespace": "Celery"}
    assert config_parameters(settings, same) == same


def test_a_config_with_a_broker_password_is_refused_without_printing_it(
    aws: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "celery-ecs.toml"
    config.write_text(EXAMPLE.read_text().replace(
        'namespace = "Celery"', 'namespace = "Celery"\n[broker]\nurl = "redis://:s3cr3t@h:6379/0"'))
    rc = main(["deploy", "--config", str(config), "--stack-name", aws["stack"],
               "--bucket", aws["bucket"], "--dry-run", *USER_PARAMETERS])
    captured = capsys.readouterr()
    assert rc == 2
    assert "[broker] url holds a password" in captured.err
    assert "s3cr3t" not in captured.err + captured.out
    assert _keys(aws["s3"], aws["bucket"]) == {}


def test_a_bad_config_is_exit_2(aws: dict[str, Any], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(EXAMPLE.read_text().replace('cluster = "production-cluster"',
                                                  'cluster = "elsewhere"', 1))
    rc = main(["deploy", "--config", str(config), "--stack-name", aws["stack"],
               "--bucket", aws["bucket"], *USER_PARAMETERS])
    assert rc == 2
    assert "service worker-default: cluster is 'elsewhere'" in capsys.readouterr().err


# ---- what moto does not model: stack states and resource failure events ----

@pytest.mark.parametrize("status,kind_or_error", [
    (None, "CREATE"), ("REVIEW_IN_PROGRESS", "CREATE"), ("CREATE_COMPLETE", "UPDATE"),
    ("UPDATE_ROLLBACK_COMPLETE", "UPDATE"),
    ("ROLLBACK_COMPLETE", "stack s is in ROLLBACK_COMPLETE: its creation failed and was rolled "
                          "back: delete it (aws cloudformation delete-stack --stack-name s)"),
    ("UPDATE_IN_PROGRESS", "stack s is busy (UPDATE_IN_PROGRESS)"),
])
def test_change_set_kind_by_stack_status(status: str | None, kind_or_error: str) -> None:
    if kind_or_error in ("CREATE", "UPDATE"):
        assert stack.change_set_kind("s", status) == kind_or_error
    else:
        with pytest.raises(stack.DeployError, match=kind_or_error.replace("(", r"\(")
                           .replace(")", r"\)")):
            stack.change_set_kind("s", status)


class _RecordedEvents:
    """A CloudFormation client replaying events in the shape the real service returns."""

    ROOT = "arn:aws:cloudformation:eu-west-1:1:stack/celery/1"
    NESTED = "arn:aws:cloudformation:eu-west-1:1:stack/celery-Monitoring-X/2"

    def __init__(self) -> None:
        t = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

        def ev(n: int, stack_id: str, logical: str, physical: str, kind: str, status: str,
               reason: str = "") -> dict[str, Any]:
            return {"EventId": f"e{n}", "StackId": stack_id, "LogicalResourceId": logical,
                    "PhysicalResourceId": physical, "ResourceType": kind,
                    "ResourceStatus": status, "ResourceStatusReason": reason, "Timestamp": t}

        stk = "AWS::CloudFormation::Stack"
        self.batches = [[
            ev(1, self.ROOT, "celery", self.ROOT, stk, "CREATE_IN_PROGRESS", "User Initiated"),
            ev(2, self.ROOT, "VPC", "", stk, "CREATE_IN_PROGRESS"),
        ], [
            ev(3, self.ROOT, "VPC", "vpc-stack", stk, "CREATE_COMPLETE"),
            ev(4, self.ROOT, "Monitoring", self.NESTED, stk, "CREATE_FAILED",
               "Embedded stack arn:...celery-Monitoring-X/2 was not successfully created: "
               "The following resource(s) failed to create: [CollectorFunction]."),
            ev(5, self.ROOT, "ECS", "", stk, "CREATE_FAILED", "Resource creation cancelled"),
            ev(6, self.ROOT, "celery", self.ROOT, stk, "ROLLBACK_IN_PROGRESS"),
        ], [
            ev(7, self.ROOT, "celery", self.ROOT, stk, "ROLLBACK_COMPLETE"),
        ]]
        self.nested = [ev(9, self.NESTED, "CollectorFunction", "", "AWS::Lambda::Function",
                          "CREATE_FAILED", "Error occurred while GetObject. S3 Error Code: "
                          "NoSuchKey.")]
        self.polls = 0
        self.executed = False

    def execute_change_set(self, **kwargs: Any) -> None:
        self.executed = True

    def describe_stack_events(self, StackName: str) -> dict[str, Any]:  # noqa: N803
        if StackName == self.NESTED:
            return {"StackEvents": self.nested}
        shown = self.batches[: self.polls] if self.executed else []
        self.polls += 1 if self.executed else 0
        return {"StackEvents": [e for b in reversed(shown) for e in reversed(b)]}


def test_a_failed_nested_resource_is_reported_with_its_own_reason() -> None:
    cfn = _RecordedEvents()
    lines: list[str] = []
    change_set = stack.ChangeSet("cs", cfn.ROOT, "CREATE")
    with pytest.raises(stack.DeployError) as failed:
        stack.execute_and_stream(cfn, change_set, echo=lines.append, sleep=lambda s: None)
    assert str(failed.value) == (
        "Monitoring: CollectorFunction (AWS::Lambda::Function) failed: Error occurred while "
        "GetObject. S3 Error Code: NoSuchKey. (stack ROLLBACK_COMPLETE)")
    assert [line.split()[4] for line in lines] == [
        "CREATE_IN_PROGRESS", "CREATE_IN_PROGRESS", "CREATE_COMPLETE", "CREATE_FAILED",
        "CREATE_FAILED", "ROLLBACK_IN_PROGRESS", "ROLLBACK_COMPLETE"]
    # progress: resources complete / started
    assert lines[2].startswith("[  1/1  ] 12:00:00") and lines[-1].startswith("[  1/3  ]")
    assert json.dumps(lines)  # plain strings, printable as they come

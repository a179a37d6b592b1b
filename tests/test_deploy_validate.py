"""``celery-ecs deploy`` refuses bad input before any AWS call, says in one line when AWS is
unreachable or credentials are missing, checks the bucket's region and the ECS service-linked
role, and an interrupted run leaves no change set behind."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.cfn import load
from tests.conftest import free_port
from toolkit.cli import main
from toolkit.config import load_settings
from toolkit.deploy import render_master, stack
from toolkit.deploy.account import ECS_ROLE, ensure_ecs_service_linked_role
from toolkit.deploy.run import deploy
from toolkit.deploy.validate import check_sizes, fargate_memory, root_parameters
from toolkit.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent / "cloudformation"
EXAMPLE = ROOT / "example.celery-ecs.toml"
SECOND = Path(__file__).resolve().parent / "data" / "second.celery-ecs.toml"
REGION = "eu-west-1"
USER = ["--parameter", "WorkerImage=123.dkr.ecr.eu-west-1.amazonaws.com/proj:1",
        "--parameter", "CeleryApp=proj",
        "--parameter", "SlackSecretArn=arn:aws:secretsmanager:eu-west-1:1:secret:s"]


# ---- the parameter constraints are read right ----

@pytest.mark.parametrize("config", [EXAMPLE, SECOND], ids=["example", "second"])
def test_root_parameters_agree_with_cfn_lint(config: Path, tmp_path: Path) -> None:
    text = render_master(load_settings(config, environ={}, require_broker=False))
    (tmp_path / "master.yaml").write_text(text)
    decoded = load(tmp_path / "master.yaml")["Parameters"]
    specs = root_parameters(text)
    assert set(specs) == set(decoded)
    for name, spec in specs.items():
        want = decoded[name]
        assert spec.type == want["Type"], name
        assert spec.default == (None if "Default" not in want else str(want["Default"])), name
        allowed = want.get("AllowedValues")
        assert spec.allowed_values == (None if allowed is None else tuple(map(str, allowed)))
        assert spec.allowed_pattern == want.get("AllowedPattern"), name
        assert spec.min_value == want.get("MinValue") and spec.max_value == want.get("MaxValue")
    assert specs["LaunchType"].allowed_values == ("FARGATE", "EC2")
    assert specs["Remediation"].allowed_values == ("enabled", "dry-run", "off")


# ---- Fargate sizes, from AWS's table ----

@pytest.mark.parametrize("cpu,memory,ok", [
    (256, 512, True), (256, 2048, True), (256, 4096, False), (512, 4096, True),
    (1024, 8192, True), (1024, 9216, False), (2048, 16384, True), (4096, 30720, True),
    (4096, 31744, False), (8192, 20480, True), (8192, 18432, False), (16384, 122880, True),
    (16384, 36864, False), (300, 1024, False),
])
def test_fargate_sizes(cpu: int, memory: int, ok: bool) -> None:
    assert (memory in fargate_memory(cpu)) is ok


# ---- bad input: one line, exit 2, and not one AWS connection ----

@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """AWS_ENDPOINT_URL at a local listener that counts connections and answers none."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    accepted: list[int] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    yield accepted
    stop.set()
    thread.join()
    listener.close()


def _config(tmp_path: Path, cpu: int, memory: int) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(EXAMPLE.read_text().replace(
        "cpu = 512                # task CPU", f"cpu = {cpu}  # task CPU").replace(
        "memory = 1024            # MiB", f"memory = {memory}"))
    return path


@pytest.mark.parametrize("args,message", [
    (["--parameter", "LaunchType=EC3"],
     "--parameter LaunchType=EC3 is refused: LaunchType is one of FARGATE, EC2"),
    (["--parameter", "NoSuchParameter=1"],
     "unknown stack parameter NoSuchParameter (the root stack declares AlarmHandlerReserved"),
    (["--parameter", "Remediation=maybe"],
     "--parameter Remediation=maybe is refused: Remediation is one of enabled, dry-run, off"),
    (["--parameter", "CollectorReservedConcurrency=-1"],
     "--parameter CollectorReservedConcurrency=-1 is refused: CollectorReservedConcurrency is "
     "at least 0"),
    (["--parameter", "BrokerPort=http"],
     "--parameter BrokerPort=http is refused: BrokerPort is a number"),
    (["--parameter", "ApplyDesiredCount=yes"],
     "--parameter ApplyDesiredCount=yes is refused: ApplyDesiredCount is one of true, false"),
    (["--parameter", "TemplateURLPrefix=x"], "--parameter TemplateURLPrefix is set by celery-ecs"),
])
def test_bad_parameters_are_refused_before_any_aws_call(
    no_aws: list[int], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    rc = main(["deploy", "--config", str(EXAMPLE), "--stack-name", "s", "--bucket", "b",
               *USER, *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert no_aws == []


def test_a_service_that_is_not_a_fargate_size_is_refused_before_any_aws_call(
    no_aws: list[int], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc = main(["deploy", "--config", str(_config(tmp_path, 256, 4096)), "--stack-name", "s",
               "--bucket", "b", *USER])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [
        "celery-ecs deploy: error: service worker-default: cpu 256 with memory 4096 is not a "
        "Fargate size (cpu 256 takes memory 512, 1024, 2048)"]
    assert no_aws == []
    settings = load_settings(_config(tmp_path, 2048, 4096), environ={}, require_broker=False)
    check_sizes(settings)  # a valid pair passes
    with pytest.raises(ConfigError, match=r"cpu 3000 is not a Fargate size \(cpu is one of 256,"):
        check_sizes(load_settings(_config(tmp_path, 3000, 4096), environ={},
                                  require_broker=False))


# ---- AWS unreachable, credentials missing: one line, exit 1 ----

def test_unreachable_aws_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    rc = main(["deploy", "--config", str(EXAMPLE), "--stack-name", "s", "--bucket", "b", *USER])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith("celery-ecs deploy: failed: AWS is unreachable: Could not connect")


def test_missing_credentials_are_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_SECURITY_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # no credentials cached by others
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    rc = main(["deploy", "--config", str(EXAMPLE), "--stack-name", "s", "--bucket", "b", *USER])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err == ["celery-ecs deploy: failed: no AWS credentials found (set "
                               "AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"]


# ---- against moto: bucket region, the service-linked role, interrupted runs ----

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
    bucket = f"validate-{unique}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    return {"s3": s3, "cfn": boto3.client("cloudformation", region_name=REGION),
            "iam": boto3.client("iam", region_name=REGION), "bucket": bucket,
            "stack": f"validate-{unique}"}


def test_a_bucket_in_another_region_is_refused(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str], unique: str
) -> None:
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=f"east-{unique}")
    rc = main(["deploy", "--config", str(EXAMPLE), "--stack-name", aws["stack"],
               "--bucket", f"east-{unique}", "--dry-run", *USER])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert f"bucket east-{unique} is in us-east-1, the stack in eu-west-1" in err[0]


def test_service_linked_role_is_created_when_missing_and_only_announced_in_a_dry_run(
    aws: dict[str, Any]
) -> None:
    iam = aws["iam"]
    for name in _ecs_linked_roles(iam):  # left by an earlier deploy in this process
        iam.delete_role(RoleName=name)
    lines: list[str] = []
    assert ensure_ecs_service_linked_role(iam, create=False, echo=lines.append) == "missing"
    assert "does not exist yet; deploy creates it" in lines[-1]
    assert not _ecs_linked_roles(iam)
    assert ensure_ecs_service_linked_role(iam, create=True, echo=lines.append) == "created"
    assert lines[-1] == f"created the ECS service-linked role {ECS_ROLE}"
    # moto names the role AWSServiceRoleForecs (AWS: AWSServiceRoleForECS); the path is AWS's
    assert _ecs_linked_roles(iam)
    # moto names the role differently, so GetRole still misses and creation meets the
    # existing role: that is "present" too (AWS: ECS or another deploy created it meanwhile)
    assert ensure_ecs_service_linked_role(iam, create=True, echo=lines.append) == "present"
    iam.create_role(RoleName=ECS_ROLE, AssumeRolePolicyDocument="{}",
                    Path="/aws-service-role/ecs.amazonaws.com/")
    assert ensure_ecs_service_linked_role(iam, create=True, echo=lines.append) == "present"
    assert lines[-1] == f"created the ECS service-linked role {ECS_ROLE}"  # nothing new said
    iam.delete_role(RoleName=ECS_ROLE)


def _ecs_linked_roles(iam: Any) -> list[str]:
    return [r["RoleName"] for r in iam.list_roles(
        PathPrefix="/aws-service-role/ecs.amazonaws.com/")["Roles"]]


class Closed(Exception):
    pass


@pytest.mark.parametrize("error", [BrokenPipeError, KeyboardInterrupt])
def test_an_interrupted_dry_run_deletes_its_change_set(
    aws: dict[str, Any], error: type[BaseException]
) -> None:
    def echo(line: str) -> None:
        if line.startswith("  Add"):  # the summary is being printed: `| head` closes here
            raise error()

    with pytest.raises(error):
        deploy(EXAMPLE, aws["stack"], aws["bucket"], dry_run=True,
               parameters=dict(p.split("=", 1) for p in USER[1::2]),
               s3=aws["s3"], cfn=aws["cfn"], region=REGION, echo=echo, sleep=lambda s: None,
               zips={"collector": b"c", "alarm_handler": b"h", "slack_actions": b"s"})
    assert stack.stack_status(aws["cfn"], aws["stack"]) is None  # no change set, no empty stack


def test_deploy_piped_into_head_exits_1_and_leaves_nothing(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_print = builtins.print

    def closing_print(*args: Any, **kwargs: Any) -> None:
        if kwargs.get("file") is None and str(args[0]).startswith("change set ("):
            raise BrokenPipeError(32, "Broken pipe")
        real_print(*args, **kwargs)

    monkeypatch.setattr(builtins, "print", closing_print)
    monkeypatch.setattr("toolkit.deploy.run.build_zips", lambda config: {
        "collector": b"c", "alarm_handler": b"h", "slack_actions": b"s"})
    rc = main(["deploy", "--config", str(EXAMPLE), "--stack-name", aws["stack"],
               "--bucket", aws["bucket"], "--dry-run", *USER])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1] == ("celery-ecs deploy: output closed: stopped, the unexecuted "
                                   "change set was deleted")
    assert stack.stack_status(aws["cfn"], aws["stack"]) is None


def _runnable(folder: Path) -> str:
    """A root stack moto executes, declaring ApplyDesiredCount and the deploy-owned keys."""
    for sub in ("infrastructure", "services"):
        (folder / sub).mkdir()
        (folder / sub / "x.yaml").write_text("Resources: {}\n")
    own = "".join(f"  {p}:\n    Type: String\n" for p in (
        "TemplateURLPrefix", "LambdaCodeBucket", "CollectorCodeKey", "AlarmHandlerCodeKey",
        "SlackActionsCodeKey"))
    return ("Parameters:\n" + own + "  ApplyDesiredCount:\n    Type: String\n"
            '    AllowedValues: ["true", "false"]\n    Default: "false"\n  Name:\n'
            "    Type: String\n\nResources:\n  Queue:\n    Type: AWS::SQS::Queue\n"
            "    Properties:\n      QueueName: !Ref Name\n")


def test_desired_count_is_applied_on_create_and_left_to_autoscaling_on_update(
    aws: dict[str, Any], tmp_path: Path, unique: str
) -> None:
    template = _runnable(tmp_path)
    kwargs: dict[str, Any] = dict(
        s3=aws["s3"], cfn=aws["cfn"], region=REGION, echo=lambda line: None,
        sleep=lambda s: None, templates=tmp_path, render=lambda s: template,
        zips={"collector": b"c", "alarm_handler": b"h", "slack_actions": b"s"}, poll=0.0)

    def applied() -> str:
        described = aws["cfn"].describe_stacks(StackName=aws["stack"])["Stacks"][0]
        return next(p["ParameterValue"] for p in described["Parameters"]
                    if p["ParameterKey"] == "ApplyDesiredCount")

    deploy(EXAMPLE, aws["stack"], aws["bucket"], parameters={"Name": f"a-{unique}"}, **kwargs)
    assert applied() == "true"
    deploy(EXAMPLE, aws["stack"], aws["bucket"], parameters={"Name": f"b-{unique}"}, **kwargs)
    assert applied() == "false"

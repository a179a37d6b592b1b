"""``celery-ecs deploy`` of the real stacks against a moto server on 127.0.0.1.

``deploy`` packages and uploads the real templates and creates the root change set; moto then
cannot execute the root stack, because it cannot resolve a nested stack's outputs
(``Fn::GetAtt Child.Outputs.X``: its Stack resource has no attributes). So the test plays the
root's part: it creates every nested stack, in the root's order, from the packaged template
deploy uploaded, with exactly the parameters the root template passes (resolved from the
outputs of the stacks before it). What moto cannot create is named below and the rest is
checked in the services themselves.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest
from botocore.parsers import ResponseParserError
from moto.server import ThreadedMotoServer

from tests.cfn import ROOT, Resolver, load
from tests.conftest import free_port
from toolkit.config import load_settings
from toolkit.deploy import render_master
from toolkit.deploy.run import deploy

REGION = "eu-west-1"
EXAMPLE = ROOT / "example.celery-ecs.toml"

#: resource types moto's CloudFormation skips (it warns "not supported" and creates nothing)
MOTO_SKIPS = {
    "AWS::ECS::ClusterCapacityProviderAssociations", "AWS::CloudWatch::Alarm",
    "AWS::ApplicationAutoScaling::ScalableTarget", "AWS::ApplicationAutoScaling::ScalingPolicy",
    "AWS::SNS::TopicPolicy", "AWS::SNS::Subscription", "AWS::Lambda::EventInvokeConfig",
    "AWS::SQS::QueuePolicy", "AWS::Lambda::Url",
}
#: and the Redis stack it cannot create at all: no ElastiCache replication group in moto's
#: CloudFormation, and the broker URL secret reads that group's endpoint. The test deploys
#: with BrokerMode=existing; redis.yaml is checked in tests/test_templates_aws.py.
NOT_ON_MOTO = {"Redis": "AWS::ElastiCache::ReplicationGroup"}
#: and the outputs it cannot resolve, of a resource type its CloudFormation does not know (it
#: answers 500): the Slack actions function URL (AWS::Lambda::Url), checked in
#: tests/test_templates_aws.py
MOTO_UNRESOLVED_OUTPUTS = {"Monitoring": ("SlackActionsUrl",)}


def _without_outputs(body: str, names: tuple[str, ...]) -> str:
    head, outputs = body.split("\nOutputs:\n", 1) if names else (body, "")
    for name in names:
        block = re.search(rf"(?m)^  {name}:\n(?:    .*\n)+", outputs)
        assert block is not None, name
        outputs = outputs.replace(block.group(0), "")
    return f"{head}\nOutputs:\n{outputs}" if names else body


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return {}\n")
    return buffer.getvalue()


def _created(cfn: Any, name: str, template: dict[str, Any]) -> tuple[dict[str, str], set[str]]:
    """The stack's outputs and the resource types moto skipped."""
    described = cfn.describe_stacks(StackName=name)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
    listed = cfn.describe_stack_resources(StackName=name)["StackResources"]
    made = {r["LogicalResourceId"] for r in listed if r.get("LogicalResourceId")}
    active = {k: v for k, v in template["Resources"].items() if "Condition" not in v}
    skipped = {v["Type"] for k, v in active.items() if k not in made}
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}, skipped


@pytest.mark.filterwarnings("ignore::UserWarning")  # moto: "Tried to parse ... not supported"
def test_the_real_stacks_deploy_offline(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, unique: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "1")
    s3, cfn = boto3.client("s3", region_name=REGION), boto3.client("cloudformation",
                                                                    region_name=REGION)
    bucket = f"offline-{unique}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    sm = boto3.client("secretsmanager", region_name=REGION)
    slack = sm.create_secret(Name=f"{unique}/slack", SecretString="{}")["ARN"]
    broker = sm.create_secret(Name=f"{unique}/broker", SecretString="rediss://h:6379/0")["ARN"]
    given = {"WorkerImage": "img", "CeleryApp": "proj", "SlackSecretArn": slack,
             "BrokerMode": "existing", "ExistingBrokerSecretArn": broker,
             "BeatService": "true", "BeatMaxInterval": "30"}
    lines: list[str] = []

    # 1. deploy: package, upload, change set, execute; moto fails the execution with an HTTP
    # 500 page (its nested Stack has no get_cfn_attribute), which botocore cannot parse
    with pytest.raises(ResponseParserError) as refused:
        deploy(EXAMPLE, f"root-{unique}", bucket, parameters=given, s3=s3, cfn=cfn,
               iam=boto3.client("iam", region_name=REGION), region=REGION, echo=lines.append,
               sleep=lambda s: None, zips={"collector": _zip(), "alarm_handler": _zip(),
                                                   "slack_actions": _zip()},
               poll=0.0)
    assert "500 Internal Server Error" in str(refused.value)
    assert "change set (CREATE): 12 add" in lines  # moto: conditional stacks included

    # 2. the root's part: each nested stack from its packaged template, with the root's wiring
    settings = load_settings(EXAMPLE, environ={}, require_broker=False)
    (tmp_path / "master.yaml").write_text(render_master(settings))
    root = load(tmp_path / "master.yaml")
    prefix = next(line.split("templates under ", 1)[1].rstrip("/)") for line in lines
                  if "templates under" in line)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    code = {k.split("/")[-1].split("-")[0]: k for k in keys if "/lambdas/" in k}
    params = given | {
        "TemplateURLPrefix": f"https://{bucket}.s3.{REGION}.amazonaws.com/{prefix}",
        "LambdaCodeBucket": bucket, "CollectorCodeKey": code["collector"],
        "AlarmHandlerCodeKey": code["alarm_handler"], "SlackActionsCodeKey": code["slack_actions"],
        "ApplyDesiredCount": "true"}
    outputs: dict[str, str] = {}
    skipped: dict[str, set[str]] = {}
    order = ["VPC", "SecurityGroups", "ECS", "Monitoring", "Beat", "WorkerDefaultService",
             "WorkerEmailsService", "DefaultQueueAlarms", "ReportsQueueAlarms",
             "EmailsQueueAlarms"]
    stacks = {k for k, v in root["Resources"].items()
              if v["Type"] == "AWS::CloudFormation::Stack"}
    assert stacks == set(order) | set(NOT_ON_MOTO)
    for logical in order:
        resolver = Resolver(root, params, attrs=outputs)
        assert resolver.condition("CreateBroker") is False
        assert resolver.condition("RunBeat") is True
        props = resolver.resource(logical)
        key = urlparse(props["TemplateURL"]).path.lstrip("/")
        assert key in keys  # the packaged copy deploy uploaded
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        body = _without_outputs(body, MOTO_UNRESOLVED_OUTPUTS.get(logical, ()))
        (tmp_path / f"{logical}.yaml").write_text(body)
        name = f"{unique}-{logical}"
        cfn.create_stack(StackName=name, TemplateBody=body, Capabilities=["CAPABILITY_NAMED_IAM"],
                         Parameters=[{"ParameterKey": k, "ParameterValue": ",".join(v)
                                      if isinstance(v, list) else str(v)}
                                     for k, v in props["Parameters"].items()])
        out, skipped[logical] = _created(cfn, name, load(tmp_path / f"{logical}.yaml"))
        outputs.update({f"{logical}.Outputs.{k}": v for k, v in out.items()})
        assert skipped[logical] <= MOTO_SKIPS, skipped[logical]

    assert skipped["Monitoring"] == {"AWS::CloudWatch::Alarm", "AWS::SNS::TopicPolicy",
                                     "AWS::SNS::Subscription", "AWS::Lambda::EventInvokeConfig",
                                     "AWS::SQS::QueuePolicy", "AWS::Lambda::Url"}
    assert skipped["WorkerDefaultService"] == {
        "AWS::CloudWatch::Alarm", "AWS::ApplicationAutoScaling::ScalableTarget",
        "AWS::ApplicationAutoScaling::ScalingPolicy"}

    # 3. what was created, read back from the services
    env, cluster = settings.environment, outputs["ECS.Outputs.Cluster"]
    ecs = boto3.client("ecs", region_name=REGION)
    services = ecs.describe_services(cluster=cluster, services=["worker-default", "worker-emails"],
                                     include=["TAGS"])["services"]
    assert {s["serviceName"]: s["desiredCount"] for s in services} == {
        "worker-default": 2, "worker-emails": 2}  # ApplyDesiredCount on creation
    beat = ecs.describe_services(cluster=cluster, services=["celery-beat"])["services"][0]
    assert beat["desiredCount"] == 1
    # (moto drops the deployment configuration; "never two beats" is checked on the template)
    family = ecs.describe_task_definition(taskDefinition=beat["taskDefinition"])
    container = family["taskDefinition"]["containerDefinitions"][0]
    assert container["healthCheck"]["command"] == ["CMD", "celery-ecs", "healthcheck", "beat"]
    assert container["command"][3:6] == ["beat", "--max-interval", "30"]
    # (moto's CloudFormation drops the service's Tags; the opt-in tag is checked on the
    # template in tests/test_cloudformation.py and end to end in the sandbox)
    functions = boto3.client("lambda", region_name=REGION)
    collector = functions.get_function(FunctionName=f"{env}-celery-ecs-collector")
    handler = functions.get_function(FunctionName=f"{env}-celery-ecs-alarm-handler")
    variables = collector["Configuration"]["Environment"]["Variables"]
    assert variables["STATE_TABLE"] == f"{env}-celery-ecs-state"
    assert variables["CELERY_ECS_BROKER_SECRET_ARN"] == broker
    assert handler["Configuration"]["Environment"]["Variables"]["SLACK_ESCALATION_MENTION"] == ""
    buttons = functions.get_function(FunctionName=f"{env}-celery-ecs-slack-actions")
    assert buttons["Configuration"]["Environment"]["Variables"]["SLACK_ALLOWED_USERS"] == ""
    assert buttons["Configuration"]["Environment"]["Variables"]["STATE_TABLE"] == (
        f"{env}-celery-ecs-state")
    assert "ReservedConcurrentExecutions" not in json.dumps(
        functions.get_function_concurrency(FunctionName=f"{env}-celery-ecs-collector"))
    rule = boto3.client("events", region_name=REGION).describe_rule(
        Name=f"{env}-celery-ecs-alarm-state")
    pattern = json.loads(rule["EventPattern"])
    assert pattern["detail"]["configuration"]["metrics"]["metricStat"]["metric"]["dimensions"][
        "$or"] == [{"Environment": [env]}, {"ClusterName": [cluster]}]
    table = boto3.client("dynamodb", region_name=REGION).describe_table(
        TableName=f"{env}-celery-ecs-state")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]

"""IAM proven, not assumed: each Lambda's code paths against a moto server with IAM enforcement
on, signed as a principal holding exactly the policy the template gives that function
(extracted from monitoring.yaml, intrinsics resolved for the test account).

The cases are a table of (function, code path). With the full policy every call is allowed and
the path does its job; with any one statement removed, at least one case of that function is
denied. Enforcement: tests/iam_enforce.py (moto checks actions only; it adds resources and
condition keys).
"""

from __future__ import annotations

import importlib
import io
import json
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer
from parliament import analyze_policy_string

from tests.aws_ecs import age_deployments
from tests.cfn import ACCOUNT, REGION, ROOT, Resolver, load
from tests.conftest import free_port, load_event
from tests.iam_enforce import Ledger, enforced
from tests.slack_server import SlackServer
from toolkit.registry import WorkerHeartbeat, write_heartbeat

pytestmark = pytest.mark.redis
REDIS_URL = "redis://127.0.0.1:6379/1"
MONITORING = load(ROOT / "infrastructure" / "monitoring.yaml")
ROLES = {"collector": ("CollectorRole", "CollectorFunction"),
         "alarm_handler": ("AlarmHandlerRole", "AlarmHandlerFunction"),
         "slack_actions": ("SlackActionsRole", "SlackActionsFunction")}
PRESSER = "U0IAMONCALL"  # in SlackAllowedUsers
SIGNING_SECRET = "iam-signing-secret-0f1e2d3c"


@dataclass
class World:
    env: str
    endpoint: str
    cluster: str
    services: tuple[str, ...]
    other_task: str  # a task ARN in another cluster
    broker_secret: str
    slack_secret: str
    key_arn: str
    subnet: str
    table: str
    prefix: str
    config: Path
    slack: SlackServer
    resolver: Resolver
    used: dict[str, dict[str, set[str]]] = field(default_factory=dict)

    def policy(self, function: str) -> dict[str, Any]:
        props = MONITORING["Resources"][ROLES[function][0]]["Properties"]
        doc: dict[str, Any] = self.resolver.resolve(props["Policies"][0]["PolicyDocument"])
        return doc

    def environment(self, function: str) -> dict[str, str]:
        props = MONITORING["Resources"][ROLES[function][1]]["Properties"]
        env = self.resolver.resolve(props["Environment"])["Variables"]
        return {k: str(v) for k, v in env.items()}

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    running = pytest.MonkeyPatch()
    running.setenv("MOTO_ECS_SERVICE_RUNNING", "1")  # moto: rollouts complete, tasks run
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    slack = SlackServer().start()
    env = f"iam{int(time.time() * 1000) % 10**8}"
    cluster = f"{env}-cluster"
    kw: dict[str, Any] = dict(region_name=REGION, endpoint_url=endpoint,
                              aws_access_key_id="seed", aws_secret_access_key="seed")
    ecs = boto3.client("ecs", **kw)
    # c: two tasks, one of them hung; d, e: the Slack buttons' (redeploy; stop one of two tasks)
    services = (f"{env}-a", f"{env}-b", f"{env}-c", f"{env}-d", f"{env}-e")
    ecs.create_cluster(clusterName=cluster)
    ecs.create_cluster(clusterName=f"{env}-other")
    ecs.register_task_definition(family=f"{env}-td", containerDefinitions=[
        {"name": "worker", "image": "w", "memory": 256, "essential": True}])
    cw = boto3.client("cloudwatch", **kw)
    for name in services:
        two = name.endswith(("-c", "-e"))
        running.setenv("MOTO_ECS_SERVICE_RUNNING", "2" if two else "1")  # read at create
        ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=f"{env}-td",
                           desiredCount=2 if two else 1,
                           tags=[{"key": "celery-ecs:remediate", "value": "true"},
                                 {"key": "Environment", "value": env}])
        running.setenv("MOTO_ECS_SERVICE_RUNNING", "1")
        age_deployments(cluster, name, 3600)
        # the live evidence the handler reads before any ECS call: WorkerStuck 1 lately (c:
        # WorkersStuck 1, one hung task of two)
        metric = "WorkersStuck" if name.endswith("-c") else "WorkerStuck"
        cw.put_metric_data(Namespace="Celery", MetricData=[{
            "MetricName": metric, "Value": 1.0, "Unit": "None",
            "Timestamp": datetime.now(UTC) - timedelta(seconds=ago),
            "Dimensions": [{"Name": "Environment", "Value": env},
                           {"Name": "ClusterName", "Value": cluster},
                           {"Name": "ServiceName", "Value": name}]} for ago in (0, 60, 120)])
    sm = boto3.client("secretsmanager", **kw)
    broker = sm.create_secret(Name=f"{env}/broker", SecretString=REDIS_URL)["ARN"]
    slack_secret = sm.create_secret(Name=f"{env}/slack", SecretString=json.dumps(
        {"SLACK_BOT_TOKEN": "xoxb-iam", "SLACK_CHANNEL": "C0IAM",
         "SLACK_SIGNING_SECRET": SIGNING_SECRET}))["ARN"]
    key = boto3.client("kms", **kw).create_key()["KeyMetadata"]["Arn"]
    table = f"{env}-celery-ecs-state"
    boto3.client("dynamodb", **kw).create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    boto3.client("sqs", **kw).create_queue(QueueName=f"{env}-celery-ecs-failed-invocations")
    logs = boto3.client("logs", **kw)
    for group in ("collector", "alarm-handler", "slack-actions"):
        logs.create_log_group(logGroupName=f"/celery-ecs/{env}/{group}")
    ec2 = boto3.client("ec2", **kw)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    prefix = f"{env}:"
    config = tmp_path_factory.mktemp("iam") / "celery-ecs.toml"
    config.write_text(f'environment = "{env}"\n[broker]\nglobal_keyprefix = "{prefix}"\n'
                      f'[[services]]\ncluster = "{cluster}"\nservice = "{services[0]}"\n'
                      f'queues = ["{env}-q"]\n')
    arn = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:{{}}"
    resolver = Resolver(MONITORING, {
        "EnvironmentName": env, "ClusterName": cluster, "Subnets": [subnet],
        "CollectorSecurityGroup": "sg", "BrokerSecretArn": broker, "SlackSecretArn": slack_secret,
        "Queues": f"{env}-q", "CollectorConfigFile": str(config), "LambdaCodeBucket": "b",
        "CollectorCodeKey": "c", "AlarmHandlerCodeKey": "h", "Remediation": "enabled",
        "SlackActionsCodeKey": "s", "SlackAllowedUsers": PRESSER,
        # every case remedies once per run, and the statement-removal runs repeat them
        "MaxRemediationsPerHour": 100},
        refs={"StateTable": table, "DeadLetterQueue": "dlq", "AlarmTopic": "topic"},
        attrs={"StateTable.Arn": arn.format("dynamodb", f"table/{table}"),
               "MonitoringKey.Arn": key,
               "DeadLetterQueue.Arn": arn.format("sqs", f"{env}-celery-ecs-failed-invocations"),
               "CollectorLogGroup.Arn": arn.format(
                   "logs", f"log-group:/celery-ecs/{env}/collector:*"),
               "AlarmHandlerLogGroup.Arn": arn.format(
                   "logs", f"log-group:/celery-ecs/{env}/alarm-handler:*"),
               "SlackActionsLogGroup.Arn": arn.format(
                   "logs", f"log-group:/celery-ecs/{env}/slack-actions:*")})
    # the function the Slack actions invoke themselves (their job): moto's Lambda without
    # Docker accepts the asynchronous invocation and runs nothing; the case runs the job
    _moto_config(endpoint, {"lambda": {"use_docker": False}})
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        "Principal": {"Service": "lambda.amazonaws.com"}}]}
    role = boto3.client("iam", **kw).create_role(
        RoleName=f"{env}-slack-actions", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    boto3.client("lambda", **kw).create_function(
        FunctionName=f"{env}-celery-ecs-slack-actions", Runtime="python3.12", Role=role,
        Handler="handler.handler", Code={"ZipFile": _handler_zip()})
    yield World(env, endpoint, cluster, services,
                f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{env}-other/0123456789abcdef",
                broker, slack_secret, key, subnet, table, prefix, config, slack, resolver)
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    _moto_config(endpoint, {"lambda": {"use_docker": True}})
    slack.stop()
    server.stop()
    running.undo()


def _moto_config(endpoint: str, config: dict[str, Any]) -> None:
    """moto's process-wide configuration (here: which Lambda backend answers)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/config", method="POST",
                                     data=json.dumps(config).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback only
        assert answer.status == 201


def _handler_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(ROOT.parent / "lambdas" / "slack_actions" / "handler.py", "handler.py")
    return buffer.getvalue()


# ---- the code paths ----

Case = Callable[[World], None]


def collector_cycle(world: World) -> None:
    """lambdas/collector/handler.py: one cycle with a worker service (Fargate task ARN in the
    registry, so the service is found through DescribeTasks)."""
    client = redis.Redis.from_url(REDIS_URL)
    task = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{world.cluster}/{world.env}0task"
    write_heartbeat(client, WorkerHeartbeat(
        node=f"celery@{world.env}", queues=(f"{world.env}-q",), updated=time.time(),
        concurrency=2, ecs_task_arn=task, ecs_cluster=world.cluster, ttl=60.0),
        ttl=60.0, prefix=world.prefix)
    module = importlib.import_module("lambdas.collector.handler")
    module._state.clear()
    try:
        result = module.handler({"source": "aws.events"}, None)
    finally:
        module._state.clear()
    assert result["ok"], result["errors"]


def verdict_records(world: World) -> None:
    """lambdas/collector/handler.py with STATE_TABLE (the template sets it): a cold container's
    first cycle reads the existing records once (BatchGetItem) and writes this cycle's
    (BatchWriteItem). A refused write would be an error of the cycle (collector_cycle asserts
    none); EXPECTED_ACTIONS checks that both calls were made."""
    assert world.environment("collector").get("STATE_TABLE") == world.table
    collector_cycle(world)


def _on_behalf(world: World, group: str) -> None:
    """What Lambda does with the function's role: its log stream, the dead-letter message
    (encrypted with the monitoring key: SQS uses the sender's data key)."""
    logs = world.client("logs")
    stream = f"s{time.time_ns()}"
    logs.create_log_stream(logGroupName=f"/celery-ecs/{world.env}/{group}", logStreamName=stream)
    logs.put_log_events(logGroupName=f"/celery-ecs/{world.env}/{group}", logStreamName=stream,
                        logEvents=[{"timestamp": int(time.time() * 1000), "message": "x"}])
    sqs = world.client("sqs")
    url = f"{world.endpoint}/{ACCOUNT}/{world.env}-celery-ecs-failed-invocations"
    sqs.send_message(QueueUrl=url, MessageBody="{}")
    kms = world.client("kms")
    blob = kms.encrypt(KeyId=world.key_arn, Plaintext=b"x")["CiphertextBlob"]
    kms.decrypt(KeyId=world.key_arn, CiphertextBlob=blob)
    kms.generate_data_key(KeyId=world.key_arn, KeySpec="AES_256")
    kms.describe_key(KeyId=world.key_arn)


def collector_on_behalf(world: World) -> None:
    _on_behalf(world, "collector")
    ec2 = world.client("ec2")  # the VPC function's interfaces
    eni = ec2.create_network_interface(SubnetId=world.subnet)["NetworkInterface"]
    ec2.assign_private_ip_addresses(NetworkInterfaceId=eni["NetworkInterfaceId"],
                                    SecondaryPrivateIpAddressCount=1)
    ips = [a["PrivateIpAddress"] for a in ec2.describe_network_interfaces(
        NetworkInterfaceIds=[eni["NetworkInterfaceId"]])["NetworkInterfaces"][0][
        "PrivateIpAddresses"] if not a["Primary"]]
    ec2.unassign_private_ip_addresses(NetworkInterfaceId=eni["NetworkInterfaceId"],
                                      PrivateIpAddresses=ips)
    ec2.delete_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"])


def _stuck_event(world: World, service: str) -> dict[str, Any]:
    text = json.dumps(load_event("eventbridge_worker_stuck_alarm"))
    text = (text.replace("prod-worker-emails", f"{world.env}-{service}")
            .replace('"prod-cluster"', f'"{world.cluster}"')
            .replace('"worker-emails"', f'"{service}"').replace('"prod"', f'"{world.env}"')
            .replace("2024-01-01T12:00:00.000", _now_ms())  # a new state change each time:
            .replace("2024-01-01T12:00:00", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")))
    event: dict[str, Any] = json.loads(text)  # no run is a duplicate of an earlier one's
    return event


def _now_ms() -> str:
    time.sleep(0.002)  # two calls never share a millisecond
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _handle(world: World, event: dict[str, Any]) -> dict[str, Any]:
    """The alarm handler in a new container: no responder and no Slack secret cached (else a
    run signed with a policy lacking ReadSlackSecret passes on what an earlier run read)."""
    from toolkit.alarms.credentials import clear_secret_cache

    module = importlib.import_module("lambdas.alarm_handler.handler")
    module._responder = None
    clear_secret_cache()
    try:
        result: dict[str, Any] = module.handler(event, None)
    finally:
        module._responder = None
        clear_secret_cache()
    return result


def handler_remediation(world: World) -> None:
    """lambdas/alarm_handler/handler.py: a WorkerStuck ALARM of an opted-in service, with the
    state table: Slack alert, claim, ledger, forced deployment, remediated-at tag, follow-up."""
    _ready_again(world, world.services[0])  # whatever an earlier (reduced, failed) run left
    result = _handle(world, _stuck_event(world, world.services[0]))
    assert result["alarms"][0]["remediation"] == "deployed", json.dumps(result["alarms"][0])
    age_deployments(world.cluster, world.services[0], 3600)  # the next run is not in cooldown


def handler_without_state_table(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same path when STATE_TABLE is unset: the hourly cap is counted from the tags of the
    cluster's services (ListServices)."""
    monkeypatch.delenv("STATE_TABLE")
    _ready_again(world, world.services[1])
    result = _handle(world, _stuck_event(world, world.services[1]))
    assert result["alarms"][0]["remediation"] == "deployed", json.dumps(result["alarms"][0])
    age_deployments(world.cluster, world.services[1], 3600)


def _one_hung_task(world: World, service: str, reason: str, backlog: tuple[int, ...]) -> Any:
    """Two RUNNING tasks of ``service`` and a fresh ``degraded`` verdict record naming the first
    (through moto's backends: the principals under test may not run tasks or write records, and
    must not need to). Task states stay put until ``state_manager.unset_transition``."""
    from moto.dynamodb.models import dynamodb_backends
    from moto.ecs.models import ecs_backends
    from moto.moto_api import state_manager

    from toolkit.verdictrecord import VerdictRecord

    _ready_again(world, service)
    # moto advances a task's status on every DescribeTasks: keep it RUNNING, as on ECS
    state_manager.set_transition(model_name="ecs::task",
                                 transition={"progression": "manual", "times": 10**9})
    ecs = ecs_backends[ACCOUNT][REGION]
    hung, _ = (ecs.run_task(world.cluster, f"{world.env}-td", 1, None, "", None, "FARGATE",
                            {"awsvpcConfiguration": {"subnets": [world.subnet]}},
                            group=f"service:{service}")[0] for _ in range(2))
    record = VerdictRecord(world.env, world.cluster, service, "degraded", time.time(), 60.0,
                           (reason,), (hung.task_arn,), backlog)
    dynamodb_backends[ACCOUNT][REGION].put_item(world.table, record.to_item())
    return hung


def stop_tasks(world: World) -> None:
    """lambdas/alarm_handler/handler.py: a WorkersStuck ALARM of a degraded service stops exactly
    the task its verdict record names (DescribeTasks, then StopTask, this cluster only). The
    task and the record are put in place through moto's backends: the handler's principal may
    not run tasks or write records, and must not need to."""
    from moto.moto_api import state_manager

    service = world.services[2]
    hung = _one_hung_task(world, service, "1 of 2 workers dead or hung while 1 make progress",
                          (3, 4, 5))
    event = _stuck_event(world, service)
    text = json.dumps(event).replace("-WorkerStuck", "-WorkersStuck").replace(
        '"WorkerStuck"', '"WorkersStuck"')
    try:
        result = _handle(world, json.loads(text))
    finally:
        state_manager.unset_transition(model_name="ecs::task")
    assert result["alarms"][0]["remediation"] == "stopped", json.dumps(result["alarms"][0])
    assert hung.desired_status == "STOPPED"
    age_deployments(world.cluster, service, 3600)  # the next run is not in cooldown


def handler_on_behalf(world: World) -> None:
    _on_behalf(world, "alarm-handler")


def _press(world: World, monkeypatch: pytest.MonkeyPatch, action: str, service: str,
           tasks: tuple[str, ...] = ()) -> str:
    """lambdas/slack_actions/handler.py as Lambda runs it: the signed request (the signing
    secret from SLACK_SECRET_ARN, the job handed to the function itself with
    lambda:InvokeFunction), then that job in a new container (the bot token read again, the
    guards, the remedy, the reply). The reply's text."""
    from toolkit.alarms.buttons import ButtonValue
    from toolkit.alarms.credentials import clear_secret_cache
    from toolkit.alarms.slackactions.deferral import LambdaDeferrer
    from toolkit.sandbox.press import block_actions, function_url_event

    metric = "WorkersStuck" if tasks else "WorkerStuck"
    value = ButtonValue(f"{world.env}-{service}-{metric}", world.cluster, service, tasks)
    payload = block_actions({"action_id": action, "value": value.encode()}, user=PRESSER,
                            channel="C0IAM", message_ts="1700000001.000100",
                            response_url=f"{world.slack.url}/actions/T/1/x")
    jobs: list[dict[str, Any]] = []
    invoke = LambdaDeferrer.defer

    def deferring(self: LambdaDeferrer, event: dict[str, Any], run: Any) -> None:
        invoke(self, event, run)  # the real asynchronous invocation, against moto
        jobs.append(event)

    monkeypatch.setattr(LambdaDeferrer, "defer", deferring)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", f"{world.env}-celery-ecs-slack-actions")
    module = importlib.import_module("lambdas.slack_actions.handler")
    before = len(world.slack.messages())
    try:
        for event in (function_url_event(payload, SIGNING_SECRET), None):
            module._app = None  # a new container: the secret is read again
            clear_secret_cache()
            if event is None:
                (event,) = jobs
            answer = module.handler(event, None)
            assert answer.get("statusCode", 200) == 200, answer
    finally:
        module._app = None
        clear_secret_cache()
    posted = world.slack.messages()[before:]
    assert len(posted) == 1, posted
    return json.dumps(posted[0].json)


def _ready_again(world: World, service: str) -> None:
    """Forget the last remedy of ``service`` (through moto's backends: the principal may not),
    so that the next run of a case acts again instead of meeting the cooldown. Called before
    each remedying case too: a reduced-policy run that deployed and then failed leaves the
    service in its cooldown, and the cases run in any order under pytest-xdist."""
    from moto.dynamodb.models import dynamodb_backends
    from moto.ecs.models import ecs_backends

    dynamodb_backends[ACCOUNT][REGION].delete_item(
        world.table, {"pk": {"S": f"remediate#{world.cluster}/{service}"}})
    ecs = ecs_backends[ACCOUNT][REGION]
    arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/{world.cluster}/{service}"
    ecs.untag_resource(arn, ["celery-ecs:remediated-at"])
    age_deployments(world.cluster, service, 3600)


def press_redeploy(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """"Redeploy now" on service d: the forced deployment and its remediated-at tag."""
    service = world.services[3]
    _ready_again(world, service)
    reply = _press(world, monkeypatch, "celery-ecs-redeploy", service)
    assert f"Redeployed by <@{PRESSER}>" in reply, reply
    _ready_again(world, service)


def press_stop(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """"Stop stuck tasks" on service e: DescribeTasks, then StopTask of the recorded task (the
    task and the verdict record put in place through moto's backends)."""
    from moto.moto_api import state_manager

    service = world.services[4]
    hung = _one_hung_task(world, service, "1 of 2 workers dead or hung", (3, 4))
    try:
        reply = _press(world, monkeypatch, "celery-ecs-stop-tasks", service, (hung.task_arn,))
    finally:
        state_manager.unset_transition(model_name="ecs::task")
    assert f"Stuck tasks stopped by <@{PRESSER}>" in reply, reply
    assert hung.desired_status == "STOPPED"
    _ready_again(world, service)


def press_mute(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """"Mute 1 h": the mute record in the state table, the reply in the thread."""
    reply = _press(world, monkeypatch, "celery-ecs-mute", world.services[3])
    assert "Muted by" in reply or "Already muted by" in reply, reply


def actions_on_behalf(world: World) -> None:
    _on_behalf(world, "slack-actions")


@dataclass(frozen=True)
class Path_:
    function: str
    name: str
    run: Callable[..., None]
    pending: bool = False
    needs_monkeypatch: bool = False


CASES = [
    Path_("collector", "cycle with services", collector_cycle),
    Path_("collector", "verdict-record write", verdict_records),
    Path_("collector", "Lambda on its behalf (logs, ENIs, dead letters, key)", collector_on_behalf),
    Path_("alarm_handler", "remediation", handler_remediation),
    Path_("alarm_handler", "remediation without a state table", handler_without_state_table,
          needs_monkeypatch=True),
    Path_("alarm_handler", "WorkersStuck: StopTask of the recorded task", stop_tasks),
    Path_("alarm_handler", "Lambda on its behalf (logs, dead letters, key)", handler_on_behalf),
    Path_("slack_actions", "press: Redeploy now", press_redeploy, needs_monkeypatch=True),
    Path_("slack_actions", "press: Stop stuck tasks", press_stop, needs_monkeypatch=True),
    Path_("slack_actions", "press: Mute 1 h", press_mute, needs_monkeypatch=True),
    Path_("slack_actions", "Lambda on its behalf (logs, dead letters, key)", actions_on_behalf),
]


# ---- running a function's cases as a principal with a given policy ----

def _principal(world: World, name: str, policy: dict[str, Any]) -> tuple[str, str]:
    iam = boto3.client("iam", region_name=REGION, endpoint_url=world.endpoint,
                       aws_access_key_id="seed", aws_secret_access_key="seed")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="template", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def run_cases(world: World, function: str, policy: dict[str, Any],
              monkeypatch: pytest.MonkeyPatch, only: set[str] | None = None,
              used: dict[str, set[str]] | None = None) -> tuple[Ledger, list[str]]:
    """Run the cases of ``function`` (those named in ``only``, else all) signed with
    ``policy``; the ledger and the failed cases. ``used`` collects, per case, the statements
    (Sids) that allowed its calls."""
    access, secret = _principal(world, f"{function}-{time.time_ns()}", policy)
    failed = []
    ledger = Ledger()
    with monkeypatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", world.endpoint)
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        mp.setenv("AWS_ACCESS_KEY_ID", access)
        mp.setenv("AWS_SECRET_ACCESS_KEY", secret)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        mp.setattr(boto3, "DEFAULT_SESSION", None)
        for key, value in world.environment(function).items():
            mp.setenv(key, value)
        mp.setenv("SLACK_API_URL", world.slack.api_url)
        with enforced(ledger):
            for case in (c for c in CASES if c.function == function):
                if only is not None and case.name not in only:
                    continue
                before, start = len(ledger.denied()), len(ledger.decisions)
                try:
                    if case.needs_monkeypatch:
                        with monkeypatch.context() as inner:
                            case.run(world, inner)
                    else:
                        case.run(world)
                except Exception as exc:  # noqa: BLE001 - a denied call surfaces many ways
                    failed.append(f"{case.name}: {type(exc).__name__}: {exc}")
                    continue
                if len(ledger.denied()) > before:
                    failed.append(f"{case.name}: denied {ledger.denied()[before:]}")
                if used is not None:
                    used[case.name] = {s for d in ledger.decisions[start:] for s in d.sids}
    return ledger, failed


EXPECTED_ACTIONS = {
    "collector": {
        "secretsmanager:GetSecretValue", "ecs:DescribeServices", "ecs:DescribeTasks",
        "cloudwatch:GetMetricData", "cloudwatch:PutMetricData",
        "dynamodb:BatchWriteItem", "dynamodb:BatchGetItem",
        "logs:CreateLogStream", "logs:PutLogEvents", "sqs:SendMessage", "kms:Encrypt",
        "kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey", "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"},
    "alarm_handler": {
        "secretsmanager:GetSecretValue", "dynamodb:GetItem", "dynamodb:PutItem",
        "dynamodb:DeleteItem", "ecs:DescribeServices", "ecs:UpdateService", "ecs:TagResource",
        "ecs:ListServices", "ecs:StopTask", "ecs:DescribeTasks", "cloudwatch:GetMetricData",
        "logs:CreateLogStream", "logs:PutLogEvents", "sqs:SendMessage", "kms:Encrypt",
        "kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"},
    "slack_actions": {
        "secretsmanager:GetSecretValue", "lambda:InvokeFunction", "dynamodb:GetItem",
        "dynamodb:PutItem", "ecs:DescribeServices", "ecs:UpdateService", "ecs:TagResource",
        "ecs:DescribeTasks", "ecs:StopTask", "logs:CreateLogStream", "logs:PutLogEvents",
        "sqs:SendMessage", "kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey",
        "kms:DescribeKey"},
}
#: granted but no case calls it, and why: ListTagsForResource (see the template's comment);
#: DeleteItem gives a per-service lock back when the ECS action failed after every guard
#: passed, which no moto path makes happen
UNEXERCISED = {"alarm_handler": {"ecs:ListTagsForResource"},
               "slack_actions": {"dynamodb:DeleteItem"}}


@pytest.mark.parametrize("function", ROLES)
def test_every_call_of_every_path_is_allowed_by_the_template_policy(
    world: World, function: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: dict[str, set[str]] = {}
    ledger, failed = run_cases(world, function, world.policy(function), monkeypatch, used=used)
    assert failed == []
    world.used[function] = used
    allowed = {d.action for d in ledger.decisions if d.allowed}
    assert allowed == EXPECTED_ACTIONS[function]
    granted = {a for st in world.policy(function)["Statement"]
               for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    # nothing granted that no path uses (bar the documented exception)
    assert granted - allowed == UNEXERCISED.get(function, set())


def _sids(function: str) -> list[tuple[str, str]]:
    role = MONITORING["Resources"][ROLES[function][0]]["Properties"]
    return [(function, st["Sid"]) for st in role["Policies"][0]["PolicyDocument"]["Statement"]]


@pytest.mark.parametrize("function,sid", [p for f in ROLES for p in _sids(f)])
def test_removing_any_statement_breaks_a_path(
    world: World, function: str, sid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = world.policy(function)
    reduced = replace_statements(policy, [s for s in policy["Statement"] if s["Sid"] != sid])
    # only the cases whose calls this statement allowed with the full policy (all of them
    # when the full-policy test did not run first); none at all would fail below, rightly
    used = world.used.get(function)
    only = None if used is None else {name for name, sids in used.items() if sid in sids}
    _, failed = run_cases(world, function, reduced, monkeypatch, only=only)
    assert failed, f"{function} still works without {sid}"


def replace_statements(policy: dict[str, Any], statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {**policy, "Statement": statements}


# ---- the linter ----

#: parliament's findings on these policies, each explained in docs/deployment.md ("What
#: parliament says"): the Lambda VPC interface actions, which EC2 authorises on no narrower
#: resource Lambda could name in advance (AWSLambdaVPCAccessExecutionRole grants them on "*").
EXPLAINED_FINDINGS = {
    "collector": {("RESOURCE_STAR", ("ec2:AssignPrivateIpAddresses", "ec2:CreateNetworkInterface",
                                     "ec2:DeleteNetworkInterface",
                                     "ec2:UnassignPrivateIpAddresses"))},
    "alarm_handler": set(),
    "slack_actions": set(),
}


@pytest.mark.parametrize("function", ROLES)
def test_parliament_findings_are_exactly_the_explained_ones(world: World, function: str) -> None:
    analyzed = analyze_policy_string(json.dumps(world.policy(function)))
    findings = {(f.issue, tuple(sorted(f.detail)) if isinstance(f.detail, list) else f.detail)
                for f in analyzed.findings}
    assert findings == EXPLAINED_FINDINGS[function]


def test_the_handler_cannot_stop_another_clusters_tasks(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    access, secret = _principal(world, f"stopper-{time.time_ns()}", world.policy("alarm_handler"))
    ecs = boto3.client("ecs", region_name=REGION, endpoint_url=world.endpoint,
                       aws_access_key_id=access, aws_secret_access_key=secret)
    ledger = Ledger()
    with enforced(ledger), pytest.raises(ClientError) as denied:
        ecs.stop_task(cluster=f"{world.env}-other", task=world.other_task)
    # moto answers a JSON-protocol call it denies with its XML AccessDenied body and HTTP 403,
    # which botocore reports as code "403"
    assert denied.value.response["Error"]["Code"] == "403"
    assert "is not authorized to perform: ecs:StopTask" in str(denied.value)
    assert [(d.action, d.resource) for d in ledger.denied()] == [
        ("ecs:StopTask", world.other_task)]


def test_the_slack_actions_may_invoke_only_themselves(world: World) -> None:
    access, secret = _principal(world, f"presser-{time.time_ns()}", world.policy("slack_actions"))
    functions = boto3.client("lambda", region_name=REGION, endpoint_url=world.endpoint,
                             aws_access_key_id=access, aws_secret_access_key=secret)
    other = f"{world.env}-celery-ecs-alarm-handler"
    ledger = Ledger()
    with enforced(ledger), pytest.raises(ClientError) as denied:
        functions.invoke(FunctionName=other, InvocationType="Event", Payload=b"{}")
    # moto's XML AccessDenied body on a REST-JSON API: botocore reports the code "403"
    assert (denied.value.response["Error"]["Code"], denied.value.response["ResponseMetadata"][
        "HTTPStatusCode"]) == ("403", 403)
    assert "is not authorized to perform: lambda:Invoke" in str(denied.value)
    assert [(d.action, d.resource) for d in ledger.denied()] == [
        ("lambda:InvokeFunction", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{other}")]

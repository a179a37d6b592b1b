"""The templates against what AWS documents (issue 21), read through cfn-lint's decoder with the
intrinsics resolved (tests/cfn.py): values that would fail or hurt on a real account."""

from __future__ import annotations

import fnmatch
import ssl
from typing import Any

import pytest
from kombu import Connection

from tests.cfn import ROOT, Resolver, load
from toolkit.deploy.artifacts import s3_url

MONITORING = load(ROOT / "infrastructure" / "monitoring.yaml")
SERVICE = load(ROOT / "services" / "celery-worker" / "service.yaml")
CLUSTER = load(ROOT / "infrastructure" / "ecs-cluster.yaml")
REDIS = load(ROOT / "infrastructure" / "redis.yaml")
BEAT = load(ROOT / "services" / "celery-beat" / "service.yaml")

MONITORING_PARAMS = {
    "EnvironmentName": "prod", "ClusterName": "prod-cluster", "Subnets": ["subnet-1"],
    "CollectorSecurityGroup": "sg-1", "BrokerSecretArn": "arn:aws:secretsmanager:b",
    "SlackSecretArn": "arn:aws:secretsmanager:s", "Queues": "q", "LambdaCodeBucket": "b",
    "CollectorCodeKey": "c.zip", "AlarmHandlerCodeKey": "h.zip", "SlackActionsCodeKey": "s.zip",
}
MONITORING_ATTRS = {"CollectorRole.Arn": "r1", "AlarmHandlerRole.Arn": "r2",
                    "DeadLetterQueue.Arn": "dlq", "MonitoringKey.Arn": "key",
                    "StateTable.Arn": "table", "CollectorLogGroup.Arn": "lg1",
                    "AlarmHandlerLogGroup.Arn": "lg2", "AlarmStateChangeRule.Arn": "rule",
                    "CollectorSchedule.Arn": "sched", "CollectorFunction.Arn": "f1",
                    "AlarmHandlerFunction.Arn": "f2", "SlackActionsRole.Arn": "r3",
                    "SlackActionsLogGroup.Arn": "lg3", "SlackActionsFunction.Arn": "f3",
                    "SlackActionsUrl.FunctionUrl": "https://u.lambda-url.eu-west-1.on.aws/"}
MONITORING_REFS = {n: n for n in MONITORING["Resources"]} | {"StateTable": "prod-celery-ecs-state"}


def monitoring(**params: Any) -> Resolver:
    return Resolver(MONITORING, MONITORING_PARAMS | params, refs=MONITORING_REFS,
                    attrs=MONITORING_ATTRS)


# ---- 1. reserved concurrency is opt-in ----

@pytest.mark.parametrize("function,param", [
    ("CollectorFunction", "CollectorReservedConcurrency"),
    ("AlarmHandlerFunction", "AlarmHandlerReservedConcurrency"),
    ("SlackActionsFunction", "SlackActionsReservedConcurrency"),
])
def test_reserved_concurrency_is_absent_unless_asked_for(function: str, param: str) -> None:
    assert MONITORING["Parameters"][param]["Default"] == 0
    assert "ReservedConcurrentExecutions" not in monitoring().resource(function)
    assert monitoring(**{param: 3}).resource(function)["ReservedConcurrentExecutions"] == 3


# ---- 3. an update never resets the count autoscaling chose ----

SERVICE_PARAMS = {"EnvironmentName": "prod", "ClusterName": "prod-cluster",
                  "CapacityProvider": "FARGATE", "ServiceName": "w", "Subnets": ["s"],
                  "SecurityGroup": "sg", "WorkerImage": "i", "CeleryApp": "a", "Queues": "q",
                  "BrokerSecretArn": "b", "AlarmTopicArn": "t", "LogsKmsKeyArn": "k"}


@pytest.mark.parametrize("apply,minimum,maximum,desired", [
    ("true", 1, 10, 2),     # first creation: the config's count
    ("false", 1, 10, None),  # an update of an autoscaled service: omitted, so kept
    ("false", 3, 3, 3),     # no autoscaling room: the template's count always
])
def test_desired_count_only_on_create_or_without_autoscaling_room(
    apply: str, minimum: int, maximum: int, desired: int | None
) -> None:
    resolver = Resolver(SERVICE, SERVICE_PARAMS | {
        "ApplyDesiredCount": apply, "MinCapacity": minimum, "MaxCapacity": maximum,
        "DesiredCount": desired if desired is not None else 2},
        refs={"TaskDefinition": "td", "LogGroup": "lg"},
        attrs={"ExecutionRole.Arn": "e", "TaskRole.Arn": "t"})
    assert resolver.resource("Service").get("DesiredCount") == desired
    assert SERVICE["Parameters"]["ApplyDesiredCount"]["Default"] == "false"


# ---- 4. EC2 hosts do not block a stack delete or rollback ----

def test_ec2_hosts_are_drained_not_protected_from_scale_in() -> None:
    r = Resolver(CLUSTER, {"EnvironmentName": "p", "LaunchType": "EC2", "Subnets": ["s"],
                           "SecurityGroup": "sg", "ECSAMI": "ami"},
                 refs={"ContainerHostAutoScalingGroup": "asg", "Cluster": "p-cluster",
                       "ContainerHostLaunchTemplate": "lt", "ContainerHostRole": "role"},
                 attrs={"ContainerHostInstanceProfile.Arn": "ip",
                        "ContainerHostLaunchTemplate.LatestVersionNumber": "1"})
    provider = r.resource("CapacityProvider")["AutoScalingGroupProvider"]
    assert provider["ManagedTerminationProtection"] == "DISABLED"
    assert provider["ManagedDraining"] == "ENABLED"
    assert provider["ManagedScaling"]["Status"] == "ENABLED"
    assert r.resource("ContainerHostAutoScalingGroup")["NewInstancesProtectedFromScaleIn"] is False

    # ---- 9. tasks cannot reach the instance role ----
    data = r.resource("ContainerHostLaunchTemplate")["LaunchTemplateData"]
    assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1}
    assert "echo ECS_AWSVPC_BLOCK_IMDS=true >> /etc/ecs/ecs.config" in data["UserData"]
    assert "ECS_CLUSTER=p-cluster" in data["UserData"]


# ---- 5. the broker URL makes kombu verify the certificate ----

def _broker_url(template: dict[str, Any]) -> str:
    text = Resolver(template, {"EnvironmentName": "p", "Subnets": ["s"], "SecurityGroup": "g"},
                    refs={"AuthTokenSecret": "tok"},
                    attrs={"ReplicationGroup.PrimaryEndPoint.Address": "master.x.cache.example",
                           "ReplicationGroup.PrimaryEndPoint.Port": "6379"}
                    ).resource("BrokerUrlSecret")["SecretString"]
    return str(text).replace("{{resolve:secretsmanager:tok:SecretString:token}}", "T0KEN")


def test_kombu_verifies_the_elasticache_certificate() -> None:
    url = _broker_url(REDIS)
    assert url == "rediss://:T0KEN@master.x.cache.example:6379/0?ssl_cert_reqs=required"
    assert Connection(url).ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    # what the issue saw: without the parameter kombu falls back to CERT_NONE
    assert Connection(url.split("?")[0]).ssl == {"ssl_cert_reqs": ssl.CERT_NONE}


# ---- 6. what holds data or keys survives a delete or a replacing update ----

@pytest.mark.parametrize("template,logical,policy", [
    (REDIS, "ReplicationGroup", "Snapshot"),
    (REDIS, "AuthTokenSecret", "Retain"),
    (REDIS, "BrokerUrlSecret", "Retain"),
    (MONITORING, "StateTable", "Retain"),
    (MONITORING, "MonitoringKey", "Retain"),
    (MONITORING, "CollectorLogGroup", "Retain"),
    (MONITORING, "AlarmHandlerLogGroup", "Retain"),
    (MONITORING, "SlackActionsLogGroup", "Retain"),
    (SERVICE, "LogGroup", "Retain"),
    (BEAT, "LogGroup", "Retain"),
])
def test_deletion_and_replacement_keep_data(template: dict[str, Any], logical: str,
                                            policy: str) -> None:
    resource = template["Resources"][logical]
    assert (resource.get("DeletionPolicy"), resource.get("UpdateReplacePolicy")) == (
        policy, policy)


def test_every_data_holding_resource_is_in_the_table_above() -> None:
    kinds = {"AWS::ElastiCache::ReplicationGroup", "AWS::SecretsManager::Secret",
             "AWS::DynamoDB::Table", "AWS::KMS::Key", "AWS::Logs::LogGroup"}
    found = sorted(
        (path.name, name) for path in ROOT.rglob("*.yaml")
        for name, res in load(path).get("Resources", {}).items() if res["Type"] in kinds)
    assert len(found) == 10  # LogGroup twice: a worker service and the beat service
    for _, name in found:
        assert name in {"ReplicationGroup", "AuthTokenSecret", "BrokerUrlSecret", "StateTable",
                        "MonitoringKey", "CollectorLogGroup", "AlarmHandlerLogGroup",
                        "SlackActionsLogGroup", "LogGroup"}


# ---- 8. template URLs in the stack's partition ----

@pytest.mark.parametrize("region,url", [
    ("eu-west-1", "https://b.s3.eu-west-1.amazonaws.com/k.yaml"),
    ("cn-north-1", "https://b.s3.cn-north-1.amazonaws.com.cn/k.yaml"),
    ("us-gov-west-1", "https://b.s3.us-gov-west-1.amazonaws.com/k.yaml"),
])
def test_s3_urls_use_the_partition_suffix(region: str, url: str) -> None:
    assert s3_url("b", region, "k.yaml") == url


# ---- the alarm route: exactly this environment's alarms (EventBridge semantics) ----

def _leaf_values(event: Any, path: list[str]) -> list[Any]:
    """Every value at ``path``, descending into arrays of objects as EventBridge does."""
    if not path:
        return event if isinstance(event, list) else [event]
    if isinstance(event, list):
        return [v for item in event for v in _leaf_values(item, path)]
    if isinstance(event, dict) and path[0] in event:
        return _leaf_values(event[path[0]], path[1:])
    return []


def _filter_matches(value: Any, f: Any) -> bool:
    if isinstance(f, dict):
        (kind, arg), = f.items()
        if kind == "wildcard":
            return isinstance(value, str) and fnmatch.fnmatchcase(value, arg)
        if kind == "prefix":
            return isinstance(value, str) and value.startswith(arg)
        raise NotImplementedError(kind)
    return bool(value == f)


def matches(pattern: dict[str, Any], event: Any, path: list[str] | None = None) -> bool:
    """EventBridge matching for the filters the rule uses (exact, wildcard, prefix, $or):
    all fields must match (AND); any filter of a field's list (OR); an array in the event
    matches when any of its values does."""
    path = path or []
    for key, sub in pattern.items():
        if key == "$or":
            if not any(matches(p, event, path) for p in sub):
                return False
        elif isinstance(sub, dict):
            if not matches(sub, event, [*path, key]):
                return False
        else:
            values = _leaf_values(event, [*path, key])
            if not any(_filter_matches(v, f) for v in values for f in sub):
                return False
    return True


def _alarm_event(name: str, **dimensions: str) -> dict[str, Any]:
    return {"source": "aws.cloudwatch", "detail-type": "CloudWatch Alarm State Change",
            "detail": {"alarmName": name, "configuration": {"metrics": [
                {"id": "e1", "expression": "a - b"},
                {"id": "m1", "metricStat": {"metric": {"name": "X", "namespace": "N",
                                                       "dimensions": dimensions}}}]}}}


@pytest.mark.parametrize("event,routed", [
    (_alarm_event("prod-worker-a-WorkerStuck", Environment="prod", ClusterName="prod-cluster",
                  ServiceName="worker-a"), True),
    (_alarm_event("prod-worker-a-WorkersStuck", Environment="prod"), True),
    (_alarm_event("prod-CollectorHeartbeat", Environment="prod"), True),
    (_alarm_event("prod-emails-QueueAge", Environment="prod", Queue="emails"), True),
    (_alarm_event("prod-BeatStale", Environment="prod"), True),
    (_alarm_event("prod-BrokerMemoryHigh", Environment="prod"), True),
    (_alarm_event("prod-BrokerEvictions", Environment="prod"), True),
    (_alarm_event("prod-eu-BeatStale", Environment="prod-eu"), False),
    (_alarm_event("prod-w-MemoryHigh", ClusterName="prod-cluster", ServiceName="w"), True),
    # another environment whose name starts with "prod-": the prefix used to take these
    (_alarm_event("prod-eu-worker-a-WorkerStuck", Environment="prod-eu"), False),
    (_alarm_event("prod-eu-w-MemoryHigh", ClusterName="prod-eu-cluster", ServiceName="w"), False),
    (_alarm_event("prod-eu-CollectorHeartbeat", Environment="prod-eu"), False),
    # this environment's dimension, but not an alarm the templates create
    (_alarm_event("prod-something-else", Environment="prod"), False),
    (_alarm_event("staging-worker-a-WorkerStuck", Environment="prod"), False),
])
def test_alarm_rule_routes_exactly_this_environment(event: dict[str, Any], routed: bool) -> None:
    pattern = monitoring().resource("AlarmStateChangeRule")["EventPattern"]
    assert matches(pattern, event) is routed


# ---- the coordinated additions: WorkersStuck, missing data kept, env and grants ----

def test_workers_stuck_alarm_and_missing_data_kept() -> None:
    r = Resolver(SERVICE, SERVICE_PARAMS | {"ServiceName": "w"},
                 refs={"Service": "svc"}, attrs={"Service.Name": "w"})
    workers = r.resource("WorkersStuckAlarm")
    assert workers["AlarmName"] == "prod-w-WorkersStuck"
    assert (workers["MetricName"], workers["Namespace"], workers["Statistic"]) == (
        "WorkersStuck", "Celery", "Maximum")
    assert [(d["Name"], d["Value"]) for d in workers["Dimensions"]] == [
        ("Environment", "prod"), ("ClusterName", "prod-cluster"), ("ServiceName", "w")]
    assert (workers["Period"], workers["EvaluationPeriods"], workers["DatapointsToAlarm"],
            workers["Threshold"], workers["ComparisonOperator"]) == (
        60, 3, 3, 1, "GreaterThanOrEqualToThreshold")
    assert workers["AlarmActions"] == workers["OKActions"] == ["t"]
    assert workers["TreatMissingData"] == "ignore"
    assert r.resource("WorkerStuckAlarm")["TreatMissingData"] == "ignore"


def test_lambda_environments() -> None:
    r = monitoring(SlackEscalationMention="<!here>")
    collector = r.resource("CollectorFunction")["Environment"]["Variables"]
    handler = r.resource("AlarmHandlerFunction")["Environment"]["Variables"]
    assert collector["STATE_TABLE"] == handler["STATE_TABLE"] == "prod-celery-ecs-state"
    assert handler["SLACK_ESCALATION_MENTION"] == "<!here>"
    assert MONITORING["Parameters"]["SlackEscalationMention"]["Default"] == ""
    buttons = r.resource("SlackActionsFunction")["Environment"]["Variables"]
    # the same state table, cooldown, cap, mode and environment as the alarm handler
    for key in ("STATE_TABLE", "COOLDOWN_SECONDS", "MAX_REMEDIATIONS_PER_HOUR", "REMEDIATION",
                "ENVIRONMENT", "SLACK_SECRET_ARN", "CELERY_ECS_NAMESPACE"):
        assert buttons[key] == handler[key], key
    assert buttons["SLACK_ALLOWED_USERS"] == "" == MONITORING["Parameters"]["SlackAllowedUsers"][
        "Default"]  # nobody, until someone is named
    assert "SLACK_SIGNING_SECRET" not in buttons  # in the secret, not the environment


# ---- issue 23: celery beat and the broker, alert only ----

def test_beat_stale_alarm_counts_beat_intervals_and_treats_missing_data_as_breaching() -> None:
    assert monitoring().condition("WatchBeat") is False  # no beat watched by default
    assert "BeatStaleAlarm" in MONITORING["Resources"]
    assert MONITORING["Resources"]["BeatStaleAlarm"]["Condition"] == "WatchBeat"
    r = monitoring(BeatMaxInterval=30)
    assert r.condition("WatchBeat") is True
    alarm = r.resource("BeatStaleAlarm")
    assert alarm["AlarmName"] == "prod-BeatStale"
    (expression,) = [m for m in alarm["Metrics"] if "Expression" in m]
    assert expression["Expression"] == "age / 30" and expression["ReturnData"] is True
    (age,) = [m for m in alarm["Metrics"] if "MetricStat" in m]
    assert age["MetricStat"]["Metric"]["MetricName"] == "BeatHeartbeatAge"
    assert age["MetricStat"]["Stat"] == "Maximum" and age["ReturnData"] is False
    assert (alarm["Threshold"], alarm["ComparisonOperator"], alarm["TreatMissingData"]) == (
        3, "GreaterThanThreshold", "breaching")
    assert alarm["AlarmActions"] == alarm["OKActions"] == ["AlarmTopic"]


def test_broker_alarms_fire_on_the_limit_and_on_any_eviction() -> None:
    r = monitoring()
    high = r.resource("BrokerMemoryHighAlarm")
    assert (high["MetricName"], high["Statistic"], high["Threshold"],
            high["ComparisonOperator"], high["TreatMissingData"]) == (
        "BrokerMemoryUtilization", "Maximum", 90, "GreaterThanOrEqualToThreshold", "notBreaching")
    evictions = r.resource("BrokerEvictionsAlarm")
    assert (evictions["MetricName"], evictions["Statistic"], evictions["Threshold"],
            evictions["ComparisonOperator"], evictions["EvaluationPeriods"]) == (
        "BrokerEvictedKeys", "Sum", 0, "GreaterThanThreshold", 1)
    for alarm in (high, evictions):
        assert alarm["Dimensions"] == [{"Name": "Environment", "Value": "prod"}]


def test_beat_service_is_one_task_never_two_with_the_beat_health_check() -> None:
    params = {"EnvironmentName": "prod", "ClusterName": "prod-cluster", "CapacityProvider": "F",
              "Subnets": ["s"], "SecurityGroup": "sg", "WorkerImage": "img", "CeleryApp": "proj",
              "BrokerSecretArn": "arn:b", "LogsKmsKeyArn": "arn:k"}
    r = Resolver(BEAT, params, refs={"TaskDefinition": "td", "LogGroup": "lg"},
                 attrs={"ExecutionRole.Arn": "e", "TaskRole.Arn": "t", "LogGroup.Arn": "lga"})
    service = r.resource("Service")
    assert service["DesiredCount"] == 1
    assert (service["DeploymentConfiguration"]["MinimumHealthyPercent"],
            service["DeploymentConfiguration"]["MaximumPercent"]) == (0, 100)
    (container,) = r.resource("TaskDefinition")["ContainerDefinitions"]
    assert container["HealthCheck"]["Command"] == ["CMD", "celery-ecs", "healthcheck", "beat"]
    assert [str(a) for a in container["Command"]] == [
        "celery", "-A", "proj", "beat", "--max-interval", "30", "--schedule",
        "/tmp/celerybeat-schedule", "--loglevel", "INFO"]
    assert container["ReadonlyRootFilesystem"] is True
    assert container["MountPoints"][0]["ContainerPath"] == "/tmp"


# ---- the Slack buttons' function URL ----

def test_slack_actions_function_url_is_public_and_guarded_in_code() -> None:
    r = monitoring(SlackAllowedUsers="U0AAA,U0BBB")
    url = r.resource("SlackActionsUrl")
    assert (url["AuthType"], url["TargetFunctionArn"]) == ("NONE", "f3")
    public = r.resource("SlackActionsUrlPermission")
    assert (public["Action"], public["Principal"], public["FunctionUrlAuthType"]) == (
        "lambda:InvokeFunctionUrl", "*", "NONE")
    invoke = r.resource("SlackActionsUrlInvokePermission")
    # since October 2025 a URL also needs InvokeFunction: through the URL only
    assert (invoke["Action"], invoke["Principal"], invoke["InvokedViaFunctionUrl"]) == (
        "lambda:InvokeFunction", "*", True)
    retries = r.resource("SlackActionsInvokeConfig")
    assert retries["MaximumRetryAttempts"] == 0  # the job of a press: never twice
    function = r.resource("SlackActionsFunction")
    assert function["Role"] == "r3" and function["Timeout"] == 30
    assert function["Environment"]["Variables"]["SLACK_ALLOWED_USERS"] == "U0AAA,U0BBB"
    statements = r.resource("SlackActionsRole")["Policies"][0]["PolicyDocument"]["Statement"]
    (self_invoke,) = [st for st in statements if st["Action"] == "lambda:InvokeFunction"]
    assert self_invoke["Resource"] == (
        "arn:aws:lambda:eu-west-1:123456789012:function:prod-celery-ecs-slack-actions")
    assert function["FunctionName"] == "prod-celery-ecs-slack-actions"
    assert r.resolve(MONITORING["Outputs"]["SlackActionsUrl"]["Value"]) == (
        "https://u.lambda-url.eu-west-1.on.aws/")

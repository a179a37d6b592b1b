"""Render the root stack ``master.yaml`` from a ``celery-ecs.toml``: a pure function.

The root template only wires nested stacks together. Everything in it is fixed except:

* one ``AWS::CloudFormation::Stack`` of ``services/celery-worker/service.yaml`` per
  ``[[services]]`` entry (its queues, and the deployment keys cpu, memory, concurrency,
  desired_count, min_capacity, max_capacity, remediate);
* one stack of ``services/celery-worker/queue-alarms.yaml`` per configured queue, with the
  thresholds the collector uses (:meth:`Settings.thresholds_for`), so no threshold is written twice;
* the defaults of ``EnvironmentName`` and ``MetricNamespace``, and the collector's queue list.

``cloudformation/master.yaml`` is this function's output for ``example.celery-ecs.toml``
(``tests/test_deploy_render.py`` keeps them identical): edit this module, not that file.
"""

# ruff: noqa: E501  (the template text keeps its own long Description lines)
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable

from toolkit.config import ServiceSettings, Settings, Thresholds
from toolkit.dashboards import cloudwatch_dashboard, compact
from toolkit.errors import ConfigError

__all__ = [
    "BUNDLED_CONFIG", "declared_parameters", "logical_ids", "render_master",
]

#: Name of the celery-ecs.toml inside the collector zip (CELERY_ECS_CONFIG, relative to /var/task).
BUNDLED_CONFIG = "celery-ecs.toml"
#: The dashboard's region, resolved by CloudFormation (Fn::Sub) in the stack's own region.
REGION = "${AWS::Region}"


_HEADER = """AWSTemplateFormatVersion: "2010-09-09"
Description: >
  celery-ecs-toolkit root stack, rendered from <<source>> by celery-ecs deploy
  (toolkit/deploy/master.py). It only wires nested stacks together through their outputs:
  network, security groups, ECS cluster, Redis broker (optional), monitoring (collector, alarm
  handler, alarm topic), celery beat (optional), one stack per worker service and one alarm
  stack per queue. The blocks
  under "Worker services" and "Queues" are generated, one per [[services]] entry and one per
  queue, and differ only in names and parameter values.

"""

_FIXED = """Parameters:
  EnvironmentName:
    Description: Environment name, prefixed to every resource and alarm name and used as the Environment metric dimension.
    Type: String
    AllowedPattern: "[a-z][a-z0-9-]{0,19}"
    Default: <<environment>>
  LaunchType:
    Description: FARGATE (no hosts) or EC2 (launch template, Auto Scaling group and capacity provider on ECS-optimized Amazon Linux 2023).
    Type: String
    AllowedValues: [FARGATE, EC2]
    Default: FARGATE
  BrokerMode:
    Description: create (a new ElastiCache Redis) or existing (a broker URL already stored in Secrets Manager, see ExistingBrokerSecretArn).
    Type: String
    AllowedValues: [create, existing]
    Default: create
  ExistingBrokerSecretArn:
    Description: With BrokerMode existing, the ARN of the Secrets Manager secret whose string is the broker URL; empty otherwise.
    Type: String
    Default: ""
  BrokerPort:
    Description: TCP port of the broker the collector connects to (6379 for Redis).
    Type: Number
    Default: 6379
  SlackSecretArn:
    Description: ARN of the Secrets Manager JSON secret with SLACK_WEBHOOK_URL, or SLACK_BOT_TOKEN and SLACK_CHANNEL.
    Type: String
  Remediation:
    Description: What the alarm handler does when an opted-in worker is stuck (enabled, dry-run or off).
    Type: String
    AllowedValues: [enabled, dry-run, "off"]
    Default: dry-run
  TemplateURLPrefix:
    Description: HTTPS URL of the S3 folder holding the nested templates (infrastructure/ and services/), without a trailing slash.
    Type: String
  LambdaCodeBucket:
    Description: S3 bucket holding the Lambda zips built by celery-ecs package.
    Type: String
  CollectorCodeKey:
    Description: S3 key of the collector zip.
    Type: String
  AlarmHandlerCodeKey:
    Description: S3 key of the alarm handler zip.
    Type: String
  SlackActionsCodeKey:
    Description: S3 key of the Slack actions zip (the alert buttons' function URL).
    Type: String
  WorkerImage:
    Description: Container image of the Celery application (with celery-ecs-toolkit installed).
    Type: String
  CeleryApp:
    Description: Value of celery -A for the workers (the module or module:app of the Celery application).
    Type: String
  MetricNamespace:
    Description: CloudWatch namespace of the toolkit's metrics (namespace in celery-ecs.toml).
    Type: String
    Default: <<namespace>>
  ApplyDesiredCount:
    Description: '"true" sets each worker service''s desired count from celery-ecs.toml (celery-ecs deploy passes it when it creates the stack); "false" leaves the count to autoscaling, so an update never resets it.'
    Type: String
    AllowedValues: ["true", "false"]
    Default: "false"
  CollectorReservedConcurrency:
    Description: Reserved concurrency of the collector Lambda; 0 reserves none (the account must keep 100 unreserved, so a new account cannot reserve).
    Type: Number
    MinValue: 0
    Default: 0
  AlarmHandlerReservedConcurrency:
    Description: Reserved concurrency of the alarm handler Lambda (bounds an alarm storm); 0 reserves none.
    Type: Number
    MinValue: 0
    Default: 0
  SlackEscalationMention:
    Description: Slack mention for escalations (SLACK_ESCALATION_MENTION, e.g. <!here>); empty for none.
    Type: String
    Default: ""
  BeatService:
    Description: '"true" runs celery beat as its own ECS service (one task, WorkerImage, the celery-ecs beat health check); needs BeatMaxInterval. "false" (the default) runs none: set BeatMaxInterval anyway if you run beat elsewhere.'
    Type: String
    AllowedValues: ["true", "false"]
    Default: "false"
  BeatMaxInterval:
    Description: Longest sleep of celery beat between two ticks in seconds (beat_max_loop_interval, or celery beat --max-interval; the beat service uses it). The BeatStale alarm fires after 3 of them without a tick; 0 (the default) means no beat is watched.
    Type: Number
    MinValue: 0
    Default: 0
  SlackAllowedUsers:
    Description: Slack user IDs (comma-separated, e.g. U0123ABCD) who may press the alert buttons (SLACK_ALLOWED_USERS); empty for nobody.
    Type: String
    Default: ""
  SlackActionsReservedConcurrency:
    Description: Reserved concurrency of the Slack actions Lambda; 0 reserves none.
    Type: Number
    MinValue: 0
    Default: 0

Conditions:
  CreateBroker: !Equals [!Ref BrokerMode, create]
  RunBeat: !Equals [!Ref BeatService, "true"]

Rules:
  ExistingBrokerNeedsSecret:
    RuleCondition: !Equals [!Ref BrokerMode, existing]
    Assertions:
      - Assert: !Not [!Equals [!Ref ExistingBrokerSecretArn, ""]]
        AssertDescription: BrokerMode existing needs ExistingBrokerSecretArn.
  BeatServiceNeedsInterval:
    RuleCondition: !Equals [!Ref BeatService, "true"]
    Assertions:
      - Assert: !Not [!Equals [!Ref BeatMaxInterval, 0]]
        AssertDescription: BeatService "true" needs BeatMaxInterval (for example 30).

Resources:
  VPC:
    Type: AWS::CloudFormation::Stack
    Properties:
      TemplateURL: !Sub ${TemplateURLPrefix}/infrastructure/vpc.yaml
      Parameters:
        EnvironmentName: !Ref EnvironmentName

  SecurityGroups:
    Type: AWS::CloudFormation::Stack
    Properties:
      TemplateURL: !Sub ${TemplateURLPrefix}/infrastructure/security-groups.yaml
      Parameters:
        EnvironmentName: !Ref EnvironmentName
        VPC: !GetAtt VPC.Outputs.VPC
        BrokerPort: !Ref BrokerPort

  ECS:
    Type: AWS::CloudFormation::Stack
    Properties:
      TemplateURL: !Sub ${TemplateURLPrefix}/infrastructure/ecs-cluster.yaml
      Parameters:
        EnvironmentName: !Ref EnvironmentName
        LaunchType: !Ref LaunchType
        Subnets: !GetAtt VPC.Outputs.PrivateSubnets
        SecurityGroup: !GetAtt SecurityGroups.Outputs.WorkerSecurityGroup

  Redis:
    Type: AWS::CloudFormation::Stack
    Condition: CreateBroker
    Properties:
      TemplateURL: !Sub ${TemplateURLPrefix}/infrastructure/redis.yaml
      Parameters:
        EnvironmentName: !Ref EnvironmentName
        Subnets: !GetAtt VPC.Outputs.PrivateSubnets
        SecurityGroup: !GetAtt SecurityGroups.Outputs.RedisSecurityGroup

  Monitoring:
    Type: AWS::CloudFormation::Stack
    Properties:
      TemplateURL: !Sub ${TemplateURLPrefix}/infrastructure/monitoring.yaml
      Parameters:
        EnvironmentName: !Ref EnvironmentName
        ClusterName: !GetAtt ECS.Outputs.Cluster
        Subnets: !GetAtt VPC.Outputs.PrivateSubnets
        CollectorSecurityGroup: !GetAtt SecurityGroups.Outputs.CollectorSecurityGroup
        BrokerSecretArn: !If [CreateBroker, !GetAtt Redis.Outputs.BrokerUrlSecretArn, !Ref ExistingBrokerSecretArn]
        SlackSecretArn: !Ref SlackSecretArn
        Remediation: !Ref Remediation
        MetricNamespace: !Ref MetricNamespace
        Queues: <<queues>>
        CollectorConfigFile: <<config_file>>
        LambdaCodeBucket: !Ref LambdaCodeBucket
        CollectorCodeKey: !Ref CollectorCodeKey
        AlarmHandlerCodeKey: !Ref AlarmHandlerCodeKey
        CollectorReservedConcurrency: !Ref CollectorReservedConcurrency
        AlarmHandlerReservedConcurrency: !Ref AlarmHandlerReservedConcurrency
        SlackEscalationMention: !Ref SlackEscalationMention
        BeatMaxInterval: !Ref BeatMaxInterval
        TaskFailureRateThreshold: <<task_failure_rate>>
        TaskFailureRateMinTasks: <<task_failure_min>>
        SlackActionsCodeKey: !Ref SlackActionsCodeKey
        SlackAllowedUsers: !Ref SlackAllowedUsers
        SlackActionsReservedConcurrency: !Ref SlackActionsReservedConcurrency

  Beat:
    Type: AWS::CloudFormation::Stack
    Condition: RunBeat
    Properties:
      TemplateURL: !Sub ${TemplateURLPrefix}/services/celery-beat/service.yaml
      Parameters:
        EnvironmentName: !Ref EnvironmentName
        ClusterName: !GetAtt ECS.Outputs.Cluster
        CapacityProvider: !GetAtt ECS.Outputs.CapacityProvider
        Subnets: !GetAtt VPC.Outputs.PrivateSubnets
        SecurityGroup: !GetAtt SecurityGroups.Outputs.WorkerSecurityGroup
        WorkerImage: !Ref WorkerImage
        CeleryApp: !Ref CeleryApp
        MaxInterval: !Ref BeatMaxInterval
        BrokerSecretArn: !If [CreateBroker, !GetAtt Redis.Outputs.BrokerUrlSecretArn, !Ref ExistingBrokerSecretArn]
        LogsKmsKeyArn: !GetAtt Monitoring.Outputs.MonitoringKeyArn

"""

_SERVICE = """  <<id>>:
    Type: AWS::CloudFormation::Stack
    Properties:
      TemplateURL: !Sub ${TemplateURLPrefix}/services/celery-worker/service.yaml
      Parameters:
        EnvironmentName: !Ref EnvironmentName
        ClusterName: !GetAtt ECS.Outputs.Cluster
        CapacityProvider: !GetAtt ECS.Outputs.CapacityProvider
        Subnets: !GetAtt VPC.Outputs.PrivateSubnets
        SecurityGroup: !GetAtt SecurityGroups.Outputs.WorkerSecurityGroup
        WorkerImage: !Ref WorkerImage
        CeleryApp: !Ref CeleryApp
        MetricNamespace: !Ref MetricNamespace
        BrokerSecretArn: !If [CreateBroker, !GetAtt Redis.Outputs.BrokerUrlSecretArn, !Ref ExistingBrokerSecretArn]
        AlarmTopicArn: !GetAtt Monitoring.Outputs.AlarmTopicArn
        LogsKmsKeyArn: !GetAtt Monitoring.Outputs.MonitoringKeyArn
        ServiceName: <<service>>
        Queues: <<queues>>
        Concurrency: <<concurrency>>
        Cpu: <<cpu>>
        Memory: <<memory>>
        DesiredCount: <<desired_count>>
        ApplyDesiredCount: !Ref ApplyDesiredCount
        MinCapacity: <<min_capacity>>
        MaxCapacity: <<max_capacity>>
        Remediate: <<remediate>>
        MemoryHighThreshold: <<memory_high>>

"""

_QUEUE = """  <<id>>:
    Type: AWS::CloudFormation::Stack
    Properties:
      TemplateURL: !Sub ${TemplateURLPrefix}/services/celery-worker/queue-alarms.yaml
      Parameters:
        EnvironmentName: !Ref EnvironmentName
        MetricNamespace: !Ref MetricNamespace
        AlarmTopicArn: !GetAtt Monitoring.Outputs.AlarmTopicArn
        Queue: <<queue>>
        MaxLength: <<max_length>>
        MaxAge: <<max_age>>

"""

_SERVICES_BANNER = (
    "  # ---- Worker services: one block per [[services]] entry of celery-ecs.toml ----\n\n"
)
_QUEUES_BANNER = (
    "  # ---- Queues: one block per queue (thresholds from [thresholds] and [queues.NAME]) ----\n\n"
)

# The body is rendered here, inline: at ~8 KB it is over the 4,096-byte limit of a parameter.
_DASHBOARD = """
  # ---- The environment's CloudWatch dashboard (celery-ecs dashboard --format cloudwatch) ----

  Dashboard:
    Type: AWS::CloudWatch::Dashboard
    Properties:
      DashboardName: !Sub ${EnvironmentName}-celery-ecs
      DashboardBody: !Sub <<body>>

"""

_OUTPUTS = """Outputs:
  ClusterName:
    Description: Name of the ECS cluster (the cluster of every [[services]] entry in celery-ecs.toml).
    Value: !GetAtt ECS.Outputs.Cluster
  AlarmTopicArn:
    Description: SNS topic every celery-ecs alarm notifies.
    Value: !GetAtt Monitoring.Outputs.AlarmTopicArn
  StateTableName:
    Description: DynamoDB state table of the alarm handler.
    Value: !GetAtt Monitoring.Outputs.StateTableName
  DashboardName:
    Description: Name of the CloudWatch dashboard.
    Value: !Ref Dashboard
  SlackActionsUrl:
    Description: The Slack app's interactivity Request URL (the Slack actions function URL).
    Value: !GetAtt Monitoring.Outputs.SlackActionsUrl
"""

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.,/-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}
_MAX_ID = 200  # CloudFormation allows 255 characters in a logical ID


def _fill(text: str, **values: str) -> str:
    for key, value in values.items():
        text = text.replace(f"<<{key}>>", value)
    return text


def _scalar(value: str) -> str:
    """A YAML scalar for a name: plain when unambiguous, else a JSON (double-quoted) string."""
    if _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def logical_ids(names: Iterable[str], suffix: str) -> dict[str, str]:
    """Stable, unique, alphanumeric logical IDs: ``worker-default`` -> ``WorkerDefault`` + suffix.

    Names that collapse to the same ID (``a-b`` and ``a_b``), or to nothing, get the first 8 hex
    digits of their SHA-256 appended, so an ID never depends on the order of the config.
    """
    names = list(dict.fromkeys(names))
    base = {
        n: "".join(p[:1].upper() + p[1:] for p in re.findall(r"[A-Za-z0-9]+", n))[:_MAX_ID]
        for n in names
    }
    counts: dict[str, int] = {}
    for b in base.values():
        counts[b] = counts.get(b, 0) + 1
    out = {}
    for n in names:
        b = base[n]
        if not b or counts[b] > 1:
            b += hashlib.sha256(n.encode()).hexdigest()[:8]
        out[n] = b + suffix
    return out


def _service_block(settings: Settings, svc: ServiceSettings, logical_id: str) -> str:
    expected = f"{settings.environment}-cluster"
    if svc.cluster != expected:
        raise ConfigError(
            f"service {svc.service}: cluster is {svc.cluster!r}, but the stack creates "
            f"{expected!r} (the ECS stack names it ${{EnvironmentName}}-cluster)"
        )
    d = svc.deployment
    return _fill(
        _SERVICE,
        id=logical_id,
        service=_scalar(svc.service),
        queues=_scalar(",".join(svc.queues)),
        concurrency=str(d.concurrency),
        cpu=str(d.cpu),
        memory=str(d.memory),
        desired_count=str(d.desired_count),
        min_capacity=str(d.min_capacity),
        max_capacity=str(d.max_capacity),
        remediate=json.dumps("true" if d.remediate else "false"),
        memory_high=_number(svc.verdicts.memory_high),
    )


def _queue_block(queue: str, t: Thresholds, logical_id: str) -> str | None:
    if t.max_length is None and t.max_age is None:
        return None  # no threshold: the queue is published and graphed, never alarmed on
    if t.max_length is None or t.max_age is None:
        missing = "max_length" if t.max_length is None else "max_age"
        raise ConfigError(
            f"queue {queue}: the alarms need both max_length and max_age, {missing} is not set "
            f"(set it in [thresholds] or [queues.{queue}])"
        )
    return _fill(
        _QUEUE, id=logical_id, queue=_scalar(queue),
        max_length=_number(t.max_length), max_age=_number(t.max_age),
    )


def sub_literal(text: str) -> str:
    """``text`` for an ``Fn::Sub`` string: every ``${`` but the region's is written ``${!``
    (the dashboards' dynamic labels, ``${PROP('Dim.Task')}``, are CloudWatch's, not Sub's)."""
    return re.sub(r"\$\{(?!AWS::Region\})", "${!", text)


def render_master(settings: Settings, *, source: str = "celery-ecs.toml") -> str:
    """The root template for ``settings``; ``source`` names the config file in its description.

    Raises :class:`ConfigError` (one line) for a config the stack cannot deploy: no
    ``[[services]]``, a service on another cluster than the stack's, a queue with only one of
    its two thresholds.
    """
    if not settings.services:
        raise ConfigError("nothing to deploy: the config has no [[services]] entry")
    dupes = sorted({s.service for s in settings.services
                    if [x.service for x in settings.services].count(s.service) > 1})
    if dupes:
        raise ConfigError(f"service {dupes[0]} appears twice in [[services]]")
    queues = settings.configured_queues()
    service_ids = logical_ids((s.service for s in settings.services), "Service")
    queue_ids = logical_ids(queues, "QueueAlarms")
    blocks = [_service_block(settings, s, service_ids[s.service]) for s in settings.services]
    queue_blocks = [_queue_block(q, settings.thresholds_for(q), queue_ids[q]) for q in queues]
    fixed = _fill(
        _FIXED,
        environment=_scalar(settings.environment),
        namespace=_scalar(settings.namespace),
        queues=_scalar(",".join(queues)) if queues else '""',
        config_file=BUNDLED_CONFIG,
        # [tasks] failure_rate_alarm: 0 creates no TaskFailureRate alarm
        task_failure_rate=_number(settings.tasks.failure_rate_alarm or 0),
        task_failure_min=_number(settings.tasks.failure_rate_min_tasks),
    )
    clean_source = re.sub(r"[^A-Za-z0-9_.+/-]", "_", source.rsplit("/", 1)[-1]) or "celery-ecs.toml"
    return (
        _fill(_HEADER, source=clean_source)
        + fixed
        + _SERVICES_BANNER
        + "".join(blocks)
        + _QUEUES_BANNER
        + "".join(b for b in queue_blocks if b is not None)
        + _fill(_DASHBOARD, body=json.dumps(sub_literal(
            compact(cloudwatch_dashboard(settings, REGION)))))
        + _OUTPUTS
    )


def declared_parameters(template: str) -> dict[str, bool]:
    """Parameter name -> has a Default, read from a template :func:`render_master` wrote."""
    section = ("\n" + template).split("\nParameters:\n", 1)[1].split("\n\n", 1)[0]
    out: dict[str, bool] = {}
    current = ""
    for line in section.splitlines():
        name = re.fullmatch(r"  ([A-Za-z0-9]+):", line)
        if name:
            current = name.group(1)
            out[current] = False
        elif line.startswith("    Default:") and current:
            out[current] = True
    return out

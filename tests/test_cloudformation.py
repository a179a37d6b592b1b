"""Wiring tests of the CloudFormation templates in ``cloudformation/``.

What cfn-lint and checkov cannot see, because they read one template at a time: that the root
stack passes every nested stack exactly the parameters it declares, that ``Child.Outputs.X``
exists, that every alarm watches a metric the toolkit really publishes (with its dimensions),
and that the example root stack says what ``example.celery-ecs.toml`` says. (moto cannot
create alarms or nested-stack outputs, so this is where those parts are tested.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the dev venv

from toolkit.config import load_settings
from toolkit.deploy import render_master
from toolkit.metricnames import METRICS

# What the collector publishes, from the metric table in code (one list, not two).
TOOLKIT_METRICS: dict[str, tuple[tuple[str, ...], ...]] = {
    m.name: m.dimension_sets for m in METRICS
}

# AWS's own metrics the templates may alarm on, with their dimension sets.
_SERVICE = ("ClusterName", "ServiceName")
AWS_METRICS: dict[str, dict[str, tuple[str, ...]]] = {
    "AWS/ECS": {"MemoryUtilization": _SERVICE, "CPUUtilization": _SERVICE,
                "MemoryReservation": ("ClusterName",), "CPUReservation": ("ClusterName",)},
    "ECS/ContainerInsights": {name: _SERVICE for name in (
        "RunningTaskCount", "DesiredTaskCount", "PendingTaskCount",
        "MemoryUtilized", "MemoryReserved", "CpuUtilized", "CpuReserved")},
}

# Actions allowed on Resource "*" (they have no resource type), and the condition key each
# must carry when one exists.
WILDCARD_ACTIONS: dict[str, str | None] = {
    "cloudwatch:PutMetricData": "cloudwatch:namespace",
    "cloudwatch:GetMetricData": None,
    "ecr:GetAuthorizationToken": None,
    "ec2:CreateNetworkInterface": None,
    "ec2:DescribeNetworkInterfaces": None,
    "ec2:DeleteNetworkInterface": None,
    "ec2:AssignPrivateIpAddresses": None,
    "ec2:UnassignPrivateIpAddresses": None,
    # No resource type (Service Authorization Reference): scoped by the ecs:cluster condition.
    "ecs:ListServices": "ecs:cluster",
}

ROOT = Path(__file__).resolve().parent.parent / "cloudformation"
MASTER = ROOT / "master.yaml"
EXAMPLE_CONFIG = ROOT / "example.celery-ecs.toml"
# A second, different config rendered by celery-ecs deploy's renderer: the root-stack wiring
# tests run on it too, so they hold for any celery-ecs.toml, not only for the example.
SECOND_CONFIG = Path(__file__).resolve().parent / "data" / "second.celery-ecs.toml"


# ---- loading ----

class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader that turns the short intrinsic tags into their long JSON form."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506
    return data


def _rendered(config: Path) -> dict[str, Any]:
    settings = load_settings(config, environ={}, require_broker=False)
    data: dict[str, Any] = yaml.load(render_master(settings), Loader=_CfnLoader)  # noqa: S506
    return data


MASTERS = {"example": lambda: load(MASTER), "second": lambda: _rendered(SECOND_CONFIG)}

TEMPLATES = sorted(p for p in ROOT.rglob("*.yaml"))
TEMPLATE_IDS = [str(p.relative_to(ROOT)) for p in TEMPLATES]


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def resources(template: dict[str, Any], kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, res in template.get("Resources", {}).items():
        if res["Type"] == kind:
            yield name, res.get("Properties", {})


_SUB_VAR = re.compile(r"\$\{([^}!]+)\}")


def referenced_names(node: Any) -> set[str]:
    """Every name used by Ref or inside a Fn::Sub string (the first part of A.B)."""
    names: set[str] = set()
    for item in walk(node):
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("Ref"), str):
            names.add(item["Ref"])
        sub = item.get("Fn::Sub")
        if sub is not None:
            text = sub if isinstance(sub, str) else sub[0]
            names.update(m.split(".")[0] for m in _SUB_VAR.findall(text))
    return names


def nested_stacks(master: str = "example") -> Iterator[tuple[str, dict[str, Any], Path]]:
    """(logical id, properties, child template path) of every nested stack of a root stack."""
    for name, props in resources(MASTERS[master](), "AWS::CloudFormation::Stack"):
        url = props["TemplateURL"]["Fn::Sub"]
        prefix = "${TemplateURLPrefix}/"
        assert url.startswith(prefix), f"{name}: TemplateURL must start with {prefix}"
        yield name, props, ROOT / url[len(prefix):]


# ---- the wiring of the root stack ----

@pytest.mark.parametrize("master", MASTERS)
def test_every_nested_template_exists(master: str) -> None:
    for name, _, child in nested_stacks(master):
        assert child.is_file(), f"{name}: {child} does not exist"


@pytest.mark.parametrize(
    "master,name", [(m, n) for m in MASTERS for n, _, _ in nested_stacks(m)]
)
def test_nested_stack_gets_every_required_parameter_and_no_unknown(master: str, name: str) -> None:
    props, child = next((p, c) for n, p, c in nested_stacks(master) if n == name)
    declared = load(child).get("Parameters", {})
    required = {k for k, v in declared.items() if "Default" not in v}
    passed = set(props.get("Parameters", {}))
    assert required <= passed, f"{name}: missing {sorted(required - passed)}"
    assert passed <= set(declared), f"{name}: unknown {sorted(passed - set(declared))}"


@pytest.mark.parametrize("master", MASTERS)
def test_every_getatt_of_a_nested_stack_names_an_existing_output(master: str) -> None:
    children = {n: load(c) for n, _, c in nested_stacks(master)}
    seen = 0
    for item in walk(MASTERS[master]()):
        if isinstance(item, dict) and "Fn::GetAtt" in item:
            target, attribute = item["Fn::GetAtt"]
            assert target in children, f"GetAtt of {target}, which is not a nested stack"
            assert attribute.startswith("Outputs."), attribute
            output = attribute.removeprefix("Outputs.")
            assert output in children[target].get("Outputs", {}), f"{target} has no {output}"
            seen += 1
    assert seen > 10


@pytest.mark.parametrize("master", MASTERS)
def test_root_stack_wires_only_nested_stacks(master: str) -> None:
    # nested stacks, plus the dashboard: its body (~8 KB) is over a parameter's 4,096 bytes
    kinds = [res["Type"] for res in MASTERS[master]()["Resources"].values()]
    assert set(kinds) == {"AWS::CloudFormation::Stack", "AWS::CloudWatch::Dashboard"}
    assert kinds.count("AWS::CloudWatch::Dashboard") == 1


@pytest.mark.parametrize("master", MASTERS)
def test_generated_blocks_are_uniform(master: str) -> None:
    """The per-service and per-queue blocks differ only in names and values the renderer
    fills in from celery-ecs.toml, so celery-ecs deploy can emit them mechanically."""
    per_item = {
        "services/celery-worker/service.yaml": {
            "ServiceName", "Queues", "Concurrency", "Cpu", "Memory", "DesiredCount",
            "MinCapacity", "MaxCapacity", "Remediate", "MemoryHighThreshold"},
        "services/celery-worker/queue-alarms.yaml": {"Queue", "MaxLength", "MaxAge"},
    }
    for child, varying in per_item.items():
        blocks = [p for _, p, c in nested_stacks(master) if c == ROOT / child]
        assert len(blocks) >= 2, child
        shared = [{k: v for k, v in b["Parameters"].items() if k not in varying} for b in blocks]
        assert all(s == shared[0] for s in shared), f"{child}: blocks differ beyond {varying}"
        assert all(set(b["Parameters"]) >= varying for b in blocks), child
        assert all(set(b) == {"TemplateURL", "Parameters"} for b in blocks), child


# ---- every template ----

@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_descriptions(path: Path) -> None:
    template = load(path)
    assert template.get("Description"), "template has no Description"
    for section in ("Parameters", "Outputs"):
        for name, body in template.get(section, {}).items():
            assert body.get("Description"), f"{section} {name} has no Description"


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_every_parameter_is_used(path: Path) -> None:
    template = load(path)
    used = referenced_names({k: v for k, v in template.items() if k != "Parameters"})
    unused = set(template.get("Parameters", {})) - used
    assert not unused, f"unused parameters: {sorted(unused)}"


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_arns_use_the_partition(path: Path) -> None:
    assert "arn:aws:" not in path.read_text()


def _alarm_metrics(props: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The metrics an alarm reads: its single metric, or every MetricStat of its math."""
    if "MetricName" in props:
        yield {k: props.get(k) for k in ("Namespace", "MetricName", "Dimensions")}
    for query in props.get("Metrics", []):
        if "MetricStat" in query:
            yield query["MetricStat"]["Metric"]


def _check_metric(where: str, metric: dict[str, Any]) -> None:
    namespace, name = metric["Namespace"], metric["MetricName"]
    dims = metric.get("Dimensions") or []
    dim_names = tuple(d["Name"] for d in dims)
    if namespace == {"Ref": "MetricNamespace"}:
        assert name in TOOLKIT_METRICS, f"{where}: the toolkit publishes no {name}"
        assert sorted(dim_names) in [sorted(d) for d in TOOLKIT_METRICS[name]], (
            f"{where}: {name} dimensions {dim_names}"
        )
        env = next(d["Value"] for d in dims if d["Name"] == "Environment")
        assert env == {"Ref": "EnvironmentName"}, f"{where}: Environment is not EnvironmentName"
    else:
        assert namespace in AWS_METRICS, f"{where}: namespace {namespace!r}"
        assert name in AWS_METRICS[namespace], f"{where}: {namespace} has no {name}"
        expected = AWS_METRICS[namespace][name]
        assert sorted(dim_names) == sorted(expected), f"{where}: {name} dimensions {dim_names}"


def _alarms() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in TEMPLATES:
        for name, props in resources(load(path), "AWS::CloudWatch::Alarm"):
            yield f"{path.relative_to(ROOT)}:{name}", props


def test_there_are_alarms_of_every_kind() -> None:
    names = {props.get("MetricName") for _, props in _alarms()}
    assert {"WorkerStuck", "WorkersStuck", "QueueLength", "QueueAge", "CollectorHeartbeat",
            "MemoryUtilization"} <= names


@pytest.mark.parametrize("where,props", list(_alarms()), ids=[w for w, _ in _alarms()])
def test_alarm_watches_a_published_metric_with_its_dimensions(
    where: str, props: dict[str, Any]
) -> None:
    metrics = list(_alarm_metrics(props))
    assert metrics, f"{where}: no metric"
    for metric in metrics:
        _check_metric(where, metric)


@pytest.mark.parametrize("where,props", list(_alarms()), ids=[w for w, _ in _alarms()])
def test_alarm_name_starts_with_the_environment(where: str, props: dict[str, Any]) -> None:
    name = props["AlarmName"]["Fn::Sub"]
    assert name.startswith("${EnvironmentName}-"), f"{where}: {name}"
    assert props["AlarmActions"] == props["OKActions"], where


def test_scaling_metric_is_published() -> None:
    found = 0
    for path in TEMPLATES:
        for name, props in resources(load(path), "AWS::ApplicationAutoScaling::ScalingPolicy"):
            spec = props["TargetTrackingScalingPolicyConfiguration"]
            _check_metric(name, spec["CustomizedMetricSpecification"])
            found += 1
    assert found == 1


def _iam_statements() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in TEMPLATES:
        template = load(path)
        for kind in ("AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for name, props in resources(template, kind):
                documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
                if "PolicyDocument" in props:
                    documents.append(props["PolicyDocument"])
                for doc in documents:
                    for statement in doc["Statement"]:
                        yield f"{path.relative_to(ROOT)}:{name}", statement


def test_no_wildcard_resource_where_scoping_exists() -> None:
    wildcards = 0
    for where, statement in _iam_statements():
        resource = statement["Resource"]
        resource_list = resource if isinstance(resource, list) else [resource]
        if "*" not in resource_list:
            continue
        wildcards += 1
        actions = statement["Action"] if isinstance(statement["Action"], list) else [
            statement["Action"]]
        for action in actions:
            assert action in WILDCARD_ACTIONS, f"{where}: {action} on Resource '*'"
            key = WILDCARD_ACTIONS[action]
            if key is not None:
                conditions = statement.get("Condition", {})
                keys = {k for operator in conditions.values() for k in operator}
                assert key in keys, f"{where}: {action} on '*' without the {key} condition"
    assert wildcards > 0


def test_no_wildcard_action() -> None:
    for where, statement in _iam_statements():
        actions = statement["Action"] if isinstance(statement["Action"], list) else [
            statement["Action"]]
        assert not any(a == "*" or a.endswith(":*") for a in actions), where


# ---- the example root stack says what the example celery-ecs.toml says ----

@pytest.mark.parametrize("name,config", [("example", EXAMPLE_CONFIG), ("second", SECOND_CONFIG)])
def test_root_stack_matches_its_config(name: str, config: Path) -> None:
    settings = load_settings(config, environ={}, require_broker=False)
    master = MASTERS[name]()
    assert master["Parameters"]["EnvironmentName"]["Default"] == settings.environment
    assert master["Parameters"]["MetricNamespace"]["Default"] == settings.namespace
    stacks = {
        n: (p["Parameters"], c.relative_to(ROOT).as_posix()) for n, p, c in nested_stacks(name)
    }

    services = {p["ServiceName"]: p for p, c in stacks.values()
                if c == "services/celery-worker/service.yaml"}
    assert set(services) == {s.service for s in settings.services}
    for svc in settings.services:
        assert svc.cluster == f"{settings.environment}-cluster"  # ecs-cluster.yaml's name
        assert services[svc.service]["Queues"] == ",".join(svc.queues)
        deployment = svc.deployment
        assert services[svc.service]["Cpu"] == deployment.cpu
        assert services[svc.service]["Memory"] == deployment.memory
        assert services[svc.service]["Concurrency"] == deployment.concurrency
        assert (services[svc.service]["MinCapacity"], services[svc.service]["DesiredCount"],
                services[svc.service]["MaxCapacity"]) == (
            deployment.min_capacity, deployment.desired_count, deployment.max_capacity)
        assert services[svc.service]["Remediate"] == str(deployment.remediate).lower()

    queues = {p["Queue"]: p for p, c in stacks.values()
              if c == "services/celery-worker/queue-alarms.yaml"}
    assert set(queues) == set(settings.configured_queues())
    for queue, params in queues.items():
        thresholds = settings.thresholds_for(queue)
        assert params["MaxLength"] == thresholds.max_length
        assert params["MaxAge"] == thresholds.max_age

    monitoring = stacks["Monitoring"][0]
    assert monitoring["Queues"] == ",".join(settings.configured_queues())

"""The sandbox's alarms, read from the CloudFormation templates: one source, never a second list.

:func:`alarm_definitions` renders the root template for the sandbox's settings with
:func:`toolkit.deploy.master.render_master`, takes the parameter values it gives each nested
``services/celery-worker/service.yaml`` and ``queue-alarms.yaml`` stack, and resolves the
``AWS::CloudWatch::Alarm`` resources of those templates with them (``!Ref``, ``!Sub``,
``!GetAtt Service.Name``). What comes out is what PutMetricAlarm would be given. Metric-math
alarms (anomaly band, running below desired) are returned too, marked ``math``: the local
stand-in for CloudWatch stores them but evaluates only single-metric alarms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from toolkit.assets import templates
from toolkit.config import Settings

TOPIC = "arn:aws:sns:{region}:123456789012:{env}-celery-ecs-alarms"
_TEMPLATES = ("services/celery-worker/service.yaml", "services/celery-worker/queue-alarms.yaml")


@dataclass(frozen=True)
class AlarmDefinition:
    name: str
    description: str
    namespace: str
    metric: str
    dimensions: tuple[tuple[str, str], ...]
    statistic: str
    period: int
    evaluation_periods: int
    datapoints_to_alarm: int
    threshold: float
    comparison: str
    treat_missing: str
    math: bool = False
    template: str = ""

    def dims(self) -> list[dict[str, str]]:
        return [{"Name": k, "Value": v} for k, v in self.dimensions]

    def put_args(self, topic: str) -> dict[str, Any]:
        """The PutMetricAlarm arguments (single-metric alarms)."""
        return {
            "AlarmName": self.name, "AlarmDescription": self.description,
            "Namespace": self.namespace, "MetricName": self.metric, "Dimensions": self.dims(),
            "Statistic": self.statistic, "Period": self.period,
            "EvaluationPeriods": self.evaluation_periods,
            "DatapointsToAlarm": self.datapoints_to_alarm, "Threshold": self.threshold,
            "ComparisonOperator": self.comparison, "TreatMissingData": self.treat_missing,
            "AlarmActions": [topic], "OKActions": [topic],
        }


def _loader() -> Any:
    import yaml  # type: ignore[import-untyped]  # the sandbox extra; no types-PyYAML

    class Loader(yaml.SafeLoader):  # type: ignore[misc]
        pass

    def intrinsic(loader: Any, suffix: str, node: Any) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}

    Loader.add_multi_constructor("!", intrinsic)
    return lambda text: yaml.load(text, Loader=Loader)  # noqa: S506 - SafeLoader subclass


def _resolve(value: Any, params: dict[str, str]) -> Any:
    """Resolve the intrinsics an alarm uses against ``params`` (unknown names stay visible)."""
    if isinstance(value, list):
        return [_resolve(v, params) for v in value]
    if not isinstance(value, dict):
        return value
    if "Ref" in value:
        return params.get(value["Ref"], f"<{value['Ref']}>")
    if "Fn::GetAtt" in value:
        resource, attr = value["Fn::GetAtt"]
        if (resource, attr) == ("Service", "Name"):
            return params["ServiceName"]
        return params.get(f"{resource}.{attr}", f"<{resource}.{attr}>")
    if "Fn::Sub" in value:
        text = value["Fn::Sub"]
        return re.sub(r"\$\{([A-Za-z0-9:.]+)\}",
                      lambda m: str(params.get(m.group(1), m.group(0))), text)
    return {k: _resolve(v, params) for k, v in value.items()}


def _nested_parameters(settings: Settings, region: str) -> list[tuple[str, dict[str, str]]]:
    """(template, parameter values) of every nested service / queue stack of the root template."""
    from toolkit.deploy.master import render_master

    load = _loader()
    root = load(render_master(settings, source="sandbox"))
    master = {k: str(v.get("Default", "")) for k, v in root["Parameters"].items()}
    outside = {
        "ECS.Outputs.Cluster": f"{settings.environment}-cluster",  # ecs-cluster.yaml's name
        "Monitoring.Outputs.AlarmTopicArn": TOPIC.format(region=region,
                                                         env=settings.environment),
    }
    out = []
    for resource in root["Resources"].values():
        url = resource.get("Properties", {}).get("TemplateURL", {})
        template = next((t for t in _TEMPLATES if str(url.get("Fn::Sub", "")).endswith(t)), None)
        if template is None:
            continue
        values = {}
        for key, raw in resource["Properties"]["Parameters"].items():
            if isinstance(raw, dict) and "Ref" in raw:
                values[key] = master.get(raw["Ref"], "")
            elif isinstance(raw, dict) and "Fn::GetAtt" in raw:
                values[key] = outside.get(".".join(raw["Fn::GetAtt"]), "")
            elif not isinstance(raw, dict):
                values[key] = str(raw)
        out.append((template, values))
    return out


def alarm_definitions(settings: Settings, region: str = "eu-west-1") -> list[AlarmDefinition]:
    """Every alarm the stack for ``settings`` would create, resolved to its values."""
    load = _loader()
    docs: dict[str, Any] = {}
    out = []
    for template, values in _nested_parameters(settings, region):
        if template not in docs:
            docs[template] = load(templates().joinpath(template).read_text())
        doc = docs[template]
        params = {k: str(v.get("Default", "")) for k, v in doc["Parameters"].items()}
        params.update(values)
        params.update({"AWS::Region": region, "AWS::AccountId": "123456789012"})
        for res in doc["Resources"].values():
            if res.get("Type") != "AWS::CloudWatch::Alarm":
                continue
            p = _resolve(res["Properties"], params)
            math = "Metrics" in p
            out.append(AlarmDefinition(
                name=p["AlarmName"], description=p.get("AlarmDescription", ""),
                namespace=p.get("Namespace", ""), metric=p.get("MetricName", ""),
                dimensions=tuple((d["Name"], str(d["Value"])) for d in p.get("Dimensions", [])),
                statistic=p.get("Statistic", ""), period=int(p.get("Period", 60)),
                evaluation_periods=int(p["EvaluationPeriods"]),
                datapoints_to_alarm=int(p.get("DatapointsToAlarm", p["EvaluationPeriods"])),
                threshold=float(p.get("Threshold", 0)), comparison=p["ComparisonOperator"],
                treat_missing=p.get("TreatMissingData", "missing"), math=math, template=template,
            ))
    return out

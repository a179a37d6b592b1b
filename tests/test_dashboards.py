"""The generated dashboards: every published metric has a panel, every query names what the
collector really publishes, the layouts are sound, and the CloudWatch body is accepted.

Golden files: ``tests/golden/dashboard.*.json`` change only on purpose. After a deliberate
change, regenerate them with ``UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_dashboards.py``
and review the diff.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from toolkit import metricnames as mn
from toolkit.cli import main
from toolkit.config import Settings, load_settings
from toolkit.dashboards import (
    PANEL_FOR,
    cloudwatch_dashboard,
    compact,
    grafana_dashboard,
    sections,
)
from toolkit.dashboards.model import MetricQuery
from toolkit.dashboards.panels import ECS_DIMS, ECS_NAMESPACE, INSIGHTS_NAMESPACE

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "cloudformation" / "example.celery-ecs.toml"
GOLDEN = Path(__file__).parent / "golden"
REGION = "eu-west-1"
# AWS's metrics the dashboards read beside the toolkit's: namespace -> {metric: dimensions}
AWS_METRICS = {
    ECS_NAMESPACE: {"MemoryUtilization": ECS_DIMS, "CPUUtilization": ECS_DIMS},
    INSIGHTS_NAMESPACE: {"RunningTaskCount": ECS_DIMS, "DesiredTaskCount": ECS_DIMS},
}


@pytest.fixture(scope="module")
def example() -> Settings:
    return load_settings(EXAMPLE, require_broker=False, environ={})


def _published(namespace: str, metric: str, dims: set[str], settings: Settings) -> bool:
    if namespace == settings.namespace:
        spec = mn.BY_NAME.get(metric)
        return spec is not None and dims in [set(d) for d in spec.dimension_sets]
    return set(AWS_METRICS.get(namespace, {}).get(metric, ("?",))) == dims


# ---- every metric has a panel ---------------------------------------------------------------


@pytest.mark.parametrize("spec", mn.METRICS, ids=lambda s: s.name)
def test_every_published_metric_has_a_panel(spec: mn.MetricSpec, example: Settings) -> None:
    assert spec.name in PANEL_FOR, (
        f"metric {spec.name} (toolkit/metricnames.py) has no dashboard panel: add its builder "
        "to PANEL_FOR in toolkit/dashboards/panels.py")
    section = PANEL_FOR[spec.name](example)
    graphed = {q.metric for p in section.panels for q in p.queries if isinstance(q, MetricQuery)}
    assert spec.name in graphed
    grafana = {t.get("metricName") for p in grafana_dashboard(example)["panels"]
               for t in p.get("targets", [])}
    cloudwatch = {row[1] for w in cloudwatch_dashboard(example, REGION)["widgets"]
                  for row in w["properties"]["metrics"] if isinstance(row[0], str)}
    assert spec.name in grafana and spec.name in cloudwatch


def test_panel_for_names_only_published_metrics() -> None:
    assert set(PANEL_FOR) <= set(mn.BY_NAME)


# ---- queries name what the collector publishes ----------------------------------------------


def test_grafana_queries_name_published_metrics_and_dimensions(example: Settings) -> None:
    dash = grafana_dashboard(example)
    targets = [t for p in dash["panels"] for t in p.get("targets", [])]
    metric_targets = [t for t in targets if t["metricEditorMode"] == 0]
    assert len(metric_targets) >= 10
    for t in metric_targets:
        assert _published(t["namespace"], t["metricName"], set(t["dimensions"]), example), t
        assert t["datasource"] == {"type": "cloudwatch", "uid": "${datasource}"}
    for t in targets:  # math expressions refer only to ids defined in the same panel
        if t["metricEditorMode"] == 1:
            assert re.fullmatch(r"ANOMALY_DETECTION_BAND\(m1, 3\)", t["expression"])


def test_cloudwatch_rows_name_published_metrics_and_dimensions(example: Settings) -> None:
    body = cloudwatch_dashboard(example, REGION)
    rows = [r for w in body["widgets"] for r in w["properties"]["metrics"]]
    for row in rows:
        if isinstance(row[0], dict):
            assert row[0]["expression"].startswith("ANOMALY_DETECTION_BAND(")
            continue
        namespace, metric, *rest = row
        pairs = rest[:-1] if isinstance(rest[-1], dict) else rest
        dims = dict(zip(pairs[::2], pairs[1::2], strict=True))
        assert _published(namespace, metric, set(dims), example), row
        if mn.ENVIRONMENT in dims:
            assert dims[mn.ENVIRONMENT] == "production"
        if mn.QUEUE in dims:
            assert dims[mn.QUEUE] in example.configured_queues()
        if mn.SERVICE_NAME in dims:
            assert (dims[mn.CLUSTER_NAME], dims[mn.SERVICE_NAME]) in {
                (s.cluster, s.service) for s in example.services}


# ---- thresholds are the alarms' thresholds -----------------------------------------------


def test_threshold_lines_come_from_the_config(example: Settings) -> None:
    body = cloudwatch_dashboard(example, REGION)
    lines = {w["properties"]["title"]: [a["value"] for a in w["properties"].get(
        "annotations", {}).get("horizontal", [])] for w in body["widgets"]}
    assert lines["Queue length: emails"] == [100]  # [queues.emails] max_length
    assert lines["Queue length: default"] == [1000]  # [thresholds] max_length
    assert lines["Oldest message age"] == [600]
    assert lines["Memory: worker-emails"] == [90.0]
    panels = {p["title"]: p for p in grafana_dashboard(example)["panels"]}
    steps = panels["Queue length: emails"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 100]
    assert panels["Queue length: emails"]["fieldConfig"]["defaults"]["custom"][
        "thresholdsStyle"]["mode"] == "dashed"


def test_memory_high_is_read_from_the_services_verdicts(example: Settings) -> None:
    from dataclasses import replace

    from toolkit.dashboards.panels import memory_high

    svc = example.services[0]
    assert memory_high(example, svc) == 90.0  # [verdicts] default
    tighter = replace(svc, verdicts=replace(svc.verdicts, memory_high=75.0))
    assert memory_high(example, tighter) == 75.0


# ---- Grafana structure ------------------------------------------------------------------------


def _overlaps(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int]]:
    bad = []
    for i, (x1, y1, w1, h1) in enumerate(boxes):
        assert x1 >= 0 and x1 + w1 <= 24 and w1 > 0 and h1 > 0
        for j, (x2, y2, w2, h2) in enumerate(boxes[:i]):
            if x1 < x2 + w2 and x2 < x1 + w1 and y1 < y2 + h2 and y2 < y1 + h1:
                bad.append((j, i))
    return bad


def test_grafana_ids_unique_and_grid_not_overlapping(example: Settings) -> None:
    panels = grafana_dashboard(example)["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert _overlaps([(p["gridPos"]["x"], p["gridPos"]["y"], p["gridPos"]["w"],
                       p["gridPos"]["h"]) for p in panels]) == []
    refs = [[t["refId"] for t in p["targets"]] for p in panels if "targets" in p]
    assert all(len(r) == len(set(r)) for r in refs)


def test_grafana_variables_resolve(example: Settings) -> None:
    dash = grafana_dashboard(example)
    defined = {v["name"] for v in dash["templating"]["list"]}
    text = json.dumps(dash["panels"]) + json.dumps(dash["annotations"])
    used = set(re.findall(r"\$\{?(\w+)", text)) - {"PROP"}
    assert used and used <= defined, used - defined
    by_name = {v["name"]: v for v in dash["templating"]["list"]}
    assert by_name["datasource"]["query"] == "cloudwatch"
    assert by_name["queue"]["query"] == "default,reports,emails"
    assert by_name["service"]["query"] == "worker-default,worker-emails"
    assert by_name["environment"]["current"]["value"] == "production"


def test_grafana_model_is_current_schema_and_importable_shape(example: Settings) -> None:
    dash = grafana_dashboard(example)
    assert dash["schemaVersion"] >= 39
    assert "id" not in dash and dash["uid"] == "celery-ecs-production"
    types = {p["type"] for p in dash["panels"]}
    assert types == {"row", "timeseries", "state-timeline"}
    stuck = next(p for p in dash["panels"] if p["type"] == "state-timeline")
    assert stuck["targets"][0]["metricName"] == mn.WORKER_STUCK
    anno = dash["annotations"]["list"][1]
    assert anno["target"]["queryMode"] == "Annotations"
    assert anno["target"]["metricName"] == mn.WORKER_STUCK
    assert anno["target"]["alarmNamePrefix"] == "production-"


def test_environment_flag_names_another_dashboard(tmp_path: Path) -> None:
    staging = load_settings(EXAMPLE, environment="staging", require_broker=False, environ={})
    dash = grafana_dashboard(staging)
    assert dash["uid"] == "celery-ecs-staging"
    rows = cloudwatch_dashboard(staging, REGION)["widgets"][0]["properties"]["metrics"]
    assert rows[0][3] == "staging"


def test_a_config_without_services_has_no_service_panels(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('environment = "dev"\nqueues = ["a"]\n')
    settings = load_settings(cfg, require_broker=False, environ={})
    titles = {p.title for s in sections(settings) for p in s.panels}
    assert "Queue length: a" in titles and not any(t.startswith("Memory") for t in titles)
    body = cloudwatch_dashboard(settings, REGION)
    assert all(w["properties"]["metrics"] for w in body["widgets"])


# ---- CloudWatch structure and PutDashboard -----------------------------------------------


def test_cloudwatch_body_structure(example: Settings) -> None:
    body = cloudwatch_dashboard(example, REGION)
    assert set(body) == {"start", "periodOverride", "widgets"}
    for w in body["widgets"]:
        assert w["type"] == "metric"
        assert {"x", "y", "width", "height", "properties"} <= set(w)
        props = w["properties"]
        assert props["view"] == "timeSeries" and props["region"] == REGION
        assert props["stat"] in {"Maximum", "Minimum", "Average", "Sum"}
        assert props["period"] in {60, 300}
    assert _overlaps([(w["x"], w["y"], w["width"], w["height"]) for w in body["widgets"]]) == []


@mock_aws
def test_put_dashboard_accepts_the_body(example: Settings) -> None:
    cw = boto3.client("cloudwatch", region_name=REGION)
    text = compact(cloudwatch_dashboard(example, REGION))
    cw.put_dashboard(DashboardName="production-celery-ecs", DashboardBody=text)
    got = cw.get_dashboard(DashboardName="production-celery-ecs")
    assert json.loads(got["DashboardBody"]) == json.loads(text)
    with pytest.raises(ClientError) as err:
        cw.get_dashboard(DashboardName="staging-celery-ecs")
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"


def test_the_rendered_root_stack_carries_the_same_body_inline(example: Settings) -> None:
    # At ~8 KB the body is over the 4,096-byte limit of a template parameter, so
    # `celery-ecs deploy` writes it into the root template itself, region left to Fn::Sub.
    from toolkit.deploy import render_master

    body = compact(cloudwatch_dashboard(example, "${AWS::Region}"))
    assert len(body.encode()) > 4096
    line = next(x for x in render_master(example).splitlines() if "DashboardBody: !Sub" in x)
    assert json.loads(line.split("!Sub ", 1)[1]) == body


# ---- the command ----------------------------------------------------------------------------


def test_command_writes_both_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g.json"
    assert main(["dashboard", "--config", str(EXAMPLE), "--format", "grafana",
                 "--output", str(out)]) == 0
    assert json.loads(out.read_text())["uid"] == "celery-ecs-production"
    assert main(["dashboard", "--config", str(EXAMPLE), "--format", "cloudwatch",
                 "--region", REGION]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["widgets"]


def test_command_config_error_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboard", "--config", str(tmp_path / "missing.toml"),
                 "--format", "grafana"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config file not found" in err
    assert main(["dashboard", "--config", str(EXAMPLE), "--format", "png"]) == 2


# ---- golden files ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["grafana", "cloudwatch"])
def test_golden(fmt: str, example: Settings) -> None:
    built = grafana_dashboard(example) if fmt == "grafana" else cloudwatch_dashboard(
        example, REGION)
    path = GOLDEN / f"dashboard.{fmt}.json"
    text = json.dumps(built, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.read_text() == text, (
        f"{path.name} differs from the generated dashboard: if the change is on purpose, "
        "regenerate with UPDATE_GOLDEN=1 (see this module's docstring)")

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
from toolkit.dashboards.model import MetricQuery, SearchQuery
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


_SEARCH = re.compile(r"""(?:SORT\()?SEARCH\('\{"(?P<ns>[^"]+)",(?P<dims>[A-Za-z,]+)\} """
                     r"""MetricName="(?P<metric>\w+)" Environment="(?P<env>[^"]+)"', """
                     r"""'(?P<stat>Sum|SampleCount|p\d\d)', (?P<period>\d+)\)"""
                     r"""(?:, SUM, DESC, \d+\))?""")


def _searched(expression: str) -> str | None:
    """The metric a SEARCH expression graphs, None for other expressions."""
    match = _SEARCH.fullmatch(expression)
    return match["metric"] if match else None


def _check_expression(expression: str, ids: set[str], env: str, settings: Settings) -> None:
    """An expression is an anomaly band, a SEARCH of a published metric with exactly its
    dimensions in this environment, or arithmetic over ids of the same panel."""
    if re.fullmatch(r"ANOMALY_DETECTION_BAND\(m1, 3\)", expression):
        return
    match = _SEARCH.fullmatch(expression)
    if match:
        assert match["ns"] == settings.namespace and match["env"] == env, expression
        assert _published(match["ns"], match["metric"], set(match["dims"].split(",")),
                          settings), expression
        return
    names = set(re.findall(r"[A-Za-z_]\w*", expression))
    assert names and names <= ids, (expression, ids)


# ---- every metric has a panel ---------------------------------------------------------------


@pytest.mark.parametrize("spec", mn.METRICS, ids=lambda s: s.name)
def test_every_published_metric_has_a_panel(spec: mn.MetricSpec, example: Settings) -> None:
    assert spec.name in PANEL_FOR, (
        f"metric {spec.name} (toolkit/metricnames.py) has no dashboard panel: add its builder "
        "to PANEL_FOR in toolkit/dashboards/panels.py")
    section = PANEL_FOR[spec.name](example)
    graphed = {q.metric for p in section.panels for q in p.queries
               if isinstance(q, MetricQuery | SearchQuery)}
    assert spec.name in graphed
    grafana = {t.get("metricName") or _searched(t.get("expression", ""))
               for p in grafana_dashboard(example)["panels"] for t in p.get("targets", [])}
    cloudwatch = {row[1] if isinstance(row[0], str) else _searched(row[0]["expression"])
                  for w in cloudwatch_dashboard(example, REGION)["widgets"]
                  for row in w["properties"]["metrics"]}
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
    for p in dash["panels"]:  # math expressions refer only to ids defined in the same panel
        ids = {t["id"] for t in p.get("targets", [])}
        for t in p.get("targets", []):
            if t["metricEditorMode"] == 1:
                _check_expression(t["expression"], ids, "$environment", example)


def test_cloudwatch_rows_name_published_metrics_and_dimensions(example: Settings) -> None:
    body = cloudwatch_dashboard(example, REGION)
    for w in body["widgets"]:
        metrics = w["properties"]["metrics"]
        ids = {r[0]["id"] if isinstance(r[0], dict) else r[-1].get("id") for r in metrics}
        for row in metrics:
            if isinstance(row[0], dict):
                _check_expression(row[0]["expression"], ids - {None}, "production", example)
    rows = [r for w in body["widgets"] for r in w["properties"]["metrics"]]
    for row in rows:
        if isinstance(row[0], dict):
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
    text = json.loads(line.split("!Sub ", 1)[1])
    # Fn::Sub leaves "${!X}" as "${X}": the dynamic labels of the per-task panels
    assert "${PROP(" not in text and "${!PROP('Dim.Task')}" in text
    assert text.replace("${!", "${") == body


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


# ---- per-task panels --------------------------------------------------------------------------


TASK_PANELS = ["Task failure rate, all tasks", "Failures by task", "Retries by task",
               "p95 runtime by task", "Top 10 tasks by volume"]


def test_per_task_panels_in_both_formats_search_every_task_name(example: Settings) -> None:
    grafana = {p["title"]: p for p in grafana_dashboard(example)["panels"]}
    cloudwatch = {w["properties"]["title"]: w for w in cloudwatch_dashboard(example, REGION)[
        "widgets"]}
    assert set(TASK_PANELS) <= set(grafana) and set(TASK_PANELS) <= set(cloudwatch)
    searched = {
        "Failures by task": ("TasksFailed", "Sum"), "Retries by task": ("TasksRetried", "Sum"),
        "p95 runtime by task": ("TaskRuntime", "p95"),
        "Top 10 tasks by volume": ("TaskRuntime", "SampleCount")}
    for title, (metric, stat) in searched.items():
        (target,) = grafana[title]["targets"]
        (row,) = cloudwatch[title]["properties"]["metrics"]
        for expression, env in ((target["expression"], "$environment"),
                                (row[0]["expression"], "production")):
            match = _SEARCH.fullmatch(expression)
            assert match and (match["metric"], match["stat"], match["env"]) == (metric, stat, env)
            assert match["dims"] == "Environment,Task"  # exactly the per-task dimension set
        assert target["label"] == row[0]["label"] == "${PROP('Dim.Task')}"  # a line per task
    assert cloudwatch["Top 10 tasks by volume"]["properties"]["metrics"][0][0][
        "expression"].startswith("SORT(")
    assert grafana["p95 runtime by task"]["fieldConfig"]["defaults"]["unit"] == "s"


def test_the_failure_rate_panel_shows_the_alarm_threshold(example: Settings) -> None:
    cloudwatch = {w["properties"]["title"]: w["properties"]
                  for w in cloudwatch_dashboard(example, REGION)["widgets"]}
    rate = cloudwatch["Task failure rate, all tasks"]
    assert rate["annotations"]["horizontal"] == [{"label": "TaskFailureRate alarm", "value": 10.0}]
    inputs = [r for r in rate["metrics"] if isinstance(r[0], str)]
    assert [(r[1], r[-1]["visible"]) for r in inputs] == [("TasksFailed", False),
                                                          ("TasksSucceeded", False)]
    assert [r[2:4] for r in inputs] == [["Environment", "production"]] * 2  # the sums
    grafana = {p["title"]: p for p in grafana_dashboard(example)["panels"]}
    panel = grafana["Task failure rate, all tasks"]
    assert [t.get("hide", False) for t in panel["targets"]] == [True, True, False]
    assert panel["fieldConfig"]["overrides"] == []  # a line, not a grey band
    memory = next(p for t, p in grafana.items() if t.startswith("Memory:"))
    assert memory["fieldConfig"]["overrides"][0]["matcher"]["options"] == "B"  # the band


def test_per_task_panels_follow_the_tasks_table(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('environment = "dev"\nqueues = ["a"]\n')
    plain = {p.title: p for s in sections(load_settings(cfg, require_broker=False, environ={}))
             for p in s.panels}
    assert set(TASK_PANELS) <= set(plain)
    assert plain["Task failure rate, all tasks"].thresholds == ()  # no alarm configured
    cfg.write_text('environment = "dev"\nqueues = ["a"]\n[tasks]\nenabled = false\n')
    off = {p.title for s in sections(load_settings(cfg, require_broker=False, environ={}))
           for p in s.panels}
    assert not set(TASK_PANELS) & off

"""The CloudWatch dashboard body (the ``DashboardBody`` of PutDashboard and of
``AWS::CloudWatch::Dashboard``), with the same panels as the Grafana dashboard.

Body structure (CloudWatch "Dashboard Body Structure and Syntax"): ``{"widgets": [...]}``, each
widget ``type`` ``metric`` with ``x``/``y``/``width``/``height`` on a 24-column grid and
``properties`` holding ``metrics`` rows ``[namespace, name, dim, value, ..., {options}]`` or
``[{"expression": ...}]``, ``view``, ``region``, ``stat``, ``period``, ``title`` and
``annotations.horizontal`` for the threshold lines. Variables do not exist here: a row per
configured queue or service.
"""

from __future__ import annotations

import json
from typing import Any

from toolkit import metricnames as mn
from toolkit.config import ServiceSettings, Settings
from toolkit.dashboards.model import (
    ExpressionQuery,
    MetricQuery,
    Panel,
    SearchQuery,
    place,
)
from toolkit.dashboards.panels import sections

# A CloudFormation parameter value holds at most 4,096 bytes: the body (~8 KB) cannot be a
# parameter, so `celery-ecs deploy` renders it inline into the root template.


def _scopes(query: MetricQuery, settings: Settings) -> list[dict[str, str]]:
    """Dimension values of every series the query stands for."""
    env = {mn.ENVIRONMENT: settings.environment}
    if isinstance(query.scope, ServiceSettings) or query.scope == "services":
        svcs = [query.scope] if isinstance(query.scope, ServiceSettings) else settings.services
        return [{**env, mn.CLUSTER_NAME: s.cluster, mn.SERVICE_NAME: s.service} for s in svcs]
    if query.scope == "queues":
        return [{**env, mn.QUEUE: q} for q in settings.configured_queues()]
    if query.scope == "environment":
        return [env]
    return [{**env, mn.QUEUE: str(query.scope)}]


def _rows(query: MetricQuery, settings: Settings, stat: str, ids: bool) -> list[list[Any]]:
    rows: list[list[Any]] = []
    scopes = _scopes(query, settings)
    for values in scopes:
        row: list[Any] = [query.namespace, query.metric]
        for name in query.dimensions:
            row += [name, values[name]]
        label = query.label or values.get(mn.QUEUE) or values.get(mn.SERVICE_NAME, "")
        options: dict[str, Any] = {"label": label}
        if query.stat != stat:  # the widget's stat is the default: keep the body small
            options["stat"] = query.stat
        if ids:
            options["id"] = query.id
        if not query.visible:
            options["visible"] = False
        rows.append([*row, options])
    return rows


def _widget(panel: Panel, settings: Settings, region: str, x: int, y: int) -> dict[str, Any]:
    metrics: list[list[Any]] = []
    stat = next((q.stat for q in panel.queries if isinstance(q, MetricQuery)), "Sum")
    ids = any(isinstance(q, ExpressionQuery) for q in panel.queries)
    for query in panel.queries:
        if isinstance(query, ExpressionQuery):
            metrics.append([{"expression": query.expression, "label": query.label,
                             "id": query.id}])
        elif isinstance(query, SearchQuery):  # one line per Task, named by it
            metrics.append([{"expression": query.expression(settings.environment,
                                                             panel.period),
                             "label": f"${{PROP('Dim.{query.varying}')}}", "id": query.id}])
        else:
            metrics += _rows(query, settings, stat, ids)
    props: dict[str, Any] = {
        "title": panel.title, "view": "timeSeries", "stacked": panel.kind == "stacked",
        "region": region, "stat": stat, "period": panel.period, "metrics": metrics,
        "yAxis": {"left": {"min": 0, **({"max": 1} if panel.kind == "state" else {})}},
    }
    if panel.thresholds:
        props["annotations"] = {"horizontal": [
            {"label": t.label, "value": t.value} for t in panel.thresholds]}
    return {"type": "metric", "x": x, "y": y, "width": panel.width,
            "height": panel.height, "properties": props}


def cloudwatch_dashboard(settings: Settings, region: str) -> dict[str, Any]:
    """The dashboard body of ``settings.environment`` for CloudWatch in ``region``."""
    widgets: list[dict[str, Any]] = []
    y = 0
    for section in sections(settings):
        placed, y = place(section.panels, y)
        widgets += [_widget(item.panel, settings, region, item.x, item.y) for item in placed]
    return {"start": "-PT6H", "periodOverride": "inherit", "widgets": widgets}


def compact(body: dict[str, Any]) -> str:
    """The body as the smallest JSON text (what PutDashboard and the template parameter take)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

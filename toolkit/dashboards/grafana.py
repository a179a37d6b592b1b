"""The Grafana dashboard JSON model (schemaVersion 39, Grafana 10.4 and later).

Hand-written dicts, not grafana-foundation-sdk: see docs/grafana/README.md ("Why not the SDK").
Queries use the CloudWatch data source picked by the ``datasource`` variable; queue and
service queries range over the ``queue``/``cluster``/``service`` variables, whose values come
from the config (custom variables). Threshold lines are the alarms' thresholds.
"""

from __future__ import annotations

from typing import Any

from toolkit import metricnames as mn
from toolkit.config import ServiceSettings, Settings
from toolkit.dashboards.model import (
    ExpressionQuery,
    MetricQuery,
    Panel,
    Query,
    SearchQuery,
    place,
)
from toolkit.dashboards.panels import sections

SCHEMA_VERSION = 39
DATASOURCE: dict[str, str] = {"type": "cloudwatch", "uid": "${datasource}"}
UNITS = {"none": "short", "s": "s", "percent": "percent", "bytes": "bytes"}
# the Grafana variable of each dimension a query ranges over
VARIABLE_OF = {mn.ENVIRONMENT: "environment", mn.QUEUE: "queue", mn.CLUSTER_NAME: "cluster",
               mn.SERVICE_NAME: "service"}


def _dimensions(query: MetricQuery) -> dict[str, str]:
    dims: dict[str, str] = {}
    for name in query.dimensions:
        if isinstance(query.scope, ServiceSettings):
            literal = {mn.CLUSTER_NAME: query.scope.cluster, mn.SERVICE_NAME: query.scope.service}
            dims[name] = literal.get(name, f"${VARIABLE_OF[name]}")
        elif isinstance(query.scope, str) and name == mn.QUEUE and query.scope != "queues":
            dims[name] = query.scope  # one queue
        else:
            dims[name] = f"${VARIABLE_OF[name]}"
    return dims


def _label(query: MetricQuery) -> str:
    if query.label:
        return query.label
    varying = mn.QUEUE if query.scope == "queues" else mn.SERVICE_NAME
    return f"${{PROP('Dim.{varying}')}}"


def _target(query: Query, ref: str, period: int) -> dict[str, Any]:
    common: dict[str, Any] = {
        "refId": ref, "datasource": DATASOURCE, "queryMode": "Metrics", "region": "default",
        "metricQueryType": 0, "id": query.id, "period": str(period),
        "label": "" if isinstance(query, SearchQuery) else query.label,
    }
    if isinstance(query, ExpressionQuery):
        return {**common, "metricEditorMode": 1, "expression": query.expression}
    if isinstance(query, SearchQuery):  # one line per Task, named by it
        return {**common, "metricEditorMode": 1, "label": f"${{PROP('Dim.{query.varying}')}}",
                "expression": query.expression(f"${VARIABLE_OF[mn.ENVIRONMENT]}", period)}
    target = {
        **common, "metricEditorMode": 0, "expression": "", "namespace": query.namespace,
        "metricName": query.metric, "dimensions": _dimensions(query), "matchExact": True,
        "statistic": query.stat, "label": _label(query),
    }
    if not query.visible:
        target["hide"] = True
    return target


def _field_config(panel: Panel) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    last = len(panel.thresholds) - 1
    for i, t in enumerate(panel.thresholds):  # the highest line red, any lower ones orange
        steps.append({"color": "red" if i == last else "orange", "value": t.value})
    defaults: dict[str, Any] = {
        "unit": UNITS[panel.unit], "min": 0,
        "thresholds": {"mode": "absolute", "steps": steps},
    }
    if panel.kind == "state":
        defaults["color"] = {"mode": "thresholds"}
        defaults["mappings"] = [{"type": "value", "options": {
            "0": {"index": 0, "text": "ok", "color": "green"},
            "1": {"index": 1, "text": "stuck", "color": "red"}}}]
        defaults["custom"] = {"lineWidth": 0, "fillOpacity": 80}
    else:
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {
            "drawStyle": "line", "lineWidth": 1, "spanNulls": False,
            "fillOpacity": 30 if panel.kind == "stacked" else 0,
            "stacking": {"mode": "normal" if panel.kind == "stacked" else "none", "group": "A"},
            "thresholdsStyle": {"mode": "dashed" if panel.thresholds else "off"},
        }
    overrides: list[dict[str, Any]] = []
    for i, q in enumerate(panel.queries):
        if isinstance(q, ExpressionQuery) and q.band:
            # the anomaly band: a grey area, not a line of its own colour
            overrides.append({"matcher": {"id": "byFrameRefID", "options": chr(ord("A") + i)},
                              "properties": [
                {"id": "color", "value": {"mode": "fixed", "fixedColor": "#8888884D"}},
                {"id": "custom.fillOpacity", "value": 20}]})
    return {"defaults": defaults, "overrides": overrides}


def _panel(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    text = panel.description
    if panel.thresholds:
        text += " Lines: " + "; ".join(f"{t.label} = {t.value:g}" for t in panel.thresholds) + "."
    options: dict[str, Any] = {
        "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom", "calcs": []},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    if panel.kind == "state":
        options.update({"mergeValues": True, "showValue": "never", "alignValue": "left",
                        "rowHeight": 0.8})
    return {
        "id": pid, "type": "state-timeline" if panel.kind == "state" else "timeseries",
        "title": panel.title, "description": text, "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": _field_config(panel), "options": options,
        "targets": [_target(q, chr(ord("A") + i), panel.period)
                    for i, q in enumerate(panel.queries)],
    }


def _custom_variable(name: str, label: str, values: tuple[str, ...], multi: bool) -> dict[str, Any]:
    options = [{"text": v, "value": v, "selected": True} for v in values]
    current = {"text": list(values) if multi else values[0],
               "value": list(values) if multi else values[0]} if values else {}
    return {"type": "custom", "name": name, "label": label, "query": ",".join(values),
            "multi": multi, "includeAll": False, "options": options, "current": current,
            "hide": 0}


def _variables(settings: Settings) -> list[dict[str, Any]]:
    clusters = tuple(dict.fromkeys(s.cluster for s in settings.services))
    return [
        {"type": "datasource", "name": "datasource", "label": "CloudWatch", "query": "cloudwatch",
         "current": {}, "hide": 0, "refresh": 1, "options": []},
        _custom_variable("environment", "Environment", (settings.environment,), False),
        _custom_variable("queue", "Queue", settings.configured_queues(), True),
        _custom_variable("cluster", "Cluster", clusters, True),
        _custom_variable("service", "Service", tuple(s.service for s in settings.services), True),
    ]


def _annotations(settings: Settings) -> list[dict[str, Any]]:
    return [
        {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
         "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
         "type": "dashboard"},
        # Forced deployments: the handler redeploys when a WorkerStuck alarm goes to ALARM.
        # Grafana reads the alarm state history of every "<environment>-" alarm on WorkerStuck.
        {"name": "WorkerStuck alarms (forced redeploys)", "enable": True, "iconColor": "red",
         "datasource": DATASOURCE,
         "target": {"refId": "Annotations", "queryMode": "Annotations", "region": "default",
                    "namespace": settings.namespace, "metricName": mn.WORKER_STUCK,
                    "dimensions": {}, "statistic": "Maximum", "period": "60",
                    "matchExact": True, "prefixMatching": True, "actionPrefix": "",
                    "alarmNamePrefix": f"{settings.environment}-"}},
    ]


def grafana_dashboard(settings: Settings) -> dict[str, Any]:
    """The dashboard of ``settings.environment`` as a Grafana JSON model (no ``id``: import,
    the HTTP API and provisioning assign one; the ``uid`` is stable per environment)."""
    panels: list[dict[str, Any]] = []
    y = 0
    for section in sections(settings):
        panels.append({"id": len(panels) + 1, "type": "row", "title": section.title,
                       "collapsed": False, "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                       "panels": []})
        placed, y_end = place(section.panels, y + 1)
        for item in placed:
            panels.append(_panel(item.panel, len(panels) + 1, item.x, item.y))
        y = y_end
    return {
        "uid": f"celery-ecs-{settings.environment}"[:40], "title":
        f"Celery on ECS: {settings.environment}", "tags": ["celery", "ecs", "celery-ecs"],
        "timezone": "browser", "editable": True, "graphTooltip": 1, "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION, "version": 1, "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": _variables(settings)},
        "annotations": {"list": _annotations(settings)},
        "panels": panels, "links": [],
    }

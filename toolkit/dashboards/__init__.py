"""Grafana and CloudWatch dashboards generated from ``celery-ecs.toml``.

Pure builders: settings in, a JSON-ready dict out. Both formats render the same panels
(:mod:`toolkit.dashboards.panels`); every metric of :data:`toolkit.metricnames.METRICS` has one.
"""

from toolkit.dashboards.cloudwatch import cloudwatch_dashboard, compact
from toolkit.dashboards.grafana import grafana_dashboard
from toolkit.dashboards.panels import PANEL_FOR, sections

__all__ = [
    "PANEL_FOR",
    "cloudwatch_dashboard",
    "compact",
    "grafana_dashboard",
    "sections",
]

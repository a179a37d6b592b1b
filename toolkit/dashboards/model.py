"""The dashboard, independent of where it is drawn: sections of panels, each a few CloudWatch
queries with a unit and threshold lines. ``grafana.py`` and ``cloudwatch.py`` render the same
panels, so the two dashboards cannot drift apart.

A query names its metric and a :data:`Scope`; the renderer turns the scope into dimension
values (Grafana: template variables; CloudWatch: one row per configured queue or service).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from toolkit.config import ServiceSettings

# What a query's dimension values range over.
#   environment: the Environment dimension only
#   queues / services: every configured queue (service), one series each
#   a queue name or a ServiceSettings: exactly that one
Scope = Literal["environment", "queues", "services"] | str | ServiceSettings

Kind = Literal["lines", "stacked", "state"]
Unit = Literal["none", "s", "percent", "bytes"]
Stat = Literal["Maximum", "Minimum", "Average", "Sum"]


@dataclass(frozen=True)
class MetricQuery:
    """One CloudWatch metric: namespace, name, the dimension names it is published with."""

    id: str  # CloudWatch metric-math id (lower case first letter)
    namespace: str
    metric: str
    dimensions: tuple[str, ...]
    scope: Scope
    stat: Stat
    label: str = ""  # empty: the series is named by its varying dimension
    visible: bool = True  # False: an input of the panel's expression, not drawn itself


@dataclass(frozen=True)
class ExpressionQuery:
    """A metric-math expression over the ids of the panel's metric queries; ``band``: an
    anomaly band (drawn as a grey area), else a series of its own."""

    id: str
    expression: str
    label: str
    band: bool = True


SearchStat = Literal["Sum", "SampleCount", "p50", "p95", "p99"]


@dataclass(frozen=True)
class SearchQuery:
    """Every series of ``metric`` with exactly ``dimensions`` in the environment (a CloudWatch
    ``SEARCH``): one line per value of the dimension besides Environment (``Task``), whatever
    names the collector publishes. ``top``: only the N largest (``SORT(..., SUM, DESC, N)``)."""

    id: str
    namespace: str
    metric: str
    dimensions: tuple[str, ...]
    stat: SearchStat
    varying: str  # the dimension each line stands for
    top: int | None = None

    def expression(self, environment: str, period: int) -> str:
        schema = ",".join([_quoted(self.namespace), *self.dimensions])
        text = (f"SEARCH('{{{schema}}} MetricName={_quoted(self.metric)} "
                f"Environment={_quoted(environment)}', '{self.stat}', {period})")
        return text if self.top is None else f"SORT({text}, SUM, DESC, {self.top})"


def _quoted(value: str) -> str:
    """A search term in double quotes (exact match), inside the expression's single quotes."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")
    return f'"{escaped}"'


Query = MetricQuery | ExpressionQuery | SearchQuery


@dataclass(frozen=True)
class Threshold:
    value: float
    label: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str  # what the panel tells the operator
    queries: tuple[Query, ...]
    kind: Kind = "lines"
    unit: Unit = "none"
    period: int = 60
    thresholds: tuple[Threshold, ...] = ()
    width: int = 12
    height: int = 8


@dataclass(frozen=True)
class Section:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Placed:
    """A panel and its place on a 24-column grid (Grafana's and CloudWatch's both are)."""

    panel: Panel
    x: int
    y: int


GRID_WIDTH = 24


def place(panels: tuple[Panel, ...], top: int) -> tuple[tuple[Placed, ...], int]:
    """Shelf packing: left to right, a new shelf when the next panel does not fit. Returns the
    placed panels and the first free row below them."""
    out: list[Placed] = []
    x, y, shelf = 0, top, 0
    for panel in panels:
        if x + panel.width > GRID_WIDTH:
            x, y, shelf = 0, y + shelf, 0
        out.append(Placed(panel, x, y))
        x += panel.width
        shelf = max(shelf, panel.height)
    return tuple(out), y + shelf

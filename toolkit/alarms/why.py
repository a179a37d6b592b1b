"""The alert's "why": the collector's verdict record of the alarm's service, read by the handler.

The collector writes ``verdict#<cluster>/<service>`` (:mod:`toolkit.verdictrecord`) to the same
``STATE_TABLE`` every cycle. :func:`read_verdict` reads it and says, in words, why there is no
usable record when there is none: no table (the memory store), missing, unreadable, malformed,
of another environment or service, or stale (older than 3 cycles). A ``WorkersStuck`` alarm stops
tasks only from a usable record; the alert shows :func:`why_line` either way, one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from toolkit.alarms.decision import Target
from toolkit.alarms.messages import cut_esc, cut_text, esc
from toolkit.alarms.state import StateStore
from toolkit.env import ENV_STATE_TABLE
from toolkit.errors import ToolkitError, is_transient
from toolkit.verdictrecord import STALE_CYCLES, VerdictRecord, record_key, sparkline

__all__ = ["VerdictReading", "read_verdict", "task_id", "why_line"]

ReadingKind = Literal["ok", "no-table", "missing", "unreadable", "malformed", "stale"]
MAX_WHY = 600  # one line of the alert, not a wall
MAX_TASKS_SHOWN = 5
MAX_REASONS = 300


@dataclass(frozen=True)
class VerdictReading:
    """The record when it is usable (``kind == "ok"``), else ``problem`` in words."""

    target: Target
    kind: ReadingKind
    record: VerdictRecord | None = None
    problem: str | None = None
    retryable: bool = False

    @property
    def usable(self) -> bool:
        return self.kind == "ok" and self.record is not None


def read_verdict(
    state: StateStore, target: Target, environment: str, now: datetime
) -> VerdictReading:
    """Read and check ``verdict#<cluster>/<service>``; never raises."""

    def no(kind: ReadingKind, problem: str, retryable: bool = False) -> VerdictReading:
        return VerdictReading(target, kind, problem=problem, retryable=retryable)

    if not state.durable:
        unusable = getattr(state, "misconfigured", None)
        return no("no-table", f"no verdict record: {unusable}" if unusable else (
            f"no verdict record: {ENV_STATE_TABLE} is not set (the collector writes its verdicts "
            "there)"
        ))
    try:
        item = state.get_item(record_key(target.cluster, target.service))
    except ToolkitError as exc:
        cause = exc.__cause__
        transient = is_transient(exc) or (cause is not None and is_transient(cause))
        return no("unreadable", f"the verdict record could not be read ({exc})", transient)
    unusable = getattr(state, "misconfigured", None)
    if unusable:  # the table failed just now: the guarded store fell back to memory
        return no("no-table", f"no verdict record: {unusable}")
    if item is None:
        return no("missing", f"no verdict record for {target} in {ENV_STATE_TABLE} (is the "
                  "collector configured with this service and the table?)")
    try:
        record = VerdictRecord.from_item(item)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # the table is not trusted
        return no("malformed", f"the verdict record is malformed ({exc})")
    if (record.cluster, record.service) != (target.cluster, target.service):
        return no("malformed", f"the verdict record names {record.cluster}/{record.service}, "
                  f"not {target}")
    if record.environment != environment:
        return no("malformed", f"the verdict record is of environment {record.environment}, "
                  f"not {environment or '(unset)'}")
    if record.stale(now.timestamp()):
        return no("stale", f"the verdict record is {_ago(record.age(now.timestamp()))} old, more "
                  f"than {STALE_CYCLES} collector cycles of {record.interval:g} s")
    return VerdictReading(target, "ok", record=record)


def task_id(arn: str) -> str:
    """The task's id, the last part of its ARN (what the ECS console shows)."""
    return arn.rsplit("/", 1)[-1]


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def why_line(reading: VerdictReading, now: datetime) -> str:
    """One mrkdwn line: the verdict and its reasons, the stuck tasks, the backlog sparkline; or
    why there is no record. Everything from the record is escaped (the table is not trusted)."""
    record = reading.record
    if not reading.usable or record is None:
        return cut_text(f"*Why:* unknown, {esc(reading.problem or 'no verdict record')}", MAX_WHY)
    parts = [f"*Why* (collector, {_ago(record.age(now.timestamp()))} ago): "
             f"`{esc(record.verdict)}`"
             + (f", {cut_esc('; '.join(record.reasons), MAX_REASONS)}" if record.reasons else "")]
    if record.stuck_tasks:
        shown = ", ".join(f"`{esc(task_id(a))}`" for a in record.stuck_tasks[:MAX_TASKS_SHOWN])
        more = len(record.stuck_tasks) - MAX_TASKS_SHOWN
        parts.append(f"stuck tasks {shown}" + (f" and {more} more" if more > 0 else ""))
    if record.backlog:
        parts.append(f"backlog {sparkline(record.backlog)} {record.backlog[0]} → "
                     f"{record.backlog[-1]} ({len(record.backlog)} cycles)")
    return cut_text(" · ".join(parts), MAX_WHY)

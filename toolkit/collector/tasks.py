"""Per-task metrics: a claim of the workers' task counts -> the samples of TasksSucceeded,
TasksFailed, TasksRetried and TaskRuntime, per minute and task name.

Which names get a ``Task`` dimension of their own: every name of ``[tasks] include`` and the
``top`` names of the volume ranking (tasks finished today and yesterday, UTC, on the broker's
clock: a stable choice, not one that flickers with each minute's traffic); everything else is
summed as ``Task=other``. Each minute claimed becomes one group of samples stamped with that
minute (a collector that was down publishes each missed minute once, at its own time): for
every name with anything finished, the three counts (zeros included, so that a minute with
only failures still has a failure rate) and, when runs were timed, ``TaskRuntime`` as
Values/Counts; then the three counts summed over all names (dimension ``Environment`` only:
the TaskFailureRate alarm's inputs). Pure: the claim and the settings in, samples out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from toolkit.collector.publisher import Sample
from toolkit.config import Settings, TaskMetricSettings
from toolkit.metricnames import (
    ENVIRONMENT,
    TASK,
    TASK_RUNTIME,
    TASKS_FAILED,
    TASKS_RETRIED,
    TASKS_SUCCEEDED,
)
from toolkit.taskcounts import OTHER, TaskClaim, TaskRequest, TaskTotals


def task_request(
    settings: Settings, collector: str, *, publish: bool, commit: Sequence[int] = (),
) -> TaskRequest | None:
    """What a cycle asks of the counts: claim them when it publishes, else only peek; None when
    per-task metrics are off (``[tasks] enabled = false``)."""
    tasks = settings.tasks
    if not tasks.enabled:
        return None
    return TaskRequest(collector, "claim" if publish else "peek", top=tasks.top,
                       commit=tuple(commit) if publish else ())


def own_names(claim: TaskClaim, tasks: TaskMetricSettings) -> frozenset[str]:
    """The names published under their own ``Task`` dimension."""
    return frozenset(tasks.include) | frozenset(claim.ranking[: tasks.top])


def by_dimension(
    counts: dict[str, TaskTotals], own: frozenset[str],
) -> dict[str, TaskTotals]:
    """One minute's totals per ``Task`` value: own names as they are, the rest in ``other``."""
    out: dict[str, TaskTotals] = {}
    for name, totals in counts.items():
        key = name if name in own else OTHER
        merged = out.setdefault(key, TaskTotals())
        merged.merge(totals)
    return out


def task_samples(
    environment: str, claim: TaskClaim | None, tasks: TaskMetricSettings,
) -> list[Sample]:
    """The per-task samples of ``claim`` (none for a busy claim or none at all)."""
    if claim is None or claim.state == "busy" or not tasks.enabled:
        return []
    own = own_names(claim, tasks)
    env = (ENVIRONMENT, environment)
    samples: list[Sample] = []
    for minute in claim.minutes:
        at = datetime.fromtimestamp(minute.minute, UTC)
        per_task = by_dimension(dict(minute.tasks), own)
        summed = TaskTotals()
        for name in sorted(per_task):
            totals = per_task[name]
            values, counts = totals.histogram()
            if not totals.finished and not values:
                continue
            summed.merge(totals)
            dims = (env, (TASK, name))
            samples += _counts(totals, dims, at, minute.minute)
            if values:
                samples.append(Sample(TASK_RUNTIME, 0.0, "Seconds", dims, at, values=values,
                                      counts=counts, group=minute.minute))
        if summed.finished:
            samples += _counts(summed, (env,), at, minute.minute)
    return samples


def _counts(
    totals: TaskTotals, dims: tuple[tuple[str, str], ...], at: datetime, group: int,
) -> list[Sample]:
    return [Sample(name, float(value), "Count", dims, at, group=group) for name, value in (
        (TASKS_SUCCEEDED, totals.succeeded), (TASKS_FAILED, totals.failed),
        (TASKS_RETRIED, totals.retried))]


def finished_by_task(claim: TaskClaim | None) -> dict[str, TaskTotals]:
    """Every minute of ``claim`` summed per task name (for the CLI's summary line)."""
    out: dict[str, TaskTotals] = {}
    for minute in () if claim is None else claim.minutes:
        for name, totals in minute.tasks.items():
            out.setdefault(name, TaskTotals()).merge(totals)
    return out

"""Stopping only the stuck tasks: the plan for a ``WorkersStuck`` alarm (pure) and its ECS calls.

The collector's verdict record (``degraded``: some tasks dead or hung while others progress)
names the ECS task ARNs it judged stuck. The handler stops exactly those, and never:

* a task the record does not name;
* a task of another cluster (an ARN outside ``task/<cluster>/``, or of another account, region
  or partition than the service): the whole stop is refused, the record is not to be trusted;
* a task of another service (DescribeTasks ``group`` is not ``service:<service>``): refused too;
* more than the service's running count minus one at once, nor more than the live
  ``WorkersStuck`` value says are stuck now (the re-check against the metric).

Tasks already stopped or stopping are left out. Each stop is ``StopTask`` with the reason
:data:`STOP_REASON`; ECS starts a replacement for each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toolkit.alarms.decision import DecisionCode, Target
from toolkit.alarms.why import task_id
from toolkit.verdictrecord import VerdictRecord

__all__ = ["STOP_REASON", "StopPlan", "TaskState", "check_task_arns", "plan_stops",
           "task_states"]

STOP_REASON = "celery-ecs: worker dead or hung"
DESCRIBE_BATCH = 100  # DescribeTasks takes at most 100 tasks
Refusal = tuple[DecisionCode, str]


@dataclass(frozen=True)
class TaskState:
    """One DescribeTasks ``tasks[]`` entry, as much as the plan needs."""

    arn: str
    group: str | None
    last_status: str | None
    desired_status: str | None

    @property
    def alive(self) -> bool:
        return self.last_status == "RUNNING" and self.desired_status != "STOPPED"


@dataclass(frozen=True)
class StopPlan:
    stop: tuple[str, ...]  # stopped now, in the record's order
    held_back: tuple[str, ...] = ()  # named and running, over the cap this time
    gone: tuple[str, ...] = ()  # named, but no longer running (or unknown to ECS)


def _arn_parts(arn: str) -> list[str] | None:
    parts = arn.split(":", 5)
    return parts if len(parts) == 6 and parts[0] == "arn" and parts[2] == "ecs" else None


def check_task_arns(
    arns: Sequence[str], target: Target, service_arn: str | None
) -> Refusal | None:
    """Every ARN is a task of ``target``'s cluster (and of the service's partition, region and
    account when its ARN is known); ``None`` when they all are."""
    home = _arn_parts(service_arn) if service_arn else None
    for arn in arns:
        parts = _arn_parts(arn)
        resource = parts[5].split("/") if parts else []
        if parts is None or len(resource) != 3 or resource[0] != "task" or not resource[2]:
            return "foreign-task", (
                f"the verdict record names {task_id(arn)!r}, which is not an ECS task ARN of "
                f"cluster {target.cluster} (task/{target.cluster}/<id>): nothing stopped"
            )
        if resource[1] != target.cluster:
            return "foreign-task", (
                f"the verdict record names task {task_id(arn)} of cluster {resource[1]}, not "
                f"{target.cluster}: nothing stopped"
            )
        if home is not None and parts[1:5] != home[1:5]:
            return "foreign-task", (
                f"the verdict record names task {task_id(arn)} of {':'.join(parts[1:5])}, not "
                f"the service's {':'.join(home[1:5])}: nothing stopped"
            )
    return None


def plan_stops(
    record: VerdictRecord,
    tasks: Mapping[str, TaskState],
    target: Target,
    *,
    running: int | None,
    live: float,
) -> StopPlan | Refusal:
    """Which of the record's tasks to stop now (``tasks``: DescribeTasks by ARN)."""
    if record.verdict != "degraded":
        if record.verdict == "stuck":
            return "no-stuck-tasks", (
                "the verdict is stuck (no task of the service progresses): the WorkerStuck "
                "alarm's forced deployment is the remedy, not stopping tasks"
            )
        return "no-stuck-tasks", f"the verdict record says {record.verdict}, not degraded"
    if not record.stuck_tasks:
        return "no-stuck-tasks", "the verdict record names no stuck task"
    group = f"service:{target.service}"
    alive: list[str] = []
    gone: list[str] = []
    for arn in dict.fromkeys(record.stuck_tasks):  # once each, in the record's order
        state = tasks.get(arn)
        if state is not None and state.group != group:
            return "foreign-task", (
                f"task {task_id(arn)} belongs to {state.group or 'no service'}, not {group}: "
                "nothing stopped"
            )
        (alive if state is not None and state.alive else gone).append(arn)
    if not alive:
        return "no-stuck-tasks", (
            f"none of the {len(gone)} task(s) the verdict record names is still running"
        )
    if running is None or running < 2:
        return "too-few-running", (
            f"the service runs {running if running is not None else 'an unknown number of'} "
            "task(s): stopping one would leave it without a worker (at most running - 1 are "
            "stopped at once)"
        )
    count = min(len(alive), running - 1, int(live))
    if count < 1:
        return "no-stuck-tasks", f"the live WorkersStuck value is {live:g}: no task to stop"
    return StopPlan(stop=tuple(alive[:count]), held_back=tuple(alive[count:]), gone=tuple(gone))


def task_states(ecs: Any, cluster: str, arns: Sequence[str]) -> dict[str, TaskState]:
    """DescribeTasks for ``arns`` (by 100); tasks ECS does not know are absent."""
    found: dict[str, TaskState] = {}
    unique = list(dict.fromkeys(arns))
    for i in range(0, len(unique), DESCRIBE_BATCH):
        reply = ecs.describe_tasks(cluster=cluster, tasks=unique[i : i + DESCRIBE_BATCH])
        for task in reply.get("tasks") or []:
            arn = task.get("taskArn")
            if isinstance(arn, str):
                found[arn] = TaskState(arn, task.get("group"), task.get("lastStatus"),
                                       task.get("desiredStatus"))
    return found

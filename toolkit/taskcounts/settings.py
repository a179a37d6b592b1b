"""``[tasks]`` in ``celery-ecs.toml``: which task names get metrics of their own.

    [tasks]
    include = ["billing.charge", "reports.build"]   # always their own Task dimension
    top = 20                 # plus the N names with the most tasks finished today and yesterday
    enabled = true           # false: the collector publishes no per-task metric
    failure_rate_alarm = 10  # percent: celery-ecs deploy adds the TaskFailureRate alarm
    failure_rate_min_tasks = 10   # below this many tasks in 10 minutes the rate is not judged

Every other name is summed as ``Task=other``. Each name with a dimension of its own costs four
custom metrics (TasksSucceeded, TasksFailed, TasksRetried, TaskRuntime).
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.env import parse_bool, parse_float, parse_int, parse_str
from toolkit.errors import ConfigError
from toolkit.taskcounts.model import task_dimension

#: names with a dimension of their own at most (include + top): a minute of one environment's
#: task metrics, 4 per name plus "other" and the 3 sums, always fits one PutMetricData call
MAX_OWN = 240
_KEYS = {"include", "top", "enabled", "failure_rate_alarm", "failure_rate_min_tasks"}


@dataclass(frozen=True)
class TaskMetricSettings:
    enabled: bool = True
    include: tuple[str, ...] = ()  # as Task dimension values (task_dimension)
    top: int = 20
    failure_rate_alarm: float | None = None  # percent; None: no TaskFailureRate alarm
    failure_rate_min_tasks: int = 10


def parse_task_table(raw: object) -> TaskMetricSettings:
    if raw is None:
        return TaskMetricSettings()
    if not isinstance(raw, dict):
        raise ConfigError("[tasks] must be a table")
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"[tasks] has unknown keys: {', '.join(sorted(unknown))}")
    include_raw = raw.get("include", [])
    if not isinstance(include_raw, list):
        raise ConfigError("tasks.include must be a list of task names")
    include = tuple(dict.fromkeys(
        task_dimension(parse_str(name, "tasks.include")) for name in include_raw))
    top = parse_int(raw.get("top"), "tasks.top", 20)
    if top + len(include) > MAX_OWN:
        raise ConfigError(f"tasks.top + the names in tasks.include must be at most {MAX_OWN} "
                          f"(got {top} + {len(include)}): each costs 4 custom metrics")
    alarm = raw.get("failure_rate_alarm")
    rate = None if alarm is None else parse_float(alarm, "tasks.failure_rate_alarm", 0.0)
    if rate is not None and not 0 < rate <= 100:
        raise ConfigError(f"tasks.failure_rate_alarm must be a percentage in (0, 100], "
                          f"got {alarm!r}")
    return TaskMetricSettings(
        enabled=parse_bool(raw.get("enabled", True), "tasks.enabled"),
        include=include,
        top=top,
        failure_rate_alarm=rate,
        failure_rate_min_tasks=max(parse_int(raw.get("failure_rate_min_tasks"),
                                             "tasks.failure_rate_min_tasks", 10), 1),
    )

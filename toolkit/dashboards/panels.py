"""Which panels the dashboards show, built from the config.

``PANEL_FOR`` maps every metric of :data:`toolkit.metricnames.METRICS` to the builder of the
section that graphs it; ``tests/test_dashboards.py`` fails for a metric missing from it, so a
new metric gets a panel before it ships. Sections appear in the order of their first metric.
Thresholds are the ones the alarms use (``[thresholds]``, ``[queues.NAME]``, memory_high).
"""

from __future__ import annotations

from collections.abc import Callable

from toolkit import metricnames as mn
from toolkit.config import ServiceSettings, Settings
from toolkit.dashboards.model import (
    ExpressionQuery,
    MetricQuery,
    Panel,
    Scope,
    SearchQuery,
    SearchStat,
    Section,
    Stat,
    Threshold,
)

# Standard deviations of the band, as the MemoryAnomaly alarm (MemoryAnomalyBandWidth, 300 s).
ANOMALY_BAND_WIDTH = 3
ANOMALY_PERIOD = 300

# AWS's own metrics the dashboards read beside the toolkit's (not published by the toolkit).
ECS_NAMESPACE = "AWS/ECS"
INSIGHTS_NAMESPACE = "ECS/ContainerInsights"
ECS_DIMS: tuple[str, ...] = (mn.CLUSTER_NAME, mn.SERVICE_NAME)
MEMORY_UTILIZATION = "MemoryUtilization"
CPU_UTILIZATION = "CPUUtilization"
RUNNING_TASK_COUNT = "RunningTaskCount"
DESIRED_TASK_COUNT = "DesiredTaskCount"


def memory_high(settings: Settings, service: ServiceSettings) -> float:
    """The service's memory_high verdict threshold (percent): ``[verdicts]`` or its override,
    the value its MemoryHigh alarm uses too."""
    return float(service.verdicts.memory_high)


def _q(settings: Settings, metric: str, scope: Scope, stat: Stat, qid: str = "m1",
       label: str = "") -> MetricQuery:
    spec = mn.BY_NAME[metric]
    return MetricQuery(qid, settings.namespace, metric, spec.dimension_sets[0], scope, stat, label)


def _distinct(values: list[tuple[float | None, str]], what: str) -> tuple[Threshold, ...]:
    """One line per distinct threshold, labelled with the queues that use it."""
    by_value: dict[float, list[str]] = {}
    for value, queue in values:
        if value is not None:
            by_value.setdefault(float(value), []).append(queue)
    return tuple(Threshold(v, f"{what} ({', '.join(qs)})") for v, qs in sorted(by_value.items()))


def queue_length(settings: Settings) -> Section:
    queues = settings.configured_queues()
    if not queues:
        return Section("Queues", ())
    per_queue = tuple(
        Panel(f"Queue length: {q}", f"Ready messages in {q}; the line is its QueueLength alarm.",
              (_q(settings, mn.QUEUE_LENGTH, q, "Maximum", label=q),),
              thresholds=_distinct([(settings.thresholds_for(q).max_length, q)], "max_length"),
              width=8)
        for q in queues
    )
    stacked = Panel(
        "Queue length, all queues (stacked)",
        "The backlog of the environment: the height is every ready message waiting for a worker.",
        (_q(settings, mn.QUEUE_LENGTH, "queues", "Maximum"),), kind="stacked", width=24)
    return Section("Queues", (stacked, *per_queue))


def queue_age(settings: Settings) -> Section:
    queues = settings.configured_queues()
    if not queues:
        return Section("Queue age", ())
    panel = Panel(
        "Oldest message age",
        "How long the oldest ready message has waited (needs the publish stamp). Rising while the "
        "length is flat means nothing is being consumed.",
        (_q(settings, mn.QUEUE_AGE, "queues", "Maximum"),), unit="s",
        thresholds=_distinct([(settings.thresholds_for(q).max_age, q) for q in queues], "max_age"))
    return Section("Queue age", (panel,))


def consumers(settings: Settings) -> Section:
    unacked = Panel(
        "Unacked messages",
        "Messages workers reserved but have not acknowledged (Redis). They return to the queue "
        "only after the visibility timeout, so a dead worker hides work here.",
        (_q(settings, mn.UNACKED_MESSAGES, "environment", "Maximum", label="unacked"),))
    if not settings.configured_queues():
        return Section("Consumers", (unacked,))
    panel = Panel(
        "Consumers per queue",
        "Consumers (RabbitMQ) or live workers (heartbeats) serving each queue. Zero with a "
        "backlog: nobody is working on it.",
        (_q(settings, mn.QUEUE_CONSUMERS, "queues", "Minimum"),))
    running = Panel(
        "Tasks running per queue",
        "Tasks workers are executing now, from the heartbeat registry: in neither QueueLength nor "
        "UnackedMessages with early acknowledgement. Flat with a backlog: the workers are busy.",
        (_q(settings, mn.TASKS_RUNNING, "queues", "Maximum"),))
    return Section("Consumers", (unacked, panel, running))


def workers(settings: Settings) -> Section:
    if not settings.services:
        return Section("Workers", ())
    backlog = Panel(
        "Backlog per running task",
        "The service's queued messages per running ECS task: what target-tracking autoscaling "
        "acts on.", (_q(settings, mn.BACKLOG_PER_TASK, "services", "Average"),), width=24)
    per_service = tuple(
        Panel(f"Workers: {svc.service}",
              "Workers with a fresh heartbeat against ECS tasks running and desired. Alive below "
              "running: tasks are up but their Celery workers are not.",
              (_q(settings, mn.WORKERS_ALIVE, svc, "Minimum", "alive", "alive"),
               MetricQuery("running", INSIGHTS_NAMESPACE, RUNNING_TASK_COUNT, ECS_DIMS, svc,
                           "Average", "running"),
               MetricQuery("desired", INSIGHTS_NAMESPACE, DESIRED_TASK_COUNT, ECS_DIMS, svc,
                           "Average", "desired")),
              width=12)
        for svc in settings.services
    )
    return Section("Workers", (backlog, *per_service))


def worker_stuck(settings: Settings) -> Section:
    if not settings.services:
        return Section("Stuck", ())
    panel = Panel(
        "Stuck services",
        "1 (stuck) while no task of a service makes progress and work waits for it; its "
        "WorkerStuck alarm fires after 3 minutes and may force a new deployment.",
        (_q(settings, mn.WORKER_STUCK, "services", "Maximum"),), kind="state",
        thresholds=(Threshold(1, "stuck"),), width=12, height=5)
    tasks = Panel(
        "Dead or hung tasks (degraded)",
        "Tasks judged dead (no heartbeat) or hung (every slot past max_task_runtime, or free "
        "slots and nothing started while work waits) while other tasks of the service progress: "
        "'degraded'. Its WorkersStuck alarm may stop exactly those tasks. A stuck service (no "
        "task progresses) shows on the left instead.",
        (_q(settings, mn.WORKERS_STUCK, "services", "Maximum"),), kind="state",
        thresholds=(Threshold(1, "dead or hung"),), width=12, height=5)
    return Section("Stuck", (panel, tasks))


def ecs_utilization(settings: Settings) -> Section:
    panels: list[Panel] = []
    for svc in settings.services:
        for metric, what in ((MEMORY_UTILIZATION, "Memory"), (CPU_UTILIZATION, "CPU")):
            high = memory_high(settings, svc) if metric == MEMORY_UTILIZATION else None
            panels.append(Panel(
                f"{what}: {svc.service}",
                f"AWS/ECS {metric} of the service (percent of the reservation; can exceed 100) "
                "with the anomaly band CloudWatch expects. Above the band: "
                + ("a leak or a huge task." if metric == MEMORY_UTILIZATION
                   else "heavier tasks than usual, or one spinning."),
                (MetricQuery("m1", ECS_NAMESPACE, metric, ECS_DIMS, svc, "Average",
                             what.lower()),
                 ExpressionQuery("band", f"ANOMALY_DETECTION_BAND(m1, {ANOMALY_BAND_WIDTH})",
                                 "expected")),
                unit="percent", period=ANOMALY_PERIOD,
                thresholds=() if high is None else (Threshold(high, "memory_high"),)))
    return Section("ECS memory and CPU", tuple(panels))


def broker_and_beat(settings: Settings) -> Section:
    """The two single points of failure every worker shares: the broker's memory and beat."""
    memory = Panel(
        "Broker memory",
        "Redis used_memory as a share of maxmemory (RabbitMQ: the node's mem_used of mem_limit); "
        "none without a limit. At the limit Redis evicts keys (lost messages) or refuses writes; "
        "the BrokerMemoryHigh alarm is the line.",
        (_q(settings, mn.BROKER_MEMORY_UTILIZATION, "environment", "Maximum", "m1", "used"),),
        unit="percent", thresholds=(Threshold(mn.BROKER_MEMORY_HIGH, "BrokerMemoryHigh"),), width=8)
    used = Panel(
        "Broker memory used",
        "Bytes in use on the broker. Growing with flat queues: pidbox replies, unacked or "
        "results without expiry (docs/runbook.md).",
        (_q(settings, mn.BROKER_MEMORY_BYTES, "environment", "Maximum", "m1", "bytes"),),
        unit="bytes", width=8)
    evicted = Panel(
        "Keys evicted",
        "Keys Redis evicted per minute: each can be a lost message. Any at all fires the "
        "BrokerEvictions alarm; a broker wants maxmemory-policy noeviction.",
        (_q(settings, mn.BROKER_EVICTED_KEYS, "environment", "Sum", "m1", "evicted"),),
        thresholds=(Threshold(1, "BrokerEvictions"),), width=8)
    beat = Panel(
        "celery beat: seconds since its last tick",
        "From the beat registry. Beat sleeps up to beat_max_loop_interval between ticks; the "
        "BeatStale alarm fires at 3 of those. No data: no beat ticked (or no registry).",
        (_q(settings, mn.BEAT_HEARTBEAT_AGE, "environment", "Maximum", "m1", "beat"),),
        unit="s", width=24, height=6)
    return Section("Broker and beat", (memory, used, evicted, beat))
#: the per-task panels' period: per-minute task counts are sparse for most names
TASK_PERIOD = 300
TOP_TASKS = 10


def _search(settings: Settings, qid: str, metric: str, stat: SearchStat,
            top: int | None = None) -> SearchQuery:
    return SearchQuery(qid, settings.namespace, metric, mn.TASK_DIMS, stat, mn.TASK, top)


def tasks(settings: Settings) -> Section:
    """Which task: failures, retries, p95 runtime and volume per task name (a SEARCH over the
    names the collector publishes: the top N, [tasks] include, and ``other``), and the failure
    rate of all tasks with the TaskFailureRate alarm's threshold."""
    if not settings.tasks.enabled:
        return Section("Tasks", ())
    alarm = settings.tasks.failure_rate_alarm
    env = "environment"
    rate = Panel(
        "Task failure rate, all tasks",
        "Failed / (failed + succeeded) per 5 minutes, every task name together. Its "
        "TaskFailureRate alarm (10 minutes) alerts; it never redeploys anything.",
        (MetricQuery("failed", settings.namespace, mn.TASKS_FAILED, mn.ENV_DIMS, env, "Sum",
                     "failed", visible=False),
         MetricQuery("ok", settings.namespace, mn.TASKS_SUCCEEDED, mn.ENV_DIMS, env, "Sum",
                     "succeeded", visible=False),
         ExpressionQuery("rate", "100 * failed / (failed + ok)", "failure rate %", band=False)),
        unit="percent", period=TASK_PERIOD,
        thresholds=() if alarm is None else (Threshold(alarm, "TaskFailureRate alarm"),))
    failures = Panel(
        "Failures by task",
        "Tasks that failed per 5 minutes, one line per task name: raised, killed at the hard "
        "time limit, or lost with their process. The tallest line is the task to look at.",
        (_search(settings, "failures", mn.TASKS_FAILED, "Sum"),), period=TASK_PERIOD)
    retries = Panel(
        "Retries by task",
        "Runs that ended in a retry per 5 minutes, per task name: a flaky dependency shows "
        "here before it shows as failures.",
        (_search(settings, "retries", mn.TASKS_RETRIED, "Sum"),), period=TASK_PERIOD)
    slow = Panel(
        "p95 runtime by task",
        "95th percentile of the runtimes per task name (accurate to the runtime bucket, half "
        "an octave). A rising line is a task getting slower; compare with Queue age.",
        (_search(settings, "p95", mn.TASK_RUNTIME, "p95"),), unit="s", period=TASK_PERIOD)
    volume = Panel(
        f"Top {TOP_TASKS} tasks by volume",
        "Runs per 5 minutes of the busiest task names (stacked): which tasks fill the workers' "
        "time. 'other' sums the names outside [tasks] include and the top N.",
        (_search(settings, "volume", mn.TASK_RUNTIME, "SampleCount", TOP_TASKS),),
        kind="stacked", period=TASK_PERIOD, width=24)
    return Section("Tasks", (rate, failures, retries, slow, volume))


def collector(settings: Settings) -> Section:
    panel = Panel(
        "Collector",
        "Completed collection cycles and errors per minute. No heartbeat: every other panel is "
        "stale and the CollectorHeartbeat alarm fires.",
        (_q(settings, mn.COLLECTOR_HEARTBEAT, "environment", "Sum", "m1", "cycles"),
         _q(settings, mn.COLLECTOR_ERRORS, "environment", "Sum", "m2", "errors")),
        thresholds=(Threshold(1, "CollectorHeartbeat alarm below"),), width=24)
    return Section("Collector", (panel,))


Builder = Callable[[Settings], Section]

# Every metric the toolkit publishes -> the section that graphs it.
PANEL_FOR: dict[str, Builder] = {
    mn.QUEUE_LENGTH: queue_length,
    mn.QUEUE_AGE: queue_age,
    mn.UNACKED_MESSAGES: consumers,
    mn.QUEUE_CONSUMERS: consumers,
    mn.TASKS_RUNNING: consumers,
    mn.BACKLOG_PER_TASK: workers,
    mn.WORKERS_ALIVE: workers,
    mn.WORKER_STUCK: worker_stuck,
    mn.WORKERS_STUCK: worker_stuck,
    mn.BROKER_MEMORY_UTILIZATION: broker_and_beat,
    mn.BROKER_MEMORY_BYTES: broker_and_beat,
    mn.BROKER_EVICTED_KEYS: broker_and_beat,
    mn.BEAT_HEARTBEAT_AGE: broker_and_beat,
    mn.TASKS_FAILED: tasks,
    mn.TASKS_SUCCEEDED: tasks,
    mn.TASKS_RETRIED: tasks,
    mn.TASK_RUNTIME: tasks,
    mn.COLLECTOR_HEARTBEAT: collector,
    mn.COLLECTOR_ERRORS: collector,
}
# Sections for AWS's metrics, after the toolkit's.
EXTRA_SECTIONS: tuple[Builder, ...] = (ecs_utilization,)


def sections(settings: Settings) -> tuple[Section, ...]:
    """The dashboard's sections, in order, each built once; sections without panels dropped."""
    builders = list(dict.fromkeys(PANEL_FOR.values()))
    at = builders.index(worker_stuck) + 1
    builders[at:at] = EXTRA_SECTIONS
    built = (build(settings) for build in builders)
    return tuple(s for s in built if s.panels)

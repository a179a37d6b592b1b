"""The metrics the toolkit publishes: names, units and dimension sets, in one table.

Core module: standard library only. The collector publishes exactly these; the alarm handler,
the dashboards and the CloudFormation alarms read this table instead of repeating the names.
Every metric carries the ``Environment`` dimension; service metrics use ECS's own dimension
names (``ClusterName``, ``ServiceName``) so an alarm's dimensions name the service to act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Unit = Literal["Count", "Seconds", "None", "Percent", "Bytes"]

QUEUE_LENGTH = "QueueLength"
QUEUE_AGE = "QueueAge"
UNACKED_MESSAGES = "UnackedMessages"
QUEUE_CONSUMERS = "QueueConsumers"
TASKS_RUNNING = "TasksRunning"
WORKERS_ALIVE = "WorkersAlive"
BACKLOG_PER_TASK = "BacklogPerTask"
WORKER_STUCK = "WorkerStuck"
WORKERS_STUCK = "WorkersStuck"
BEAT_HEARTBEAT_AGE = "BeatHeartbeatAge"
BROKER_MEMORY_BYTES = "BrokerMemoryBytes"
BROKER_MEMORY_UTILIZATION = "BrokerMemoryUtilization"
BROKER_EVICTED_KEYS = "BrokerEvictedKeys"
TASKS_SUCCEEDED = "TasksSucceeded"
TASKS_FAILED = "TasksFailed"
TASKS_RETRIED = "TasksRetried"
TASK_RUNTIME = "TaskRuntime"
COLLECTOR_HEARTBEAT = "CollectorHeartbeat"
COLLECTOR_ERRORS = "CollectorErrors"

#: percent of the broker's memory limit from which every verdict carries a warning line and the
#: BrokerMemoryHigh alarm fires (its template default)
BROKER_MEMORY_HIGH = 90.0

ENVIRONMENT = "Environment"
QUEUE = "Queue"
CLUSTER_NAME = "ClusterName"
SERVICE_NAME = "ServiceName"
TASK = "Task"

ENV_DIMS: tuple[str, ...] = (ENVIRONMENT,)
QUEUE_DIMS: tuple[str, ...] = (ENVIRONMENT, QUEUE)
SERVICE_DIMS: tuple[str, ...] = (ENVIRONMENT, CLUSTER_NAME, SERVICE_NAME)
TASK_DIMS: tuple[str, ...] = (ENVIRONMENT, TASK)


@dataclass(frozen=True)
class MetricSpec:
    """One published metric: its name, unit, the dimension sets it is published with, and what
    it means (the text the docs and dashboards show)."""

    name: str
    unit: Unit
    dimension_sets: tuple[tuple[str, ...], ...]
    meaning: str


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(QUEUE_LENGTH, "Count", (QUEUE_DIMS,),
               "ready messages in the queue, all priority levels"),
    MetricSpec(QUEUE_AGE, "Seconds", (QUEUE_DIMS,),
               "age of the oldest ready message (needs the publish stamp)"),
    MetricSpec(UNACKED_MESSAGES, "Count", (ENV_DIMS,),
               "messages reserved by workers but not acknowledged (Redis)"),
    MetricSpec(QUEUE_CONSUMERS, "Count", (QUEUE_DIMS,),
               "consumers (RabbitMQ) or live workers serving the queue (heartbeats)"),
    # per queue (run_cycle, from the registry) and per configured service (the service checks)
    MetricSpec(TASKS_RUNNING, "Count", (QUEUE_DIMS, SERVICE_DIMS),
               "tasks being executed by live workers (heartbeat registry's active counts)"),
    MetricSpec(WORKERS_ALIVE, "Count", (SERVICE_DIMS,),
               "workers of the service with a fresh heartbeat"),
    MetricSpec(BACKLOG_PER_TASK, "Count", (SERVICE_DIMS,),
               "backlog of the service's queues per running ECS task"),
    MetricSpec(WORKER_STUCK, "None", (SERVICE_DIMS,),
               "1 while the service's verdict is 'stuck', else 0"),
    MetricSpec(WORKERS_STUCK, "Count", (SERVICE_DIMS,),
               "dead or hung tasks of a degraded service (the ones to stop), else 0"),
    # per Celery task name (the top N and [tasks] include, the rest as Task=other), and summed
    # over every task (the TaskFailureRate alarm's inputs)
    MetricSpec(TASKS_SUCCEEDED, "Count", (TASK_DIMS, ENV_DIMS),
               "tasks that succeeded, per task name, in the minute of the timestamp"),
    MetricSpec(TASKS_FAILED, "Count", (TASK_DIMS, ENV_DIMS),
               "tasks that failed (raised, hard time limit, process lost), per task name"),
    MetricSpec(TASKS_RETRIED, "Count", (TASK_DIMS, ENV_DIMS),
               "task runs that ended in a retry, per task name"),
    MetricSpec(TASK_RUNTIME, "Seconds", (TASK_DIMS,),
               "runtimes of the runs that finished, as Values/Counts (SampleCount, Sum, "
               "percentiles)"),
    MetricSpec(COLLECTOR_HEARTBEAT, "Count", (ENV_DIMS,),
               "1 for each completed collection cycle"),
    MetricSpec(COLLECTOR_ERRORS, "Count", (ENV_DIMS,),
               "failures in a cycle (broker unreachable, API errors)"),
    # the two single points of failure every worker shares (issue 23)
    MetricSpec(BEAT_HEARTBEAT_AGE, "Seconds", (ENV_DIMS,),
               "since celery beat's newest scheduler tick (beat registry); none if never seen"),
    MetricSpec(BROKER_MEMORY_BYTES, "Bytes", (ENV_DIMS,),
               "broker memory in use: Redis used_memory (RabbitMQ: the node's mem_used)"),
    MetricSpec(BROKER_MEMORY_UTILIZATION, "Percent", (ENV_DIMS,),
               "of Redis maxmemory (RabbitMQ: mem_limit), only when a limit is set"),
    MetricSpec(BROKER_EVICTED_KEYS, "Count", (ENV_DIMS,),
               "keys Redis evicted since the last cycle: lost messages"),
)

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}

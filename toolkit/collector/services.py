"""Service verdicts per cycle: read ECS and AWS/ECS metrics once, judge each configured service.

:class:`ServiceChecker` is the I/O half of :mod:`toolkit.collector.verdicts`. Per cycle it makes
``ceil(services / 10)`` ``DescribeServices`` calls per cluster, ``ceil(queries / 500)``
``GetMetricData`` calls, and one ``DescribeTasks`` per 100 task ARNs that need it: Fargate tasks
whose registry entry names no service (cached), and tasks of workers that look dead (is the task
stopped, so its entry no longer counts? STOPPED is cached). Clients are injected, or built with
:func:`toolkit.aws.client` on first use. An AWS failure makes the affected services ``unknown``
with the error in their reasons and in :attr:`ServiceCheck.errors`, never a crash.

Clocks: the registry's entries come with the broker's clock (``BrokerReading.clock``); every
worker timestamp is moved onto it (:meth:`WorkerHeartbeat.on_broker_clock`) and then onto this
host's ``now``, so no two hosts' clocks are ever compared. The checker keeps, across cycles,
each service's backlog (for "growing"), since when it runs short of its desired count, and,
with a state table, writes each cycle's verdicts there (:mod:`toolkit.collector.records`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from toolkit.aws.clients import client as aws_client
from toolkit.aws.ecs import (
    ServicesRead,
    ServiceView,
    TaskFacts,
    describe_services,
    describe_task_facts,
    short_name,
)
from toolkit.aws.metrics import UtilizationRead, read_utilization
from toolkit.beatregistry import read_ticks
from toolkit.collector.brokers.base import BrokerReading
from toolkit.collector.publisher import Sample
from toolkit.collector.records import VerdictRecords
from toolkit.collector.verdicts import (
    STOPPED_STATES,
    EcsView,
    RunningTask,
    ServiceObservation,
    ServiceVerdict,
    UtilizationView,
    VerdictThresholds,
    WorkerProgress,
    judge,
)
from toolkit.config import ServiceSettings, Settings
from toolkit.errors import ToolkitError
from toolkit.metricnames import (
    BACKLOG_PER_TASK,
    TASKS_RUNNING,
    WORKER_STUCK,
    WORKERS_ALIVE,
    WORKERS_STUCK,
)
from toolkit.registry import (
    WorkerHeartbeat,
    consumers_per_queue,
    read_registry_at,
    registry_exists,
)
from toolkit.taskcounts import TaskRequest, claim_counts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceCheck:
    verdicts: tuple[ServiceVerdict, ...]
    errors: tuple[str, ...] = ()
    aws_calls: int = 0


#: STOPPED tasks remembered across cycles (they never run again); the oldest go first
STOPPED_CACHE = 10_000


def thresholds_of(svc: ServiceSettings) -> VerdictThresholds:
    v = svc.verdicts
    return VerdictThresholds(v.dead_after, v.stuck_after, v.min_backlog, v.memory_high,
                             v.max_task_runtime, v.scale_out_grace)


def service_samples(environment: str, verdicts: Sequence[ServiceVerdict]) -> list[Sample]:
    """WorkersAlive, TasksRunning, BacklogPerTask (running > 0 only), WorkerStuck and
    WorkersStuck (neither for unknown or deploying). A service ECS does not have publishes
    nothing: it is not a service with 0 workers."""
    out: list[Sample] = []
    for v in verdicts:
        if not v.exists:
            continue
        dims = (("Environment", environment), ("ClusterName", v.cluster),
                ("ServiceName", v.service))
        if v.workers_alive is not None:
            out.append(Sample(WORKERS_ALIVE, v.workers_alive, "Count", dims))
        if v.tasks_running is not None:
            out.append(Sample(TASKS_RUNNING, v.tasks_running, "Count", dims))
        if v.verdict != "unknown" and v.running:
            out.append(Sample(BACKLOG_PER_TASK, round(v.backlog / v.running, 3), "Count", dims))
        stuck = v.worker_stuck_value
        if stuck is not None:
            out.append(Sample(WORKER_STUCK, stuck, "None", dims))
        bad = v.workers_stuck_value
        if bad is not None:
            out.append(Sample(WORKERS_STUCK, bad, "Count", dims))
    return out


@dataclass
class ServiceChecker:
    settings: Settings
    ecs: Any = None
    cloudwatch: Any = None
    period: int = 60
    window: int = 5
    previous_backlog: dict[tuple[str, str], int] = field(default_factory=dict)
    task_services: dict[str, str] = field(default_factory=dict)  # task ARN -> service (Fargate)
    stopped: dict[str, str] = field(default_factory=dict)  # task ARN -> STOPPED (or going)
    short_since: dict[tuple[str, str], float] = field(default_factory=dict)
    records: VerdictRecords | None = None

    def _client(self, name: str) -> Any:
        if getattr(self, name) is None:
            setattr(self, name, aws_client("ecs" if name == "ecs" else "cloudwatch"))
        return getattr(self, name)

    # -- reading ---------------------------------------------------------------------------
    def _read_ecs(self, errors: list[str]) -> tuple[dict[str, ServicesRead], dict[str, str], int]:
        by_cluster: dict[str, list[str]] = {}
        for svc in self.settings.services:
            by_cluster.setdefault(svc.cluster, []).append(svc.service)
        reads: dict[str, ServicesRead] = {}
        failed: dict[str, str] = {}
        calls = 0
        for cluster, names in by_cluster.items():
            try:
                reads[cluster] = describe_services(self._client("ecs"), cluster, names)
                calls += reads[cluster].calls
            except ToolkitError as exc:
                failed[cluster] = str(exc)
                errors.append(str(exc))
                calls += 1
        return reads, failed, calls

    def _describe_tasks(
        self, workers: Sequence[WorkerHeartbeat], clock: float, errors: list[str],
        unreadable: dict[str, str],
    ) -> tuple[dict[str, TaskFacts], int]:
        """DescribeTasks for the tasks that need it: Fargate tasks whose entry names no service
        (once), and tasks of workers that look dead (their beat older than the smallest
        dead_after) not yet known to be stopped."""
        dead_after = min((s.verdicts.dead_after for s in self.settings.services), default=90.0)
        wanted: dict[str, list[str]] = {}
        for w in workers:
            arn = w.ecs_task_arn
            if not arn or arn in self.stopped:
                continue
            unmapped = not w.ecs_service and arn not in self.task_services
            if unmapped or clock - w.last_beat > dead_after:
                cluster = short_name(w.ecs_cluster or _cluster_of_arn(arn))
                wanted.setdefault(cluster, []).append(arn)
        facts: dict[str, TaskFacts] = {}
        calls = 0
        for cluster, arns in wanted.items():
            try:
                found, n = describe_task_facts(self._client("ecs"), cluster, arns)
            except ToolkitError as exc:
                errors.append(str(exc))
                unreadable.update(dict.fromkeys(arns, str(exc)))
                calls += 1
                continue
            calls += n
            facts.update(found)
        for arn, fact in facts.items():
            if fact.service:
                self.task_services[arn] = fact.service
            if fact.last_status in STOPPED_STATES or fact.desired_status == "STOPPED":
                self.stopped[arn] = fact.last_status or "STOPPED"
        while len(self.stopped) > STOPPED_CACHE:
            del self.stopped[next(iter(self.stopped))]
        return facts, calls

    # -- one check ---------------------------------------------------------------------------
    def check(
        self, reading: BrokerReading | None, now: float | None = None,
        broker_error: str | None = None, warnings: Sequence[str] = (),
    ) -> ServiceCheck:
        """Judge every configured service. ``reading`` is None when the broker failed
        (``broker_error`` says why); its ``workers`` are the registry (:func:`with_registry`).
        ``warnings`` (the broker's memory or evictions) become a reason of every verdict."""
        at = time.time() if now is None else now
        errors: list[str] = []
        # a ConfigError here (no AWS region) is not a per-service failure: let it stop the check
        self._client("ecs"), self._client("cloudwatch")
        workers = None if reading is None else reading.workers
        registry_error = None
        if reading is not None and workers is None:
            registry_error = "no heartbeat registry found (no worker has toolkit.install(app)?)"
        clock = at if reading is None or reading.clock is None else reading.clock
        reads, ecs_failed, calls = self._read_ecs(errors)
        unreadable: dict[str, str] = {}
        if workers:
            _, n = self._describe_tasks(workers, clock, errors, unreadable)
            calls += n
        views = {
            (c, s): v for c, r in reads.items() for s, v in r.found.items()
        }
        ec2 = [c for (c, _), v in views.items() if v.launch_type != "FARGATE"]
        util: UtilizationRead | None = None
        if views:
            try:
                util = read_utilization(self._client("cloudwatch"), list(views), ec2, now=at,
                                        period=self.period, window=self.window)
                calls += util.calls
            except ToolkitError as exc:
                errors.append(str(exc))
                calls += 1
        lengths = {} if reading is None else {q.queue: q for q in reading.queues}
        verdicts = []
        for svc in self.settings.services:
            key = (svc.cluster, svc.service)
            backlog: int | None = None
            missing: list[str] = []
            per_queue: dict[str, tuple[int, float | None]] = {}
            if reading is not None:
                backlog = 0
                for q in svc.queues:
                    got = lengths.get(q)
                    if got is None or not got.exists:
                        missing.append(q)
                        per_queue[q] = (0, None)
                    elif got.error is None:
                        backlog += got.length
                        stamp = got.oldest_enqueued_at
                        per_queue[q] = (got.length,
                                        None if stamp is None else max(0.0, at - stamp))
            obs = ServiceObservation(
                cluster=svc.cluster, service=svc.service, backlog=backlog,
                missing_queues=tuple(missing),
                workers=None if workers is None else self._progress(svc, workers, at - clock),
                ecs=self._ecs_view(svc, reads, at),
                utilization=None if util is None else _utilization(util, svc, views.get(key)),
                previous_backlog=self.previous_backlog.get(key),
                ecs_error=ecs_failed.get(svc.cluster),
                broker_error=broker_error if reading is None else None,
                registry_error=registry_error,
                oldest_ready_age=_oldest_age(svc, lengths, at),
                ready_by_queue=tuple((q, n, age) for q, (n, age) in per_queue.items()),
                unreadable_tasks=tuple(sorted(unreadable)),
                tasks_error=next(iter(unreadable.values()), None),
                task_status=tuple(sorted(self.stopped.items())),
                broker_warnings=tuple(warnings),
            )
            if backlog is not None:
                self.previous_backlog[key] = backlog
            verdicts.append(judge(obs, thresholds_of(svc), at))
        if self.records is not None:
            n, failed = self.records.write(verdicts, at)
            calls += n
            errors.extend(failed)
        return ServiceCheck(tuple(verdicts), tuple(errors), calls)

    def _ecs_view(
        self, svc: ServiceSettings, reads: dict[str, ServicesRead], now: float
    ) -> EcsView | None:
        read = reads.get(svc.cluster)
        if read is None:
            return None
        view = read.found.get(svc.service)
        if view is None:
            return EcsView(False, 0, 0, 0, False, None, read.missing.get(svc.service))
        return EcsView(True, view.running, view.desired, view.pending, view.deploying,
                       view.launch_type, short_since=self._short_since(svc, view, now),
                       placement_failure=_recent_failure(view, now, svc.verdicts.scale_out_grace))

    def _short_since(self, svc: ServiceSettings, view: ServiceView, now: float) -> float | None:
        """Since when the service runs fewer tasks than desired: the earlier of this checker's
        first sight of it and the PRIMARY deployment's last update (a desired count change)."""
        key = (svc.cluster, svc.service)
        if view.running >= view.desired:
            self.short_since.pop(key, None)
            return None
        seen = self.short_since.setdefault(key, now)
        if view.updated_at is None:
            return seen
        return min(seen, view.updated_at) if seen < now else view.updated_at

    def _progress(
        self, svc: ServiceSettings, workers: Sequence[WorkerHeartbeat], delta: float
    ) -> tuple[WorkerProgress, ...]:
        """The service's workers on this host's clock: ``delta`` is this host's clock minus the
        broker's; each worker's own timestamps also get its offset to the broker's clock."""
        out = []
        for w in workers:
            name = w.ecs_service or (self.task_services.get(w.ecs_task_arn or "") or "")
            cluster = short_name(w.ecs_cluster or _cluster_of_arn(w.ecs_task_arn or ""))
            if name != svc.service or cluster != svc.cluster:
                continue
            shift = w.offset + delta

            def here(value: float | None, shift: float = shift) -> float | None:
                return None if value is None else value + shift

            out.append(WorkerProgress(
                node=w.node, last_beat=w.last_beat + delta, started=w.started,
                last_task_started=here(w.last_task_started), active=w.active,
                task_arn=w.ecs_task_arn, concurrency=w.concurrency,
                held=w.held if w.details else None,
                booted=here(w.booted) if w.details else None,
                tasks=tuple(RunningTask(t.name, t.id, t.started + shift, t.limit)
                            for t in w.tasks),
                youngest_start=here(w.youngest_start), pool=w.pool,
                queues=w.declared or w.queues, prefetched=w.prefetched, eta=w.eta,
                rate_limited=w.rate_limited, longest_limit=w.longest_limit,
            ))
        return tuple(sorted(out, key=lambda p: p.node))


def _oldest_age(svc: ServiceSettings, lengths: dict[str, Any], now: float) -> float | None:
    """How long the oldest ready message of the service's queues has waited; None unless every
    queue holding messages carries the publish stamp (then "the work is fresh" can be told)."""
    ages = []
    for q in svc.queues:
        got = lengths.get(q)
        if got is None or not got.exists or got.error is not None or not got.length:
            continue
        if got.oldest_enqueued_at is None:
            return None
        ages.append(max(0.0, now - got.oldest_enqueued_at))
    return max(ages, default=None)


def _recent_failure(view: ServiceView, now: float, grace: float) -> str | None:
    """ECS's "unable to place a task" event, when it is newer than the grace period."""
    if view.placement_failure is None:
        return None
    if view.placement_failure_at is not None and now - view.placement_failure_at > grace:
        return None
    return view.placement_failure


def open_registry(settings: Settings) -> Any:
    """A Redis client for ``[broker] registry_url``, or None when the registry is the broker."""
    url = None if settings.broker is None else settings.broker.registry_url
    if not url:
        return None
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=5.0, socket_timeout=10.0)


def with_registry(
    reading: BrokerReading, registry: Any, now: float, tasks: TaskRequest | None = None,
) -> tuple[BrokerReading, str | None]:
    """``reading`` with the workers (and, where the broker could not tell, the per-queue
    consumers) of a registry kept outside the broker, and the per-task counts kept there too
    (claimed or peeked at as ``tasks`` asks). Returns (reading, error or None)."""
    if tasks is not None:
        try:
            reading = replace(reading, tasks=claim_counts(registry, "", tasks))
        except Exception as exc:  # noqa: BLE001 - as below
            error = f"task counts unreadable in the heartbeat registry ({type(exc).__name__})"
            reading, other = with_registry(reading, registry, now)
            return reading, error if other is None else f"{other}; {error}"
    try:
        beats, beats_clock = read_ticks(registry)  # celery beat ticks where the workers beat
        if not registry_exists(registry):
            return replace(reading, workers=None, beats=beats, clock=beats_clock), None
        read = read_registry_at(registry, include_dead=True)
    except Exception as exc:  # noqa: BLE001 - redis errors vary; their text may hold the URL
        error = f"heartbeat registry unreadable ({type(exc).__name__})"
        return replace(reading, workers=None, beats=None), error
    workers = read.beats
    counts = consumers_per_queue(w for w in workers if w.alive(read.now))
    queues = tuple(
        q if q.consumers is not None or q.error else replace(q, consumers=counts.get(q.queue, 0))
        for q in reading.queues
    )
    return replace(reading, queues=queues, workers=workers, clock=read.now, beats=beats), None


def _cluster_of_arn(task_arn: str) -> str:
    """``arn:aws:ecs:r:1:task/CLUSTER/ID`` -> CLUSTER (new-style ARNs), else ''."""
    parts = task_arn.split("/")
    return parts[1] if len(parts) == 3 else ""


def _utilization(
    util: UtilizationRead, svc: ServiceSettings, view: Any
) -> UtilizationView | None:
    if view is None:
        return None
    series = util.services.get((svc.cluster, svc.service), {})
    cluster = util.clusters.get(svc.cluster, {})
    mem = series.get("MemoryUtilization")
    cpu = series.get("CPUUtilization")
    mres = cluster.get("MemoryReservation")
    cres = cluster.get("CPUReservation")
    return UtilizationView(
        memory=None if mem is None else mem.latest,
        cpu=None if cpu is None else cpu.latest,
        memory_window_min=None if mem is None else mem.minimum,
        cluster_memory_reservation=None if mres is None else mres.latest,
        cluster_cpu_reservation=None if cres is None else cres.latest,
    )

"""One collection cycle: broker -> samples -> publisher; and the loop that repeats it.

:func:`run_cycle` never raises for expected failures: a broker that cannot be read or a
CloudWatch that refuses the metrics become entries in ``CycleResult.errors`` and a
``CollectorErrors`` sample, so the loop carries on and alarms can see the collector struggling.
A completed cycle publishes ``CollectorHeartbeat`` = 1; its absence is what the
"collector stopped" alarm watches (missing data treated as breaching).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from toolkit.collector.brokers.base import BrokerReader, BrokerReading, TaskCountReader
from toolkit.collector.health import EvictionCounter, Health, assess, health_samples
from toolkit.collector.publisher import PublishReport, Sample
from toolkit.collector.records import VerdictRecords
from toolkit.collector.services import (
    ServiceChecker,
    open_registry,
    service_samples,
    with_registry,
)
from toolkit.collector.tasks import task_request, task_samples
from toolkit.collector.verdicts import ServiceVerdict
from toolkit.config import Settings
from toolkit.errors import PublishError, ToolkitError
from toolkit.metricnames import (
    COLLECTOR_ERRORS,
    COLLECTOR_HEARTBEAT,
    QUEUE_AGE,
    QUEUE_CONSUMERS,
    QUEUE_LENGTH,
    TASKS_RUNNING,
    UNACKED_MESSAGES,
)
from toolkit.registry import WorkerHeartbeat, running_per_queue
from toolkit.taskcounts import TaskClaim, TaskRequest, commit_claim

log = logging.getLogger(__name__)

QueueState = Literal["ok", "critical", "missing", "error"]


class Publisher(Protocol):
    def publish(self, samples: Sequence[Sample]) -> PublishReport: ...


@dataclass(frozen=True)
class QueueStatus:
    queue: str
    length: int
    age: float | None
    consumers: int | None
    state: QueueState
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class CycleResult:
    environment: str
    queues: tuple[QueueStatus, ...] = ()
    unacked: int | None = None
    samples: tuple[Sample, ...] = ()
    errors: tuple[str, ...] = ()
    published: PublishReport | None = None
    round_trips: int = 0
    duration: float = 0.0
    services: tuple[ServiceVerdict, ...] = ()
    health: Health | None = None  # broker memory, evictions, beat's newest tick
    tasks: TaskClaim | None = None  # the per-task counts read (claimed, peeked at, or busy)

    @property
    def ok(self) -> bool:
        return not self.errors



# -- pure parts --------------------------------------------------------------------------------


def queue_statuses(reading: BrokerReading, settings: Settings, now: float) -> list[QueueStatus]:
    """Turn a broker reading into per-queue statuses against the configured thresholds."""
    out = []
    for q in reading.queues:
        age = None if q.oldest_enqueued_at is None else max(0.0, now - q.oldest_enqueued_at)
        if q.error is not None:
            out.append(QueueStatus(q.queue, 0, None, None, "error", (q.error,)))
            continue
        if not q.exists:
            out.append(QueueStatus(q.queue, 0, None, None, "missing", ("queue does not exist",)))
            continue
        limits = settings.thresholds_for(q.queue)
        reasons = []
        if limits.max_length is not None and q.length > limits.max_length:
            reasons.append(f"length {q.length} > {limits.max_length}")
        if limits.max_age is not None and age is not None and age > limits.max_age:
            reasons.append(f"oldest task waiting {age:.0f}s > {limits.max_age:.0f}s")
        state: QueueState = "critical" if reasons else "ok"
        out.append(QueueStatus(q.queue, q.length, age, q.consumers, state, tuple(reasons)))
    return out


def queue_samples(
    environment: str, statuses: Sequence[QueueStatus], unacked: int | None
) -> list[Sample]:
    """The metrics one reading yields. Missing or unreadable queues publish nothing: they are
    not 0."""
    env = ("Environment", environment)
    samples: list[Sample] = []
    for q in statuses:
        if q.state in ("missing", "error"):
            continue
        dims = (env, ("Queue", q.queue))
        samples.append(Sample(QUEUE_LENGTH, q.length, "Count", dims))
        if q.age is not None:
            samples.append(Sample(QUEUE_AGE, round(q.age, 3), "Seconds", dims))
        if q.consumers is not None:
            samples.append(Sample(QUEUE_CONSUMERS, q.consumers, "Count", dims))
    if unacked is not None:
        samples.append(Sample(UNACKED_MESSAGES, unacked, "Count", (env,)))
    return samples


def running_samples(
    environment: str, statuses: Sequence[QueueStatus], workers: Sequence[WorkerHeartbeat] | None
) -> list[Sample]:
    """``TasksRunning`` per queue read, from the live registry entries' ``active`` counts; none
    when the broker holds no registry (``workers`` is None) or for missing/unreadable queues."""
    if workers is None:
        return []
    running = running_per_queue(workers)
    return [
        Sample(TASKS_RUNNING, running.get(q.queue, 0), "Count",
               (("Environment", environment), ("Queue", q.queue)))
        for q in statuses if q.state not in ("missing", "error")
    ]


def collector_sample(environment: str, name: str, value: float) -> Sample:
    return Sample(name, value, "Count", (("Environment", environment),))


# -- one cycle ---------------------------------------------------------------------------------


class QueueSource:
    """Which queues a cycle reads: the configured ones, else discovered, refreshed now and then.

    It is also the state a cycle keeps between runs: the service checker (previous backlogs,
    task-to-service map, AWS clients), the registry client when the registry is not on the
    broker (both built on first use unless injected), this collector's id for the per-task
    counts' lease, and the minutes it published but could not commit yet.
    """

    def __init__(
        self,
        settings: Settings,
        rediscover_every: float = 300.0,
        *,
        services: ServiceChecker | None = None,
        registry: object | None = None,
    ) -> None:
        self.settings = settings
        self.rediscover_every = rediscover_every
        self._cached: list[str] | None = None
        self._cached_at = 0.0
        self._services = services
        self._registry = registry
        self.evictions = EvictionCounter()  # BrokerEvictedKeys: the total of the last cycle
        self.collector_id = uuid.uuid4().hex[:16]
        self.uncommitted: tuple[int, ...] = ()

    def service_checker(self) -> ServiceChecker | None:
        if self._services is None and self.settings.services:
            table = self.settings.state_table
            records = None if not table else VerdictRecords(
                table, self.settings.environment, self.settings.interval)
            self._services = ServiceChecker(self.settings, records=records)
        return self._services

    def registry(self) -> object | None:
        if self._registry is None:
            self._registry = open_registry(self.settings)
        return self._registry

    def queues(self, reader: BrokerReader, now: float) -> list[str]:
        if self.settings.only_queues:
            return list(self.settings.only_queues)
        configured = list(self.settings.configured_queues())
        if self._cached is None or now - self._cached_at >= self.rediscover_every:
            self._cached = reader.discover_queues()
            self._cached_at = now
        merged = dict.fromkeys(configured)
        merged.update(dict.fromkeys(self._cached))
        return list(merged)


def run_cycle(
    reader: BrokerReader,
    settings: Settings,
    publisher: Publisher | None,
    *,
    source: QueueSource | None = None,
    clock: Callable[[], float] = time.time,
) -> CycleResult:
    """Read the broker once, build the samples, publish them (unless ``publisher`` is None)."""
    started = time.perf_counter()
    now = clock()
    env = settings.environment
    errors: list[str] = []
    statuses: list[QueueStatus] = []
    unacked = None
    round_trips = 0
    samples: list[Sample] = []
    src = source or QueueSource(settings)
    reading = None
    broker_error = None
    health = None
    request = task_request(settings, src.collector_id, publish=publisher is not None,
                           commit=src.uncommitted)
    registry = None
    try:
        names = src.queues(reader, now)
        registry = src.registry()
        if registry is None and request is not None and isinstance(reader, TaskCountReader):
            reading = reader.read_with_tasks(names, request)
        else:
            reading = reader.read(names)
        if registry is not None:
            reading, registry_error = with_registry(reading, registry, now, tasks=request)
            errors.extend([registry_error] if registry_error else [])
        round_trips = reading.round_trips
        unacked = reading.unacked
        statuses = queue_statuses(reading, settings, now)
        errors.extend(f"queue {q.queue!r}: {q.reasons[0]}" for q in statuses if q.state == "error")
        samples = queue_samples(env, statuses, unacked)
        samples.extend(running_samples(env, statuses, reading.workers))
        health = assess(reading, src.evictions, now)
        samples.extend(health_samples(env, health))
        errors.extend(health.errors)
        samples.extend(task_samples(env, reading.tasks, settings.tasks))
        samples.append(collector_sample(env, COLLECTOR_HEARTBEAT, 1))
    except ToolkitError as exc:
        errors.append(broker_error := str(exc))
    except Exception as exc:  # noqa: BLE001 - the loop must outlive surprises; keep the trace
        log.exception("unexpected error while reading the broker")
        errors.append(broker_error := f"unexpected {type(exc).__name__} while reading the broker")
    verdicts: tuple[ServiceVerdict, ...] = ()
    checker = src.service_checker()
    if checker is not None:
        try:
            checked = checker.check(reading, now, broker_error=broker_error,
                                    warnings=() if health is None else health.warnings)
            verdicts = checked.verdicts
            errors.extend(checked.errors)
            samples.extend(service_samples(env, verdicts))
        except ToolkitError as exc:  # e.g. no AWS region: one line, the queue metrics still go
            errors.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - never let the verdicts stop the queue metrics
            log.exception("unexpected error while judging the services")
            errors.append(f"unexpected {type(exc).__name__} while judging the services")
    samples.append(collector_sample(env, COLLECTOR_ERRORS, len(errors)))
    claim = None if reading is None else reading.tasks
    published, sent = _publish(publisher, samples, errors)
    if claim is not None and claim.owned and request is not None:
        _commit(reader, registry, src, request,
                [m for m in claim.owned if sent is None or m in sent], errors)
    for err in errors:
        log.debug("collection cycle for %s: %s", env, err)
    return CycleResult(
        environment=env,
        queues=tuple(statuses),
        unacked=unacked,
        samples=tuple(samples),
        errors=tuple(errors),
        published=published,
        round_trips=round_trips,
        duration=time.perf_counter() - started,
        services=verdicts,
        health=health,
        tasks=claim,
    )


def _publish(
    publisher: Publisher | None, samples: list[Sample], errors: list[str],
) -> tuple[PublishReport | None, frozenset[int] | None]:
    """(report, the sample groups that reached CloudWatch: None for all of them)."""
    if publisher is None:
        return None, frozenset()
    try:
        return publisher.publish(samples), None
    except PublishError as exc:
        errors.append(str(exc))
        return None, exc.sent_groups
    except ToolkitError as exc:
        errors.append(str(exc))
        return None, frozenset()


def _commit(
    reader: BrokerReader, registry: object | None, src: QueueSource, request: TaskRequest,
    minutes: list[int], errors: list[str],
) -> None:
    """Commit the published minutes of the claim; a claim whose publish failed stays this
    collector's and is published again next cycle. A failed commit is retried with the next
    claim (never published twice by this collector)."""
    if not minutes:
        return
    try:
        if registry is not None:
            status = commit_claim(registry, "", request.collector, minutes)
        elif isinstance(reader, TaskCountReader):
            status = reader.commit_tasks(request.collector, minutes)
        else:
            return
    except Exception as exc:  # noqa: BLE001 - redis errors vary; the next claim commits them
        src.uncommitted = tuple(sorted(set(src.uncommitted) | set(minutes)))
        errors.append(f"per-task counts published but not committed "
                      f"({type(exc).__name__}); the next cycle commits them")
        return
    src.uncommitted = ()
    if status == "taken":
        log.warning("per-task counts: the lease passed to another collector before this one "
                    "committed; minutes %s may be published twice", minutes)


# -- the loop ----------------------------------------------------------------------------------


@dataclass
class Loop:
    """Runs cycles every ``interval`` seconds until stopped (SIGTERM/SIGINT or :meth:`stop`)."""

    reader: BrokerReader
    settings: Settings
    publisher: Publisher | None
    on_cycle: Callable[[CycleResult], None] = lambda result: None
    max_cycles: int | None = None
    source: QueueSource | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def stop(self, *_: object) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> int:
        """Returns the number of cycles that had errors."""
        source = self.source or QueueSource(self.settings)
        interval = self.settings.interval
        failed = cycles = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            result = run_cycle(self.reader, self.settings, self.publisher, source=source)
            cycles += 1
            failed += 0 if result.ok else 1
            self.on_cycle(result)
            if self.max_cycles is not None and cycles >= self.max_cycles:
                break
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:  # a slow cycle: skip the missed ticks instead of bursting
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)
        return failed

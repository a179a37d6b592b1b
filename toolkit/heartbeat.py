"""Worker liveness: a heartbeat bootstep driven by the worker's own event loop, and its registry.

Enable it in one line, next to the app (every worker started from this app gets it)::

    app = Celery("proj")
    toolkit.heartbeat.install(app)

The step is a *consumer* bootstep started after the task consumer. From the worker's timer (the
event loop's timer in the prefork and solo pools, so a frozen or blocked loop stops beating) it,
every ``interval`` seconds:

* touches the heartbeat file (``celery-ecs healthcheck heartbeat`` checks its age);
* writes the ready file at its first beat, i.e. once the loop runs and the queues are consumed;
* writes this node's entry in the Redis registry, with a TTL.

On shutdown it removes both files and its registry entry. A path it cannot write is logged once
as a warning and the worker keeps running. Pools that run tasks inside the worker process (solo,
threads) block the loop while a task runs; for them a helper thread keeps beating while a task
is in progress (up to ``task_time_limit`` when one is set), so a long task is not a false kill,
while a SIGSTOPped or deadlocked-between-tasks worker still goes stale.

Registry contract: see :mod:`toolkit.registry` (re-exported here: :func:`read_registry`,
:class:`WorkerHeartbeat`, the pure helpers).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from toolkit.config import HeartbeatSettings
from toolkit.errors import ConfigError
from toolkit.registry import (
    RedisLike,
    WorkerHeartbeat,
    consumers_per_queue,
    fresh,
    index_key,
    read_registry,
    registry_key,
    remove_heartbeat,
    workers_per_service,
    write_heartbeat,
)

__all__ = [
    "Beater",
    "EcsMetadata",
    "RedisLike",
    "TaskCounters",
    "WorkerHeartbeat",
    "consumers_per_queue",
    "fetch_ecs_metadata",
    "fresh",
    "index_key",
    "install",
    "read_registry",
    "registry_key",
    "remove_heartbeat",
    "workers_per_service",
    "write_heartbeat",
]

logger = logging.getLogger(__name__)

METADATA_TIMEOUT = 1.0
REGISTRY_SOCKET_TIMEOUT = 1.0
REGISTRY_RETRY_AFTER = 10.0


# --- ECS task metadata ------------------------------------------------------------------------


@dataclass(frozen=True)
class EcsMetadata:
    task_arn: str | None = None
    cluster: str | None = None
    container: str | None = None
    service: str | None = None


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _get_json(url: str, timeout: float) -> dict[str, Any] | None:
    if not url.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http(s) only
            data = json.loads(resp.read(1_000_000))
    except (OSError, ValueError) as exc:
        logger.info("ECS metadata %s unavailable: %s", url, exc)
        return None
    return data if isinstance(data, dict) else None


def fetch_ecs_metadata(uri: str | None, timeout: float = METADATA_TIMEOUT) -> EcsMetadata | None:
    """Read this container's task ARN, cluster, container name and service name (when ECS gives
    one) from ``$ECS_CONTAINER_METADATA_URI_V4``. ``None`` when not on ECS or unreachable."""
    if not uri:
        return None
    container = _get_json(uri, timeout) or {}
    task = _get_json(uri.rstrip("/") + "/task", timeout) or {}
    if not container and not task:
        return None
    labels = container.get("Labels")
    labels = labels if isinstance(labels, dict) else {}
    return EcsMetadata(
        task_arn=_opt_str(labels.get("com.amazonaws.ecs.task-arn") or task.get("TaskARN")),
        cluster=_opt_str(labels.get("com.amazonaws.ecs.cluster") or task.get("Cluster")),
        container=_opt_str(container.get("Name") or labels.get("com.amazonaws.ecs.container-name")),
        service=_opt_str(task.get("ServiceName")),
    )


# --- counters shared with forked pool processes -----------------------------------------------


class TaskCounters:
    """started / succeeded / failed / last-started time, in shared memory.

    Created in the worker's main process before the pool forks, so prefork children (where the
    task signals fire) update the same memory the main process reads. Pools started with the
    ``spawn`` method would not share it.
    """

    STARTED, SUCCEEDED, FAILED, LAST_STARTED = range(4)

    def __init__(self) -> None:
        import multiprocessing

        self._values: Any = multiprocessing.Array("d", 4, lock=True)

    def task_started(self, now: float) -> None:
        with self._values.get_lock():
            self._values[self.STARTED] += 1
            self._values[self.LAST_STARTED] = now

    def task_succeeded(self) -> None:
        with self._values.get_lock():
            self._values[self.SUCCEEDED] += 1

    def task_failed(self) -> None:
        with self._values.get_lock():
            self._values[self.FAILED] += 1

    def snapshot(self) -> tuple[int, int, int, float | None]:
        with self._values.get_lock():
            started, ok, failed, last = self._values[:]
        return int(started), int(ok), int(failed), (last or None)


# --- the beater: files, registry, busy keeper (celery-agnostic) --------------------------------


@dataclass
class Beater:
    """Does one beat: touch the file, write the ready file once, refresh the registry entry."""

    settings: HeartbeatSettings
    counters: TaskCounters = field(default_factory=TaskCounters)
    registry: RedisLike | None = None
    prefix: str = ""
    busy_limit: float | None = None
    clock: Any = time.time
    node: str = ""
    queues: Sequence[str] = ()
    pool: str = ""
    concurrency: int = 0
    ecs: EcsMetadata | None = None
    active: Any = None  # () -> int
    main_pid: int = field(default_factory=os.getpid)
    _ready_written: bool = False
    _warned: set[str] = field(default_factory=set)
    _registry_failing: bool = False
    _registry_retry_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _busy_since: float | None = None
    _keeper: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    def beat(self) -> None:
        with self._lock:
            self._touch(self.settings.file)
            if not self._ready_written:
                self._ready_written = self._touch(self.settings.ready_file)
            self._write_registry()

    def shutdown(self) -> None:
        self._stopping.set()
        with self._lock:
            for path in (self.settings.file, self.settings.ready_file):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    logger.debug("cannot remove %s: %s", path, exc)
            self._ready_written = False
            if self.registry is not None and self.node:
                try:
                    remove_heartbeat(self.registry, self.node, self.prefix)
                except Exception as exc:  # noqa: BLE001 - redis errors vary
                    logger.info("could not remove heartbeat entry for %s: %s", self.node, exc)

    def snapshot(self) -> WorkerHeartbeat:
        started, ok, failed, last = self.counters.snapshot()
        ecs = self.ecs or EcsMetadata()
        return WorkerHeartbeat(
            node=self.node,
            queues=tuple(self.queues),
            updated=float(self.clock()),
            started=started,
            succeeded=ok,
            failed=failed,
            active=int(self.active()) if self.active is not None else 0,
            last_task_started=last,
            hostname=self.node.partition("@")[2],
            pid=self.main_pid,
            pool=self.pool,
            concurrency=self.concurrency,
            interval=self.settings.interval,
            ecs_task_arn=ecs.task_arn,
            ecs_cluster=ecs.cluster,
            ecs_container=ecs.container,
            ecs_service=ecs.service,
        )

    def _touch(self, path: str) -> bool:
        try:
            try:
                os.utime(path, None)
            except FileNotFoundError:
                with open(path, "a"):
                    pass
            return True
        except OSError as exc:
            if path not in self._warned:
                self._warned.add(path)
                logger.warning(
                    "celery-ecs heartbeat: cannot write %s (%s); the worker keeps running, "
                    "but a heartbeat health check on this path will report it unhealthy",
                    path,
                    exc.strerror or exc,
                )
            return False

    def _write_registry(self) -> None:
        if self.registry is None or not self.node:
            return
        now = time.monotonic()
        if self._registry_failing and now < self._registry_retry_at:
            return
        try:
            write_heartbeat(self.registry, self.snapshot(), self.settings.registry_ttl, self.prefix)
        except Exception as exc:  # noqa: BLE001 - never let the registry hurt the worker
            if not self._registry_failing:
                logger.warning("celery-ecs heartbeat: registry write failed: %s", exc)
            self._registry_failing = True
            self._registry_retry_at = now + REGISTRY_RETRY_AFTER
        else:
            if self._registry_failing:
                logger.info("celery-ecs heartbeat: registry writes recovered")
            self._registry_failing = False

    # In-process pools (solo, threads): the loop is blocked while a task runs.
    def task_started_here(self) -> None:
        self._busy_since = time.monotonic()
        if self._keeper is None:
            self._keeper = threading.Thread(
                target=self._keep_beating, name="celery-ecs-heartbeat", daemon=True
            )
            self._keeper.start()

    def task_finished_here(self) -> None:
        self._busy_since = None

    def _keep_beating(self) -> None:
        while not self._stopping.wait(self.settings.interval):
            since = self._busy_since
            if since is None:
                continue
            if self.busy_limit is not None and time.monotonic() - since > self.busy_limit:
                continue
            self.beat()


# --- celery wiring ----------------------------------------------------------------------------

_ACTIVE: Beater | None = None
_APP_ATTR = "_celery_ecs_heartbeat"


def _on_prerun(**_: Any) -> None:
    beater = _ACTIVE
    if beater is None:
        return
    beater.counters.task_started(time.time())
    if os.getpid() == beater.main_pid:
        beater.task_started_here()


def _on_postrun(**_: Any) -> None:
    beater = _ACTIVE
    if beater is not None and os.getpid() == beater.main_pid:
        beater.task_finished_here()


def _on_success(**_: Any) -> None:
    if _ACTIVE is not None:
        _ACTIVE.counters.task_succeeded()


def _on_failure(**_: Any) -> None:
    if _ACTIVE is not None:
        _ACTIVE.counters.task_failed()


def _registry_for(app: Any, settings: HeartbeatSettings) -> tuple[RedisLike | None, str]:
    target = settings.registry
    prefix = ""
    if target is not None and target.strip().lower() == "off":
        return None, ""
    if not target:
        broker = app.conf.broker_write_url or app.conf.broker_url
        if not isinstance(broker, str) or not broker.startswith(("redis://", "rediss://")):
            logger.info("celery-ecs heartbeat: broker is not Redis, registry disabled")
            return None, ""
        target = broker
        options = app.conf.broker_transport_options or {}
        prefix = str(options.get("global_keyprefix") or "")
    import redis

    client: RedisLike = redis.Redis.from_url(
        target,
        socket_timeout=REGISTRY_SOCKET_TIMEOUT,
        socket_connect_timeout=REGISTRY_SOCKET_TIMEOUT,
    )
    return client, prefix


def _step_class(settings: HeartbeatSettings) -> type:
    from celery import bootsteps

    class Heartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
        """celery-ecs heartbeat: file, ready file and registry entry from the worker's loop."""

        label = "celery-ecs heartbeat"
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, c: Any, **kwargs: Any) -> None:
            global _ACTIVE
            super().__init__(c, **kwargs)
            # Runs in the main process before the pool forks: the counters are shared.
            limit = c.app.conf.task_time_limit
            self.beater = Beater(settings=settings, busy_limit=float(limit) if limit else None)
            self.entries: list[Any] = []
            self.started_once = False
            _ACTIVE = self.beater

        def start(self, c: Any) -> None:
            b = self.beater
            if not self.started_once:
                self.started_once = True
                b.node = c.hostname
                b.pool = type(c.pool).__module__.rsplit(".", 1)[-1] if c.pool else ""
                b.concurrency = int(getattr(c.controller, "concurrency", 0) or 0)
                b.ecs = fetch_ecs_metadata(settings.ecs_metadata_uri)
                b.registry, b.prefix = _registry_for(c.app, settings)
                from celery.worker import state

                b.active = lambda: len(state.active_requests)
            b.queues = _consumed_queues(c)
            # First beat as soon as the loop runs (the task consumer is consuming then).
            self.entries = [
                c.timer.call_after(0.0, b.beat),
                c.timer.call_repeatedly(settings.interval, self._tick, args=(c,)),
            ]

        def _tick(self, c: Any) -> None:
            self.beater.queues = _consumed_queues(c)
            self.beater.beat()

        def stop(self, c: Any) -> None:  # also on consumer restart (broker connection lost)
            for entry in self.entries:
                entry.cancel()
            self.entries = []

        def shutdown(self, c: Any) -> None:
            self.stop(c)
            self.beater.shutdown()

    return Heartbeat


def _consumed_queues(c: Any) -> list[str]:
    consumer = getattr(c, "task_consumer", None)
    if consumer is not None:
        return sorted(q.name for q in consumer.queues)
    return sorted(c.app.amqp.queues.consume_from)


def install(app: Any, settings: HeartbeatSettings | None = None) -> None:
    """Add the heartbeat bootstep to ``app``'s workers (idempotent).

    ``settings`` defaults to :meth:`HeartbeatSettings.from_env` read now, at import of the app.
    """
    if getattr(app, _APP_ATTR, None) is not None:
        return
    from celery import signals

    settings = settings or HeartbeatSettings.from_env()
    if not settings.interval > 0:
        raise ConfigError(f"heartbeat interval must be greater than 0, got {settings.interval}")
    if not settings.registry_ttl > settings.interval:
        raise ConfigError(
            f"heartbeat registry TTL ({settings.registry_ttl:g} s) must be longer than the "
            f"interval ({settings.interval:g} s), or entries expire between beats"
        )
    step = _step_class(settings)
    app.steps["consumer"].add(step)
    setattr(app, _APP_ATTR, step)
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="celery-ecs-hb-prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="celery-ecs-hb-postrun")
    signals.task_success.connect(_on_success, weak=False, dispatch_uid="celery-ecs-hb-success")
    signals.task_failure.connect(_on_failure, weak=False, dispatch_uid="celery-ecs-hb-failure")

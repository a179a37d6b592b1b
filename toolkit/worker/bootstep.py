"""Worker liveness: a heartbeat bootstep driven by the worker's own event loop, and its registry.

Enable it in one line, next to the app (every worker started from this app gets it)::

    app = Celery("proj")
    toolkit.heartbeat.install(app)

The step is a *consumer* bootstep started after the task consumer. From the worker's timer (the
event loop's timer in the prefork and solo pools, so a frozen or blocked loop stops beating) it,
every ``interval`` seconds:

* touches the heartbeat file (``celery-ecs healthcheck heartbeat`` checks its age);
* writes the ready file at its first beat, i.e. once the loop runs and the queues are consumed;
* writes this node's entry in the Redis registry, with a TTL;
* flushes the per-task counts (:mod:`toolkit.worker.counting`) that the pool processes added
  since the last beat, in one round trip (none when nothing finished).

Every task is counted by name where it ran (``task_prerun`` / ``task_postrun``: succeeded,
failed or retried, and its runtime), and failures only the main process sees (hard time limit,
a lost child: ``task_failure``) there; the counts live in shared memory created before the pool
forks, one slot per pool process.

It beats only while the consumer's broker connection is up (Celery stops the step while it
reconnects). On shutdown it removes both files and its registry entry. A path it cannot write is
logged once as a warning and the worker keeps running; so is a registry or ECS metadata endpoint
it cannot use (the worker then runs without them).

The solo pool runs each task in the event loop itself, so the loop cannot beat during a task.
For the solo pool only, a helper thread beats while a task is in progress, for at most the task's
own time limit (``time_limit`` / ``soft_time_limit``, per task or per call), else the app's
``task_time_limit``, else ``CELERY_ECS_HEARTBEAT_MAX_BUSY`` (default 1800 s). A long task is
therefore not a false kill, a task hung past that cap goes stale, and a SIGSTOPped worker or a
loop blocked between tasks goes stale at once. (The threads pool runs tasks in worker threads
while the loop keeps running, so it needs no helper: its beats stop when the loop is blocked.)

Registry contract: see :mod:`toolkit.registry` (re-exported by :mod:`toolkit.heartbeat`:
:func:`read_registry`, :class:`WorkerHeartbeat`, the pure helpers).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from toolkit.celeryapp import broker_of
from toolkit.env import ENV_HEARTBEAT_MAX_BUSY, ENV_HEARTBEAT_REGISTRY
from toolkit.errors import ConfigError
from toolkit.registry import (
    ActiveTask,
    RedisLike,
)
from toolkit.urls import redact_url
from toolkit.worker.beater import REGISTRY_SOCKET_TIMEOUT, Beater, TaskView
from toolkit.worker.counting import TaskCounter, TaskFlusher, TaskTable, table_slots, task_name
from toolkit.worker.metadata import fetch_ecs_metadata
from toolkit.worker.settings import HeartbeatSettings

logger = logging.getLogger("toolkit.heartbeat")  # the public path: operators filter on it

SOLO_POOL_MODULE = "celery.concurrency.solo"

# --- celery wiring ----------------------------------------------------------------------------

_ACTIVE: Beater | None = None
_APP_ATTR = "_celery_ecs_heartbeat"



def _task_time_limit(task: Any) -> float | None:
    """The running task's own time limit: the call's ``time_limit``/``soft_time_limit`` (the
    request's ``timelimit``), else the task class's; ``None`` when it has none."""
    request = getattr(task, "request", None)
    timelimit = getattr(request, "timelimit", None) or (None, None)
    try:
        hard, soft = tuple(timelimit)[:2]
    except (TypeError, ValueError):
        hard = soft = None
    for value in (hard, soft, getattr(task, "time_limit", None),
                  getattr(task, "soft_time_limit", None)):
        try:
            if value and float(value) > 0:
                return float(value)
        except (TypeError, ValueError):
            continue
    return None


def on_task_prerun(task: Any = None, task_id: str | None = None, **_: Any) -> None:
    beater = _ACTIVE
    if beater is None:
        return
    if beater.counter is not None and task_id:
        beater.counter.started(task_id)
    if beater.solo and os.getpid() == beater.main_pid:
        beater.task_started_here(_task_time_limit(task))


def on_task_postrun(task: Any = None, task_id: str | None = None, state: str | None = None,
                    **_: Any) -> None:
    beater = _ACTIVE
    if beater is None:
        return
    if beater.counter is not None and task_id:
        beater.counter.finished(task_id, task_name(task), str(state))
    if os.getpid() == beater.main_pid:
        beater.task_finished_here()


def _outcome(failed: bool) -> None:
    beater = _ACTIVE
    if beater is None:
        return
    index = None
    if os.getpid() != beater.main_pid:
        from billiard.process import current_process

        index = getattr(current_process(), "index", None)
    beater.outcomes.add(beater.outcomes.slot_for(index), failed)


def on_task_success(**_: Any) -> None:
    _outcome(False)


def on_task_failure(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
    _outcome(True)
    beater = _ACTIVE
    if beater is not None and beater.counter is not None and task_id:
        beater.counter.failed_elsewhere(task_id, task_name(sender))


def on_worker_shutdown(**_: Any) -> None:
    """After the pool has stopped: the counts of the tasks that finished during a warm
    shutdown are flushed too."""
    beater = _ACTIVE
    if beater is not None and os.getpid() == beater.main_pid:
        with beater._lock:
            beater.flush_tasks()


def _copy(items: Any) -> list[Any]:
    """A list of a WeakSet that other threads may change (threads pool, solo helper)."""
    for _ in range(5):
        try:
            return list(items)
        except RuntimeError:  # changed size during iteration
            continue
    return []


#: a task's own hard time limit extends max_task_runtime by this much before it is hung (the
#: prefork pool kills a task at its hard limit: one still running a minute later is unkillable)
LIMIT_GRACE = 60.0


def _hard_limit(req: Any, default: float | None) -> float | None:
    """The request's hard time limit: per call, else the task's, else ``task_time_limit``."""
    limits = getattr(req, "time_limits", None) or (None, None)
    try:
        hard = tuple(limits)[0]
    except (TypeError, IndexError):
        hard = None
    task = getattr(req, "task", None)
    for value in (hard, getattr(task, "time_limit", None), default):
        try:
            if value and float(value) > 0:
                return float(value)
        except (TypeError, ValueError):
            continue
    return None


def task_view(consumer: Any = None, default_limit: float | None = None,
              slots: int | None = None) -> TaskView:
    """What this worker runs and holds now, from Celery's own bookkeeping in the main process
    (the sets the consumer clears when its connection closes, so nothing stale is counted):
    ``active_requests`` (accepted by a pool slot, with their start), reserved requests waiting
    for a slot (prefetched), ``scheduled_requests`` (ETA/countdown not due), the rate limits'
    token buckets, and ``all_total_count`` (tasks accepted since the worker started)."""
    from celery.worker import state

    active = []
    for req in _copy(state.active_requests):
        start = getattr(req, "time_start", None)
        if start:
            active.append(ActiveTask(str(req.name), str(req.id), float(start),
                                     _hard_limit(req, default_limit)))
    running = set(map(id, _copy(state.active_requests)))
    prefetched = sum(1 for req in _copy(state.reserved_requests)
                     if id(req) not in running and getattr(req, "time_start", None) is None)
    limited = 0
    for bucket in list(getattr(consumer, "task_buckets", {}).values()):
        contents = getattr(bucket, "contents", None) if bucket else None
        limited += len(contents) if contents is not None else 0
    active.sort(key=lambda t: t.started)
    # scheduled_requests (ETA/countdown not due) exists from Celery 5.5; before it they are timer
    # entries only, not counted (they never excuse a worker that takes no ready work anyway)
    scheduled = getattr(state, "scheduled_requests", None)
    return TaskView(tuple(active), prefetched=prefetched,
                    eta=0 if scheduled is None else len(_copy(scheduled)), rate_limited=limited,
                    started=int(state.all_total_count[0]), slots=slots)


def pool_slots(c: Any, solo: bool) -> int:
    """How many tasks the worker can run at once: 1 for solo, the autoscaler's maximum under
    ``--autoscale``, else the concurrency."""
    if solo:
        return 1
    controller = getattr(c, "controller", None)
    for name in ("max_concurrency", "concurrency"):
        try:
            value = int(getattr(controller, name, 0) or 0)
        except (TypeError, ValueError):
            continue
        if value > 0:
            return value
    return 0


def _registry_for(app: Any, settings: HeartbeatSettings) -> tuple[RedisLike | None, str]:
    target = settings.registry
    prefix = ""
    if target is not None and target.strip().lower() == "off":
        return None, ""
    if not target:
        broker = broker_of(app)
        if not broker.is_redis:
            logger.info("celery-ecs heartbeat: broker is not Redis, registry disabled")
            return None, ""
        target, prefix = broker.url, broker.global_keyprefix
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
            # Runs in the main process before the pool forks: the outcome slots and the
            # per-task table are shared memory, one slot per pool process.
            self.beater = Beater(settings=settings, busy_limit=_busy_limit(c.app, settings))
            pool = type(getattr(c, "pool", None)).__module__
            self.beater.counter = TaskCounter(TaskTable(table_slots(pool, pool_slots(c, False))))
            self.entries: list[Any] = []
            self.started_once = False
            _ACTIVE = self.beater

        def start(self, c: Any) -> None:
            b = self.beater
            if not self.started_once:
                self.started_once = True
                b.node = c.hostname
                if b.counter is not None:
                    b.flusher = TaskFlusher(b.counter.table, b.node)
                module = type(c.pool).__module__ if c.pool else ""
                b.pool = module.rsplit(".", 1)[-1]
                b.solo = module == SOLO_POOL_MODULE
                b.concurrency = pool_slots(c, module == SOLO_POOL_MODULE)
                limit = _float_or_none(c.app.conf.task_time_limit)
                b.tasks = lambda: task_view(c, limit, pool_slots(c, b.solo))
                b.booted = time.time()
                _setup_extras(b, c.app, settings)
                if b.solo:
                    logger.warning(
                        "celery-ecs heartbeat: solo pool: tasks run in the worker's loop, so "
                        "`celery-ecs healthcheck ping` gets no reply while a task runs (use the "
                        "heartbeat mode, or ping with --heartbeat-file). While a task runs a "
                        "helper thread keeps the heartbeat fresh for at most the task's time "
                        "limit, else %g s (task_time_limit / %s); past that it goes stale.",
                        b.busy_limit or 0.0,
                        ENV_HEARTBEAT_MAX_BUSY,
                    )
            b.queues = _consumed_queues(c)
            if not b.declared:
                b.declared = tuple(b.queues)
            # First beat as soon as the loop runs (the task consumer is consuming then).
            self.entries = [
                c.timer.call_after(0.0, self._tick, args=(c,)),
                c.timer.call_repeatedly(settings.interval, self._tick, args=(c,)),
            ]

        def _tick(self, c: Any) -> None:
            if not consuming(c):
                return
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


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value else None
    except (TypeError, ValueError):
        return None


def _busy_limit(app: Any, settings: HeartbeatSettings) -> float | None:
    """The solo-pool busy cap for tasks without a time limit of their own: the app's
    ``task_time_limit`` (or ``task_soft_time_limit``) when set, else ``settings.max_busy``."""
    for value in (app.conf.task_time_limit, app.conf.task_soft_time_limit):
        if value:
            return float(value)
    return settings.max_busy if settings.max_busy > 0 else None


def _setup_extras(beater: Beater, app: Any, settings: HeartbeatSettings) -> None:
    """ECS metadata and the registry client: optional, so never fatal to the worker."""
    try:
        beater.ecs = fetch_ecs_metadata(settings.ecs_metadata_uri)
    except Exception as exc:  # noqa: BLE001 - a bad endpoint value must not kill the worker
        logger.warning(
            "celery-ecs heartbeat: cannot read ECS task metadata (%s); running without it",
            type(exc).__name__,
        )
        beater.ecs = None
    try:
        beater.registry, beater.prefix = _registry_for(app, settings)
    except Exception as exc:  # noqa: BLE001 - e.g. a malformed URL or a ';' failover list
        target = settings.registry or app.conf.broker_write_url or app.conf.broker_url
        shown = redact_url(target) if isinstance(target, str) else "<not a string>"
        # The exception text is not shown: URL parsers quote the part they choke on, which
        # can be a piece of the password.
        logger.warning(
            "celery-ecs heartbeat: cannot use registry URL %s (%s); running without the "
            "registry (the heartbeat files still work). Set %s to one redis:// URL, or 'off'.",
            shown,
            type(exc).__name__,
            ENV_HEARTBEAT_REGISTRY,
        )
        beater.registry, beater.prefix = None, ""


def consuming(c: Any) -> bool:
    """Whether the consumer ``c`` has a task consumer and its broker connection is up.

    A beat proves the loop runs *and* the worker is attached to the broker; while Celery
    reconnects, or after its connection object is closed, no beat is written. A half-open TCP
    connection is only noticed by the transport's own heartbeats (AMQP) or socket errors.
    """
    if getattr(c, "task_consumer", None) is None:
        return False
    conn = getattr(c, "connection", None)
    if conn is None:
        return False
    try:
        return bool(conn.connected)
    except Exception:  # noqa: BLE001 - a broken transport counts as not connected
        return False


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
    signals.task_prerun.connect(on_task_prerun, weak=False, dispatch_uid="celery-ecs-hb-prerun")
    signals.task_postrun.connect(on_task_postrun, weak=False, dispatch_uid="celery-ecs-hb-postrun")
    signals.task_success.connect(on_task_success, weak=False, dispatch_uid="celery-ecs-hb-success")
    signals.task_failure.connect(on_task_failure, weak=False, dispatch_uid="celery-ecs-hb-failure")
    signals.worker_shutdown.connect(on_worker_shutdown, weak=False,
                                    dispatch_uid="celery-ecs-hb-shutdown")

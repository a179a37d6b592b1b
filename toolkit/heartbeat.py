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

Registry contract: see :mod:`toolkit.registry` (re-exported here: :func:`read_registry`,
:class:`WorkerHeartbeat`, the pure helpers).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from toolkit.config import (
    ENV_HEARTBEAT_MAX_BUSY,
    ENV_HEARTBEAT_REGISTRY,
    HeartbeatSettings,
    redact_url,
)
from toolkit.errors import ConfigError
from toolkit.registry import (
    RedisLike,
    WorkerHeartbeat,
    _opt_str,
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
#: Seconds the worker's loop waits for the shared task counters' lock before it skips the counters
#: for that beat (a pool process killed while holding it would otherwise block the loop forever).
COUNTERS_LOCK_TIMEOUT = 0.1
#: Seconds a pool process waits for that lock before it skips one count.
COUNTERS_LOCK_TIMEOUT_CHILD = 1.0
SOLO_POOL_MODULE = "celery.concurrency.solo"


# --- ECS task metadata ------------------------------------------------------------------------


@dataclass(frozen=True)
class EcsMetadata:
    task_arn: str | None = None
    cluster: str | None = None
    container: str | None = None
    service: str | None = None


def _get_json(opener: Any, url: str, timeout: float) -> dict[str, Any] | None:
    import http.client

    if not url.startswith(("http://", "https://")):
        return None
    try:
        with opener.open(url, timeout=timeout) as resp:
            data = json.loads(resp.read(1_000_000))
    except (OSError, ValueError, http.client.HTTPException) as exc:
        logger.info("ECS metadata %s unavailable: %s", url, exc)
        return None
    return data if isinstance(data, dict) else None


def fetch_ecs_metadata(uri: str | None, timeout: float = METADATA_TIMEOUT) -> EcsMetadata | None:
    """Read this container's task ARN, cluster, container name and service name (when ECS gives
    one) from ``$ECS_CONTAINER_METADATA_URI_V4``. ``None`` when not on ECS or unreachable."""
    if not uri:
        return None
    # Imported here, once per worker start: every process importing the app imports this module.
    import urllib.request

    # The task metadata endpoint is link-local: never send it through HTTP(S)_PROXY.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    container = _get_json(opener, uri, timeout) or {}
    task = _get_json(opener, uri.rstrip("/") + "/task", timeout) or {}
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

    The lock is taken with a timeout everywhere: a pool process killed (SIGKILL, OOM) while it
    holds the lock never releases it, and the worker's loop must not block on it. A count that
    cannot take the lock is dropped, and a snapshot that cannot take it repeats the last one
    (both logged once per process).
    """

    STARTED, SUCCEEDED, FAILED, LAST_STARTED = range(4)

    def __init__(self) -> None:
        import multiprocessing

        self._values: Any = multiprocessing.Array("d", 4, lock=True)
        self._last: tuple[int, int, int, float | None] = (0, 0, 0, None)
        self._warned_pid = 0

    def _acquire(self, timeout: float) -> bool:
        if self._values.get_lock().acquire(True, timeout):
            return True
        if self._warned_pid != os.getpid():
            self._warned_pid = os.getpid()
            logger.warning(
                "celery-ecs heartbeat: task counters lock not available after %g s (a pool "
                "process probably died holding it); counts are skipped while it stays locked",
                timeout,
            )
        return False

    def _add(self, index: int, last_started: float | None = None) -> None:
        if not self._acquire(COUNTERS_LOCK_TIMEOUT_CHILD):
            return
        try:
            self._values[index] += 1
            if last_started is not None:
                self._values[self.LAST_STARTED] = last_started
        finally:
            self._values.get_lock().release()

    def task_started(self, now: float) -> None:
        self._add(self.STARTED, now)

    def task_succeeded(self) -> None:
        self._add(self.SUCCEEDED)

    def task_failed(self) -> None:
        self._add(self.FAILED)

    def snapshot(
        self, timeout: float = COUNTERS_LOCK_TIMEOUT
    ) -> tuple[int, int, int, float | None]:
        if not self._acquire(timeout):
            return self._last
        try:
            started, ok, failed, last = self._values[:]
        finally:
            self._values.get_lock().release()
        self._last = (int(started), int(ok), int(failed), (last or None))
        return self._last


# --- the beater: files, registry, busy keeper (celery-agnostic) --------------------------------


@dataclass
class Beater:
    """Does one beat: touch the file, write the ready file once, refresh the registry entry."""

    settings: HeartbeatSettings
    counters: TaskCounters = field(default_factory=TaskCounters)
    registry: RedisLike | None = None
    prefix: str = ""
    #: the busy cap for tasks without a time limit of their own (solo pool helper thread)
    busy_limit: float | None = None
    clock: Any = time.time
    node: str = ""
    queues: Sequence[str] = ()
    pool: str = ""
    concurrency: int = 0
    ecs: EcsMetadata | None = None
    active: Any = None  # () -> int
    main_pid: int = field(default_factory=os.getpid)
    solo: bool = False  # tasks run in the worker's loop: beat from a helper thread meanwhile
    _warned: set[str] = field(default_factory=set)
    _registry_failing: bool = False
    _registry_retry_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _busy_since: float | None = None
    _busy_cap: float | None = None
    _keeper: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    def beat(self) -> None:
        with self._lock:
            if self._stopping.is_set():  # never re-create what shutdown() removed
                return
            self._touch(self.settings.file)
            if not os.path.exists(self.settings.ready_file):  # also if deleted while consuming
                self._touch(self.settings.ready_file)
            self._write_registry()

    def shutdown(self) -> None:
        self._stopping.set()
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            # It may be inside beat() (at most one registry write: 1 s socket timeouts).
            keeper.join(timeout=2 * REGISTRY_SOCKET_TIMEOUT + 1.0)
        with self._lock:
            for path in (self.settings.file, self.settings.ready_file):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    logger.debug("cannot remove %s: %s", path, exc)
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

    # The solo pool: the loop is blocked while a task runs.
    def task_started_here(self, limit: float | None = None) -> None:
        """A task started in the worker's own process: beat from a helper thread while it runs,
        for at most ``limit`` seconds (the task's time limit), else :attr:`busy_limit`."""
        self._busy_cap = limit if limit else self.busy_limit
        self._busy_since = time.monotonic()
        if self._keeper is None and not self._stopping.is_set():
            self._keeper = threading.Thread(
                target=self._keep_beating, name="celery-ecs-heartbeat", daemon=True
            )
            self._keeper.start()

    def task_finished_here(self) -> None:
        self._busy_since = None

    def _keep_beating(self) -> None:
        while not self._stopping.wait(self.settings.interval):
            since, cap = self._busy_since, self._busy_cap
            if since is None:
                continue
            if cap is not None and time.monotonic() - since > cap:
                continue  # hung past its limit: let the heartbeat go stale
            self.beat()


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


def _on_prerun(task: Any = None, **_: Any) -> None:
    beater = _ACTIVE
    if beater is None:
        return
    beater.counters.task_started(time.time())
    if beater.solo and os.getpid() == beater.main_pid:
        beater.task_started_here(_task_time_limit(task))


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
        # A failover list "redis://a;redis://b": Celery connects to the first one first.
        target = broker.split(";", 1)[0].strip()
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
            self.beater = Beater(settings=settings, busy_limit=_busy_limit(c.app, settings))
            self.entries: list[Any] = []
            self.started_once = False
            _ACTIVE = self.beater

        def start(self, c: Any) -> None:
            b = self.beater
            if not self.started_once:
                self.started_once = True
                b.node = c.hostname
                module = type(c.pool).__module__ if c.pool else ""
                b.pool = module.rsplit(".", 1)[-1]
                b.solo = module == SOLO_POOL_MODULE
                b.concurrency = int(getattr(c.controller, "concurrency", 0) or 0)
                from celery.worker import state

                b.active = lambda: len(state.active_requests)
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
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="celery-ecs-hb-prerun")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="celery-ecs-hb-postrun")
    signals.task_success.connect(_on_success, weak=False, dispatch_uid="celery-ecs-hb-success")
    signals.task_failure.connect(_on_failure, weak=False, dispatch_uid="celery-ecs-hb-failure")

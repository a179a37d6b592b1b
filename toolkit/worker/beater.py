"""One heartbeat: touch the file, write the ready file once, refresh the registry entry.

Celery-agnostic: the bootstep (:mod:`toolkit.worker.bootstep`) drives it from the worker's loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from toolkit.registry import (
    RedisLike,
    WorkerHeartbeat,
    remove_heartbeat,
    write_heartbeat,
)
from toolkit.worker.metadata import EcsMetadata
from toolkit.worker.settings import HeartbeatSettings

logger = logging.getLogger("toolkit.heartbeat")  # the public path: operators filter on it

REGISTRY_SOCKET_TIMEOUT = 1.0
REGISTRY_RETRY_AFTER = 10.0
#: Seconds the worker's loop waits for the shared task counters' lock before it skips the counters
#: for that beat (a pool process killed while holding it would otherwise block the loop forever).
COUNTERS_LOCK_TIMEOUT = 0.1
#: Seconds a pool process waits for that lock before it skips one count.
COUNTERS_LOCK_TIMEOUT_CHILD = 1.0

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

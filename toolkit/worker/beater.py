"""One heartbeat: touch the file, write the ready file once, refresh the registry entry.

Celery-agnostic: the bootstep (:mod:`toolkit.worker.bootstep`) drives it from the worker's loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolkit.registry import (
    MAX_TASKS_LISTED,
    ActiveTask,
    RedisLike,
    WorkerHeartbeat,
    remove_heartbeat,
    write_heartbeat,
)
from toolkit.worker.counting import TaskCounter, TaskFlusher
from toolkit.worker.metadata import EcsMetadata
from toolkit.worker.settings import HeartbeatSettings

logger = logging.getLogger("toolkit.heartbeat")  # the public path: operators filter on it

REGISTRY_SOCKET_TIMEOUT = 1.0
REGISTRY_RETRY_AFTER = 10.0
#: slots of task outcomes in shared memory: the worker's own process, then one per pool process
#: index (billiard reuses a dead child's index for its replacement, so a slot has one writer)
OUTCOME_SLOTS = 64

# --- what the worker is doing, as the bootstep reads it from Celery's own state ----------------


@dataclass(frozen=True)
class TaskView:
    """The worker's tasks at one instant, from its main process's own bookkeeping (no shared
    memory): what runs (oldest first), what it holds without running, how many it started."""

    active: tuple[ActiveTask, ...] = ()
    prefetched: int = 0  # reserved, waiting for a pool slot
    eta: int = 0  # ETA/countdown not yet due
    rate_limited: int = 0  # in a rate limit's token bucket
    started: int = 0
    slots: int | None = None  # pool slots now (None: keep the concurrency known at start)

    @property
    def held(self) -> int:
        return self.prefetched + self.eta + self.rate_limited


class TaskOutcomes:
    """succeeded / failed counts, in shared memory **without a lock between processes**.

    Created in the worker's main process before the pool forks. Each pool process adds only to
    its own slot (chosen by its pool index, see :data:`OUTCOME_SLOTS`) and the main process sums
    the slots, so a child killed at any moment can neither block the others nor freeze the
    counts: at worst its one unfinished increment is lost. Threads of one process (the threads
    pool, the solo pool's helper) share a process-local lock, re-created in every forked child.
    """

    def __init__(self, slots: int = OUTCOME_SLOTS) -> None:
        import multiprocessing

        self._slots = max(int(slots), 2)
        self._values: Any = multiprocessing.RawArray("d", 2 * self._slots)
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._reset_lock)

    def _reset_lock(self) -> None:
        self._lock = threading.Lock()

    def slot_for(self, pool_index: int | None) -> int:
        """Slot 0 for the worker's own process, else 1 + the pool index (wrapped)."""
        return 0 if pool_index is None else 1 + int(pool_index) % (self._slots - 1)

    def add(self, slot: int, failed: bool) -> None:
        at = 2 * slot + (1 if failed else 0)
        with self._lock:
            self._values[at] += 1

    def totals(self) -> tuple[int, int]:
        values = self._values[:]
        return int(sum(values[0::2])), int(sum(values[1::2]))


# --- the beater: files, registry, busy keeper (celery-agnostic) --------------------------------


@dataclass
class Beater:
    """Does one beat: touch the file, write the ready file once, refresh the registry entry."""

    settings: HeartbeatSettings
    outcomes: TaskOutcomes = field(default_factory=TaskOutcomes)
    registry: RedisLike | None = None
    prefix: str = ""
    #: the busy cap for tasks without a time limit of their own (solo pool helper thread)
    busy_limit: float | None = None
    clock: Any = time.time
    node: str = ""
    queues: Sequence[str] = ()
    declared: Sequence[str] = ()  # the queues it came up to consume (a cancel changes queues)
    pool: str = ""
    concurrency: int = 0
    ecs: EcsMetadata | None = None
    tasks: Callable[[], TaskView] | None = None  # what the worker runs and holds, now
    booted: float | None = None  # when the worker came up (set at its first start)
    main_pid: int = field(default_factory=os.getpid)
    solo: bool = False  # tasks run in the worker's loop: beat from a helper thread meanwhile
    counter: TaskCounter | None = None  # per-task counts (shared memory, all pool processes)
    flusher: TaskFlusher | None = None  # flushes them with the beats (main process)
    _warned: set[str] = field(default_factory=set)
    _registry_failing: bool = False
    _registry_retry_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _busy_since: float | None = None
    _busy_cap: float | None = None
    _keeper: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _seen_started: int = 0
    _last_started: float | None = None
    _previous_at: float | None = None
    _script: bool = True  # score beats on the broker's clock; off where scripting is refused
    _offset: float = 0.0  # broker clock - ours, as measured by the last scripted write
    _tasks_failing: bool = False

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
            self.flush_tasks()
            if self.registry is not None and self.node:
                try:
                    remove_heartbeat(self.registry, self.node, self.prefix)
                except Exception as exc:  # noqa: BLE001 - redis errors vary
                    logger.info("could not remove heartbeat entry for %s: %s", self.node, exc)

    def snapshot(self) -> WorkerHeartbeat:
        now = float(self.clock())
        view = self.tasks() if self.tasks is not None else TaskView()
        if view.started > self._seen_started:
            # Something started since the last snapshot: the newest running task's start if it
            # is one of them, else (it started and finished in between) now, an upper bound.
            newest = max((t.started for t in view.active), default=None)
            if newest is None or (self._previous_at is not None and newest < self._previous_at):
                newest = now
            self._last_started = max(newest, self._last_started or newest)
            self._seen_started = view.started
        self._previous_at = now
        ok, failed = self.outcomes.totals()
        ecs = self.ecs or EcsMetadata()
        return WorkerHeartbeat(
            node=self.node,
            queues=tuple(self.queues),
            updated=now,
            started=view.started,
            succeeded=ok,
            failed=failed,
            active=len(view.active),
            last_task_started=self._last_started,
            hostname=self.node.partition("@")[2],
            pid=self.main_pid,
            pool=self.pool,
            concurrency=view.slots if view.slots else self.concurrency,
            interval=self.settings.interval,
            ecs_task_arn=ecs.task_arn,
            ecs_cluster=ecs.cluster,
            ecs_container=ecs.container,
            ecs_service=ecs.service,
            booted=self.booted if self.booted is not None else now,
            held=view.held,
            prefetched=view.prefetched,
            eta=view.eta,
            rate_limited=view.rate_limited,
            tasks=view.active[:MAX_TASKS_LISTED],
            youngest_start=max((t.started for t in view.active), default=None),
            longest_limit=max((t.limit for t in view.active if t.limit), default=None),
            declared=tuple(self.declared),
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
            beat = self.snapshot()
            try:
                score = write_heartbeat(self.registry, beat, self.settings.registry_ttl,
                                        self.prefix, script=self._script, offset=self._offset)
            except Exception as exc:  # noqa: BLE001 - redis errors vary
                if not (self._script and _script_refused(exc)):
                    raise
                logger.warning(
                    "celery-ecs heartbeat: Redis refused the heartbeat script (%s); writing "
                    "with a pipeline, beats scored on this host's clock corrected by the last "
                    "offset measured (%+.3f s)", _first_line(exc), self._offset)
                self._script = False
                score = write_heartbeat(self.registry, beat, self.settings.registry_ttl,
                                        self.prefix, script=False, offset=self._offset)
            if self._script:
                self._offset = score - beat.updated
        except Exception as exc:  # noqa: BLE001 - never let the registry hurt the worker
            if not self._registry_failing:
                logger.warning("celery-ecs heartbeat: registry write failed: %s", exc)
            self._registry_failing = True
            self._registry_retry_at = now + REGISTRY_RETRY_AFTER
        else:
            if self._registry_failing:
                logger.info("celery-ecs heartbeat: registry writes recovered")
            self._registry_failing = False
            self.flush_tasks()

    def flush_tasks(self) -> None:
        """Flush the per-task counts to the registry's Redis: one round trip when tasks
        finished since the last flush, none otherwise. Needs Redis scripting (the flush is
        applied once even when sent twice); a failure is retried at the next beat."""
        if self.flusher is None or self.registry is None or not self._script:
            return
        try:
            self.flusher.flush(self.registry, self.prefix)
        except Exception as exc:  # noqa: BLE001 - never let the counts hurt the worker
            if not self._tasks_failing:
                logger.warning("celery-ecs heartbeat: task counts not flushed (%s); they are "
                               "kept and sent again at the next beat", _first_line(exc))
            self._tasks_failing = True
        else:
            if self._tasks_failing:
                logger.info("celery-ecs heartbeat: task counts flushed again")
            self._tasks_failing = False

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
                # Past its limit: the heartbeat file goes stale (the container health check),
                # but the registry still says "alive, running this task since ..." so that the
                # collector judges it by max_task_runtime, not as a dead worker.
                with self._lock:
                    if not self._stopping.is_set():
                        self._write_registry()
                continue
            self.beat()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _script_refused(exc: BaseException) -> bool:
    """A Redis that does not run scripts: unknown command, no permission, scripting disabled."""
    if type(exc).__name__ not in {"ResponseError", "NoPermissionError"}:
        return False
    text = str(exc).lower()
    return any(word in text for word in ("unknown command", "noperm", "permission",
                                         "not allowed", "disabled", "noscript"))

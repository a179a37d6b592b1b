"""Busy or hung? One worker judged on its own, from its heartbeat. Pure decisions.

A heartbeat alone cannot see a hung worker (its loop beats while every slot is stuck in a task,
or while its consumer stopped taking messages), and "no task started lately" alone cannot tell a
hung worker from a busy one (one long legitimate task) or a rate-limited one. So each worker is
judged with what its heartbeat says about its slots, in this order (first match wins)::

    dead           no beat for more than dead_after (on the broker's clock).
    legacy         an older heartbeat format without task details: judged by its beat only,
                   never hung (its tasks cannot be told from a hang).
    hung-task      every slot runs a task, and even the youngest of them started more than
                   max_task_runtime ago: it cannot make progress. The reasons name the tasks.
    busy           every slot runs a task younger than max_task_runtime: busy, not hung, however
                   long since it last started one.
    waiting        it holds tasks it has not started (prefetched behind a slot, rate limited,
                   ETA or countdown): it has work and is pacing it, by design.
    hung-consumer  free slots, nothing held, ready messages in its queues, and no task
                   started for more than stuck_after since its last start (or, if it never
                   started one, since it came up): it stopped consuming (a consumer lost after
                   a broker reconnect, a cancelled consumer, a wedged pool). Not while the
                   queue's oldest message is known to be younger than stuck_after (not blamed
                   yet), nor while it still runs a task younger than max_task_runtime (a
                   redeploy would kill working tasks: the reasons say its consumer may be stuck).
    progressing    started a task within stuck_after, or has been up for less than that.
    idle           nothing to do (no ready messages for the service).

"Older than X" is strictly more than X seconds. Times are unix seconds on one clock (the
collector moves the workers' own timestamps onto the broker's clock before judging).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

WorkerState = Literal[
    "dead", "legacy", "hung-task", "busy", "waiting", "hung-consumer", "progressing", "idle"
]
BAD_STATES: frozenset[str] = frozenset({"dead", "hung-task", "hung-consumer"})
#: how many task names a reason lists before "and N more"
NAMED_TASKS = 3


@dataclass(frozen=True)
class RunningTask:
    name: str
    id: str
    started: float  # unix seconds


@dataclass(frozen=True)
class WorkerProgress:
    """One worker of the service known to the registry (alive or not), on the collector's clock.

    ``held``/``booted`` are None for heartbeats of an older toolkit (no task details)."""

    node: str
    last_beat: float
    started: int
    last_task_started: float | None  # None: no task started since the worker came up
    active: int
    task_arn: str | None
    concurrency: int = 0  # pool slots (0: unknown)
    held: int | None = None  # tasks received and not started
    booted: float | None = None
    tasks: tuple[RunningTask, ...] = ()  # the oldest running tasks
    youngest_start: float | None = None  # the newest start among all running tasks
    pool: str = ""
    queues: tuple[str, ...] = ()  # the queues it came up to consume (empty: not known)

    @property
    def details(self) -> bool:
        return self.held is not None and self.booted is not None


@dataclass(frozen=True)
class WorkerContext:
    """What the service around the worker looks like this cycle."""

    ready: int  # ready messages in the service's queues (not held by any worker)
    oldest_ready_age: float | None  # seconds the oldest of them waits, None: not stamped
    min_backlog: int
    dead_after: float
    stuck_after: float
    max_task_runtime: float
    ready_by_queue: tuple[tuple[str, int], ...] = ()  # per queue of the service, when read

    def ready_for(self, w: WorkerProgress) -> int:
        """Ready messages this worker would take: in the queues it came up to consume (all of
        the service's when either is unknown). A queue the service lists but the worker was
        never told to consume cannot make it hung."""
        if not w.queues or not self.ready_by_queue:
            return self.ready
        by = dict(self.ready_by_queue)
        return sum(by.get(q, 0) for q in dict.fromkeys(w.queues))


@dataclass(frozen=True)
class WorkerJudgement:
    node: str
    task_arn: str | None
    state: WorkerState
    why: str
    notable: bool = False  # not bad, but worth a line in the reasons (a caveat, a pacing worker)

    @property
    def bad(self) -> bool:
        return self.state in BAD_STATES

    def line(self) -> str:
        where = f" (task {self.task_arn})" if self.task_arn else ""
        return f"{self.node}{where}: {self.why}"


def secs(value: float) -> str:
    return f"{max(value, 0.0):.0f} s"


def _named(tasks: tuple[RunningTask, ...], active: int, now: float) -> str:
    shown = [f"{t.name}[{t.id}] for {secs(now - t.started)}" for t in tasks[:NAMED_TASKS]]
    more = active - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _judgement(w: WorkerProgress, state: WorkerState, why: str,
               notable: bool = False) -> WorkerJudgement:
    return WorkerJudgement(w.node, w.task_arn, state, why,
                           notable or state in ("legacy", "busy", "waiting"))


def _all_slots_busy(w: WorkerProgress, ctx: WorkerContext, now: float) -> WorkerJudgement:
    slots, youngest = w.concurrency, w.youngest_start
    if youngest is not None and now - youngest > ctx.max_task_runtime:
        return _judgement(w, "hung-task", (
            f"every slot ({slots}) runs a task older than max_task_runtime"
            f" {ctx.max_task_runtime:g} s: {_named(w.tasks, w.active, now)}"))
    age = "" if youngest is None else f", the youngest for {secs(now - youngest)}"
    return _judgement(w, "busy", f"busy: all {slots} slots run tasks{age}"
                                 f" (max_task_runtime {ctx.max_task_runtime:g} s)")


def _quiet_with_work_ready(
    w: WorkerProgress, ctx: WorkerContext, now: float, quiet: float, what: str, ready: int
) -> WorkerJudgement:
    """Free slots, nothing held, work ready and no start for more than stuck_after."""
    slots = w.concurrency
    free = f"{slots - w.active} of {slots}" if slots > 0 else "some"
    if ctx.oldest_ready_age is not None and ctx.oldest_ready_age <= ctx.stuck_after:
        return _judgement(w, "progressing", (
            f"the ready work is only {secs(ctx.oldest_ready_age)} old; no task started for"
            f" {secs(quiet)} {what}"), notable=True)
    youngest = w.youngest_start
    if w.active > 0 and youngest is not None and now - youngest <= ctx.max_task_runtime:
        return _judgement(w, "progressing", (
            f"runs {w.active} tasks (the youngest for {secs(now - youngest)}) but, with {free}"
            f" slots free and {ready} messages ready, started none for {secs(quiet)}: its"
            " consumer may be stuck; not judged hung while tasks run"), notable=True)
    return _judgement(w, "hung-consumer", (
        f"{free} slots free, nothing held, {ready} messages ready, and no task started for"
        f" {secs(quiet)} {what} (stuck after {ctx.stuck_after:g} s)"))


def judge_worker(w: WorkerProgress, ctx: WorkerContext, now: float) -> WorkerJudgement:
    """This worker's state at ``now``; see the module docstring for the rules."""
    beat_age = now - w.last_beat
    if beat_age > ctx.dead_after:
        return _judgement(w, "dead", f"no heartbeat for {secs(beat_age)}"
                                     f" (dead after {ctx.dead_after:g} s)")
    if w.held is None or w.booted is None:
        return _judgement(w, "legacy", (
            "older celery-ecs-toolkit heartbeat without task details: judged by its heartbeat"
            " only (upgrade the worker to tell busy from hung)"))
    if w.concurrency > 0 and w.active >= w.concurrency:
        return _all_slots_busy(w, ctx, now)
    if w.held > 0:
        return _judgement(w, "waiting", (
            f"holds {w.held} tasks it has not started (prefetched, rate limited or ETA): pacing"
            " work it has"))
    if w.last_task_started is not None:
        since, what = w.last_task_started, "since its last start"
    else:
        since, what = w.booted, "since it came up"
    quiet = now - since
    ready = ctx.ready_for(w)
    if ready >= ctx.min_backlog and quiet > ctx.stuck_after:
        return _quiet_with_work_ready(w, ctx, now, quiet, what, ready)
    if ready < ctx.min_backlog:
        if w.last_task_started is None:
            return _judgement(w, "idle", "idle: nothing ready, no task since it came up")
        return _judgement(w, "idle", f"idle: nothing ready, last task start {secs(quiet)} ago")
    return _judgement(w, "progressing", (
        f"progressing: no task started for {secs(quiet)} {what}, within stuck_after"
        f" {ctx.stuck_after:g} s"))

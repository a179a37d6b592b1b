"""Busy or hung? One worker judged on its own, from its heartbeat. Pure decisions.

A heartbeat alone cannot see a hung worker (its loop beats while every slot is stuck in a task,
or while its consumer stopped taking messages), and "no task started lately" alone cannot tell a
hung worker from a busy one (one long legitimate task) or a rate-limited one. So each worker is
judged with what its heartbeat says about its slots, in this order (first match wins)::

    dead           no beat for more than dead_after (on the broker's clock).
    legacy         an older heartbeat format without task details: judged by its beat only,
                   never hung (its tasks cannot be told from a hang).
    hung-task      every slot runs a task past its limit: older than max_task_runtime, or than
                   the task's own hard time limit plus a grace when that is longer (the pool
                   kills a task at its hard limit; one still running past it is unkillable).
                   It cannot make progress. The reasons name the tasks.
    busy           every slot runs a task, not all of them past their limit: busy, not hung,
                   however long since it last started one.
    waiting        it paces work it holds: rate-limited tasks in their token bucket (by
                   design), or tasks prefetched behind a task it still runs.
    hung-consumer  free slots, and for more than stuck_after since its last start (or, if it
                   never started one, since it came up) it started nothing although work was
                   there for it: ready messages in its queues, or tasks it prefetched and
                   does not hand to its idle pool. It stopped consuming (a consumer lost after a
                   broker reconnect, a cancelled consumer, a wedged pool). Not while the oldest
                   ready message of its queues is known to be younger than stuck_after (not
                   blamed yet), nor while it still runs a task under its limit (a redeploy would
                   kill working tasks: the reasons say its consumer may be stuck).
    progressing    started a task within stuck_after, or has been up for less than that.
    idle           nothing to do (nothing ready in its queues; ETA tasks not yet due).

Quiet time is measured up to the worker's last beat, the newest evidence it gave, not to now.
ETA tasks not yet due never shield a worker: Celery does not let them block its prefetch, so a
consumer holding them still takes ready work. "Older than X" is strictly more than X seconds.
Times are unix seconds on one clock (the collector moves the workers' own timestamps onto the
broker's clock before judging).
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
#: past a task's own hard time limit by this much, it is hung even under max_task_runtime's
#: longer bound; the limit only ever extends max_task_runtime, never shortens it
LIMIT_GRACE = 60.0


@dataclass(frozen=True)
class RunningTask:
    name: str
    id: str
    started: float  # unix seconds
    limit: float | None = None  # its own hard time limit, seconds


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
    held: int | None = None  # tasks received and not started (the three below)
    booted: float | None = None
    tasks: tuple[RunningTask, ...] = ()  # the oldest running tasks
    youngest_start: float | None = None  # the newest start among all running tasks
    pool: str = ""
    queues: tuple[str, ...] = ()  # the queues it came up to consume (empty: not known)
    prefetched: int = 0  # reserved, waiting for a pool slot
    eta: int = 0  # ETA/countdown not yet due
    rate_limited: int = 0  # in a rate limit's token bucket
    longest_limit: float | None = None  # the longest hard time limit among its running tasks

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
    # per queue of the service, when read: (queue, ready messages, oldest age or None)
    ready_by_queue: tuple[tuple[str, int, float | None], ...] = ()

    def ready_for(self, w: WorkerProgress) -> tuple[int, float | None]:
        """(ready messages, the oldest one's age) in the queues this worker came up to consume
        (all of the service's when either is unknown). A queue the service lists but the worker
        was never told to consume cannot make it hung. The age is None unless every one of
        those queues with messages carries the publish stamp."""
        if not w.queues or not self.ready_by_queue:
            return self.ready, self.oldest_ready_age
        mine = set(w.queues)
        rows = [(n, age) for q, n, age in self.ready_by_queue if q in mine]
        ready = sum(n for n, _ in rows)
        ages = [age for n, age in rows if n]
        if any(age is None for age in ages):
            return ready, None
        return ready, max((a for a in ages if a is not None), default=None)

    def bound(self, limit: float | None) -> float:
        """How long a task may run before it is hung: max_task_runtime, or its own hard limit
        plus the grace when that is longer."""
        return max(self.max_task_runtime, (limit or 0.0) + LIMIT_GRACE if limit else 0.0)


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


def _all_past_their_limit(w: WorkerProgress, ctx: WorkerContext, now: float) -> bool:
    """Every running task is older than its bound: each listed one by its own limit, the
    unlisted ones (younger than the listed) through the youngest start and the longest limit."""
    if w.youngest_start is None:
        return False
    if now - w.youngest_start <= ctx.bound(w.longest_limit):
        return False
    return all(now - t.started > ctx.bound(t.limit) for t in w.tasks)


def _young_task_running(w: WorkerProgress, ctx: WorkerContext, now: float) -> bool:
    return w.active > 0 and not _all_past_their_limit(w, ctx, now)


def _all_slots_busy(w: WorkerProgress, ctx: WorkerContext, now: float) -> WorkerJudgement:
    slots, youngest = w.concurrency, w.youngest_start
    if _all_past_their_limit(w, ctx, now):
        return _judgement(w, "hung-task", (
            f"every slot ({slots}) runs a task past its limit (max_task_runtime"
            f" {ctx.max_task_runtime:g} s, or its own time limit + {LIMIT_GRACE:g} s):"
            f" {_named(w.tasks, w.active, now)}"))
    age = "" if youngest is None else f", the youngest for {secs(now - youngest)}"
    return _judgement(w, "busy", f"busy: all {slots} slots run tasks{age}"
                                 f" (max_task_runtime {ctx.max_task_runtime:g} s)")


def _quiet_with_work(
    w: WorkerProgress, ctx: WorkerContext, now: float, quiet: float, what: str,
    ready: int, age: float | None,
) -> WorkerJudgement:
    """Free slots, work there for it, and no start for more than stuck_after."""
    slots = w.concurrency
    free = f"{slots - w.active} of {slots}" if slots > 0 else "some"
    work = (f"{ready} messages ready in its queues" if ready >= ctx.min_backlog
            else f"{w.prefetched} tasks it prefetched")
    if ready >= ctx.min_backlog and not w.prefetched and age is not None \
            and age <= ctx.stuck_after:
        return _judgement(w, "progressing", (
            f"the ready work is only {secs(age)} old; no task started for {secs(quiet)}"
            f" {what}"), notable=True)
    if _young_task_running(w, ctx, now):
        return _judgement(w, "progressing", (
            f"runs {w.active} tasks under their limit but, with {free} slots free and {work},"
            f" started none for {secs(quiet)}: its consumer may be stuck; not judged hung while"
            " tasks run"), notable=True)
    return _judgement(w, "hung-consumer", (
        f"{free} slots free and {work}, but no task started for {secs(quiet)} {what}"
        f" (stuck after {ctx.stuck_after:g} s)"))


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
    if w.rate_limited > 0:
        return _judgement(w, "waiting", (
            f"holds {w.rate_limited} rate-limited tasks in their token bucket: paced by design"))
    if w.prefetched > 0 and _young_task_running(w, ctx, now):
        return _judgement(w, "waiting", (
            f"holds {w.prefetched} prefetched tasks behind the {w.active} it runs"))
    if w.last_task_started is not None:
        since, what = w.last_task_started, "since its last start"
    else:
        since, what = w.booted, "since it came up"
    quiet = min(w.last_beat, now) - since  # evidence reaches the last beat, not now
    ready, age = ctx.ready_for(w)
    has_work = ready >= ctx.min_backlog or w.prefetched > 0
    if has_work and quiet > ctx.stuck_after:
        return _quiet_with_work(w, ctx, now, quiet, what, ready, age)
    if not has_work:
        eta = f"; holds {w.eta} ETA tasks not yet due" if w.eta else ""
        if w.last_task_started is None:
            return _judgement(w, "idle", f"idle: nothing ready, no task since it came up{eta}")
        return _judgement(w, "idle", f"idle: nothing ready, last task start {secs(quiet)}"
                                     f" before its last beat{eta}")
    return _judgement(w, "progressing", (
        f"progressing: no task started for {secs(quiet)} {what}, within stuck_after"
        f" {ctx.stuck_after:g} s"))

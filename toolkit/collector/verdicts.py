"""Service verdicts: is this ECS worker service healthy, behind, stuck, degraded...? Pure decisions.

The collector reads the broker backlog, the heartbeat registry, ECS ``DescribeServices`` (and
``DescribeTasks`` for workers that look dead) and the ``AWS/ECS`` metrics into one
:class:`ServiceObservation`; :func:`judge` turns it, with the thresholds and the time ``now``,
into one :class:`ServiceVerdict` whose reasons carry the numbers behind it. No clock,
environment, boto3 or I/O here. A field that is None could not be read (the ``*_error`` fields
say why); ``ServiceVerdict.backlog`` is then 0 and the reasons say so.

Each worker is judged first, on its own (:mod:`toolkit.collector.worker_rules`: dead, hung in a
task, hung consumer, or busy / waiting / progressing / idle). Workers whose ECS task is stopped
are left out (their registry entries outlive them by an hour). Then the service, where the
first rule that holds wins::

    1. unknown          data is missing: ECS unreadable, the service not found, the broker or the
                        registry unreadable. Nothing else can be judged honestly.
    2. deploying        a deployment replaces tasks on purpose; old workers going quiet is
                        expected, so a deploying service is never stuck (nor remediated).
    3. unknown          ECS runs tasks but no worker ever beat: the heartbeat is not installed.
    4. stuck            no worker makes progress (every one dead or hung), work waits (ready
                        messages plus what its workers hold >= min_backlog) and ECS runs >= 1
                        task. The one verdict with a forced deployment as its remedy.
    5. degraded         some workers dead or hung while others progress, whatever the backlog;
                        or all of them dead or hung with nothing waiting. ``stuck_tasks`` names
                        only the bad tasks (the remedy stops exactly those).
    6. no-capacity      tasks cannot be placed: running < desired with tasks pending (or none
                        running) for longer than scale_out_grace, or an ECS placement failure, or
                        a cluster reservation >= 95 %. A scale-out in its grace is not.
    7. memory-pressure  the whole window's MemoryUtilization at or over memory_high.
    8. behind           backlog growing while workers make progress, or backlog with no task
                        running, or workers of an older toolkit that started nothing lately.
    9. healthy

When in doubt a rule says unknown or behind, never stuck: busy and rate-limited workers are not
hung, a heartbeat without task details is never hung, a service whose broker or registry could
not be read is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from toolkit.collector.worker_rules import (
    RunningTask,
    WorkerContext,
    WorkerJudgement,
    WorkerProgress,
    judge_worker,
    secs,
)

__all__ = [
    "CLUSTER_RESERVATION_FULL", "VERDICTS", "EcsView", "RunningTask", "ServiceObservation",
    "ServiceVerdict", "UtilizationView", "Verdict", "VerdictThresholds", "WorkerJudgement",
    "WorkerProgress", "judge",
]

Verdict = Literal[
    "healthy", "behind", "stuck", "degraded", "memory-pressure", "no-capacity", "deploying",
    "unknown",
]
VERDICTS: tuple[Verdict, ...] = (
    "healthy", "behind", "stuck", "degraded", "memory-pressure", "no-capacity", "deploying",
    "unknown",
)
CLUSTER_RESERVATION_FULL = 95.0  # percent of the cluster's memory or CPU reserved
SHOWN_WORKERS = 5  # workers that are not dead or hung but worth a line (busy, waiting, ...)
#: ECS task states whose registry entries are not counted (the task is gone or going)
STOPPED_STATES = frozenset({"STOPPED", "STOPPING", "DEPROVISIONING", "DELETED"})


@dataclass(frozen=True)
class VerdictThresholds:
    dead_after: float = 90.0  # seconds without a heartbeat before a worker is dead
    stuck_after: float = 300.0  # seconds with free slots, work ready and no start: hung
    min_backlog: int = 1  # backlog below this: staleness does not matter
    memory_high: float = 90.0  # percent of MemoryUtilization, the whole window
    max_task_runtime: float = 3600.0  # a task running longer is hung
    scale_out_grace: float = 300.0  # seconds tasks may stay pending before it is no-capacity


@dataclass(frozen=True)
class EcsView:
    exists: bool
    running: int
    desired: int
    pending: int
    deploying: bool
    launch_type: str | None
    missing_reason: str | None = None  # when not exists: e.g. "cluster prod not found"
    short_since: float | None = None  # running < desired since (unix seconds), when known
    placement_failure: str | None = None  # ECS's newest "unable to place a task" event


@dataclass(frozen=True)
class UtilizationView:
    memory: float | None  # latest complete datapoint, percent (may exceed 100)
    cpu: float | None
    memory_window_min: float | None  # minimum over the evaluation window
    cluster_memory_reservation: float | None  # EC2 clusters only
    cluster_cpu_reservation: float | None


@dataclass(frozen=True)
class ServiceObservation:
    """What one collection cycle saw of one service. None means "could not be read"."""

    cluster: str
    service: str
    backlog: int | None  # ready messages: sum of QueueLength over its queues, all priorities
    missing_queues: tuple[str, ...]  # configured queues no broker has (counted as 0)
    workers: tuple[WorkerProgress, ...] | None  # None: registry unreadable
    ecs: EcsView | None
    utilization: UtilizationView | None
    previous_backlog: int | None = None
    ecs_error: str | None = None  # why ecs is None, e.g. "ThrottlingException after retries"
    broker_error: str | None = None  # why backlog is None
    registry_error: str | None = None  # why workers is None
    oldest_ready_age: float | None = None  # seconds the oldest ready message waits (stamped)
    task_status: tuple[tuple[str, str], ...] = ()  # (task ARN, ECS lastStatus) where asked
    # per queue, when read: (queue, ready messages, the oldest one's age or None)
    ready_by_queue: tuple[tuple[str, int, float | None], ...] = ()
    # tasks whose ECS status could not be read this cycle (DescribeTasks failed), and why
    unreadable_tasks: tuple[str, ...] = ()
    tasks_error: str | None = None
    # the broker near its memory limit or evicting keys: a reason line, never a verdict
    broker_warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceVerdict:
    cluster: str
    service: str
    verdict: Verdict
    reasons: tuple[str, ...]
    backlog: int  # ready messages; 0 when the broker could not be read (the reasons say so)
    workers_alive: int | None
    running: int | None
    desired: int | None
    memory_utilization: float | None
    stuck_tasks: tuple[str, ...]
    # tasks the service's live workers are executing (their `active` counts); None: no registry
    tasks_running: int | None = None
    held: int = 0  # tasks its workers received and have not started
    workers: tuple[WorkerJudgement, ...] = ()  # every counted worker, judged
    exists: bool = True  # False: the service (or its cluster) is not in ECS

    @property
    def worker_stuck_value(self) -> float | None:
        """The ``WorkerStuck`` datum: None (publish nothing) when the data was missing or while
        a deployment replaces the tasks (an alarm keeps its state until they prove themselves)."""
        if self.verdict in ("unknown", "deploying"):
            return None
        return 1.0 if self.verdict == "stuck" else 0.0

    @property
    def workers_stuck_value(self) -> float | None:
        """The ``WorkersStuck`` datum: the dead or hung tasks of a ``degraded`` service (the ones
        its remedy stops), else 0; a ``stuck`` service is ``WorkerStuck``'s (one alarm, one
        remedy: the forced deployment), so it reads 0 here. None when unknown or deploying."""
        if self.verdict in ("unknown", "deploying"):
            return None
        if self.verdict != "degraded":
            return 0.0
        return float(sum(1 for w in self.workers if w.bad))

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "service": self.service,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "backlog": self.backlog,
            "workers_alive": self.workers_alive,
            "running": self.running,
            "desired": self.desired,
            "memory_utilization": self.memory_utilization,
            "stuck_tasks": list(self.stuck_tasks),
            "held": self.held,
            "workers": [
                {"node": w.node, "task_arn": w.task_arn, "state": w.state, "why": w.why}
                for w in self.workers
            ],
        }


@dataclass(frozen=True)
class _Workers:
    """The service's workers at ``now``: counted ones judged, stopped ones set aside."""

    judged: tuple[WorkerJudgement, ...]
    progress: tuple[WorkerProgress, ...]  # the counted workers, in the order of ``judged``
    stopped: int  # registry entries of tasks ECS reports stopped: not counted

    @property
    def bad(self) -> tuple[WorkerJudgement, ...]:
        return tuple(j for j in self.judged if j.bad)

    @property
    def good(self) -> tuple[WorkerJudgement, ...]:
        return tuple(j for j in self.judged if not j.bad)

    @property
    def alive(self) -> tuple[WorkerProgress, ...]:
        return tuple(p for p, j in zip(self.progress, self.judged, strict=True)
                     if j.state != "dead")

    @property
    def held(self) -> int:
        return sum(p.held or 0 for p in self.progress)


def _workers(obs: ServiceObservation, th: VerdictThresholds, now: float) -> _Workers:
    status = dict(obs.task_status)
    counted = [w for w in obs.workers or () if status.get(w.task_arn or "") not in STOPPED_STATES]
    ctx = WorkerContext(
        ready=obs.backlog or 0, oldest_ready_age=obs.oldest_ready_age,
        min_backlog=th.min_backlog, dead_after=th.dead_after, stuck_after=th.stuck_after,
        max_task_runtime=th.max_task_runtime, ready_by_queue=obs.ready_by_queue,
    )
    judged = tuple(judge_worker(w, ctx, now) for w in counted)
    return _Workers(judged, tuple(counted), len(obs.workers or ()) - len(counted))


def _missing_data(obs: ServiceObservation, w: _Workers | None) -> list[str]:
    """Say which data is missing, with the error the collector recorded when it has one."""
    if obs.ecs is not None and not obs.ecs.exists:
        default = f"service {obs.service} not found in cluster {obs.cluster}"
        return [obs.ecs.missing_reason or default]
    unreadable = set(obs.unreadable_tasks)
    blind = [] if w is None else [
        j.task_arn for j in w.judged if j.state == "dead" and j.task_arn in unreadable]
    if blind:  # dead, or a stopped task's leftover entry? ECS could not say
        why = f": {obs.tasks_error}" if obs.tasks_error else ""
        return [f"could not tell whether task {blind[0]} is stopped or its worker dead"
                + (f" (and {len(blind) - 1} more)" if len(blind) > 1 else "") + why]
    return [
        f"could not read {what}" + (f": {error}" if error else "")
        for absent, what, error in (
            (obs.ecs is None, "ECS", obs.ecs_error),
            (obs.backlog is None, "the broker backlog", obs.broker_error),
            (obs.workers is None, "the heartbeat registry", obs.registry_error),
        )
        if absent
    ]


def _facts(obs: ServiceObservation, w: _Workers | None, th: VerdictThresholds) -> list[str]:
    """The numbers behind any verdict, for whatever data was read."""
    out: list[str] = []
    if obs.backlog is not None:
        grew = "" if obs.previous_backlog is None else f", {obs.previous_backlog} last cycle"
        held = f", {w.held} held by its workers" if w is not None and w.held else ""
        out.append(f"backlog {obs.backlog} messages ready{grew}{held}"
                   f" (min_backlog {th.min_backlog})")
    if obs.missing_queues:
        out.append("queues no broker has, counted as 0: " + ", ".join(obs.missing_queues))
    if w is not None and w.judged:
        states: dict[str, int] = {}
        for j in w.judged:
            states[j.state] = states.get(j.state, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in states.items())
        active = sum(p.active for p in w.alive)
        out.append(f"{len(w.alive)} of {len(w.judged)} workers alive ({summary}), {active} tasks"
                   f" running (dead after {th.dead_after:g} s, stuck after {th.stuck_after:g} s,"
                   f" max_task_runtime {th.max_task_runtime:g} s)")
        shown = [j for j in w.good if j.notable]
        out.extend(j.line() for j in shown[:SHOWN_WORKERS])
        if len(shown) > SHOWN_WORKERS:
            out.append(f"and {len(shown) - SHOWN_WORKERS} more workers like these")
    elif w is not None:
        out.append("no worker heartbeats in the registry")
    if w is not None and w.stopped:
        out.append(f"{w.stopped} registry entries of tasks ECS reports stopped: not counted")
    if obs.ecs is not None and obs.ecs.exists:
        e = obs.ecs
        out.append(f"ECS running {e.running}, desired {e.desired}, pending {e.pending}")
    u = obs.utilization
    if u is None:
        out.append("memory and CPU utilization not read")
    elif u.memory is None:
        out.append("no memory datapoints (none are sent while no task runs)")
    else:
        window = "" if u.memory_window_min is None else f", window minimum {u.memory_window_min:g}%"
        cpu = "" if u.cpu is None else f", CPU {u.cpu:g}%"
        out.append(f"memory {u.memory:g}%{window} (high {th.memory_high:g}%){cpu}")
    return out


def _capacity(
    ecs: EcsView, u: UtilizationView | None, th: VerdictThresholds, now: float
) -> tuple[str | None, str | None]:
    """(why it is no-capacity, or None; a note when a scale-out is within its grace)."""
    if ecs.running < ecs.desired and (ecs.pending > 0 or ecs.running == 0
                                      or ecs.placement_failure):
        short = (f"running {ecs.running} of desired {ecs.desired} with {ecs.pending} pending")
        if ecs.placement_failure:
            return f"{short}: {ecs.placement_failure}", None
        waited = None if ecs.short_since is None else now - ecs.short_since
        if waited is not None and waited <= th.scale_out_grace:
            return None, (f"scaling out: {short} for {secs(waited)}"
                          f" (no-capacity after {th.scale_out_grace:g} s)")
        since = "" if waited is None else f" for {secs(waited)}"
        return f"{short}{since}: ECS cannot place or keep the tasks", None
    if u is not None:
        for kind, value in (
            ("memory", u.cluster_memory_reservation),
            ("CPU", u.cluster_cpu_reservation),
        ):
            if value is not None and value >= CLUSTER_RESERVATION_FULL:
                return (
                    f"cluster {kind} reservation {value:g}% (full at"
                    f" {CLUSTER_RESERVATION_FULL:g}%): no room to place more tasks"
                ), None
    return None, None


def _behind(obs: ServiceObservation, backlog: int, ecs: EcsView, w: _Workers,
            th: VerdictThresholds, now: float) -> str | None:
    if ecs.running == 0:
        return f"backlog {backlog} with no task running (desired {ecs.desired})"
    legacy = [p for p, j in zip(w.progress, w.judged, strict=True) if j.state == "legacy"]
    if legacy and len(legacy) == len(w.good):
        starts = [now - p.last_task_started for p in legacy if p.last_task_started is not None]
        newest = min(starts, default=None)
        if newest is None:
            return (f"backlog {backlog} but none of its {len(legacy)} live workers (an older"
                    " heartbeat format) has started a task")
        if newest > th.stuck_after:
            return (f"backlog {backlog} and its {len(legacy)} live workers (an older heartbeat"
                    f" format) started no task for {secs(newest)}: busy or hung cannot be told")
    previous = obs.previous_backlog
    if previous is not None and backlog > previous:
        return f"backlog grew from {previous} to {backlog} while workers make progress"
    return None


def _sorted_tasks(judged: Sequence[WorkerJudgement]) -> tuple[str, ...]:
    return tuple(sorted({j.task_arn for j in judged if j.task_arn}))


def _rule(
    obs: ServiceObservation, ecs: EcsView, w: _Workers, th: VerdictThresholds, now: float
) -> tuple[Verdict, list[str], tuple[str, ...]]:
    """Rules 2 to 9 of the module docstring, for a service whose data was all read."""
    ready = obs.backlog or 0
    bad, good = w.bad, w.good
    bad_lines = [j.line() for j in bad]
    if ecs.deploying:
        extra = [f"{line}, expected while tasks are replaced" for line in bad_lines]
        return "deploying", ["deployment in progress: not judged until it completes", *extra], ()
    if not w.judged and ecs.running > 0:
        return "unknown", ["no heartbeats seen: is toolkit.install(app) in the worker?"], ()
    waiting = ready + w.held
    notes: list[str] = []
    if bad and not good:
        if waiting >= th.min_backlog and ecs.running >= 1:
            head = (f"no worker makes progress ({len(bad)} of {len(w.judged)} dead or hung)"
                    f" while {waiting} messages wait ({ready} ready, {w.held} held)")
            return "stuck", [head, *bad_lines], _sorted_tasks(bad)
        if ecs.running >= 1:
            head = (f"all {len(bad)} workers dead or hung, but only {waiting} messages wait"
                    f" (min_backlog {th.min_backlog}): not stuck")
            return "degraded", [head, *bad_lines], _sorted_tasks(bad)
        notes = [f"no ECS task is running, so this does not make it stuck: {line}"
                 for line in bad_lines]
    elif bad:
        head = (f"{len(bad)} of {len(w.judged)} workers dead or hung while {len(good)} make"
                " progress")
        return "degraded", [head, *bad_lines], _sorted_tasks(bad)
    capacity, scaling = _capacity(ecs, obs.utilization, th, now)
    notes.extend([scaling] if scaling else [])
    if capacity is not None:
        return "no-capacity", [capacity, *notes], ()
    u = obs.utilization
    if u is not None and u.memory_window_min is not None and u.memory_window_min >= th.memory_high:
        return "memory-pressure", [
            f"memory at or over {th.memory_high:g}% for the whole window"
            f" (minimum {u.memory_window_min:g}%)",
            *notes,
        ], ()
    behind = _behind(obs, ready, ecs, w, th, now) if ready >= th.min_backlog else None
    if behind is not None:
        return "behind", [behind, *notes], ()
    return "healthy", notes, ()


def judge(obs: ServiceObservation, thresholds: VerdictThresholds, now: float) -> ServiceVerdict:
    """Decide one service's verdict at ``now`` (unix seconds); see the module docstring."""
    w = None if obs.workers is None else _workers(obs, thresholds, now)
    missing = _missing_data(obs, w)
    stuck: tuple[str, ...] = ()
    if missing or obs.ecs is None or w is None:
        verdict: Verdict = "unknown"
        headline = missing
    else:
        verdict, headline, stuck = _rule(obs, obs.ecs, w, thresholds, now)
    ecs = obs.ecs if obs.ecs is not None and obs.ecs.exists else None
    return ServiceVerdict(
        cluster=obs.cluster,
        service=obs.service,
        verdict=verdict,
        reasons=tuple(headline + _facts(obs, w, thresholds)) + obs.broker_warnings,
        backlog=obs.backlog or 0,
        workers_alive=None if w is None else len(w.alive),
        running=None if ecs is None else ecs.running,
        desired=None if ecs is None else ecs.desired,
        memory_utilization=None if obs.utilization is None else obs.utilization.memory,
        stuck_tasks=stuck,
        tasks_running=None if w is None else sum(x.active for x in w.alive),
        held=0 if w is None else w.held,
        workers=() if w is None else w.judged,
        exists=obs.ecs is None or obs.ecs.exists,
    )

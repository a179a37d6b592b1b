"""Service verdicts: is this ECS worker service healthy, behind, stuck, ...? Pure decisions.

The collector reads the broker backlog, the heartbeat registry, ECS ``DescribeServices`` and the
``AWS/ECS`` metrics into one :class:`ServiceObservation`; :func:`judge` turns it, with the
thresholds and the time ``now``, into one :class:`ServiceVerdict` whose reasons carry the numbers
behind it. No clock, environment, boto3 or I/O here. A field that is None could not be read
(the ``*_error`` fields say why); ``ServiceVerdict.backlog`` is then 0 and the reasons say so.

Precedence (the first rule that holds wins)::

    1. unknown          data is missing: ECS unreadable, the service not found, the broker or the
                        registry unreadable. Nothing else can be judged honestly.
    2. deploying        a deployment replaces tasks on purpose; old workers going quiet is
                        expected, so a deploying service is never stuck (nor remediated).
    3. unknown          ECS runs tasks but no worker ever beat: the heartbeat is not installed.
    4. stuck            backlog >= min_backlog, ECS running >= 1, and either every known worker is
                        dead (no beat for more than dead_after) or no live worker started a task
                        for more than stuck_after. It is the one verdict with an automatic remedy,
                        and frozen workers often show the symptoms of the rules below as well.
    5. no-capacity      tasks cannot be placed: running < desired with tasks pending (or none
                        running at all), or a cluster reservation >= 95 %. A cluster problem,
                        checked before what the running tasks themselves show.
    6. memory-pressure  the whole window's MemoryUtilization at or over memory_high (can be over
                        100 with soft limits). A cause that explains being behind, so it wins.
    7. behind           backlog growing while workers make progress, or backlog with no task
                        running and none desired, or live workers that have not started any task.
    8. healthy

"Older than X" means strictly more than X seconds: a worker whose last beat is exactly
``dead_after`` seconds old is still alive; a start exactly ``stuck_after`` ago is still progress.

Hung, and workers that never started a task: the registry knows no start time for a worker, so
a live worker whose ``last_task_started`` is None ("nothing since it came up") gives no evidence
of elapsed time. The service is hung when no live worker started a task within ``stuck_after``
AND at least one live worker has a known start older than that. Live workers that all have None
are never hung (a freshly started worker is not stuck); with backlog they make the service
``behind``. When stuck, no known worker progresses, so ``stuck_tasks`` lists every known
worker's task ARN (dead and hung alike), deduplicated and sorted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal[
    "healthy", "behind", "stuck", "memory-pressure", "no-capacity", "deploying", "unknown"
]
VERDICTS: tuple[Verdict, ...] = (
    "healthy", "behind", "stuck", "memory-pressure", "no-capacity", "deploying", "unknown"
)
CLUSTER_RESERVATION_FULL = 95.0  # percent of the cluster's memory or CPU reserved


@dataclass(frozen=True)
class VerdictThresholds:
    dead_after: float = 90.0  # seconds without a heartbeat before a worker is dead
    stuck_after: float = 300.0  # seconds without a task start before live workers are hung
    min_backlog: int = 1  # backlog below this: staleness does not matter
    memory_high: float = 90.0  # percent of MemoryUtilization, the whole window


@dataclass(frozen=True)
class WorkerProgress:
    """One worker of the service known to the registry index (alive or not)."""

    node: str
    last_beat: float  # unix time: the index's last-beat score
    started: int
    last_task_started: float | None  # None: no task started since the worker came up
    active: int
    task_arn: str | None


@dataclass(frozen=True)
class EcsView:
    exists: bool
    running: int
    desired: int
    pending: int
    deploying: bool
    launch_type: str | None
    missing_reason: str | None = None  # when not exists: e.g. "cluster prod not found"


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
    backlog: int | None  # sum of QueueLength over its queues, all priorities
    missing_queues: tuple[str, ...]  # configured queues no broker has (counted as 0)
    workers: tuple[WorkerProgress, ...] | None  # None: registry unreadable
    ecs: EcsView | None
    utilization: UtilizationView | None
    previous_backlog: int | None = None
    ecs_error: str | None = None  # why ecs is None, e.g. "ThrottlingException after retries"
    broker_error: str | None = None  # why backlog is None
    registry_error: str | None = None  # why workers is None


@dataclass(frozen=True)
class ServiceVerdict:
    cluster: str
    service: str
    verdict: Verdict
    reasons: tuple[str, ...]
    backlog: int  # 0 when the broker could not be read (the reasons say so)
    workers_alive: int | None
    running: int | None
    desired: int | None
    memory_utilization: float | None
    stuck_tasks: tuple[str, ...]
    # tasks the service's live workers are executing (their `active` counts); None: no registry
    tasks_running: int | None = None

    @property
    def worker_stuck_value(self) -> float | None:
        """The ``WorkerStuck`` datum: None (publish nothing) when the data was missing."""
        if self.verdict == "unknown":
            return None
        return 1.0 if self.verdict == "stuck" else 0.0

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
        }


@dataclass(frozen=True)
class _Workers:
    """Facts derived from the registry at ``now``."""

    known: tuple[WorkerProgress, ...]
    alive: tuple[WorkerProgress, ...]
    beat_age: float | None  # seconds since the newest beat of any known worker
    start_age: float | None  # seconds since the newest known task start of a live worker
    evidence: str | None  # why the workers look stuck, before backlog and ECS are considered


def _secs(value: float) -> str:
    return f"{max(value, 0.0):.0f} s"


def _workers(known: tuple[WorkerProgress, ...], th: VerdictThresholds, now: float) -> _Workers:
    alive = tuple(w for w in known if now - w.last_beat <= th.dead_after)
    beat_age = min((now - w.last_beat for w in known), default=None)
    starts = [now - w.last_task_started for w in alive if w.last_task_started is not None]
    start_age = min(starts, default=None)
    evidence = None
    if beat_age is not None and not alive:  # known workers, none of them alive
        evidence = (
            f"no heartbeat from any of its {len(known)} workers for {_secs(beat_age)}"
            f" (dead after {th.dead_after:g} s)"
        )
    elif start_age is not None and start_age > th.stuck_after:
        never = sum(1 for w in alive if w.last_task_started is None)
        evidence = (
            f"its {len(alive)} live workers beat but none has started a task for"
            f" {_secs(start_age)} (stuck after {th.stuck_after:g} s)"
            + (f"; {never} of them started none since coming up" if never else "")
        )
    return _Workers(known, alive, beat_age, start_age, evidence)


def _missing_data(obs: ServiceObservation) -> list[str]:
    """Say which data is missing, with the error the collector recorded when it has one."""
    if obs.ecs is not None and not obs.ecs.exists:
        default = f"service {obs.service} not found in cluster {obs.cluster}"
        return [obs.ecs.missing_reason or default]
    missing = [
        f"could not read {what}" + (f": {error}" if error else "")
        for absent, what, error in (
            (obs.ecs is None, "ECS", obs.ecs_error),
            (obs.backlog is None, "the broker backlog", obs.broker_error),
            (obs.workers is None, "the heartbeat registry", obs.registry_error),
        )
        if absent
    ]
    return missing


def _facts(obs: ServiceObservation, w: _Workers | None, th: VerdictThresholds) -> list[str]:
    """The numbers behind any verdict, for whatever data was read."""
    out: list[str] = []
    if obs.backlog is not None:
        grew = "" if obs.previous_backlog is None else f", {obs.previous_backlog} last cycle"
        out.append(f"backlog {obs.backlog} messages{grew} (min_backlog {th.min_backlog})")
    if obs.missing_queues:
        out.append("queues no broker has, counted as 0: " + ", ".join(obs.missing_queues))
    if w is not None and w.known:
        line = f"{len(w.alive)} of {len(w.known)} known workers alive"
        line += f", newest beat {_secs(w.beat_age or 0.0)} ago (dead after {th.dead_after:g} s)"
        if w.start_age is not None:
            line += f", newest task start {_secs(w.start_age)} ago"
            line += f" (stuck after {th.stuck_after:g} s)"
        elif w.alive:
            line += ", no live worker has started a task since it came up"
        out.append(line + f", {sum(x.active for x in w.alive)} tasks active")
    elif w is not None:
        out.append("no worker heartbeats in the registry")
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


def _capacity(ecs: EcsView, u: UtilizationView | None) -> str | None:
    if ecs.running < ecs.desired and (ecs.pending > 0 or ecs.running == 0):
        return (
            f"running {ecs.running} of desired {ecs.desired} with {ecs.pending} pending:"
            " ECS cannot place or keep the tasks"
        )
    if u is not None:
        for kind, value in (
            ("memory", u.cluster_memory_reservation),
            ("CPU", u.cluster_cpu_reservation),
        ):
            if value is not None and value >= CLUSTER_RESERVATION_FULL:
                return (
                    f"cluster {kind} reservation {value:g}% (full at"
                    f" {CLUSTER_RESERVATION_FULL:g}%): no room to place more tasks"
                )
    return None


def _behind(obs: ServiceObservation, backlog: int, ecs: EcsView, w: _Workers) -> str | None:
    if ecs.running == 0:
        return f"backlog {backlog} with no task running (desired {ecs.desired})"
    if w.alive and w.start_age is None:
        return f"backlog {backlog} but none of its {len(w.alive)} live workers has started a task"
    previous = obs.previous_backlog
    if previous is not None and backlog > previous:
        return f"backlog grew from {previous} to {backlog} while workers make progress"
    return None


def _rule(
    obs: ServiceObservation, ecs: EcsView, w: _Workers, th: VerdictThresholds
) -> tuple[Verdict, list[str]]:
    """Rules 2 to 8 of the module docstring, for a service whose data was all read."""
    backlog = obs.backlog or 0
    if ecs.deploying:
        extra = [f"{w.evidence}, expected while tasks are replaced"] if w.evidence else []
        return "deploying", ["deployment in progress: not judged stuck until it completes", *extra]
    if not w.known and ecs.running > 0:
        return "unknown", ["no heartbeats seen: is toolkit.install(app) in the worker?"]
    notes: list[str] = []
    if w.evidence is not None:
        if backlog >= th.min_backlog and ecs.running >= 1:
            return "stuck", [w.evidence]
        why = (
            f"backlog {backlog} is below min_backlog {th.min_backlog}"
            if backlog < th.min_backlog
            else "no ECS task is running"
        )
        notes.append(f"{why}, so this does not make it stuck: {w.evidence}")
    capacity = _capacity(ecs, obs.utilization)
    if capacity is not None:
        return "no-capacity", [capacity, *notes]
    u = obs.utilization
    if u is not None and u.memory_window_min is not None and u.memory_window_min >= th.memory_high:
        return "memory-pressure", [
            f"memory at or over {th.memory_high:g}% for the whole window"
            f" (minimum {u.memory_window_min:g}%)",
            *notes,
        ]
    behind = _behind(obs, backlog, ecs, w) if backlog >= th.min_backlog else None
    if behind is not None:
        return "behind", [behind, *notes]
    return "healthy", notes


def judge(obs: ServiceObservation, thresholds: VerdictThresholds, now: float) -> ServiceVerdict:
    """Decide one service's verdict at ``now`` (unix seconds); see the module docstring."""
    missing = _missing_data(obs)
    w = None if obs.workers is None else _workers(obs.workers, thresholds, now)
    if missing or obs.ecs is None or w is None:
        verdict: Verdict = "unknown"
        headline = missing
    else:
        verdict, headline = _rule(obs, obs.ecs, w, thresholds)
    ecs = obs.ecs if obs.ecs is not None and obs.ecs.exists else None
    stuck: tuple[str, ...] = ()
    if verdict == "stuck" and w is not None:
        stuck = tuple(sorted({x.task_arn for x in w.known if x.task_arn}))
    return ServiceVerdict(
        cluster=obs.cluster,
        service=obs.service,
        verdict=verdict,
        reasons=tuple(headline + _facts(obs, w, thresholds)),
        backlog=obs.backlog or 0,
        workers_alive=None if w is None else len(w.alive),
        running=None if ecs is None else ecs.running,
        desired=None if ecs is None else ecs.desired,
        memory_utilization=None if obs.utilization is None else obs.utilization.memory,
        stuck_tasks=stuck,
        tasks_running=None if w is None else sum(x.active for x in w.alive),
    )

"""The heartbeat registry: one Redis entry per live worker node, written by toolkit.heartbeat.

Reading it needs no Celery: the collector imports this module to count live workers per queue
(``QueueConsumers``) and per ECS service (``WorkersAlive``).

Contract::

    {prefix}celery-ecs:heartbeat:{node}   string, JSON of WorkerHeartbeat.to_dict(),
                                          PX = max(ttl, ENTRY_RETENTION)
    {prefix}celery-ecs:heartbeats         sorted set: member node, score last beat (unix time)
    {prefix}celery-ecs:registry           string "1", no TTL: "workers write a registry here"

``prefix`` is the broker's ``global_keyprefix`` when the registry lives on the broker's Redis
(the default), else empty.

Clocks (format 3): the index score is the *broker's* clock, not the worker's: the write is one
script that stamps the member with Redis ``TIME``. Readers take ``TIME`` in the same round trip,
so a beat's age is measured on one clock whatever the hosts' clocks say. The entry's own
timestamps (``updated``, ``booted``, ``last_task_started``, task starts) are the worker's clock;
``score - updated`` is that worker's offset, which puts them on the broker's clock too
(:meth:`WorkerHeartbeat.on_broker_clock`). Where scripting is refused, the writer falls back to
a pipeline and scores with its clock corrected by the offset it measured last.

Alive or dead: a worker is alive while its last beat is at most its ``ttl`` old. The entry itself
is kept for :data:`ENTRY_RETENTION` (45 minutes) after the last beat, so a worker that froze or was
killed stays identifiable (its node, ECS service and task ARN, its last beat) long enough for the
collector's ``dead_after`` verdict. A clean stop deletes the entry and its index member: a
stopped worker is neither alive nor dead. The marker key survives the last clean stop, so
readers see "a registry with 0 workers" (``QueueConsumers`` 0), not "no registry". A Redis
restart loses all three keys: every service then has no heartbeats at all ("unknown"), never
"all dead at once".

What the verdicts need (format 3): the pool and its concurrency, the tasks running now with their
names and start times (the :data:`MAX_TASKS_LISTED` oldest, and the newest start of all of them),
how many tasks the worker holds without running them (``held``: prefetched, rate limited, ETA),
the tasks started since it came up and when it came up (``booted``). Entries of older formats
lack them (``details`` is False) and are judged by their heartbeat alone; format 2 entries were
scored with the worker's own clock. Old readers count new entries as alive until their PX runs
out.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

logger = logging.getLogger(__name__)

KEY_PREFIX = "celery-ecs:heartbeat:"
INDEX_KEY = "celery-ecs:heartbeats"
MARKER_KEY = "celery-ecs:registry"
FORMAT_VERSION = 3
INDEX_RETENTION = 86400.0
#: running tasks listed by name in an entry (the oldest first); ``active`` counts them all
MAX_TASKS_LISTED = 16
#: how long an entry outlives its last beat, so dead workers stay identifiable; shorter than the
#: hour (at least) that ECS shows a stopped task, so the collector can always tell a stopped
#: task's leftover entry from a dead worker in a running task
ENTRY_RETENTION = 2700.0


class RedisLike(Protocol):
    """The few Redis commands the registry uses (redis-py and fakeredis both fit)."""

    def set(self, name: str, value: str, *, px: int | None = None) -> Any: ...

    def mget(self, keys: list[str]) -> Any: ...

    def zadd(self, name: str, mapping: Mapping[Any, float]) -> Any: ...

    def zrange(self, name: str, start: int, end: int) -> Any: ...

    def zrem(self, name: str, *values: str) -> Any: ...

    def zremrangebyscore(self, name: str, min: float | str, max: float | str) -> Any: ...

    def delete(self, *names: str) -> Any: ...

    def pipeline(self, transaction: bool = True) -> Any: ...

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any: ...

    def time(self) -> Any: ...


# --- the registry entry -----------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveTask:
    """A task the worker is running: its name, id, start (the worker's clock) and its own hard
    time limit in seconds (``time_limit``, per call or task, else ``task_time_limit``)."""

    name: str
    id: str
    started: float
    limit: float | None = None

    def shifted(self, offset: float) -> ActiveTask:
        return ActiveTask(self.name, self.id, self.started + offset, self.limit)


@dataclass(frozen=True)
class WorkerHeartbeat:
    """One worker node's latest beat, as stored in the registry.

    ``beat_at`` is not stored in the entry: readers fill it from the index score (the broker's
    clock for format 3 writers, the worker's for older ones)."""

    node: str
    queues: tuple[str, ...]
    updated: float  # unix time of the beat, worker's clock
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    active: int = 0
    last_task_started: float | None = None
    hostname: str = ""
    pid: int = 0
    pool: str = ""
    concurrency: int = 0
    interval: float = 0.0
    ecs_task_arn: str | None = None
    ecs_cluster: str | None = None
    ecs_container: str | None = None
    ecs_service: str | None = None
    ttl: float = 0.0  # alive while the last beat is at most this old; 0: format 1
    version: int = FORMAT_VERSION
    booted: float | None = None  # when the worker came up (its clock)
    held: int | None = None  # tasks received and not started: prefetched + eta + rate_limited
    prefetched: int = 0  # reserved, waiting for a pool slot (due now)
    eta: int = 0  # ETA/countdown not yet due
    rate_limited: int = 0  # waiting in a rate limit's token bucket
    tasks: tuple[ActiveTask, ...] = ()  # the oldest running tasks, at most MAX_TASKS_LISTED
    youngest_start: float | None = None  # the newest start among all running tasks
    longest_limit: float | None = None  # the longest hard time limit among all running tasks
    declared: tuple[str, ...] = ()  # the queues it came up to consume (``queues``: now)
    beat_at: float | None = None  # index score: when the broker saw the last beat

    @property
    def details(self) -> bool:
        """Whether the entry says what the busy-vs-hung rules need (format 3 and newer)."""
        return self.version >= 3 and self.held is not None and self.booted is not None

    @property
    def last_beat(self) -> float:
        """The last beat on the reader's clock: the index score when read, else ``updated``."""
        return self.updated if self.beat_at is None else self.beat_at

    @property
    def offset(self) -> float:
        """Add to the worker's own timestamps to put them on the broker's clock (0 before a
        reader filled ``beat_at``, and for format 2 writers, who scored with their clock)."""
        return 0.0 if self.beat_at is None or self.version < 3 else self.beat_at - self.updated

    def on_broker_clock(self) -> WorkerHeartbeat:
        """This entry with every timestamp moved onto the broker's clock."""
        off = self.offset
        if off == 0.0:
            return self

        def move(value: float | None) -> float | None:
            return None if value is None else value + off

        return replace(
            self, updated=self.updated + off, booted=move(self.booted),
            last_task_started=move(self.last_task_started),
            youngest_start=move(self.youngest_start),
            tasks=tuple(t.shifted(off) for t in self.tasks),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["queues"] = list(self.queues)
        data["tasks"] = [[t.name, t.id, t.started, t.limit] for t in self.tasks]
        data["declared"] = list(self.declared)
        del data["beat_at"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerHeartbeat:
        """Build from a stored dict; unknown keys are ignored, bad types raise ``ValueError``."""
        try:
            node = data["node"]
            queues = data.get("queues") or []
            if not isinstance(node, str) or not isinstance(queues, list):
                raise ValueError("node must be a string and queues a list")
            get = data.get
            return cls(
                node=node,
                queues=tuple(str(q) for q in queues),
                updated=_finite(data["updated"]),
                started=_count(get("started", 0)),
                succeeded=_count(get("succeeded", 0)),
                failed=_count(get("failed", 0)),
                active=_count(get("active", 0)),
                last_task_started=_opt_finite(get("last_task_started")),
                hostname=str(data.get("hostname", "")),
                pid=_count(get("pid", 0)),
                pool=str(data.get("pool", "")),
                concurrency=_count(get("concurrency", 0)),
                interval=_finite(get("interval", 0.0)),
                ecs_task_arn=opt_str(data.get("ecs_task_arn")),
                ecs_cluster=opt_str(data.get("ecs_cluster")),
                ecs_container=opt_str(data.get("ecs_container")),
                ecs_service=opt_str(data.get("ecs_service")),
                ttl=_finite(get("ttl", 0.0)),
                version=_count(get("version", 1)),
                booted=_opt_finite(get("booted")),
                held=None if get("held") is None else _count(get("held")),
                prefetched=_count(get("prefetched", 0)),
                eta=_count(get("eta", 0)),
                rate_limited=_count(get("rate_limited", 0)),
                tasks=_tasks(get("tasks")),
                youngest_start=_opt_finite(get("youngest_start")),
                longest_limit=_opt_finite(get("longest_limit")),
                declared=_names(get("declared")),
            )
        except (KeyError, TypeError, OverflowError) as exc:
            raise ValueError(f"not a heartbeat entry: {exc!r}") from None

    @classmethod
    def from_json(cls, raw: str | bytes) -> WorkerHeartbeat:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"heartbeat entry is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("heartbeat entry is not a JSON object")
        return cls.from_dict(data)

    def age(self, now: float) -> float:
        """Seconds since the last beat at ``now`` (the reader's clock: see :attr:`last_beat`)."""
        return now - self.last_beat

    def alive(self, now: float) -> bool:
        """Whether the worker still beats: its last beat at most ``ttl`` old (beats from the
        future count only within ``ttl``). Format 1 entries (no ``ttl``) are alive while present."""
        return self.ttl <= 0 or abs(self.age(now)) <= self.ttl


def _finite(raw: Any) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {raw!r}")
    return value


def _opt_finite(raw: Any) -> float | None:
    return None if raw is None else _finite(raw)


def _count(raw: Any) -> int:
    """A non-negative integer (counts, pids, versions); floats like 3.0 are accepted."""
    value = _finite(raw)
    if value < 0 or value != int(value):
        raise ValueError(f"not a count: {raw!r}")
    return int(value)


def _names(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError("declared must be a list")
    return tuple(str(q) for q in raw)


def _tasks(raw: object) -> tuple[ActiveTask, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError("tasks must be a list")
    out = []
    for item in raw[:MAX_TASKS_LISTED]:
        if not isinstance(item, list) or len(item) not in (3, 4):
            raise ValueError("a task must be [name, id, started, limit]")
        name, task_id, started = item[:3]
        limit = item[3] if len(item) == 4 else None
        out.append(ActiveTask(str(name), str(task_id), _finite(started), _opt_finite(limit)))
    return tuple(out)


def opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def registry_key(node: str, prefix: str = "") -> str:
    return f"{prefix}{KEY_PREFIX}{node}"


def index_key(prefix: str = "") -> str:
    return f"{prefix}{INDEX_KEY}"


def marker_key(prefix: str = "") -> str:
    return f"{prefix}{MARKER_KEY}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


# KEYS: entry, marker, index. ARGV: entry JSON, entry PX (ms), node, index retention (s).
# Scores the member with the broker's clock and returns that clock, so the writer learns its
# offset. replicate_commands() lets Redis < 5 write after TIME (a no-op from Redis 7).
WRITE_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], '1')
redis.call('ZADD', KEYS[3], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]))
return string.format('%.6f', now)
"""


def write_heartbeat(
    client: RedisLike, beat: WorkerHeartbeat, ttl: float, prefix: str = "", *,
    script: bool = True, offset: float = 0.0,
) -> float:
    """Store ``beat`` (alive for ``ttl`` seconds, kept for :data:`ENTRY_RETENTION`), index it on
    the broker's clock (pruning index members older than a day) and set the registry marker.
    Returns the index score.

    One round trip: a script (``script=True``), else the four commands in one non-transactional
    pipeline scored with ``beat.updated + offset`` (the caller's last known offset to the
    broker's clock). A server that refuses the script raises; the caller may retry without it.
    """
    if beat.ttl != ttl:
        beat = replace(beat, ttl=float(ttl))
    keep = max(int(max(ttl, ENTRY_RETENTION) * 1000), 1)
    entry, marker, index = registry_key(beat.node, prefix), marker_key(prefix), index_key(prefix)
    if script:
        reply = client.eval(WRITE_SCRIPT, 3, entry, marker, index, beat.to_json(), str(keep),
                            beat.node, str(INDEX_RETENTION))
        return float(_text(reply))
    score = beat.updated + offset
    pipe = client.pipeline(transaction=False)
    pipe.set(entry, beat.to_json(), px=keep)
    pipe.set(marker, "1")
    pipe.zadd(index, {beat.node: score})
    pipe.zremrangebyscore(index, "-inf", score - INDEX_RETENTION)
    pipe.execute()
    return score


def remove_heartbeat(client: RedisLike, node: str, prefix: str = "") -> None:
    pipe = client.pipeline(transaction=False)
    pipe.delete(registry_key(node, prefix))
    pipe.zrem(index_key(prefix), node)
    pipe.execute()


@dataclass(frozen=True)
class RegistryRead:
    beats: tuple[WorkerHeartbeat, ...]  # sorted by node, ``beat_at`` filled in
    now: float  # the broker's clock when it was read


def broker_time(reply: Any) -> float:
    """Redis ``TIME`` as redis-py returns it (seconds, microseconds) -> unix seconds."""
    seconds, micros = reply
    return float(seconds) + float(micros) / 1e6


def read_registry_at(
    client: RedisLike, prefix: str = "", *, batch: int = 500, include_dead: bool = False,
) -> RegistryRead:
    """Every live entry (or every retained one with ``include_dead``) with its index score, and
    the broker's clock, in ``1 + ceil(entries / batch)`` round trips. Malformed entries are
    skipped."""
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.zrangebyscore(index_key(prefix), "-inf", "+inf", withscores=True)
    clock, members = pipe.execute()
    now = broker_time(clock)
    oldest = now - ENTRY_RETENTION
    scores = {_text(m): float(score) for m, score in members if float(score) >= oldest}
    nodes = sorted(scores)
    out: list[WorkerHeartbeat] = []
    for i in range(0, len(nodes), batch):
        chunk = nodes[i : i + batch]
        out.extend(parse_entries(client.mget([registry_key(n, prefix) for n in chunk])))
    beats = [with_score(b, scores.get(b.node)) for b in out]
    if not include_dead:
        beats = [b for b in beats if b.alive(now)]
    return RegistryRead(tuple(sorted(beats, key=lambda b: b.node)), now)


def read_registry(
    client: RedisLike, prefix: str = "", *, batch: int = 500, include_dead: bool = False,
) -> list[WorkerHeartbeat]:
    """:func:`read_registry_at`'s entries."""
    return list(read_registry_at(client, prefix, batch=batch, include_dead=include_dead).beats)


def with_score(beat: WorkerHeartbeat, score: float | None) -> WorkerHeartbeat:
    """``beat`` with its index score as ``beat_at`` (unchanged when the index has none)."""
    return beat if score is None else replace(beat, beat_at=score)


def registry_exists(client: Any, prefix: str = "") -> bool:
    """Whether workers write a registry here (the marker, or an index from format 1 writers)."""
    return bool(client.exists(marker_key(prefix), index_key(prefix)))


def parse_entries(raws: Iterable[str | bytes | None]) -> list[WorkerHeartbeat]:
    """Registry entries as read from Redis: expired ones (None) and malformed ones are skipped,
    the latter with a warning."""
    out: list[WorkerHeartbeat] = []
    for raw in raws:
        if raw is None:
            continue  # expired: the worker stopped beating
        try:
            out.append(WorkerHeartbeat.from_json(raw))
        except ValueError as exc:
            logger.warning("skipping malformed heartbeat entry: %s", exc)
    return out


# --- pure helpers for the collector and the verdicts ------------------------------------------


def fresh(beats: Iterable[WorkerHeartbeat], now: float, max_age: float) -> list[WorkerHeartbeat]:
    """Beats at most ``max_age`` old at ``now``; beats from the future (clock skew) count as fresh
    only within ``max_age`` of ``now``, never indefinitely."""
    return [b for b in beats if abs(b.age(now)) <= max_age]


def consumers_per_queue(beats: Iterable[WorkerHeartbeat]) -> dict[str, int]:
    """How many workers consume each queue (the Redis ``QueueConsumers`` metric)."""
    counts: dict[str, int] = {}
    for beat in beats:
        for queue in dict.fromkeys(beat.queues):
            counts[queue] = counts.get(queue, 0) + 1
    return dict(sorted(counts.items()))


def running_per_queue(beats: Iterable[WorkerHeartbeat]) -> dict[str, int]:
    """Tasks being executed per queue (``TasksRunning``): each worker's ``active`` count under
    every queue it consumes (a running task does not say which of them it came from)."""
    counts: dict[str, int] = {}
    for beat in beats:
        for queue in dict.fromkeys(beat.queues):
            counts[queue] = counts.get(queue, 0) + beat.active
    return dict(sorted(counts.items()))


def workers_per_service(beats: Iterable[WorkerHeartbeat]) -> dict[tuple[str, str], int]:
    """Live workers per (cluster, service) as reported by ECS metadata (``WorkersAlive``).

    Workers whose metadata carries no service name (Fargate, old agents, not on ECS) are left out;
    the collector maps them through ``ecs_task_arn`` when it needs to.
    """
    counts: dict[tuple[str, str], int] = {}
    for beat in beats:
        if beat.ecs_cluster and beat.ecs_service:
            key = (beat.ecs_cluster.rsplit("/", 1)[-1], beat.ecs_service)
            counts[key] = counts.get(key, 0) + 1
    return counts

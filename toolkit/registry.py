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

Alive or dead (format 2): a worker is alive while its last beat (``updated``, equal to its index
score) is at most its ``ttl`` old. The entry itself is kept for :data:`ENTRY_RETENTION` (an
hour) after the last beat, so a worker that froze or was killed stays identifiable (its node,
ECS service and task ARN, its last beat) long enough for the collector's ``dead_after`` verdict.
A clean stop deletes the entry and its index member: a stopped worker is neither alive nor dead.
The marker key survives the last clean stop, so readers see "a registry with 0 workers"
(``QueueConsumers`` 0), not "no registry". A Redis restart loses all three keys: every service
then has no heartbeats at all ("unknown"), never "all dead at once".

Old entries (format 1) carry no ``ttl`` and expire after their short TTL: while present they are
alive. Old readers count new entries as alive until their PX (an hour) runs out.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

logger = logging.getLogger(__name__)

KEY_PREFIX = "celery-ecs:heartbeat:"
INDEX_KEY = "celery-ecs:heartbeats"
MARKER_KEY = "celery-ecs:registry"
FORMAT_VERSION = 2
INDEX_RETENTION = 86400.0
#: how long an entry outlives its last beat, so dead workers stay identifiable
ENTRY_RETENTION = 3600.0


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


# --- the registry entry -----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerHeartbeat:
    """One worker node's latest beat, as stored in the registry."""

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
    ttl: float = 0.0  # alive while updated is at most this old; 0: format 1, alive while present
    version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["queues"] = list(self.queues)
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
            last = data.get("last_task_started")
            return cls(
                node=node,
                queues=tuple(str(q) for q in queues),
                updated=float(data["updated"]),
                started=int(data.get("started", 0)),
                succeeded=int(data.get("succeeded", 0)),
                failed=int(data.get("failed", 0)),
                active=int(data.get("active", 0)),
                last_task_started=None if last is None else float(last),
                hostname=str(data.get("hostname", "")),
                pid=int(data.get("pid", 0)),
                pool=str(data.get("pool", "")),
                concurrency=int(data.get("concurrency", 0)),
                interval=float(data.get("interval", 0.0)),
                ecs_task_arn=opt_str(data.get("ecs_task_arn")),
                ecs_cluster=opt_str(data.get("ecs_cluster")),
                ecs_container=opt_str(data.get("ecs_container")),
                ecs_service=opt_str(data.get("ecs_service")),
                ttl=float(data.get("ttl", 0.0)),
                version=int(data.get("version", 1)),
            )
        except (KeyError, TypeError) as exc:
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
        return now - self.updated

    def alive(self, now: float) -> bool:
        """Whether the worker still beats: its last beat at most ``ttl`` old (beats from the
        future count only within ``ttl``). Format 1 entries (no ``ttl``) are alive while present."""
        return self.ttl <= 0 or abs(self.age(now)) <= self.ttl


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


def write_heartbeat(client: RedisLike, beat: WorkerHeartbeat, ttl: float, prefix: str = "") -> None:
    """Store ``beat`` (alive for ``ttl`` seconds, kept for :data:`ENTRY_RETENTION`), index it
    (pruning index members older than a day) and set the registry marker.

    One round trip: the four commands go in one non-transactional pipeline.
    """
    if beat.ttl != ttl:
        beat = replace(beat, ttl=float(ttl))
    keep = max(ttl, ENTRY_RETENTION)
    pipe = client.pipeline(transaction=False)
    pipe.set(registry_key(beat.node, prefix), beat.to_json(), px=max(int(keep * 1000), 1))
    pipe.set(marker_key(prefix), "1")
    pipe.zadd(index_key(prefix), {beat.node: beat.updated})
    pipe.zremrangebyscore(index_key(prefix), "-inf", beat.updated - INDEX_RETENTION)
    pipe.execute()


def remove_heartbeat(client: RedisLike, node: str, prefix: str = "") -> None:
    pipe = client.pipeline(transaction=False)
    pipe.delete(registry_key(node, prefix))
    pipe.zrem(index_key(prefix), node)
    pipe.execute()


def read_registry(
    client: RedisLike,
    prefix: str = "",
    *,
    batch: int = 500,
    now: float | None = None,
    include_dead: bool = False,
) -> list[WorkerHeartbeat]:
    """Every live entry (or every retained one with ``include_dead``), sorted by node.
    Malformed entries are skipped. ``now`` defaults to the local clock."""
    nodes = [_text(m) for m in client.zrange(index_key(prefix), 0, -1)]
    out: list[WorkerHeartbeat] = []
    for i in range(0, len(nodes), batch):
        chunk = nodes[i : i + batch]
        out.extend(parse_entries(client.mget([registry_key(n, prefix) for n in chunk])))
    if not include_dead:
        at = time.time() if now is None else now
        out = [b for b in out if b.alive(at)]
    return sorted(out, key=lambda b: b.node)


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

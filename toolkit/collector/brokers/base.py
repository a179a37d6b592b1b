"""What every broker reader returns, and the protocol it implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from toolkit.errors import BrokerError

if TYPE_CHECKING:
    from toolkit.beatregistry import BeatTick
    from toolkit.registry import WorkerHeartbeat
    from toolkit.taskcounts import TaskClaim, TaskRequest


@dataclass(frozen=True)
class QueueReading:
    """One queue as the broker sees it right now.

    ``oldest_enqueued_at`` is the publish stamp (epoch seconds) of the oldest ready message,
    ``None`` when the queue is empty or its oldest message carries no stamp. ``consumers`` is
    ``None`` when the broker cannot tell (Redis has no consumer registry). ``exists`` is False for
    a queue the broker does not know (RabbitMQ); Redis cannot tell an empty queue from an unknown
    one, so there it is always True.
    """

    queue: str
    length: int
    oldest_enqueued_at: float | None = None
    consumers: int | None = None
    exists: bool = True
    # the broker could not read this queue (wrong key type, access refused...): one line why
    error: str | None = None


@dataclass(frozen=True)
class BrokerStats:
    """The broker's own health, read with the queues: memory, its limit, evictions, alarms.

    Redis: ``INFO memory`` ``used_memory`` / ``maxmemory`` (0: no limit) / ``maxmemory_policy``
    and ``INFO stats`` ``evicted_keys`` (a counter since the server started). RabbitMQ: the
    management API's node ``mem_used`` / ``mem_limit`` and its resource alarms (no evictions).
    ``error`` says why nothing could be read (e.g. ``INFO`` refused by an ACL)."""

    used_memory: int | None = None
    max_memory: int | None = None  # None or 0: no limit set
    evicted_keys: int | None = None  # total since the broker started
    policy: str | None = None  # Redis maxmemory-policy
    alarms: tuple[str, ...] = ()  # RabbitMQ resource alarms in force, e.g. "memory on rabbit@a"
    error: str | None = None

    @property
    def utilization(self) -> float | None:
        """Percent of the memory limit in use; None when no limit is set."""
        if self.used_memory is None or not self.max_memory:
            return None
        return 100.0 * self.used_memory / self.max_memory


@dataclass(frozen=True)
class BrokerReading:
    """The result of one read: every queue asked for, in order, plus broker-wide figures."""

    queues: tuple[QueueReading, ...]
    unacked: int | None = None
    round_trips: int = 1
    # entries of the worker heartbeat registry when the broker holds one (Redis), else None;
    # dead ones included (kept for an hour): filter with WorkerHeartbeat.alive(clock)
    workers: tuple[WorkerHeartbeat, ...] | None = None
    # the registry's clock (Redis TIME) when it was read: the "now" of the entries' beat_at
    clock: float | None = None
    # the broker's memory and evictions (None: not read for this broker)
    stats: BrokerStats | None = None
    # celery beat's ticks from the beat registry, newest first (None: no registry read)
    beats: tuple[BeatTick, ...] | None = None
    # the workers' per-task counts claimed for publishing (or peeked at), when asked for
    tasks: TaskClaim | None = None


class BrokerReader(Protocol):
    """A broker adapter: a handful of primitives, chosen by URL scheme (see ``open_reader``)."""

    kind: str

    def read(self, queues: Sequence[str]) -> BrokerReading:
        """Read every queue in one go (one round trip where the broker allows it)."""
        ...

    def discover_queues(self) -> list[str]:
        """Queues the broker knows of, for when none are configured."""
        ...

    def discovery_hint(self) -> str:
        """What to check when a cycle found no queue that exists (one clause, for the CLI)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class TaskCountReader(Protocol):
    """A reader that also claims the workers' per-task counts in its read (Redis)."""

    def read_with_tasks(self, queues: Sequence[str], tasks: TaskRequest | None) -> BrokerReading:
        ...

    def commit_tasks(self, collector: str, minutes: Sequence[int]) -> str:
        """Delete the claimed minutes once published; returns the commit's status."""
        ...


class ErrorTranslator:
    """Context manager re-raising a client library's exception as a :class:`BrokerError`.

    Subclasses implement :meth:`translate`; messages name the broker by its redacted URL only.
    Exceptions it does not recognise pass through unchanged.
    """

    def __init__(self, safe_url: str) -> None:
        self.safe_url = safe_url

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is not None:
            mapped = self.translate(exc, first_line(exc))
            if mapped is not None:
                raise mapped from exc
        return False

    def translate(self, exc: BaseException, msg: str) -> BrokerError | None:
        raise NotImplementedError


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

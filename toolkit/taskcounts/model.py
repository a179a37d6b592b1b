"""Per-task counts: the names, the runtime buckets, the fields, and totals per task and minute.

Pure and standard library only: the worker (:mod:`toolkit.worker.counting`) counts with it, the
Redis store (:mod:`toolkit.taskcounts.store`) keys with it, the collector publishes from it.

**Task names** become the ``Task`` dimension. :func:`task_dimension` makes any name one that
CloudWatch accepts and keeps distinct names distinct: characters outside printable ASCII are
escaped (``\\xNN``, ``\\uNNNN``, as queue names are), an empty or blank name is ``(empty)``,
and a name longer than :data:`MAX_NAME` (255) characters keeps its first 246 characters plus
``~`` and 8 hex digits of its SHA-1. The worker applies it before counting, so every name in
Redis is already a dimension value (no newline, no control character).

**Runtimes** are counted in :data:`BUCKETS` fixed buckets, each holding a count and the sum of
the runtimes that fell in it: bucket 0 is below 2^-10 s (0.98 ms), bucket ``i`` (1..48) covers
``[2^(-10 + (i-1)/2), 2^(-10 + i/2))`` (half an octave: at most 41 % wide), and the last one is
2^14 s (4.6 h) and longer. The collector publishes each non-empty bucket's mean with its count
as CloudWatch ``Values``/``Counts``, so ``SampleCount``, ``Sum`` and ``Average`` are exact, a
task whose runs all take about the same time shows that time, and percentiles are accurate to a
bucket (the mean of the bucket the percentile falls in).

**Fields** (one Redis hash per minute, see the store): ``s:NAME`` succeeded, ``f:NAME`` failed,
``r:NAME`` retried, ``cI:NAME`` runs in bucket I and ``tI:NAME`` their summed runtime in
microseconds (integers all: Redis adds integers several times faster than floats).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

#: the Task dimension value of everything outside the include list and the top N
OTHER = "other"
#: longest Task dimension value
MAX_NAME = 255
#: runtime buckets (see the module docstring)
BUCKETS = 50
_LOG_BASE = -10.0  # log2 of the first bucket's lower bound
LAST_BUCKET = BUCKETS - 1
#: runtime sums are stored in microseconds
MICROS = 1_000_000

Outcome = Literal["succeeded", "failed", "retried"]
#: outcome -> field kind
KIND: dict[Outcome, str] = {"succeeded": "s", "failed": "f", "retried": "r"}


def task_dimension(name: str) -> str:
    """``name`` as a CloudWatch dimension value: printable ASCII, 1 to 255 characters."""
    text = name
    if not (text.isascii() and text.isprintable() and text.strip()):
        text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
        if not text.strip():
            text = text.replace(" ", "\\x20") or "(empty)"
    if len(text) > MAX_NAME:
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass"), usedforsecurity=False)
        text = f"{text[:MAX_NAME - 9]}~{digest.hexdigest()[:8]}"
    return text


def bucket_of(seconds: float) -> int:
    """The runtime bucket of ``seconds`` (negative and NaN runtimes count as 0)."""
    if not seconds >= 2.0 ** _LOG_BASE:
        return 0
    if seconds == math.inf:
        return LAST_BUCKET
    return min(int(2.0 * (math.log2(seconds) - _LOG_BASE)) + 1, LAST_BUCKET)


def bucket_bounds(index: int) -> tuple[float, float]:
    """[low, high) seconds of bucket ``index``."""
    if index <= 0:
        return 0.0, 2.0 ** _LOG_BASE
    low = 2.0 ** (_LOG_BASE + (index - 1) / 2)
    return low, math.inf if index >= LAST_BUCKET else 2.0 ** (_LOG_BASE + index / 2)


def field_name(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def split_field(raw: str) -> tuple[str, str]:
    """``"c12:app.task"`` -> ``("c12", "app.task")`` (names may hold colons)."""
    kind, _, name = raw.partition(":")
    return kind, name


@dataclass
class TaskTotals:
    """What finished of one task name (in one minute, or summed): counts and runtime buckets."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    #: bucket -> [runs, summed seconds]
    buckets: dict[int, list[float]] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.retried

    @property
    def runs(self) -> int:
        """Runs with a measured runtime."""
        return int(sum(b[0] for b in self.buckets.values()))

    def add(self, kind: str, value: float) -> bool:
        """Add one field's value; False for a kind this version does not know."""
        if kind == "s":
            self.succeeded += int(value)
        elif kind == "f":
            self.failed += int(value)
        elif kind == "r":
            self.retried += int(value)
        elif kind[:1] in ("c", "t") and kind[1:].isdigit() and int(kind[1:]) < BUCKETS:
            slot = self.buckets.setdefault(int(kind[1:]), [0.0, 0.0])
            if kind[0] == "c":
                slot[0] += value
            else:
                slot[1] += value / MICROS
        else:
            return False
        return True

    def merge(self, other: TaskTotals) -> None:
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.retried += other.retried
        for index, (runs, total) in other.buckets.items():
            slot = self.buckets.setdefault(index, [0.0, 0.0])
            slot[0] += runs
            slot[1] += total

    def histogram(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(values, counts) for PutMetricData: each non-empty bucket's mean runtime and runs,
        fastest first (at most :data:`BUCKETS` values, under CloudWatch's 150)."""
        values: list[float] = []
        counts: list[float] = []
        for index in sorted(self.buckets):
            runs, total = self.buckets[index]
            if runs <= 0:
                continue
            low, high = bucket_bounds(index)
            mean = min(max(total / runs, low), high)  # inside its bucket, whatever was torn
            values.append(mean)
            counts.append(float(int(runs)))
        return tuple(values), tuple(counts)


def totals_from_fields(pairs: Iterable[tuple[str, float]]) -> dict[str, TaskTotals]:
    """Redis hash fields (``kind:name`` -> number) -> totals per task name; unknown kinds are
    ignored (a newer worker may count more)."""
    out: dict[str, TaskTotals] = {}
    for raw, value in pairs:
        kind, name = split_field(raw)
        if not name:
            continue
        totals = out.get(name)
        if totals is None:
            totals = out[name] = TaskTotals()
        totals.add(kind, value)
    return out


@dataclass(frozen=True)
class MinuteCounts:
    """What finished in one minute (``minute``: its first second, unix time, broker clock)."""

    minute: int
    tasks: Mapping[str, TaskTotals]


ClaimState = Literal["claimed", "peeked", "busy"]


@dataclass(frozen=True)
class TaskClaim:
    """What a collector read of the counts: the minutes it now owns (``claimed``), or saw
    without taking them (``peeked``: dry runs), or ``busy`` (another collector holds the lease:
    it publishes them, this one publishes none). ``ranking``: task names by the tasks that
    finished today and yesterday (UTC), largest first, for the top N."""

    state: ClaimState
    minutes: tuple[MinuteCounts, ...] = ()
    ranking: tuple[str, ...] = ()

    @property
    def owned(self) -> tuple[int, ...]:
        """The minutes this collector must commit once published."""
        return tuple(m.minute for m in self.minutes) if self.state == "claimed" else ()

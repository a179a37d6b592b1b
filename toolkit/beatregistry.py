"""The beat registry: one Redis entry per celery beat instance, refreshed at every scheduler tick.

Written by the beat heartbeat (:mod:`toolkit.worker.beatbeat`), read by the collector for
``BeatHeartbeatAge``. Contract::

    {prefix}celery-ecs:beat:{instance}   string, JSON of BeatTick.to_dict(), PX = BEAT_RETENTION
    {prefix}celery-ecs:beats             sorted set: member instance, score its last tick

``prefix`` is the broker's ``global_keyprefix`` when the registry lives on the broker's Redis
(the default, as for the worker registry), else empty. ``instance`` is ``HOST:PID`` of the beat
process.

Clocks, as in :mod:`toolkit.registry`: the index score is the *broker's* clock, stamped with
Redis ``TIME`` by the write script, and the collector reads ``TIME`` in the same round trip, so a
tick's age never compares two hosts' clocks. Where scripting is refused the writer falls back to
a pipeline scored with its own clock corrected by the offset it measured last.

A beat that stops cleanly does **not** remove its entry: a stopped beat schedules nothing, which
is exactly what ``BeatHeartbeatAge`` exists to show. Entries and index members are dropped
:data:`BEAT_RETENTION` (7 days) after their last tick; "no beat was ever seen" (nothing is
published) means no tick in that window.

An entry that is not a tick (not JSON, a missing or non-finite number) proves nothing: readers
skip it with a warning, so it counts as stale, never as a fresh beat and never as a crash.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from toolkit.registry import RedisLike, broker_time

logger = logging.getLogger(__name__)

BEAT_KEY_PREFIX = "celery-ecs:beat:"
BEAT_INDEX_KEY = "celery-ecs:beats"
BEAT_FORMAT = 1
#: how long an entry (and its index member) outlives its last tick
BEAT_RETENTION = 7 * 86400.0
#: the newest entries a reader looks at (there is one per beat process that ticked lately)
MAX_BEATS_READ = 20


@dataclass(frozen=True)
class BeatTick:
    """One beat instance's last tick, as stored in the registry and in the beat file.

    ``interval`` is what the tick returned: the seconds beat sleeps before its next tick (never
    more than ``max_interval``, Celery's ``beat_max_loop_interval``). ``beat_at`` is the index
    score filled in by readers (the broker's clock); it is not stored."""

    instance: str
    at: float  # unix time of the tick, the beat host's clock
    interval: float
    max_interval: float = 0.0
    scheduler: str = ""
    pid: int = 0
    version: int = BEAT_FORMAT
    beat_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["beat_at"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> BeatTick:
        """Parse an entry; anything that is not a tick raises ``ValueError``."""
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"beat entry is not JSON: {exc}") from None
        if not isinstance(data, Mapping):
            raise ValueError("beat entry is not a JSON object")
        try:
            instance = data["instance"]
            if not isinstance(instance, str) or not instance:
                raise ValueError("instance must be a non-empty string")
            return cls(
                instance=instance,
                at=_finite(data["at"]),
                interval=_non_negative(data["interval"]),
                max_interval=_non_negative(data.get("max_interval", 0.0)),
                scheduler=str(data.get("scheduler", "")),
                pid=int(_non_negative(data.get("pid", 0))),
                version=int(_non_negative(data.get("version", BEAT_FORMAT))),
            )
        except (KeyError, TypeError, OverflowError) as exc:
            raise ValueError(f"not a beat entry: {exc!r}") from None

    @property
    def last_tick(self) -> float:
        """The tick on the reader's clock: the index score when read, else ``at``."""
        return self.at if self.beat_at is None else self.beat_at


def _finite(raw: Any) -> float:
    if isinstance(raw, bool):
        raise TypeError("a boolean is not a number")
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {raw!r}")
    return value


def _non_negative(raw: Any) -> float:
    value = _finite(raw)
    if value < 0:
        raise ValueError(f"negative: {raw!r}")
    return value


def beat_key(instance: str, prefix: str = "") -> str:
    return f"{prefix}{BEAT_KEY_PREFIX}{instance}"


def beat_index_key(prefix: str = "") -> str:
    return f"{prefix}{BEAT_INDEX_KEY}"


# KEYS: entry, index. ARGV: entry JSON, PX (ms), instance, retention (s). Scores the member with
# the broker's clock and returns it, so the writer learns its offset.
WRITE_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
return string.format('%.6f', now)
"""


def write_tick(
    client: RedisLike, tick: BeatTick, prefix: str = "", *, script: bool = True,
    offset: float = 0.0,
) -> float:
    """Store ``tick`` and index it on the broker's clock, in one round trip; returns the score.

    ``script=False`` (a Redis that refuses scripts) scores with ``tick.at + offset`` in one
    non-transactional pipeline. A server that refuses the script raises; retry without it."""
    keep = int(BEAT_RETENTION * 1000)
    entry, index = beat_key(tick.instance, prefix), beat_index_key(prefix)
    if script:
        reply = client.eval(WRITE_SCRIPT, 2, entry, index, tick.to_json(), str(keep),
                            tick.instance, f"{BEAT_RETENTION:g}")
        return float(reply.decode() if isinstance(reply, bytes) else reply)
    score = tick.at + offset
    pipe = client.pipeline(transaction=False)
    pipe.set(entry, tick.to_json(), px=keep)
    pipe.zadd(index, {tick.instance: score})
    pipe.zremrangebyscore(index, "-inf", score - BEAT_RETENTION)
    pipe.execute()
    return score


def parse_ticks(rows: Iterable[tuple[float, str | bytes | None]]) -> tuple[BeatTick, ...]:
    """(index score, entry) rows -> the ticks, ``beat_at`` = score. Expired entries (None) are
    skipped; so are entries that are not ticks, with a warning: they count as stale."""
    out = []
    for score, raw in rows:
        if raw is None:
            continue
        try:
            out.append(replace(BeatTick.from_json(raw), beat_at=float(score)))
        except ValueError as exc:
            logger.warning("skipping malformed beat registry entry: %s", exc)
    return tuple(out)


def read_ticks(client: Any, prefix: str = "") -> tuple[tuple[BeatTick, ...], float]:
    """The newest :data:`MAX_BEATS_READ` ticks and the broker's clock, in one round trip plus
    one ``MGET`` when there are entries (the collector's broker reader does it in its own)."""
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.zrevrangebyscore(beat_index_key(prefix), "+inf", "-inf", start=0,
                          num=MAX_BEATS_READ, withscores=True)
    clock, members = pipe.execute()
    now = broker_time(clock)
    fresh = [(m, float(s)) for m, s in members if float(s) >= now - BEAT_RETENTION]
    if not fresh:
        return (), now
    names = [m.decode() if isinstance(m, bytes) else str(m) for m, _ in fresh]
    raws = client.mget([beat_key(n, prefix) for n in names])
    return parse_ticks((s, raw) for (_, s), raw in zip(fresh, raws, strict=True)), now


def newest(ticks: Iterable[BeatTick]) -> BeatTick | None:
    """The tick with the latest ``last_tick``, or None when there is none."""
    return max(ticks, key=lambda t: t.last_tick, default=None)

"""The Redis broker's own health and celery beat's ticks, read in the queue read's round trip.

:data:`HEALTH_SCRIPT` runs in the same pipeline as the queue read script (one network round
trip): ``INFO memory`` and ``INFO stats`` (Redis allows ``INFO`` inside a script; only four
fields come back, not the 3 KB of text), then, when the registry is on the broker, Redis
``TIME`` and the newest entries of the beat registry (:mod:`toolkit.beatregistry`).

``INFO`` is called with ``redis.pcall``: a user whose ACL denies it (``-info``) still gets its
queues read; the stats then carry the refusal in ``error`` (a ``CollectorErrors`` line). A server
that does not offer ``INFO`` at all (renamed away, or an emulator) is not an error of the cycle:
the broker metrics are absent and one warning per process says why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from toolkit.beatregistry import (
    BEAT_INDEX_KEY,
    BEAT_KEY_PREFIX,
    BEAT_RETENTION,
    MAX_BEATS_READ,
    BeatTick,
    parse_ticks,
)
from toolkit.collector.brokers.base import BrokerStats

__all__ = [
    "BEAT_RETENTION", "HEALTH_SCRIPT", "MAX_BEATS_READ", "beat_keys", "health_args",
    "parse_health", "refused", "stats_from_info", "ticks_from_rows",
]

log = logging.getLogger(__name__)

# ARGV: key prefix, how far back to read beat ticks (seconds; "" to skip), most entries.
# Reply lines: "<used_memory> <maxmemory> <evicted_keys> <policy>" or "E <error>"; then, when
# asked, the broker's TIME and "<score> <entry JSON>" per beat instance, newest first.
HEALTH_SCRIPT = """
local prefix, lookback, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local function field(text, name)
  return string.match(text, '\\n' .. name .. ':([^\\r\\n]*)') or '-'
end
local function oneline(text)
  return (string.gsub(tostring(text), '[\\r\\n]', ' '))
end
local out = {}
local mem = redis.pcall('INFO', 'memory')
local stats = mem
if type(mem) ~= 'table' then stats = redis.pcall('INFO', 'stats') end
if type(stats) == 'table' then
  out[1] = 'E ' .. oneline(stats.err or 'error')
else
  out[1] = field(mem, 'used_memory') .. ' ' .. field(mem, 'maxmemory') .. ' '
    .. field(stats, 'evicted_keys') .. ' ' .. field(mem, 'maxmemory_policy')
end
if lookback ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  out[#out + 1] = string.format('%.6f', now)
  local beats = redis.call('ZREVRANGEBYSCORE', prefix .. 'celery-ecs:beats', '+inf',
    now - tonumber(lookback), 'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #beats, 2 do
    local entry = redis.call('GET', prefix .. 'celery-ecs:beat:' .. beats[i])
    if entry then out[#out + 1] = beats[i + 1] .. ' ' .. oneline(entry) end
  end
end
return table.concat(out, '\\n')
"""

_NOT_OFFERED = ("unknown command", "unknown subcommand")
_warned: set[str] = set()


def health_args(prefix: bytes | str, read_beats: bool) -> list[bytes | str]:
    return [prefix, f"{BEAT_RETENTION:g}" if read_beats else "", str(MAX_BEATS_READ)]


def refused(error: str) -> BrokerStats | None:
    """Stats for a refused ``INFO``: an error (ACL, ...), or None when Redis does not offer it."""
    if any(word in error.lower() for word in _NOT_OFFERED):
        if "info" not in _warned:
            _warned.add("info")
            log.warning("this Redis does not offer INFO (%s): no broker memory metrics", error)
        return None
    return BrokerStats(error=f"broker memory unreadable: INFO refused ({error})")


def parse_health(
    reply: str, read_beats: bool
) -> tuple[BrokerStats | None, tuple[BeatTick, ...] | None, float | None]:
    """The script's reply -> (stats, beat ticks or None when not asked, the broker's TIME)."""
    lines = reply.split("\n")
    first = lines[0]
    if first.startswith("E "):
        stats = refused(first[2:])
    else:
        used, limit, evicted, policy = (first.split(" ") + ["-"] * 4)[:4]
        stats = BrokerStats(_int(used), _int(limit), _int(evicted),
                            None if policy == "-" else policy)
    if not read_beats or len(lines) < 2:
        return stats, None, None
    clock = float(lines[1])
    rows = []
    for line in lines[2:]:
        score, _, raw = line.partition(" ")
        try:
            rows.append((float(score), raw))
        except ValueError:
            log.warning("skipping malformed beat registry line")
    return stats, parse_ticks(rows), clock


def stats_from_info(memory: Any, stats: Any) -> BrokerStats | None:
    """The pipeline fallback: redis-py's parsed ``INFO memory`` and ``INFO stats`` (or the
    exceptions that refused them)."""
    for reply in (memory, stats):
        if isinstance(reply, Exception):
            return refused(" ".join(str(reply).split()) or type(reply).__name__)
    if not isinstance(memory, Mapping) or not isinstance(stats, Mapping):
        return BrokerStats(error="broker memory unreadable: unexpected INFO reply")
    policy = memory.get("maxmemory_policy")
    return BrokerStats(_int(memory.get("used_memory")), _int(memory.get("maxmemory")),
                       _int(stats.get("evicted_keys")), None if policy is None else str(policy))


def ticks_from_rows(members: Sequence[Any], entries: Sequence[Any]) -> tuple[BeatTick, ...]:
    """The pipeline fallback: (member, score) pairs and their entries (MGET) -> ticks."""
    pairs = zip(members, entries, strict=True)
    return parse_ticks((float(score), raw) for (_, score), raw in pairs)


def beat_keys(prefix: str) -> tuple[str, str]:
    """(index key, entry key prefix) of the beat registry under ``prefix``."""
    return prefix + BEAT_INDEX_KEY, prefix + BEAT_KEY_PREFIX


def _int(raw: Any) -> int | None:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None

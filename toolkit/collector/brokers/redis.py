"""Redis reader: every priority list of every queue, plus ``unacked``, in one round trip.

Kombu keeps queue ``q`` at priority step ``p > 0`` in the list ``q + sep + str(p)`` and at step 0
in ``q`` itself; ``global_keyprefix`` prefixes every key. Messages are LPUSHed and popped from the
right, so the oldest ready message of a list is at index -1. A queue that is empty has no key at
all: LLEN answers 0, which is the right answer.

One cycle is one ``EVAL`` of :data:`READ_SCRIPT`: for each list it returns the length and, when
the list is not empty, the publish stamp of its last element, extracted server-side so the
message bodies never cross the network. Where scripting is disabled (some managed Redis
offerings), the reader falls back to one pipeline of LLEN + LINDEX per list: still one round
trip, but it transfers the oldest message of each list.

The broker's own health (``INFO`` memory and evictions) and celery beat's ticks travel in the
same round trip: a second script in the same pipeline (:mod:`~toolkit.collector.brokers.redisinfo`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from toolkit.beatregistry import BeatTick
from toolkit.collector.brokers import redisinfo
from toolkit.collector.brokers.base import (
    BrokerReading,
    BrokerStats,
    ErrorTranslator,
    QueueReading,
)
from toolkit.collector.brokers.base import first_line as _first_line
from toolkit.collector.brokers.bindings import mismatch_message, scan_bindings
from toolkit.collector.brokers.peek_redis import peek_redis
from toolkit.collector.composition import QueueComposition
from toolkit.config import BrokerSettings
from toolkit.env import DEFAULT_SEPARATOR
from toolkit.errors import BrokerAuthError, BrokerError, BrokerUnreachable
from toolkit.registry import (
    ENTRY_RETENTION,
    INDEX_KEY,
    KEY_PREFIX,
    MARKER_KEY,
    WorkerHeartbeat,
    broker_time,
    consumers_per_queue,
    parse_entries,
    with_score,
)
from toolkit.stamp import HEADER
from toolkit.taskcounts import TaskClaim, TaskRequest, commit_claim, parse_claim
from toolkit.taskcounts.store import TASKS_LUA
from toolkit.urls import check_broker_url, redact_url


class RawRead(NamedTuple):
    """What one read of the broker returned, per queue in the order asked, before parsing."""

    lengths: list[int]
    stamps: list[float | None]  # oldest publish stamp per queue (None: unknown)
    errors: list[str | None]  # per-queue error (WRONGTYPE ...), else None
    unacked: int
    workers: tuple[WorkerHeartbeat, ...] | None  # None: no registry on this broker
    round_trips: int
    clock: float | None = None  # the broker's TIME when the registry was read
    stats: BrokerStats | None = None  # INFO memory/stats (None: not read or not offered)
    beats: tuple[BeatTick, ...] | None = None  # the beat registry's ticks (None: not read)
    tasks: TaskClaim | None = None  # the per-task counts claimed (or peeked at)

log = logging.getLogger(__name__)

UNACKED_KEY = "unacked"
# Heartbeat entries are kept for ENTRY_RETENTION (45 min) after their last beat; index members
# older than this cannot have an entry, so the script does not look them up.
REGISTRY_LOOKBACK = ENTRY_RETENTION
BINDING_PREFIX = "_kombu.binding."
# Celery's own broadcast and event exchanges: their queues are per-process and transient.
INTERNAL_EXCHANGES = frozenset({"celery.pidbox", "reply.celery.pidbox", "celeryev"})

# ARGV: key prefix, separator, stamp marker, read ages ("1"/"0"), how far back (seconds) to read
# the worker registry ("" to skip it), the per-task counts request ("" to skip it, see
# toolkit.taskcounts.store.TASKS_LUA), number of priority steps, the steps, then the queue
# names. Keys are built server-side (a quarter of the request size of
# passing every list) and the reply is one string, "<length> <oldest stamp or ->" per queue and
# the unacked count, then (when asked) "registry <exists> <broker TIME>" and the retained entries
# of the heartbeat registry, "<index score> <JSON>" per line, so the client parses one bulk reply
# instead of thousands of items. Then, when asked, the "tasks ..." section: the per-task counts
# claimed for publishing (or peeked at), in the same round trip.
# Kombu does not support Redis Cluster, and neither does this script (keys are not in KEYS).
READ_SCRIPT = TASKS_LUA + """
local prefix, sep, marker = ARGV[1], ARGV[2], ARGV[3]
local read_age = ARGV[4] == '1'
local lookback = ARGV[5]
local task_spec = ARGV[6]
local nsteps = tonumber(ARGV[7])
local suffixes = {}
for i = 1, nsteps do
  local step = ARGV[7 + i]
  if step == '0' then suffixes[i] = '' else suffixes[i] = sep .. step end
end
local out = {}
for qi = 8 + nsteps, #ARGV do
  local base = prefix .. ARGV[qi]
  local total, oldest, failure = 0, nil, nil
  for s = 1, nsteps do
    local key = base .. suffixes[s]
    local len = redis.pcall('LLEN', key)
    if type(len) == 'table' then  -- e.g. WRONGTYPE: report this queue, keep the others
      failure = len.err or 'error'
      len = 0
    end
    if len > 0 then
      total = total + len
      if read_age then
        -- the oldest message is at the right; our header sits near the end of the JSON
        local msg = redis.call('LINDEX', key, -1)
        if type(msg) == 'string' then
          local from = #msg - 2048
          if from < 1 then from = 1 end
          local at = string.find(msg, marker, from, true)
          if not at and from > 1 then at = string.find(msg, marker, 1, true) end
          if at then
            local stamp = tonumber(string.match(msg, '^ ?(%d+%.?%d*)', at + #marker))
            if stamp and (oldest == nil or stamp < oldest) then oldest = stamp end
          end
        end
      end
    end
  end
  if failure then
    out[#out + 1] = 'E ' .. string.gsub(failure, '\\n', ' ')
  elseif oldest then
    out[#out + 1] = total .. ' ' .. string.format('%.3f', oldest)
  else
    out[#out + 1] = total .. ' -'
  end
end
out[#out + 1] = tostring(redis.call('HLEN', prefix .. 'unacked'))
if lookback ~= '' then
  local index = prefix .. 'celery-ecs:heartbeats'
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  out[#out + 1] = 'registry ' .. redis.call('EXISTS', index, prefix .. 'celery-ecs:registry')
    .. ' ' .. string.format('%.6f', now)
  local nodes = redis.call('ZRANGEBYSCORE', index, now - tonumber(lookback), '+inf', 'WITHSCORES')
  for i = 1, #nodes, 2 do
    local entry = redis.call('GET', prefix .. 'celery-ecs:heartbeat:' .. nodes[i])
    if entry then out[#out + 1] = nodes[i + 1] .. ' ' .. entry end
  end
end
if task_spec ~= '' then celery_ecs_tasks(prefix, task_spec, out) end
return table.concat(out, '\\n')
"""
# kombu serialises headers with json.dumps: `"celery_ecs_enqueued_at": 1764150000.123`
STAMP_MARKER = '"' + HEADER + '":'
_STAMP_RE = re.compile(r'"' + re.escape(HEADER) + r'": ?(\d+\.?\d*)')


class RedisClient(Protocol):
    """The few redis-py calls the reader needs; fakeredis and redis-py both fit."""

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any: ...

    def pipeline(self, transaction: bool = ...) -> Any: ...

    def scan_iter(self, match: Any = ..., count: int | None = ...) -> Any: ...

    def smembers(self, name: Any) -> Any: ...

    def mget(self, keys: Any) -> Any: ...

    def close(self) -> None: ...


class RedisReader:
    """Reads queues (and the registry, and the per-task counts) in one round trip; implements
    :class:`~toolkit.collector.brokers.base.TaskCountReader` too."""

    kind = "redis"

    def __init__(
        self,
        client: RedisClient,
        *,
        global_keyprefix: str = "",
        priority_steps: Sequence[int] = (0, 3, 6, 9),
        separator: str = "\x06\x16",
        use_script: bool = True,
        read_age: bool = True,
        read_workers: bool = True,
        read_stats: bool = True,
        safe_url: str = "redis",
    ) -> None:
        self.client = client
        self.prefix = global_keyprefix
        self.steps = tuple(sorted(set(priority_steps)))
        self.sep = separator
        self.use_script = use_script
        self.read_age = read_age
        self.read_workers = read_workers
        self.read_stats = read_stats
        self.safe_url = safe_url
        self._warned_separator = False
        self._warned_tasks = False

    @classmethod
    def from_settings(cls, settings: BrokerSettings) -> RedisReader:
        import redis

        check_broker_url(settings.url)
        try:
            client = redis.Redis.from_url(
                settings.url,
                socket_connect_timeout=settings.connect_timeout,
                socket_timeout=max(settings.connect_timeout, 10.0),
                retry_on_timeout=False,
            )
        except ValueError as exc:
            # redis-py's messages may quote parts of the URL, password included
            raise BrokerError(
                f"invalid Redis URL {redact_url(settings.url)} ({type(exc).__name__})"
            ) from None
        return cls(
            client,
            global_keyprefix=settings.global_keyprefix,
            priority_steps=settings.priority_steps,
            separator=settings.separator,
            read_age=settings.queue_age,
            safe_url=settings.safe_url,
        )

    # -- keys ------------------------------------------------------------------------------
    def list_keys(self, queue: str) -> list[str]:
        """The Redis keys holding ``queue``'s ready messages, one per priority step."""
        base = self.prefix + queue
        return [base if step == 0 else f"{base}{self.sep}{step}" for step in self.steps]

    # -- reading ---------------------------------------------------------------------------
    def read(self, queues: Sequence[str]) -> BrokerReading:
        return self.read_with_tasks(queues, None)

    def read_with_tasks(self, queues: Sequence[str], tasks: TaskRequest | None) -> BrokerReading:
        """:meth:`read`, plus the per-task counts claimed (or peeked at) as ``tasks`` asks, in
        the same round trip. Without scripting there are no per-task counts (``tasks`` None)."""
        with self._errors():
            if self.use_script:
                try:
                    raw = self._read_script(queues, tasks)
                except _response_error() as exc:
                    if not _is_script_refusal(exc):
                        raise
                    log.warning("Redis refused EVAL (%s); using the pipeline reader",
                                _first_line(exc))
                    self.use_script = False
            if not self.use_script:
                if tasks is not None and not self._warned_tasks:
                    self._warned_tasks = True
                    log.warning("per-task metrics need Redis scripting: none are published")
                raw = self._read_pipeline(queues)
        lengths, stamps, errors, unacked, workers, trips, clock = raw[:7]
        now = time.time() if clock is None else clock
        consumers = None if workers is None else consumers_per_queue(
            w for w in workers if w.alive(now))
        readings = tuple(
            QueueReading(
                queue=q, length=n, oldest_enqueued_at=stamp,
                consumers=None if consumers is None else consumers.get(q, 0), error=err,
            )
            for q, n, stamp, err in zip(queues, lengths, stamps, errors, strict=True)
        )
        return BrokerReading(queues=readings, unacked=unacked, round_trips=trips, workers=workers,
                             clock=clock, stats=raw.stats, beats=raw.beats, tasks=raw.tasks)

    def peek(self, queue: str, limit: int) -> QueueComposition:
        """What waits in ``queue`` by task name (``inspect-queue``), read in place."""
        with self._errors():
            return peek_redis(self.client, queue, limit=limit, prefix=self.prefix,
                              separator=self.sep, steps=self.steps)

    def commit_tasks(self, collector: str, minutes: Sequence[int]) -> str:
        """The claimed minutes are published: delete them (see :func:`commit_claim`)."""
        with self._errors():
            return commit_claim(self.client, self.prefix, collector, minutes)

    def _lookback(self) -> str:
        """Index members older than this (seconds) cannot have an entry: skipped server-side."""
        return f"{REGISTRY_LOOKBACK:g}" if self.read_workers else ""

    def _read_script(self, queues: Sequence[str], tasks: TaskRequest | None = None) -> RawRead:
        # bytes, so that queue names read back from Redis with odd bytes round-trip exactly
        args: list[bytes | str] = [
            _raw(self.prefix), _raw(self.sep), STAMP_MARKER, "1" if self.read_age else "0",
            self._lookback(), "" if tasks is None else tasks.spec(), str(len(self.steps)),
            *(str(s) for s in self.steps), *(_raw(q) for q in queues),
        ]
        pipe = self.client.pipeline(transaction=False)
        pipe.eval(READ_SCRIPT, 0, *args)
        if self.read_stats:  # same pipeline, same round trip
            pipe.eval(redisinfo.HEALTH_SCRIPT, 0,
                      *redisinfo.health_args(_raw(self.prefix), self.read_workers))
        replies = pipe.execute(raise_on_error=False)
        if isinstance(replies[0], Exception):
            raise replies[0]
        reply = _text(replies[0])
        health = _health(replies[1:], self.read_workers)
        lines = reply.split("\n")
        if len(lines) < len(queues) + 1:
            raise BrokerError(f"unexpected reply from the read script ({len(lines)} lines)")
        lengths: list[int] = []
        stamps: list[float | None] = []
        errors: list[str | None] = []
        for line in lines[: len(queues)]:
            length, _, stamp = line.partition(" ")
            if length == "E":
                lengths.append(0)
                stamps.append(None)
                errors.append(stamp or "error")
                continue
            lengths.append(int(length))
            stamps.append(None if stamp == "-" else float(stamp))
            errors.append(None)
        unacked = int(lines[len(queues)])
        rest = lines[len(queues) + 1:]
        claim = None
        cut = next((i for i, line in enumerate(rest) if line.startswith("tasks ")), None)
        if cut is not None:  # registry lines start with their score, never with "tasks "
            claim = parse_claim(rest[cut:], tasks.top if tasks is not None else 0)
            rest = rest[:cut]
        workers = None
        clock = None
        if rest and rest[0].startswith("registry "):
            _, exists, at = rest[0].split(" ")
            clock = float(at)
            if exists != "0":
                workers = _scored_entries(line.partition(" ") for line in rest[1:])
        return RawRead(lengths, stamps, errors, unacked, workers, 1, clock, *health, claim)

    def _read_pipeline(self, queues: Sequence[str]) -> RawRead:
        """The no-scripting fallback: one pipeline (a second one for registry entries)."""
        keys = [_raw(key) for queue in queues for key in self.list_keys(queue)]
        pipe = self.client.pipeline(transaction=False)
        front = self._queue_health(pipe)  # first, so the tail below stays as it was
        for key in keys:
            pipe.llen(key)
            if self.read_age:
                pipe.lindex(key, -1)
        pipe.hlen(_raw(self.prefix + UNACKED_KEY))
        index = _raw(self.prefix + INDEX_KEY)
        if self.read_workers:
            pipe.time()
            pipe.exists(index, _raw(self.prefix + MARKER_KEY))
            pipe.zrangebyscore(index, "-inf", "+inf", withscores=True)
        raw = pipe.execute(raise_on_error=False)
        head, raw = raw[:front], raw[front:]
        stats = redisinfo.stats_from_info(head[0], head[1]) if self.read_stats else None
        for item in raw[len(raw) - (4 if self.read_workers else 1):]:
            if isinstance(item, Exception):  # unacked / registry: not per queue
                raise item
        trips = 1
        workers = None
        clock = None
        if self.read_workers:
            clock = broker_time(raw[-3])
            exists, members = raw[-2], raw[-1]
            raw = raw[:-3]
            members = [(n, sc) for n, sc in members if float(sc) >= clock - REGISTRY_LOOKBACK]
            if exists:
                entries = []
                if members:
                    entries = self.client.mget(
                        [_raw(self.prefix + KEY_PREFIX) + n for n, _ in members])
                    trips += 1
                workers = _scored_entries(
                    (str(sc), "", e) for (_, sc), e in zip(members, entries, strict=True))
        beats = None
        if self.read_workers and clock is not None:
            entry_prefix = _raw(redisinfo.beat_keys(self.prefix)[1])
            beats, extra = self._pipeline_beats(head[-1], clock, entry_prefix)
            trips += extra
        width = 2 if self.read_age else 1
        per_list_len = raw[0:-1:width]
        per_list_stamp = (
            [None if isinstance(v, Exception) else _stamp_from_message(v) for v in raw[1:-1:2]]
            if self.read_age else [None] * len(keys)
        )
        n = len(self.steps)
        lengths: list[int] = []
        stamps: list[float | None] = []
        errors: list[str | None] = []
        for i in range(len(queues)):
            chunk = per_list_len[i * n:(i + 1) * n]
            failed = next((v for v in chunk if isinstance(v, Exception)), None)
            errors.append(None if failed is None else _first_line(failed))
            lengths.append(0 if failed else sum(int(v) for v in chunk))
            found = [s for s in per_list_stamp[i * n:(i + 1) * n] if s is not None]
            stamps.append(min(found) if found else None)
        return RawRead(lengths, stamps, errors, int(raw[-1]), workers, trips, clock, stats, beats)

    def _queue_health(self, pipe: Any) -> int:
        """Queue INFO memory/stats and the beat index on ``pipe``; returns how many replies."""
        front = 0
        if self.read_stats:
            pipe.info("memory")
            pipe.info("stats")
            front += 2
        if self.read_workers:
            pipe.zrevrangebyscore(_raw(redisinfo.beat_keys(self.prefix)[0]), "+inf", "-inf",
                                  start=0, num=redisinfo.MAX_BEATS_READ, withscores=True)
            front += 1
        return front

    def _pipeline_beats(
        self, members: Any, clock: float, entry_prefix: bytes
    ) -> tuple[tuple[BeatTick, ...], int]:
        """The beat index read by the fallback pipeline -> its ticks, and the MGET it took."""
        if isinstance(members, Exception):
            raise members
        kept = [(n, sc) for n, sc in members if float(sc) >= clock - redisinfo.BEAT_RETENTION]
        if not kept:
            return (), 0
        entries = self.client.mget([entry_prefix + n for n, _ in kept])
        return redisinfo.ticks_from_rows(kept, entries), 1

    # -- discovery -------------------------------------------------------------------------
    def discover_queues(self) -> list[str]:
        """Queues bound in kombu's ``_kombu.binding.<exchange>`` sets, internal ones excluded.

        Entries are parsed as kombu writes them (:mod:`~toolkit.collector.brokers.bindings`).
        Entries written with another separator never become queues: when no entry parses this
        is a :class:`BrokerError` naming the separator to set (the cycle fails, it does not
        report invented queues); when some do, one warning per process says the same.
        """
        members: list[str] = []
        with self._errors():
            pattern = _raw(_glob_escape(self.prefix + BINDING_PREFIX) + "*")
            for raw_key in self.client.scan_iter(match=pattern, count=1000):
                key = _text(raw_key)
                exchange = key[len(self.prefix) + len(BINDING_PREFIX):]
                if exchange in INTERNAL_EXCHANGES:
                    continue
                members.extend(_text(member) for member in self.client.smembers(raw_key))
        scan = scan_bindings(members, self.sep)
        if scan.unsplit:
            message = f"Redis at {self.safe_url}: " + mismatch_message(
                scan, self.sep, DEFAULT_SEPARATOR)
            if not scan.queues:
                raise BrokerError(message)
            if not self._warned_separator:
                self._warned_separator = True
                log.warning("%s; those entries were skipped", message)
        return list(scan.queues)

    def discovery_hint(self) -> str:
        return ("check the database number, global_keyprefix and separator, "
                "or name queues with --queue")

    def close(self) -> None:
        self.client.close()

    # -- errors ----------------------------------------------------------------------------
    def _errors(self) -> _RedisErrors:
        return _RedisErrors(self.safe_url)


class _RedisErrors(ErrorTranslator):
    """redis-py exceptions to the toolkit's, without the password."""

    def translate(self, exc: BaseException, msg: str) -> BrokerError | None:
        import redis.exceptions as rex

        if isinstance(exc, rex.AuthenticationError) or (
            isinstance(exc, rex.ResponseError)
            and any(w in msg for w in ("NOAUTH", "WRONGPASS", "NOPERM", "invalid password"))
        ):
            return BrokerAuthError(f"Redis at {self.safe_url} refused our credentials: {msg}")
        if isinstance(exc, rex.ConnectionError | rex.TimeoutError | OSError):
            return BrokerUnreachable(f"cannot reach Redis at {self.safe_url}: {msg}")
        if isinstance(exc, rex.RedisError):
            return BrokerError(f"Redis at {self.safe_url} failed: {msg}")
        return None


def _response_error() -> type[Exception]:
    import redis.exceptions as rex

    return rex.ResponseError


def _is_script_refusal(exc: Exception) -> bool:
    """EVAL refused as such: disabled, renamed away, or denied to this user by an ACL."""
    text = str(exc).lower()
    return (
        "unknown command" in text
        or "noscript" in text
        or "not allowed" in text
        or ("eval" in text and ("disabled" in text or "no permissions" in text))
    )


def _health(
    replies: list[Any], read_beats: bool
) -> tuple[BrokerStats | None, tuple[BeatTick, ...] | None]:
    """The health script's reply (absent when not asked) -> (stats, beat ticks)."""
    if not replies:
        return None, None
    reply = replies[0]
    if isinstance(reply, Exception):
        return BrokerStats(error=f"broker memory unreadable: {_first_line(reply)}"), None
    stats, beats, _ = redisinfo.parse_health(_text(reply), read_beats)
    return stats, beats


def _scored_entries(rows: Any) -> tuple[WorkerHeartbeat, ...]:
    """(index score, _, entry JSON or None) rows -> the parsed entries with ``beat_at`` = score;
    expired (None) and malformed entries are skipped, the latter with a warning."""
    out = []
    for score, _, raw in rows:
        for beat in parse_entries([raw]):
            out.append(with_score(beat, float(score)))
    return tuple(out)


def _stamp_from_message(raw: Any) -> float | None:
    """Publish stamp of a raw kombu message, or None (no message, no stamp, not JSON)."""
    if raw is None:
        return None
    text = _text(raw)
    match = _STAMP_RE.search(text)
    if match:
        return float(match.group(1))
    try:  # a serialiser with other spacing: parse it properly
        headers = json.loads(text).get("headers") or {}
        value = headers.get(HEADER)
        return float(value) if isinstance(value, int | float) else None
    except (ValueError, AttributeError):
        return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)

"""Per-task counts in Redis: workers add to one hash per minute, a collector claims and commits.

Keys (``prefix`` is the broker's ``global_keyprefix`` where the registry lives on the broker)::

    {prefix}celery-ecs:tasks:m:{minute}    hash, counts that finished in that minute (not yet
                                           claimed); kept MINUTE_RETENTION after its last write
    {prefix}celery-ecs:tasks:minutes       sorted set of those minutes
    {prefix}celery-ecs:tasks:c:{minute}    hash, counts a collector claimed, until it commits
    {prefix}celery-ecs:tasks:claimed       sorted set of those minutes
    {prefix}celery-ecs:tasks:lease         string, the id of the collector that claimed them
    {prefix}celery-ecs:tasks:volume:{day}  sorted set, tasks finished per name that UTC day
    {prefix}celery-ecs:tasks:seq:{worker}  string, the last flush applied from that worker
                                           incarnation (node + a per-boot id), kept a day

**Workers** (:func:`flush_counts`, one ``EVAL`` per beat with something to add) add their
increments to the hash of the minute the broker's clock is in. Each flush carries the worker
incarnation's sequence number and the script applies a sequence number only once, so a flush
whose reply was lost, sent again, is not counted twice.

**Collectors** claim in the same round trip as their registry read (:data:`TASKS_LUA`, run by
the Redis reader's script or by :func:`claim_counts`): the minutes' hashes move to ``c:`` keys
under a lease, and the reply carries every claimed minute, with the tasks' volume ranking.
Once its ``PutMetricData`` succeeded, the collector commits (:func:`commit_claim`): the claimed
minutes are deleted. So two cycles never publish a count twice, a failed publish is retried by
the next cycle (the claim is still there, and still this collector's), and a second collector
finds the lease taken and publishes no task metrics. A collector that dies holding a claim
leaves it to whoever comes after the lease (:data:`LEASE_SECONDS`) runs out: a collector that
stops between a successful ``PutMetricData`` and its commit (milliseconds) is the one case that
publishes a minute twice. Commits that fail are sent again with the next claim (``commit``).
A collector down for a while finds one hash per minute it missed and publishes each once,
stamped with its minute, at most :data:`MAX_MINUTES` minutes per cycle, oldest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from toolkit.taskcounts.model import MinuteCounts, TaskClaim, totals_from_fields

BASE = "celery-ecs:tasks:"
#: how long a minute's counts wait for a collector (a collector down longer loses the oldest)
MINUTE_RETENTION = 86400.0
#: how long a collector's claim is its own: longer than any cycle (the Lambda's is 60 s)
LEASE_SECONDS = 180.0
#: minutes claimed per cycle: a long outage is published over several cycles, oldest first
MAX_MINUTES = 60
#: volume rankings are kept this long (today and yesterday are read)
VOLUME_RETENTION_MS = 3 * 86400 * 1000
SEQ_RETENTION_MS = 86400 * 1000

Mode = Literal["claim", "peek"]


def tasks_key(prefix: str, suffix: str) -> str:
    return f"{prefix}{BASE}{suffix}"


# ARGV: prefix, incarnation, sequence number, retention (ms), minute override ("" = Redis TIME),
# then field, increment pairs (integers: runtimes are summed in microseconds).
FLUSH_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local base = ARGV[1] .. 'celery-ecs:tasks:'
local seqkey = base .. 'seq:' .. ARGV[2]
local seq = tonumber(ARGV[3])
local last = tonumber(redis.call('GET', seqkey) or '0') or 0
if seq <= last then return 'dup' end
local now
if ARGV[5] ~= '' then now = tonumber(ARGV[5]) else
  local t = redis.call('TIME')
  now = tonumber(t[1])
end
local minute = string.format('%d', math.floor(now / 60) * 60)
local key = base .. 'm:' .. minute
for i = 6, #ARGV, 2 do redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1]) end
local keep = tonumber(ARGV[4])
redis.call('PEXPIRE', key, keep)
local index = base .. 'minutes'
redis.call('ZADD', index, minute, minute)
redis.call('ZREMRANGEBYSCORE', index, '-inf', tonumber(minute) - keep / 1000)
redis.call('SET', seqkey, ARGV[3], 'PX', '""" + str(SEQ_RETENTION_MS) + """')
return minute
"""

# A Lua function for the collector's read script: celery_ecs_tasks(prefix, spec, out) appends
# "tasks <state>", then per minute "minute <m>" and "<value> <field>" lines, then
# "vol <finished> <name>" lines (today's and yesterday's largest), to the table `out`.
# spec: "<claim|peek> <collector id> <lease ms> <max minutes> <top> <minutes to commit|->".
TASKS_LUA = """
local function celery_ecs_tasks(prefix, spec, out)
  local mode, who, lease, maxmin, top, commits = string.match(
    spec, '^(%a+) (%S+) (%d+) (%d+) (%d+) (%S+)$')
  if not mode then out[#out + 1] = 'tasks error'; return end
  maxmin, top = tonumber(maxmin), tonumber(top)
  local base = prefix .. 'celery-ecs:tasks:'
  local claimed_index, pending_index = base .. 'claimed', base .. 'minutes'
  local holder = redis.call('GET', base .. 'lease')
  local mine = (not holder) or holder == who
  local claiming = mode == 'claim'
  if claiming and not mine then out[#out + 1] = 'tasks busy'; return end
  if claiming and commits ~= '-' then
    for m in string.gmatch(commits, '%d+') do
      redis.call('DEL', base .. 'c:' .. m)
      redis.call('ZREM', claimed_index, m)
    end
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1])
  local shown, order = {}, {}
  local function show(m, key)
    if not shown[m] then shown[m] = {}; order[#order + 1] = m end
    table.insert(shown[m], key)
  end
  local claimed = redis.call('ZRANGE', claimed_index, 0, -1)
  for _, m in ipairs(claimed) do show(m, base .. 'c:' .. m) end
  local room = maxmin - #claimed
  if room > 0 then
    local pending = redis.call('ZRANGEBYSCORE', pending_index, '-inf', '+inf', 'LIMIT', 0, room)
    for _, m in ipairs(pending) do
      local src, dst = base .. 'm:' .. m, base .. 'c:' .. m
      if not claiming then
        show(m, src)
      else
        local fields = redis.call('HGETALL', src)
        if #fields > 0 then
          local volume = base .. 'volume:' .. string.format('%d', math.floor(tonumber(m) / 86400))
          for i = 1, #fields, 2 do
            local kind = string.sub(fields[i], 1, 2)
            if kind == 's:' or kind == 'f:' or kind == 'r:' then
              redis.call('ZINCRBY', volume, fields[i + 1], string.sub(fields[i], 3))
            end
          end
          redis.call('PEXPIRE', volume, '""" + str(VOLUME_RETENTION_MS) + """')
          if redis.call('EXISTS', dst) == 1 then
            for i = 1, #fields, 2 do redis.call('HINCRBY', dst, fields[i], fields[i + 1]) end
            redis.call('DEL', src)
          else
            redis.call('RENAME', src, dst)
            if not shown[m] then show(m, dst) end
          end
          redis.call('ZADD', claimed_index, m, m)
        end
        redis.call('ZREM', pending_index, m)
      end
    end
  end
  if claiming then
    if #order > 0 then redis.call('SET', base .. 'lease', who, 'PX', lease)
    elseif holder == who then redis.call('DEL', base .. 'lease') end
  end
  out[#out + 1] = claiming and 'tasks claimed' or 'tasks peeked'
  for _, m in ipairs(order) do
    out[#out + 1] = 'minute ' .. m
    for _, key in ipairs(shown[m]) do
      local fields = redis.call('HGETALL', key)
      for i = 1, #fields, 2 do out[#out + 1] = fields[i + 1] .. ' ' .. fields[i] end
    end
  end
  if top > 0 then
    local today = math.floor(now / 86400)
    for _, day in ipairs({today, today - 1}) do
      local ranked = redis.call('ZREVRANGE', base .. 'volume:' .. string.format('%d', day),
                                0, 2 * top - 1, 'WITHSCORES')
      for i = 1, #ranked, 2 do out[#out + 1] = 'vol ' .. ranked[i + 1] .. ' ' .. ranked[i] end
    end
  end
end
"""

CLAIM_SCRIPT = TASKS_LUA + """
local out = {}
celery_ecs_tasks(ARGV[1], ARGV[2], out)
return table.concat(out, '\\n')
"""

# ARGV: prefix, collector id, then the published minutes.
COMMIT_SCRIPT = """
local base = ARGV[1] .. 'celery-ecs:tasks:'
local holder = redis.call('GET', base .. 'lease')
for i = 3, #ARGV do
  redis.call('DEL', base .. 'c:' .. ARGV[i])
  redis.call('ZREM', base .. 'claimed', ARGV[i])
end
if holder and holder ~= ARGV[2] then return 'taken' end
if holder and redis.call('ZCARD', base .. 'claimed') == 0 then
  redis.call('DEL', base .. 'lease')
end
if not holder then return 'expired' end
return 'ok'
"""


@dataclass(frozen=True)
class TaskRequest:
    """What a collector asks of the counts in a read: claim them (to publish) or peek (a dry
    run, a check: nothing changes), the top N to rank, and minutes it published but could not
    commit yet."""

    collector: str
    mode: Mode = "claim"
    top: int = 20
    lease: float = LEASE_SECONDS
    max_minutes: int = MAX_MINUTES
    commit: tuple[int, ...] = ()

    def spec(self) -> str:
        commits = ",".join(str(int(m)) for m in self.commit) or "-"
        return (f"{self.mode} {self.collector} {int(self.lease * 1000)} {int(self.max_minutes)} "
                f"{int(self.top)} {commits}")


def flush_counts(
    client: Any, prefix: str, incarnation: str, seq: int,
    increments: Sequence[tuple[str, str]], *, at: float | None = None,
) -> int | None:
    """Add ``increments`` (field, number as text) to the current minute's hash, once per
    (``incarnation``, ``seq``). Returns the minute, or None when this flush was applied before.
    ``at`` (unix seconds) replaces the broker's clock: tests and replays only."""
    args: list[str] = [prefix, incarnation, str(int(seq)), str(int(MINUTE_RETENTION * 1000)),
                       "" if at is None else repr(float(at))]
    for name, value in increments:
        args += [name, value]
    reply = _text(client.eval(FLUSH_SCRIPT, 0, *args))
    return None if reply == "dup" else int(reply)


def claim_counts(client: Any, prefix: str, request: TaskRequest) -> TaskClaim:
    """One round trip: claim (or peek at) the counts; see :data:`TASKS_LUA`."""
    reply = _text(client.eval(CLAIM_SCRIPT, 0, prefix, request.spec()))
    return parse_claim(reply.split("\n"), request.top)


def commit_claim(client: Any, prefix: str, collector: str, minutes: Sequence[int]) -> str:
    """Delete the published minutes' claims. Returns ``ok``, ``expired`` (the lease ran out
    first) or ``taken`` (another collector holds the lease now: it may publish them too)."""
    if not minutes:
        return "ok"
    reply = client.eval(COMMIT_SCRIPT, 0, prefix, collector, *(str(int(m)) for m in minutes))
    return _text(reply)


def parse_claim(lines: Sequence[str], top: int) -> TaskClaim:
    """The ``tasks`` section of a reply (its first line ``tasks <state>``)."""
    if not lines or not lines[0].startswith("tasks "):
        raise ValueError("not a tasks reply")
    state = lines[0][6:]
    if state == "busy":
        return TaskClaim("busy")
    if state not in ("claimed", "peeked"):
        raise ValueError(f"task counts: the script answered {state!r}")
    fields: dict[int, list[tuple[str, float]]] = {}
    volume: dict[str, float] = {}
    current: list[tuple[str, float]] | None = None
    for line in lines[1:]:
        head, _, rest = line.partition(" ")
        if head == "minute":
            current = fields.setdefault(int(rest), [])
        elif head == "vol":
            score, _, name = rest.partition(" ")
            volume[name] = volume.get(name, 0.0) + float(score)
        elif current is not None and rest:
            try:
                current.append((rest, float(head)))
            except ValueError:
                continue  # not a number: not ours
    minutes = tuple(MinuteCounts(m, totals_from_fields(pairs))
                    for m, pairs in sorted(fields.items()))
    ranking = tuple(sorted(volume, key=lambda n: (-volume[n], n))[: max(top, 0)])
    return TaskClaim("claimed" if state == "claimed" else "peeked", minutes, ranking)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

"""``inspect-queue`` on Redis: what waits in one queue, read in place, one round trip per batch.

Kombu keeps queue ``q`` at priority step ``p > 0`` in the list ``q + sep + str(p)`` (step 0:
``q``), every key under ``global_keyprefix``, and a worker takes from step 0 first, from the
right of each list (the oldest). :data:`PEEK_SCRIPT` reads the messages in that order, from a
position, at most a batch of them: it sums the lists' lengths, finds each message's task name
(the ``"task": "..."`` header Celery's protocol 2 writes first, else the envelope decoded with
``cjson``), whether its ``eta`` is set, and the publish stamp, and returns per task name only
``count eta oldest-stamp name`` (names JSON-escaped: never a raw newline). Bodies stay in Redis.
A message with no task name is ``unparsed``. Nothing is taken or changed.

Reading while workers consume is reading a moving queue: the position is counted from the
oldest message at each batch, so a busy queue's sample may skip or repeat a few messages. For
``--limit`` 10,000 that is one or two batches.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from toolkit.collector.composition import QueueComposition, Tally
from toolkit.stamp import HEADER

BATCH = 5000
_MARKER = '"' + HEADER + '":'

# ARGV: key prefix, separator, stamp marker, stamp header, number of steps, the steps, the
# queue, the position of the first message to read (0: the oldest), how many to read.
PEEK_SCRIPT = """
local prefix, sep, marker, header = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local nsteps = tonumber(ARGV[5])
local queue = ARGV[6 + nsteps]
local pos, want = tonumber(ARGV[7 + nsteps]), tonumber(ARGV[8 + nsteps])
local keys, lengths, total = {}, {}, 0
for i = 1, nsteps do
  local step = ARGV[5 + i]
  keys[i] = prefix .. queue .. (step == '0' and '' or sep .. step)
  local n = redis.pcall('LLEN', keys[i])
  if type(n) ~= 'number' then n = 0 end
  lengths[i] = n
  total = total + n
end
local tally, order, unparsed, read = {}, {}, 0, 0
local function count(name, eta, stamp)
  local t = tally[name]
  if not t then t = {0, 0, nil}; tally[name] = t; order[#order + 1] = name end
  t[1] = t[1] + 1
  if eta then t[2] = t[2] + 1 end
  if stamp and (t[3] == nil or stamp < t[3]) then t[3] = stamp end
end
local function closing(msg, from)
  local at = from
  while true do
    local q = string.find(msg, '"', at, true)
    if not q then return nil end
    local j, slashes = q - 1, 0
    while j >= from and string.byte(msg, j) == 92 do slashes = slashes + 1; j = j - 1 end
    if slashes % 2 == 0 then return q end
    at = q + 1
  end
end
local function parse(msg)
  local at = string.find(msg, '"task": "', 1, true)
  if at then
    local stop = closing(msg, at + 9)
    if stop then
      local e = string.find(msg, '"eta": ', stop, true)
      local eta = e ~= nil and string.sub(msg, e + 7, e + 7) ~= 'n'
      local stamp = nil
      local s = string.find(msg, marker, stop, true)
      if s then stamp = tonumber(string.match(msg, '^ ?(%d+%.?%d*)', s + #marker)) end
      count(string.sub(msg, at + 9, stop - 1), eta, stamp)
      return
    end
  end
  local ok, doc = pcall(cjson.decode, msg)
  local headers = ok and type(doc) == 'table' and doc.headers
  if type(headers) == 'table' and type(headers.task) == 'string' then
    local name = string.sub(cjson.encode(headers.task), 2, -2)
    local eta = headers.eta ~= nil and headers.eta ~= cjson.null
    local stamp = headers[header]
    count(name, eta, type(stamp) == 'number' and stamp or nil)
  else
    unparsed = unparsed + 1
  end
end
for i = 1, nsteps do
  if want <= 0 then break end
  local n = lengths[i]
  if pos >= n then
    pos = pos - n
  else
    local take = math.min(want, n - pos)
    local msgs = redis.call('LRANGE', keys[i], -(pos + take), -(pos + 1))
    for m = #msgs, 1, -1 do parse(msgs[m]) end
    read = read + #msgs
    want = want - take
    pos = 0
  end
end
local out = {'total ' .. total, 'read ' .. read, 'unparsed ' .. unparsed}
for _, name in ipairs(order) do
  local t = tally[name]
  local stamp = t[3] and string.format('%.3f', t[3]) or '-'
  out[#out + 1] = t[1] .. ' ' .. t[2] .. ' ' .. stamp .. ' ' .. name
end
return table.concat(out, '\\n')
"""


def peek_redis(
    client: Any, queue: str, *, limit: int, prefix: str = "", separator: str = "\x06\x16",
    steps: Sequence[int] = (0, 3, 6, 9), batch: int = BATCH,
) -> QueueComposition:
    """At most ``limit`` messages of ``queue``, the oldest first, in ``ceil(limit / batch)``
    round trips (one, with the total, for an empty or unknown queue)."""
    order = [str(s) for s in sorted(set(steps))]
    tally = Tally()
    total: int | None = None
    position = 0
    while total is None or (position < min(limit, total)):
        want = min(batch, limit - position)
        reply = client.eval(PEEK_SCRIPT, 0, _raw(prefix), _raw(separator), _MARKER, HEADER,
                            str(len(order)), *order, _raw(queue), str(position), str(want))
        lines = _text(reply).split("\n")
        seen, read = int(lines[0].split()[1]), int(lines[1].split()[1])
        total = seen if total is None else total
        tally.unparsed += int(lines[2].split()[1])
        tally.sampled += read
        for line in lines[3:]:
            count, eta, stamp, name = line.split(" ", 3)
            tally.add(_unescape(name), int(count), int(eta), None if stamp == "-" else float(stamp))
        position += read
        if read < want:  # the queue is shorter now than when it was first counted
            break
    return tally.composition(queue, total or 0)


def _unescape(name: str) -> str:
    try:
        value = json.loads(f'"{name}"')
    except ValueError:
        return name
    return value if isinstance(value, str) else name


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")

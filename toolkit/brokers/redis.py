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
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from toolkit.brokers.base import BrokerReading, QueueReading
from toolkit.config import BrokerSettings, redact_url
from toolkit.errors import BrokerAuthError, BrokerError, BrokerUnreachable
from toolkit.stamp import HEADER

log = logging.getLogger(__name__)

UNACKED_KEY = "unacked"
BINDING_PREFIX = "_kombu.binding."
# Celery's own broadcast and event exchanges: their queues are per-process and transient.
INTERNAL_EXCHANGES = frozenset({"celery.pidbox", "reply.celery.pidbox", "celeryev"})

# KEYS: the lists, then the unacked hash last. ARGV[1]: a Lua pattern capturing the stamp.
READ_SCRIPT = """
local out = {}
local pattern = ARGV[1]
local n = #KEYS - 1
for i = 1, n do
  local len = redis.call('LLEN', KEYS[i])
  local stamp = false
  if len > 0 then
    local msg = redis.call('LINDEX', KEYS[i], -1)
    if msg then
      local s = string.match(msg, pattern)
      if s then stamp = s end
    end
  end
  out[2 * i - 1] = len
  out[2 * i] = stamp
end
out[2 * n + 1] = redis.call('HLEN', KEYS[n + 1])
return out
"""
# kombu serialises with json.dumps: `"name": 1764150000.123`
STAMP_PATTERN = '"' + HEADER + '": ?(%d+%.?%d*)'
_STAMP_RE = re.compile(r'"' + re.escape(HEADER) + r'": ?(\d+\.?\d*)')


class RedisClient(Protocol):
    """The few redis-py calls the reader needs; fakeredis and redis-py both fit."""

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any: ...

    def pipeline(self, transaction: bool = ...) -> Any: ...

    def scan_iter(self, match: Any = ..., count: int | None = ...) -> Any: ...

    def smembers(self, name: Any) -> Any: ...

    def close(self) -> None: ...


class RedisReader:
    kind = "redis"

    def __init__(
        self,
        client: RedisClient,
        *,
        global_keyprefix: str = "",
        priority_steps: Sequence[int] = (0, 3, 6, 9),
        separator: str = "\x06\x16",
        use_script: bool = True,
        safe_url: str = "redis",
    ) -> None:
        self.client = client
        self.prefix = global_keyprefix
        self.steps = tuple(sorted(set(priority_steps)))
        self.sep = separator
        self.use_script = use_script
        self.safe_url = safe_url

    @classmethod
    def from_settings(cls, settings: BrokerSettings) -> RedisReader:
        import redis

        try:
            client = redis.Redis.from_url(
                settings.url,
                socket_connect_timeout=settings.connect_timeout,
                socket_timeout=max(settings.connect_timeout, 10.0),
                retry_on_timeout=False,
            )
        except ValueError as exc:
            # redis-py's messages may quote the URL; say what is wrong without it.
            safe = redact_url(settings.url)
            raise BrokerError(f"invalid Redis URL {safe}: {_first_line(exc)}") from None
        return cls(
            client,
            global_keyprefix=settings.global_keyprefix,
            priority_steps=settings.priority_steps,
            separator=settings.separator,
            safe_url=settings.safe_url,
        )

    # -- keys ------------------------------------------------------------------------------
    def list_keys(self, queue: str) -> list[str]:
        """The Redis keys holding ``queue``'s ready messages, one per priority step."""
        base = self.prefix + queue
        return [base if step == 0 else f"{base}{self.sep}{step}" for step in self.steps]

    # -- reading ---------------------------------------------------------------------------
    def read(self, queues: Sequence[str]) -> BrokerReading:
        # bytes, so that queue names read back from Redis with odd bytes round-trip exactly
        keys = [_raw(key) for queue in queues for key in self.list_keys(queue)]
        unacked_key = _raw(self.prefix + UNACKED_KEY)
        with self._errors():
            if self.use_script:
                try:
                    raw = self.client.eval(READ_SCRIPT, len(keys) + 1, *keys, unacked_key,
                                           STAMP_PATTERN)
                    lengths, stamps, unacked = _split_script_reply(raw, len(keys))
                except _script_unavailable() as exc:
                    if not _is_script_refusal(exc):
                        raise
                    log.warning("Redis refused EVAL (%s); using the pipeline reader",
                                _first_line(exc))
                    self.use_script = False
            if not self.use_script:
                lengths, stamps, unacked = self._read_pipeline(keys, unacked_key)
        per_queue = len(self.steps)
        readings = []
        for i, queue in enumerate(queues):
            chunk = slice(i * per_queue, (i + 1) * per_queue)
            found = [s for s in stamps[chunk] if s is not None]
            readings.append(
                QueueReading(
                    queue=queue,
                    length=sum(lengths[chunk]),
                    oldest_enqueued_at=min(found) if found else None,
                )
            )
        return BrokerReading(queues=tuple(readings), unacked=unacked, round_trips=1)

    def _read_pipeline(
        self, keys: list[bytes], unacked_key: bytes
    ) -> tuple[list[int], list[float | None], int]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
            pipe.lindex(key, -1)
        pipe.hlen(unacked_key)
        raw = pipe.execute()
        lengths = [int(v) for v in raw[0:-1:2]]
        stamps = [_stamp_from_message(v) for v in raw[1:-1:2]]
        return lengths, stamps, int(raw[-1])

    # -- discovery -------------------------------------------------------------------------
    def discover_queues(self) -> list[str]:
        """Queues bound in kombu's ``_kombu.binding.<exchange>`` sets, internal ones excluded."""
        found: dict[str, None] = {}
        with self._errors():
            pattern = _raw(_glob_escape(self.prefix + BINDING_PREFIX) + "*")
            for raw_key in self.client.scan_iter(match=pattern, count=1000):
                key = _text(raw_key)
                exchange = key[len(self.prefix) + len(BINDING_PREFIX):]
                if exchange in INTERNAL_EXCHANGES:
                    continue
                for member in self.client.smembers(raw_key):
                    queue = _text(member).split(self.sep)[-1]
                    if queue:
                        found[queue] = None
        return sorted(found)

    def close(self) -> None:
        self.client.close()

    # -- errors ----------------------------------------------------------------------------
    def _errors(self) -> _RedisErrors:
        return _RedisErrors(self.safe_url)


class _RedisErrors:
    """Context manager mapping redis-py exceptions to the toolkit's, without the password."""

    def __init__(self, safe_url: str) -> None:
        self.safe_url = safe_url

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is None:
            return False
        import redis.exceptions as rex

        msg = _first_line(exc)
        if isinstance(exc, rex.AuthenticationError) or (
            isinstance(exc, rex.ResponseError)
            and any(w in msg for w in ("NOAUTH", "WRONGPASS", "NOPERM", "invalid password"))
        ):
            raise BrokerAuthError(
                f"Redis at {self.safe_url} refused our credentials: {msg}"
            ) from exc
        if isinstance(exc, rex.ConnectionError | rex.TimeoutError | OSError):
            raise BrokerUnreachable(f"cannot reach Redis at {self.safe_url}: {msg}") from exc
        if isinstance(exc, rex.RedisError):
            raise BrokerError(f"Redis at {self.safe_url} failed: {msg}") from exc
        return False


def _script_unavailable() -> type[Exception]:
    import redis.exceptions as rex

    return rex.ResponseError


def _is_script_refusal(exc: Exception) -> bool:
    text = str(exc).lower()
    return "unknown command" in text or "noscript" in text or "not allowed" in text or (
        "eval" in text and "disabled" in text
    )


def _split_script_reply(raw: Any, n: int) -> tuple[list[int], list[float | None], int]:
    values = list(raw)
    lengths = [int(values[2 * i]) for i in range(n)]
    stamps = [_to_float(values[2 * i + 1]) for i in range(n)]
    return lengths, stamps, int(values[2 * n])


def _to_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(_text(value))
    except ValueError:
        return None


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

"""Single-instance locks for Celery tasks, on plain Redis keys with a TTL.

A lock is one Redis string: ``SET key token NX PX ttl`` takes it, a random ``token`` proves
ownership, and two Lua scripts (compare-and-delete, compare-and-pexpire) release and extend it
only for the owner. A process that dies holding a lock stops renewing it, and Redis deletes the
key when its TTL runs out. See ``docs/task-safety.md`` for the guarantees and their limits
(a TTL lock is not a fencing token).

    LockError                   (toolkit.errors)
    ├── LockNotAcquired         the lock is held elsewhere (context manager, decorator)
    └── LockUnavailable         Redis did not answer; the message names the redacted URL

Two ways in:

- :class:`TaskLock` for any code: ``with TaskLock(client, "nightly-report", ttl=60): ...``
- :func:`single_instance` for a Celery task: a duplicate call while one runs is skipped
  (it returns :data:`SKIPPED`) or retried later; a *redelivered* message (a killed worker's
  task coming back) is always retried once the lock's remaining TTL has passed. Inside the task,
  :func:`current_lock` returns the run's lock (``lock.lost`` says whether it was los"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Protocol

from toolkit.errors import LockError

log = logging.getLogger("toolkit.locks")  # the public path: operators filter on it

DEFAULT_PREFIX: Final = "celery-ecs:lock:"
#: What a task decorated with ``single_instance(on_duplicate="skip")`` returns when another run
#: holds its lock. A plain string, so every result backend serialiser can carry it.
SKIPPED: Final = "celery-ecs:skipped:duplicate"

# KEYS[1] = lock key, ARGV[1] = our token
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""
# KEYS[1] = lock key: the remaining TTL in milliseconds (-2: no key, -1: no TTL)
_PTTL = "return redis.call('pttl', KEYS[1])"
# KEYS[1] = lock key, ARGV[1] = our token, ARGV[2] = new TTL in milliseconds
_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class LockNotAcquired(LockError):
    """The lock is held by someone else (and any wait ran out)."""


class LockUnavailable(LockError):
    """Redis could not be reached or refused the command."""


class RedisClient(Protocol):
    """The part of a redis-py (or fakeredis) client the locks use."""

    def set(self, name: str, value: str, *, nx: bool = ..., px: int | None = ...) -> Any: ...

    def get(self, name: str) -> Any: ...

    def eval(self, script: str, numkeys: int, *keys_and_args: str) -> Any: ...


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    return (redis.exceptions.RedisError, OSError)


def _describe(client: object) -> str:
    """A secret-free description of the client's server, for error messages."""
    pool = getattr(client, "connection_pool", None)
    kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", {}) or {}
    if "host" in kwargs:
        return f"redis://{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    if "path" in kwargs:
        return f"redis+socket://{kwargs['path']}"
    return type(client).__name__


class TaskLock:
    """A Redis lock owned by a random token, expiring after ``ttl`` seconds.

    ``acquire(wait=None)`` tries once; ``acquire(wait=5)`` retries for up to 5 seconds.
    ``release()`` and ``extend()`` act only while this instance owns the key and return False
    otherwise. With ``auto_renew=True`` a daemon thread extends the lock every ``ttl / 3``
    seconds until ``release()``, so a long task keeps it while a dead one loses it within ``ttl``.
    """

    def __init__(
        self,
        client: RedisClient,
        name: str,
        ttl: float,
        *,
        prefix: str = DEFAULT_PREFIX,
        wait: float | None = None,
        auto_renew: bool = False,
        retry_interval: float = 0.05,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be greater than 0 seconds")
        self.client = client
        self.name = name
        self.key = prefix + name
        self.ttl = ttl
        self.wait = wait
        self.auto_renew = auto_renew
        self.retry_interval = retry_interval
        self.token: str | None = None
        # set when a renewal found the lock gone (expired or taken), or could not reach Redis
        # until the key's TTL had run out
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._expires = 0.0  # monotonic time by which the key expires unless renewed

    @property
    def ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except _redis_errors() as exc:
            raise LockUnavailable(
                f"cannot {what} lock {self.key!r} on {_describe(self.client)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def acquire(self, wait: float | None = None) -> bool:
        """Take the lock; ``wait`` seconds (None: one attempt) to retry while it is held."""
        if self.token is not None:
            raise LockError(f"lock {self.key!r} is already held by this instance")
        token = secrets.token_hex(16)
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            sent = time.monotonic()
            got = self._call(
                "acquire",
                lambda: self.client.set(self.key, token, nx=True, px=self.ttl_ms),
            )
            if got:
                self.token = token
                self.lost = False
                self._expires = sent + self.ttl
                if self.auto_renew:
                    self._start_renewer()
                return True
            if deadline is None:
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # jitter so that waiters do not retry in lock-step
            time.sleep(min(remaining, self.retry_interval * (0.5 + secrets.randbelow(100) / 100)))

    def release(self) -> bool:
        """Delete the key if this instance still owns it; False if it did not."""
        self._stop_renewer()
        token, self.token = self.token, None
        if token is None:
            return False
        return bool(self._call("release", lambda: self.client.eval(_RELEASE, 1, self.key, token)))

    def extend(self, ttl: float | None = None) -> bool:
        """Reset the TTL to ``ttl`` (default: the lock's) if this instance owns the key."""
        token = self.token
        if token is None:
            return False
        ms = self.ttl_ms if ttl is None else max(1, int(ttl * 1000))
        sent = time.monotonic()
        extended = bool(
            self._call("extend", lambda: self.client.eval(_EXTEND, 1, self.key, token, str(ms)))
        )
        if extended:
            self._expires = sent + ms / 1000
        return extended

    def remaining(self) -> float | None:
        """Seconds until the key expires, whoever holds it; None if there is no key (or it
        has no TTL). One PTTL, through ``eval`` so the client protocol stays three methods."""
        ms = int(self._call("read", lambda: self.client.eval(_PTTL, 1, self.key)))
        return ms / 1000 if ms >= 0 else None

    def owned(self) -> bool:
        """True if the key currently holds this instance's token (one GET)."""
        if self.token is None:
            return False
        value = self._call("read", lambda: self.client.get(self.key))
        if isinstance(value, bytes):
            value = value.decode()
        return bool(value == self.token)

    # --- auto-renewal ---------------------------------------------------------------------

    #: How long ``release()`` waits for the renewal thread to stop (it may be inside a Redis
    #: call bounded by the client's socket timeout); after that it releases anyway.
    join_timeout: float = 5.0

    def _start_renewer(self) -> None:
        stop = self._stop = threading.Event()  # a fresh event per thread: no stale wake-ups
        self._renewer = threading.Thread(
            target=self._renew_loop, args=(stop,), name=f"lock-renew:{self.key}", daemon=True
        )
        self._renewer.start()

    def _stop_renewer(self) -> None:
        self._stop.set()
        renewer, self._renewer = self._renewer, None
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join(self.join_timeout)
            if renewer.is_alive():
                log.warning(
                    "lock %r: renewal thread still busy after %ss; releasing anyway",
                    self.key, self.join_timeout,
                )

    def _renew_loop(self, stop: threading.Event) -> None:
        interval = self.ttl / 3
        while not stop.wait(interval):
            try:
                renewed = self.extend()
            except Exception as exc:  # noqa: BLE001 - the thread must not die silently
                if stop.is_set():
                    return
                if time.monotonic() >= self._expires:
                    self.lost = True
                    log.warning(
                        "lock %r lost: renewal kept failing until its TTL ran out (%s: %s)",
                        self.key, type(exc).__name__, exc,
                    )
                    return
                # keep trying: the key may still be alive until its TTL runs out
                log.warning(
                    "lock %r renewal failed, retrying: %s: %s", self.key, type(exc).__name__, exc
                )
                continue
            if stop.is_set():  # released meanwhile: extend() found no token, nothing was lost
                return
            if renewed:
                continue
            self.lost = True
            log.warning("lock %r was lost before renewal (expired or taken)", self.key)
            return

    # --- context manager ------------------------------------------------------------------

    def __enter__(self) -> TaskLock:
        if not self.acquire(self.wait):
            raise LockNotAcquired(f"lock {self.key!r} is held by another owner")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self.token is not None else "free"
        return f"TaskLock({self.key!r}, ttl={self.ttl}, {state})"

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
  :func:`current_lock` returns the run's lock (``lock.lost`` says whether it was lost).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Protocol, TypeVar, cast

from toolkit.config import redact_url
from toolkit.errors import LockError

log = logging.getLogger(__name__)

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


# --- the Celery decorator ---------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])
OnDuplicate = Literal["skip", "retry"]
ClientSource = RedisClient | Callable[[], RedisClient] | None

_broker_clients: dict[str, RedisClient] = {}
_broker_clients_lock = threading.Lock()
_current_lock: ContextVar[TaskLock | None] = ContextVar("toolkit_current_lock", default=None)
#: Added to a redelivered duplicate's retry countdown, past the lock's remaining TTL.
REDELIVERY_MARGIN: Final = 0.5


def current_lock() -> TaskLock | None:
    """The lock of the :func:`single_instance` task running in this context, or None (outside
    such a task, or running unlocked under ``fail_open``). Check ``current_lock().lost`` (or
    ``.owned()``, one GET) before a step that must not run twice, e.g. between batches."""
    return _current_lock.get()


def broker_redis(app: Any) -> tuple[RedisClient, str]:
    """A Redis client for ``app``'s broker, cached per URL, and its ``global_keyprefix``.

    Raises :class:`LockError` when the broker is not Redis (pass ``client=`` instead).
    """
    url = str(app.conf.broker_url or "")
    url = url.split(";")[0].strip()  # failover lists: use the first URL
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in {"redis", "rediss", "unix"}:
        raise LockError(
            f"single_instance needs a Redis client: the broker {redact_url(url) or '(unset)'} "
            "is not Redis, pass client=..."
        )
    options = app.conf.broker_transport_options or {}
    prefix = str(options.get("global_keyprefix", "") or "")
    client = _broker_clients.get(url)  # every task call: no lock once the client exists
    if client is not None:
        return client, prefix
    with _broker_clients_lock:
        client = _broker_clients.get(url)
        if client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # redis-py's default (3 retries, exponential backoff) would hold a fail-closed task
            # for seconds; one quick retry covers a pooled connection the server closed.
            try:
                client = cast(
                    RedisClient,
                    redis.Redis.from_url(
                        url, socket_connect_timeout=2, socket_timeout=5,
                        retry=Retry(NoBackoff(), 1),
                    ),
                )
            except ValueError:  # redis-py quotes the part it choked on: maybe the password
                raise LockError(
                    f"single_instance: malformed broker URL {redact_url(url)}"
                ) from None
            _broker_clients[url] = client
    return client, prefix


def lock_name(task_name: str, values: Sequence[tuple[str, Any]]) -> str:
    """``task`` or ``task(a=1,b='x')``; long argument lists become a short hash."""
    if not values:
        return task_name
    args = ",".join(f"{k}={json.dumps(v, sort_keys=True, default=str)}" for k, v in values)
    if len(args) > 120:
        args = "sha1:" + hashlib.sha1(args.encode()).hexdigest()
    return f"{task_name}({args})"


def _select(fn: Callable[..., Any], signature: inspect.Signature, key_args: Sequence[str],
            args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    bound = signature.bind_partial(*args, **kwargs)
    bound.apply_defaults()
    missing = [name for name in key_args if name not in bound.arguments]
    if missing:
        raise LockError(f"single_instance key_args not in {fn.__name__}(): {', '.join(missing)}")
    return [(name, bound.arguments[name]) for name in key_args]


@dataclass(frozen=True)
class SingleInstance:
    """The options of :func:`single_instance`; calling it on a function returns the wrapper."""

    ttl: float = 60.0
    key_args: tuple[str, ...] = ()
    on_duplicate: OnDuplicate = "skip"
    retry_countdown: float = 30.0
    max_retries: int | None = None
    client: ClientSource = None
    prefix: str = DEFAULT_PREFIX
    auto_renew: bool = True
    fail_open: bool = False

    def __call__(self, fn: F) -> F:
        # read once here, not on every call: inspect.signature() is the costly part of a lookup
        signature = inspect.signature(fn) if self.key_args else None

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from celery import current_task

            task = current_task
            if task is None or not getattr(task, "name", None):
                raise LockError(
                    f"{fn.__name__} is decorated with single_instance "
                    "but is not running as a Celery task"
                )
            lock = self.lock_for(task, fn, signature, args, kwargs)
            try:
                acquired = lock.acquire()
            except LockUnavailable as exc:
                if not self.fail_open:
                    raise
                log.warning("running %s without its lock (fail_open): %s", task.name, exc)
                return fn(*args, **kwargs)
            if not acquired:
                return self.duplicate(task, lock)
            token = _current_lock.set(lock)
            try:
                return fn(*args, **kwargs)
            finally:
                _current_lock.reset(token)
                released: bool | None = None
                try:
                    released = lock.release()
                except LockUnavailable as exc:  # the key expires by itself after ttl
                    log.warning("could not release %r: %s", lock.key, exc)
                if lock.lost or released is False:
                    log.warning(
                        "%s lost its lock %r while running (expired or taken): another "
                        "run may have overlapped this one",
                        task.name, lock.key,
                    )

        return cast(F, wrapper)

    def redis_for(self, task: Any) -> tuple[RedisClient, str]:
        """The client to use and the broker's key prefix (empty for an injected client)."""
        if self.client is None:
            return broker_redis(task.app)
        if hasattr(self.client, "set"):
            return cast(RedisClient, self.client), ""
        return self.client(), ""

    def lock_for(
        self,
        task: Any,
        fn: Callable[..., Any],
        signature: inspect.Signature | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> TaskLock:
        redis_client, key_prefix = self.redis_for(task)
        values = [] if signature is None else _select(fn, signature, self.key_args, args, kwargs)
        return TaskLock(
            redis_client,
            lock_name(task.name, values),
            self.ttl,
            prefix=key_prefix + self.prefix,
            auto_renew=self.auto_renew,
        )

    def duplicate(self, task: Any, lock: TaskLock) -> Any:
        if is_redelivery(task):
            # A killed run's message comes back at once (acks_late + reject_on_worker_lost)
            # while its lock still lives: skipping it would ack the only copy of the job.
            left = lock.remaining() or 0.0
            countdown = left + REDELIVERY_MARGIN
            if self.on_duplicate == "retry":
                countdown = max(countdown, self.retry_countdown)
            log.warning(
                "%s redelivered while its lock %r is held (%.1fs left): retrying in %.1fs",
                task.name, lock.key, left, countdown,
            )
            raise task.retry(countdown=countdown, max_retries=self.max_retries)
        if self.on_duplicate == "retry":
            log.info(
                "%s is already running (lock %r); retrying in %ss",
                task.name, lock.key, self.retry_countdown,
            )
            raise task.retry(countdown=self.retry_countdown, max_retries=self.max_retries)
        log.info("%s skipped: already running (lock %r)", task.name, lock.key)
        return SKIPPED


def is_redelivery(task: Any) -> bool:
    """True when the broker marked the running message as delivered before (AMQP's
    ``redelivered``; kombu's Redis transport sets it when it restores an unacked message)."""
    info = getattr(task.request, "delivery_info", None) or {}
    return bool(info.get("redelivered"))


def single_instance(
    *,
    ttl: float = 60.0,
    key_args: Sequence[str] = (),
    on_duplicate: OnDuplicate = "skip",
    retry_countdown: float = 30.0,
    max_retries: int | None = None,
    client: ClientSource = None,
    prefix: str = DEFAULT_PREFIX,
    auto_renew: bool = True,
    fail_open: bool = False,
) -> SingleInstance:
    """Let only one run of a Celery task (per selected arguments) execute at a time.

    Put it *under* ``@app.task`` so Celery registers the wrapped function::

        @app.task(bind=True)
        @single_instance(ttl=120, key_args=("customer_id",))
        def sync_customer(self, customer_id): ...

    - The lock key is ``prefix + task name``, plus ``(name=value,...)`` for ``key_args``.
    - A duplicate while one run holds the lock: ``on_duplicate="skip"`` logs one line and
      returns :data:`SKIPPED`; ``"retry"`` calls ``task.retry(countdown=retry_countdown,
      max_retries=max_retries)`` (``None``: the task's own ``max_retries``).
    - A *redelivered* duplicate (``task.request.delivery_info["redelivered"]``: the message of
      a killed run, requeued) is never skipped: it is retried with ``countdown`` = the lock's
      remaining TTL + :data:`REDELIVERY_MARGIN` (at least ``retry_countdown`` in "retry" mode).
    - The body can read its lock with :func:`current_lock`; a lock lost while the body ran
      (renewal found it gone, or the final release found another owner) logs a WARNING.
    - The lock is released when the run returns, raises or retries. While the run lives the
      lock is renewed every ``ttl / 3`` s (``auto_renew``), so a killed worker frees it within
      ``ttl`` seconds.
    - ``client``: a Redis client, or a callable returning one; default: the broker's Redis
      (``app.conf.broker_url``; keys get ``broker_transport_options["global_keyprefix"]``).
    - Redis unreachable: the task does not run and raises :class:`LockUnavailable`
      (``fail_open=False``, the default), or runs unlocked with a warning (``fail_open=True``).
    """
    if on_duplicate not in ("skip", "retry"):
        raise ValueError(f"on_duplicate must be 'skip' or 'retry', got {on_duplicate!r}")
    if ttl <= 0:
        raise ValueError("ttl must be greater than 0 seconds")
    return SingleInstance(
        ttl=ttl,
        key_args=tuple(key_args),
        on_duplicate=on_duplicate,
        retry_countdown=retry_countdown,
        max_retries=max_retries,
        client=client,
        prefix=prefix,
        auto_renew=auto_renew,
        fail_open=fail_open,
    )

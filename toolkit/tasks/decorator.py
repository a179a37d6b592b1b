"""The Celery decorator: ``single_instance`` runs one instance of a task at a time.

Built on :class:`toolkit.tasks.lock.TaskLock`; see :mod:`toolkit.tasks.lock` for the lock itself.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import threading
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar, cast

from toolkit.celeryapp import broker_of
from toolkit.errors import ConfigError, LockError
from toolkit.tasks.lock import DEFAULT_PREFIX, SKIPPED, LockUnavailable, RedisClient, TaskLock
from toolkit.urls import redact_url

log = logging.getLogger("toolkit.locks")  # the public path: operators filter on it

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
    try:
        broker = broker_of(app)
    except ConfigError:
        broker = None
    if broker is None or not broker.is_redis:
        shown = redact_url(broker.url) if broker is not None else "(unset)"
        raise LockError(
            f"single_instance needs a Redis client: the broker {shown} is not Redis, "
            "pass client=..."
        )
    url, prefix = broker.url, broker.global_keyprefix
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

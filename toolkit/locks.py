"""Public path of the task locks: ``from toolkit.locks import single_instance, TaskLock``.

The lock lives in :mod:`toolkit.tasks.lock`, the Celery decorator in :mod:`toolkit.tasks.decorator`.
"""

from toolkit.tasks.decorator import (
    REDELIVERY_MARGIN,
    SingleInstance,
    broker_redis,
    current_lock,
    is_redelivery,
    lock_name,
    single_instance,
)
from toolkit.tasks.lock import (
    DEFAULT_PREFIX,
    SKIPPED,
    LockNotAcquired,
    LockUnavailable,
    RedisClient,
    TaskLock,
)

__all__ = [
    "DEFAULT_PREFIX",
    "REDELIVERY_MARGIN",
    "SKIPPED",
    "LockNotAcquired",
    "LockUnavailable",
    "RedisClient",
    "SingleInstance",
    "TaskLock",
    "broker_redis",
    "current_lock",
    "is_redelivery",
    "lock_name",
    "single_instance",
]

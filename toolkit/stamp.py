"""The publish stamp: an enqueue time in every task message's headers, for ``QueueAge``.

Celery messages carry no enqueue time, so the age of the oldest waiting task cannot be read from
the broker alone. :func:`install` connects a ``before_task_publish`` receiver that adds
``HEADER`` (seconds since the epoch, millisecond precision) to the message headers of every task
the process publishes. Messages published without it (older producers, other languages) simply
have no age: the collector omits ``QueueAge`` for them rather than guessing.

Only Celery's default message protocol (2) carries headers this way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

HEADER = "celery_ecs_enqueued_at"
_DISPATCH_UID = "celery-ecs-toolkit.stamp"


def stamp_headers(headers: dict[str, Any] | None, now: Callable[[], float] = time.time) -> None:
    """Set the enqueue stamp in ``headers``, replacing any there.

    Celery carries unknown headers of a running task into ``task.retry()``: a retry is a new
    wait in the queue, and keeping the first stamp would make ``QueueAge`` count the earlier
    run too. (kombu's own redeliveries do not publish, so they keep theirs.)
    """
    if headers is not None:
        headers[HEADER] = round(now(), 3)


def _on_before_publish(
    sender: object = None, headers: dict[str, Any] | None = None, **_: Any
) -> None:
    stamp_headers(headers)


def install(app: Any = None) -> None:
    """Stamp every task published from this process. Idempotent; ``app`` is accepted for symmetry.

    Celery's publish signals are process-wide, so one call covers every app in the process.
    """
    from celery.signals import before_task_publish

    before_task_publish.connect(_on_before_publish, weak=False, dispatch_uid=_DISPATCH_UID)


def uninstall() -> None:
    from celery.signals import before_task_publish

    before_task_publish.disconnect(dispatch_uid=_DISPATCH_UID)

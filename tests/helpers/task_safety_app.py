"""A Celery app for the real-worker tests of toolkit.locks (broker and results on Redis db 4).

The worker runs ``celery -A tests.helpers.task_safety_app worker`` with TASK_SAFETY_PREFIX set;
the test builds the same app with :func:`make_app` to send tasks and read results.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery

from toolkit.tasks.decorator import single_instance

REDIS_URL = "redis://127.0.0.1:6379/4"


def make_app(prefix: str) -> Celery:
    app = Celery("task_safety_app", broker=REDIS_URL, backend=REDIS_URL, set_as_current=False)
    app.conf.update(
        broker_transport_options={"global_keyprefix": prefix},
        result_backend_transport_options={"global_keyprefix": prefix},
        task_default_queue=f"task-safety-{prefix}",
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        result_expires=600,
    )

    @app.task(bind=True, name="task_safety.slow")
    @single_instance(ttl=5, key_args=("x",))
    def slow(self: Any, x: int, seconds: float) -> list[float]:
        started = time.time()
        time.sleep(seconds)
        return [x, started, time.time()]

    @app.task(bind=True, name="task_safety.queued", max_retries=50)
    @single_instance(ttl=5, on_duplicate="retry", retry_countdown=0.2)
    def queued(self: Any, x: int, seconds: float) -> list[float]:
        started = time.time()
        time.sleep(seconds)
        return [x, started, time.time(), self.request.retries]

    # the docs' worked example in small: acks late, requeued when the worker process dies,
    # duplicates skipped
    @app.task(bind=True, name="task_safety.resumable", acks_late=True,
              reject_on_worker_lost=True, max_retries=5)
    @single_instance(ttl=4, key_args=("x",), on_duplicate="skip")
    def resumable(self: Any, x: int, seconds: float) -> list[float]:
        """Record each run of the body (pid, start time) in ``<prefix>runs:<x>``; the first run
        sleeps ``seconds`` (to be killed), later ones return at once."""
        client = redis.Redis.from_url(REDIS_URL)
        runs = client.rpush(f"{prefix}runs:{x}", json.dumps([os.getpid(), time.time()]))
        client.close()
        if runs == 1:
            time.sleep(seconds)
        return [runs, time.time(), self.request.retries]

    return app


app = make_app(os.environ.get("TASK_SAFETY_PREFIX", "task-safety:"))

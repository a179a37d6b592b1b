"""Celery app of the per-task metrics tests (tests/test_task_metrics.py): real workers run it.

Started as ``celery -A tests.task_app worker`` like tests/hc_app.py (``HC_BROKER``,
``HC_KEYPREFIX`` and the ``CELERY_ECS_HEARTBEAT_*`` variables). Each task has a known outcome
and a known runtime, so the published metrics can be checked exactly.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from celery import Celery

import toolkit.heartbeat

app = Celery("task_app", broker=os.environ["HC_BROKER"])
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
    worker_prefetch_multiplier=1,
    task_acks_late=False,
)
if os.environ.get("HC_KEYPREFIX"):
    app.conf.broker_transport_options = {"global_keyprefix": os.environ["HC_KEYPREFIX"]}
toolkit.heartbeat.install(app)


@app.task(name="tm.ok")
def ok(seconds: float = 0.0) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="tm.fail")
def fail(seconds: float = 0.0) -> None:
    time.sleep(seconds)
    raise RuntimeError("tm.fail always fails")


@app.task(name="tm.flaky", bind=True, max_retries=3)
def flaky(self: Any, seconds: float = 0.0) -> int:
    """Retries once (immediately), then succeeds."""
    time.sleep(seconds)
    if self.request.retries < 1:
        raise self.retry(countdown=0)
    return int(self.request.retries)


@app.task(name="tm.mark")
def mark(path: str, seconds: float) -> None:
    """Writes ``path`` as it starts (the test knows it runs), then sleeps."""
    with open(path, "w"):
        pass
    time.sleep(seconds)


@app.task(name="tm.die")
def die() -> None:
    """Kills its own pool process (SIGKILL): the worker reports it lost (WorkerLostError)."""
    os.kill(os.getpid(), signal.SIGKILL)

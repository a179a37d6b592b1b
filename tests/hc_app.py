"""Celery app run by the real workers in tests/test_heartbeat.py and tests/test_healthcheck.py.

Started as ``celery -A tests.hc_app worker`` from the repository root; ``HC_BROKER`` selects
the broker, and the heartbeat settings come from the usual ``CELERY_ECS_HEARTBEAT_*`` variables.

SIGUSR2 blocks the worker's main thread (the one running the event loop) for
``HC_BLOCK_SECONDS`` (default 4) without stopping the process: the tests use it to prove that
the beats come from the loop, not from a thread that would keep beating for a blocked loop.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from celery import Celery, signals

import toolkit.heartbeat

app = Celery("hc_app", broker=os.environ["HC_BROKER"])
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
    worker_prefetch_multiplier=1,
    task_acks_late=False,
)
if os.environ.get("HC_KEYPREFIX"):
    app.conf.broker_transport_options = {"global_keyprefix": os.environ["HC_KEYPREFIX"]}
toolkit.heartbeat.install(app)


@app.task(name="hc.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="hc.fail")
def fail() -> None:
    raise RuntimeError("hc.fail always fails")


def _block_main_thread(signum: int, frame: Any) -> None:
    time.sleep(float(os.environ.get("HC_BLOCK_SECONDS", "4")))


@signals.worker_ready.connect
def _install_block_handler(**_: Any) -> None:
    signal.signal(signal.SIGUSR2, _block_main_thread)

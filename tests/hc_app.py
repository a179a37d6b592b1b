"""Celery app run by the real workers in tests/test_heartbeat.py and tests/test_healthcheck.py.

Started as ``celery -A tests.hc_app worker`` from the repository root; ``HC_BROKER`` selects
the broker, and the heartbeat settings come from the usual ``CELERY_ECS_HEARTBEAT_*`` variables.
"""

from __future__ import annotations

import os
import time

from celery import Celery

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

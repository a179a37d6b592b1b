"""Celery app run by the real workers of tests/test_busy_vs_hung.py.

Celery's defaults where they matter (prefetch multiplier 4, early acknowledgement), so the
workers hold work exactly as a new user's would. ``HC_BROKER`` selects the broker; heartbeat
settings come from the usual ``CELERY_ECS_HEARTBEAT_*`` variables.
"""

from __future__ import annotations

import os
import time

from celery import Celery

import toolkit

app = Celery("verdict_app", broker=os.environ["HC_BROKER"])
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=True)
toolkit.install(app)


@app.task(name="vt.sleep")
def sleep(seconds: float) -> float:
    """A legitimate long task (an export, a report)."""
    time.sleep(seconds)
    return seconds


@app.task(name="vt.quick")
def quick() -> None:
    """What most tasks of the app are: done in milliseconds."""


@app.task(name="vt.hang")
def hang() -> None:
    """A task stuck forever, as on a network call without a timeout."""
    while True:
        time.sleep(3600)


@app.task(name="vt.limited", rate_limit="1/m")
def limited() -> None:
    """Rate limited by design: the worker releases one a minute."""

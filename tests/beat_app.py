"""Celery app run by the real ``celery beat`` processes of tests/test_beat_heartbeat.py.

``celery -A tests.beat_app beat``; ``HC_BROKER`` is the broker, ``HC_KEYPREFIX`` its
``global_keyprefix`` (so the beat registry keys of one test are its own), ``HC_QUEUE`` the queue
the scheduled task goes to. ``BEAT_INSTALL=0`` leaves ``toolkit.install(app)`` out (the mixin
case). SIGUSR2 blocks beat's main thread for ``HC_BLOCK_SECONDS`` between two ticks without
stopping the process: a heartbeat written by a side thread would keep beating then.

Two custom schedulers, shaped like RedBeat's and django-celery-beat's (their own schedule store,
their own ``tick``): :class:`MemoryScheduler`, and :class:`MixinScheduler`, which beats through
:class:`toolkit.heartbeat.BeatHeartbeatMixin` instead of ``toolkit.install``.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from celery import Celery, signals
from celery.beat import Scheduler

import toolkit
from toolkit.heartbeat import BeatHeartbeatMixin

app = Celery("beat_app", broker=os.environ["HC_BROKER"])
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_default_queue=os.environ.get("HC_QUEUE", "beat-test"),
    beat_schedule={"noop": {"task": "beat.noop", "schedule": 1.0}},
)
if os.environ.get("HC_KEYPREFIX"):
    app.conf.broker_transport_options = {"global_keyprefix": os.environ["HC_KEYPREFIX"]}
if os.environ.get("BEAT_INSTALL", "1") != "0":
    toolkit.install(app)


@app.task(name="beat.noop")
def noop() -> None:
    return None


class MemoryScheduler(Scheduler):
    """A custom scheduler: an in-memory store, and a tick of its own around the base one."""

    def setup_schedule(self) -> None:
        self.custom_ticks = 0
        self.merge_inplace(self.app.conf.beat_schedule)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        self.custom_ticks += 1
        return float(min(super().tick(*args, **kwargs), self.max_interval))


class MixinScheduler(BeatHeartbeatMixin, MemoryScheduler):
    """The same scheduler beating through the mixin (for a beat without toolkit.install)."""


def _block_main_thread(signum: int, frame: Any) -> None:
    time.sleep(float(os.environ.get("HC_BLOCK_SECONDS", "4")))


@signals.beat_init.connect
def _install_block_handler(**_: Any) -> None:
    signal.signal(signal.SIGUSR2, _block_main_thread)

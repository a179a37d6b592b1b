"""celery-ecs-toolkit: visibility and self-healing for Celery workers on Amazon ECS.

This module stays import-light (no celery, boto3 or redis) because the container health check
imports it every 30 seconds. Heavier helpers are imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "install"]


def install(
    app: Any, *, stamp: bool = True, heartbeat: bool = True, beat: bool = True
) -> None:
    """Wire the toolkit into a Celery app in one line: ``toolkit.install(app)``.

    - ``stamp``: every task published from this process carries its enqueue time, which the
      collector turns into ``QueueAge`` (:mod:`toolkit.stamp`).
    - ``heartbeat``: workers of ``app`` run the heartbeat bootstep (heartbeat and ready files,
      the Redis registry behind ``QueueConsumers``), configured from the ``CELERY_ECS_HEARTBEAT_*``
      environment variables (:mod:`toolkit.heartbeat`). It does nothing in processes that only
      publish tasks.
    - ``beat``: ``celery beat`` processes of ``app`` write a heartbeat at every scheduler tick
      (the ``CELERY_ECS_BEAT_FILE`` file for ``celery-ecs healthcheck beat``, and the beat
      registry behind ``BeatHeartbeatAge``), whatever their scheduler class
      (:mod:`toolkit.worker.beatbeat`). It does nothing in other processes.

    Idempotent: calling it twice installs nothing twice.
    """
    if stamp:
        from toolkit.stamp import install as install_stamp

        install_stamp(app)
    if heartbeat:
        from toolkit.worker.bootstep import install as install_heartbeat

        install_heartbeat(app)
    if beat:
        from toolkit.worker.beatbeat import install as install_beat

        install_beat(app)

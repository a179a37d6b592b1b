"""celery-ecs-toolkit: visibility and self-healing for Celery workers on Amazon ECS.

This module stays import-light (no celery, boto3 or redis) because the container health check
imports it every 30 seconds. Heavier helpers are imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "install"]


def install(app: Any, **options: Any) -> None:
    """Wire the toolkit into a Celery app in one line: ``toolkit.install(app)``.

    Stamps every published task with its enqueue time (for the ``QueueAge`` metric). Options are
    passed to :func:`toolkit.stamp.install`.
    """
    from toolkit.stamp import install as _install_stamp

    _install_stamp(app, **options)

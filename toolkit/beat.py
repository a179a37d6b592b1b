"""Public path of the collector as a Celery beat task: ``toolkit.beat.register_collector(app)``.

The code lives in :mod:`toolkit.collector.beat`.
"""

from toolkit.collector.beat import (
    DEFAULT_QUEUE,
    SCHEDULE_NAME,
    TASK_NAME,
    broker_settings_from_app,
    register_collector,
)

__all__ = [
    "DEFAULT_QUEUE",
    "SCHEDULE_NAME",
    "TASK_NAME",
    "broker_settings_from_app",
    "register_collector",
]

"""Collector Lambda: one collection cycle per scheduled invocation (EventBridge rule, rate 1 min).

Thin by design: settings are read from the environment once per container (ENVIRONMENT,
CELERY_ECS_BROKER_SECRET_ARN (the broker URL from Secrets Manager; or CELERY_ECS_BROKER_URL),
CELERY_ECS_QUEUES, CELERY_ECS_NAMESPACE, CELERY_ECS_CONFIG ...), the
broker reader and the CloudWatch client are built once and reused, and the handler returns a
small summary. A failed cycle is reported through the CollectorErrors metric and the return
value; it is not raised, because a retried scheduled invocation would only double-count.
"""

from __future__ import annotations

import logging
from typing import Any

from toolkit.aws.secrets import collector_settings
from toolkit.collector.brokers import BrokerReader, open_reader
from toolkit.collector.cycle import QueueSource, run_cycle
from toolkit.collector.publisher import CloudWatchPublisher
from toolkit.config import Settings

log = logging.getLogger()
log.setLevel(logging.INFO)

_state: dict[str, Any] = {}


def _container() -> tuple[Settings, BrokerReader, CloudWatchPublisher, QueueSource]:
    if not _state:
        settings = collector_settings()
        assert settings.broker is not None
        _state.update(
            settings=settings,
            reader=open_reader(settings.broker),
            publisher=CloudWatchPublisher(settings.namespace,
                                          high_resolution=settings.high_resolution),
            source=QueueSource(settings),
        )
    return _state["settings"], _state["reader"], _state["publisher"], _state["source"]


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings, reader, publisher, source = _container()
    result = run_cycle(reader, settings, publisher, source=source)
    for error in result.errors:
        log.error("collection failed: %s", error)
    return {
        "ok": result.ok,
        "environment": settings.environment,
        "queues": len(result.queues),
        "metrics": len(result.samples),
        "errors": list(result.errors),
    }

"""Broker readers: the real Celery backlog, one small adapter per broker, chosen by URL scheme.

    reader = open_reader(BrokerSettings(url="redis://localhost:6379/0"))
    reading = reader.read(["celery", "emails"])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.collector.brokers.base import BrokerReader, BrokerReading, QueueReading
from toolkit.config import BrokerSettings
from toolkit.errors import UnsupportedBroker
from toolkit.urls import redact_url

REDIS_SCHEMES = frozenset({"redis", "rediss"})
AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})

__all__ = [
    "AMQP_SCHEMES",
    "REDIS_SCHEMES",
    "BrokerReader",
    "BrokerReading",
    "QueueReading",
    "open_reader",
    "peek_queue",
]

if TYPE_CHECKING:
    from toolkit.collector.composition import QueueComposition


def open_reader(settings: BrokerSettings) -> BrokerReader:
    """Return the reader for ``settings.url``'s scheme; :class:`UnsupportedBroker` otherwise."""
    scheme = settings.scheme
    if scheme in REDIS_SCHEMES:
        from toolkit.collector.brokers.redis import RedisReader

        return RedisReader.from_settings(settings)
    if scheme in AMQP_SCHEMES:
        from toolkit.collector.brokers.rabbitmq import RabbitMQReader

        return RabbitMQReader(settings)
    known = ", ".join(f"{s}://" for s in sorted(REDIS_SCHEMES | AMQP_SCHEMES))
    shown = f"{scheme}://" if scheme else redact_url(settings.url) or "an empty URL"
    raise UnsupportedBroker(f"unsupported broker URL scheme {shown} (supported: {known})")


def peek_queue(settings: BrokerSettings, queue: str, limit: int) -> QueueComposition:
    """What waits in ``queue``, by task name, at most ``limit`` messages read (the oldest
    first), nothing taken: ``celery-ecs inspect-queue``."""
    reader = open_reader(settings)
    try:
        peek = getattr(reader, "peek", None)
        if peek is None:  # pragma: no cover - every reader has one
            raise UnsupportedBroker(f"inspect-queue is not supported on {reader.kind}")
        result: QueueComposition = peek(queue, limit)
        return result
    finally:
        reader.close()

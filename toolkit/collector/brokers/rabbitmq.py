"""RabbitMQ reader: ready messages and consumers per queue, by passive declare.

A passive ``queue.declare`` answers ``(name, message_count, consumer_count)`` without creating
anything. For a queue that does not exist RabbitMQ answers 404 and closes the channel; the reader
reports the queue as missing (logged once per queue per process, not a crash) and carries on with
a new channel. One connection is opened per read and closed after it.

``message_count`` counts ready messages only (unacknowledged deliveries are not included). The
age of the oldest message cannot be read without consuming it, so ``QueueAge`` is not reported
for RabbitMQ. AMQP has no way to list queues: discovery asks the management HTTP API
(:mod:`~toolkit.collector.brokers.management`); when that is turned off or cannot be reached it
falls back to Celery's default queue (plus the queues named in the configuration), says why in
one warning, and :meth:`RabbitMQReader.discovery_hint` says it again when nothing read exists.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import Any

from toolkit.collector.brokers.base import (
    BrokerReading,
    BrokerStats,
    ErrorTranslator,
    QueueReading,
)
from toolkit.collector.brokers.base import first_line as _first_line
from toolkit.collector.brokers.management import (
    ManagementUnavailable,
    ManagementUnreachable,
    list_queues,
    management_target,
    node_stats,
)
from toolkit.collector.brokers.peek_rabbitmq import peek_rabbitmq
from toolkit.collector.composition import QueueComposition
from toolkit.config import BrokerSettings
from toolkit.errors import BrokerAuthError, BrokerError, BrokerUnreachable, UnsupportedBroker

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "celery"
MAX_QUEUE_NAME_BYTES = 255  # AMQP 0-9-1 short string


class RabbitMQReader:
    kind = "rabbitmq"

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self._reported_missing: set[str] = set()
        self._target = management_target(settings.url, settings.management_url)
        self._unavailable: str | None = None  # why the last discovery fell back
        self._warned_stats = False

    def read(self, queues: Sequence[str]) -> BrokerReading:
        from amqp.exceptions import ChannelError, NotFound

        # kombu ships partial annotations; treat its connection as dynamic
        connection_cls: Any = importlib.import_module("kombu").Connection
        readings: list[QueueReading] = []
        timeout = max(self.settings.connect_timeout, 5.0)
        conn: Any = connection_cls(
            self.settings.url.replace("pyamqp://", "amqp://", 1),
            connect_timeout=self.settings.connect_timeout,
            # a broker that accepts the connection and then stalls must not hang the loop
            transport_options={"max_retries": 0, "read_timeout": timeout,
                               "write_timeout": timeout},
        )
        try:
            with self._errors():
                conn.connect()
                channel: Any = conn.channel()
                for queue in queues:
                    if len(queue.encode("utf-8", "surrogateescape")) > MAX_QUEUE_NAME_BYTES:
                        readings.append(QueueReading(
                            queue, 0, error=f"name longer than {MAX_QUEUE_NAME_BYTES} bytes"))
                        continue
                    try:
                        _, messages, consumers = channel.queue_declare(queue=queue, passive=True)
                    except NotFound:
                        self._report_missing(queue)
                        readings.append(QueueReading(queue, 0, None, 0, exists=False))
                        channel = conn.channel()  # the broker closed the old one
                        continue
                    except ChannelError as exc:  # 403 access refused, 405 locked (exclusive)
                        readings.append(QueueReading(queue, 0, error=_first_line(exc)))
                        channel = conn.channel()
                        continue
                    readings.append(QueueReading(queue, int(messages), None, int(consumers)))
        finally:
            try:
                conn.release()
            except Exception:  # noqa: BLE001 - closing a dead connection must not mask the error
                log.debug("error while closing the AMQP connection", exc_info=True)
        stats = self._stats(timeout)
        trips = len(queues) + 1 + (self._target is not None)
        return BrokerReading(queues=tuple(readings), unacked=None, round_trips=trips,
                             stats=stats)

    def _stats(self, timeout: float) -> BrokerStats | None:
        """Node memory and alarms from the management API (one HTTP request). Unreachable (the
        plugin is not enabled): no broker metrics, one warning, as discovery does; refused
        (a user without the monitoring tag) or not JSON: an error line of the cycle."""
        if self._target is None:
            return None
        try:
            return node_stats(self._target, timeout)
        except ManagementUnreachable as exc:
            if not self._warned_stats:
                self._warned_stats = True
                log.warning("%s; no broker memory metrics", exc)
            return None
        except ManagementUnavailable as exc:
            return BrokerStats(error=f"broker memory unreadable: {exc}")

    def peek(self, queue: str, limit: int) -> QueueComposition:
        """What waits in ``queue`` by task name (``inspect-queue``), through the management
        API's get with requeue (the messages read are marked redelivered; said in the
        result's notes). Without the management API this is not supported."""
        if self._target is None:
            raise UnsupportedBroker(
                "inspect-queue on RabbitMQ is not supported without the management API "
                "(AMQP cannot read a message without taking it; [broker] management_url "
                "is turned off)")
        (read,) = self.read([queue]).queues  # the exact count, by passive declare
        if read.error is not None:
            raise BrokerError(f"queue {queue!r} on {self.settings.safe_url}: {read.error}")
        if not read.exists:
            return QueueComposition(queue, 0, 0)
        try:
            return peek_rabbitmq(self._target, queue, limit=limit, total=read.length,
                                 timeout=max(self.settings.connect_timeout, 10.0))
        except ManagementUnavailable as exc:
            raise BrokerError(f"{exc}: inspect-queue on RabbitMQ is not supported without it "
                              "(AMQP cannot read a message without taking it)") from None

    def discover_queues(self) -> list[str]:
        if self._target is None:
            self._unavailable = "discovery through the management API is turned off"
            return [DEFAULT_QUEUE]
        try:
            names = list_queues(self._target, max(self.settings.connect_timeout, 5.0))
        except ManagementUnavailable as exc:
            if self._unavailable != str(exc):
                log.warning("%s; reading only %r and the configured queues", exc, DEFAULT_QUEUE)
            self._unavailable = str(exc)
            return [DEFAULT_QUEUE]
        self._unavailable = None
        return names

    def discovery_hint(self) -> str:
        if self._unavailable is None:
            return "check the virtual host in the broker URL, or name queues with --queue"
        return (f"{self._unavailable}, so only {DEFAULT_QUEUE!r} and the configured queues were "
                "read: enable the rabbitmq_management plugin or set [broker] management_url, "
                "or name queues with --queue")

    def close(self) -> None:
        return None

    def _report_missing(self, queue: str) -> None:
        if queue not in self._reported_missing:
            self._reported_missing.add(queue)
            log.info("queue %r does not exist on %s", queue, self.settings.safe_url)

    def _errors(self) -> _AmqpErrors:
        return _AmqpErrors(self.settings.safe_url)


class _AmqpErrors(ErrorTranslator):
    """amqp/kombu exceptions to the toolkit's, without the password."""

    def translate(self, exc: BaseException, msg: str) -> BrokerError | None:
        from amqp.exceptions import AccessRefused, AMQPError
        from kombu.exceptions import OperationalError

        if isinstance(exc, AccessRefused) or "ACCESS_REFUSED" in msg:
            return BrokerAuthError(f"RabbitMQ at {self.safe_url} refused our credentials")
        if isinstance(exc, OSError | TimeoutError | ConnectionError | OperationalError):
            return BrokerUnreachable(f"cannot reach RabbitMQ at {self.safe_url}: {msg}")
        if isinstance(exc, AMQPError):
            return BrokerError(f"RabbitMQ at {self.safe_url} failed: {msg}")
        return None

"""``inspect-queue`` on RabbitMQ: what waits in one queue, through the management HTTP API.

AMQP cannot read a message without taking it. The management API's ``get`` with the ack mode
``ack_requeue_true`` takes up to ``--limit`` messages from the head of the queue and puts them
back at once: nothing is lost, but RabbitMQ marks each of them **redelivered** (a consumer
sees ``redelivered=True``; Celery does not act on it, other consumers may), and while they are
out a consumer cannot have them. The command says so after every RabbitMQ read. Without the
management API (``management_url = ""``, or the plugin is off) there is no way to peek: the
command says it is not supported rather than consuming anything.

The queue's total is what the reader's passive declare answered just before (exact, unlike the
API's statistics, which lag by their interval); a queue the broker does not have has total 0
and is not asked about.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from toolkit.collector.brokers.management import (
    ManagementNotFound,
    ManagementTarget,
    ManagementUnavailable,
    request_json,
    vhost_path,
)
from toolkit.collector.composition import QueueComposition, Tally

#: bytes of each message body the API returns (the task name is in the headers)
TRUNCATE = 50_000
REDELIVERED = ("RabbitMQ: the {n:,} message(s) read were taken and requeued through the "
               "management API (get, ack_requeue_true): they are now marked redelivered")


def peek_rabbitmq(
    target: ManagementTarget, queue: str, *, limit: int, total: int, timeout: float = 10.0,
) -> QueueComposition:
    """At most ``limit`` of the ``total`` ready messages of ``queue``, from its head."""
    path = f"queues/{vhost_path(target)}/{quote(queue, safe='')}/get"
    tally = Tally()
    if total:
        try:
            got = request_json(target, path, timeout, {
                "count": min(limit, total), "ackmode": "ack_requeue_true", "encoding": "auto",
                "truncate": TRUNCATE})
        except ManagementNotFound:  # deleted since it was declared
            return QueueComposition(queue, 0, 0)
        if not isinstance(got, list):
            raise ManagementUnavailable(
                f"the RabbitMQ management API at {target.safe_url} did not answer a list")
        for message in got:
            tally.add_message(_envelope(message))
    notes = (REDELIVERED.format(n=tally.sampled),) if tally.sampled else ()
    return tally.composition(queue, max(total, tally.sampled), notes)


def _envelope(message: Any) -> dict[str, Any]:
    """A management API message as :func:`~toolkit.collector.composition.parse_message` reads
    it: AMQP headers, and the body when it is text (protocol 1 carries the task there)."""
    if not isinstance(message, dict):
        return {}
    props = message.get("properties")
    headers = props.get("headers") if isinstance(props, dict) else None
    body = message.get("payload") if message.get("payload_encoding") == "string" else None
    # the API shows AMQP's void (Celery's None: no eta) as "undefined"
    cleaned = {k: None if v == "undefined" else v
               for k, v in (headers.items() if isinstance(headers, dict) else ())}
    return {"headers": cleaned, "body": body}

"""The RabbitMQ reader against the real RabbitMQ on 127.0.0.1:5672."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from celery import Celery
from kombu import Connection, Queue

from tests.conftest import RABBITMQ_URL
from toolkit.collector.brokers import open_reader
from toolkit.config import BrokerSettings
from toolkit.errors import BrokerAuthError, BrokerUnreachable

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def queues(unique: str) -> Iterator[list[str]]:
    names = [f"ce-{unique}-a", f"ce-{unique}-b"]
    yield names
    with Connection(RABBITMQ_URL) as conn:
        channel = conn.channel()
        for name in names:
            channel.queue_delete(name)


def test_messages_and_consumers_by_passive_declare(
    queues: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    app = Celery("producer", broker=RABBITMQ_URL, set_as_current=False)
    for _ in range(5):
        app.send_task("jobs.a", queue=queues[0])
    app.send_task("jobs.b", queue=queues[1])
    reader = open_reader(BrokerSettings(url=RABBITMQ_URL.replace("amqp://", "pyamqp://")))
    with Connection(RABBITMQ_URL) as conn:
        consumer = conn.Consumer([Queue(queues[1])], callbacks=[lambda body, msg: None])
        consumer.consume()
        caplog.set_level(logging.INFO)
        missing = queues[0] + "-missing"
        reading = reader.read([queues[0], missing, queues[1]])
        again = reader.read([missing])
        consumer.cancel()
    got = [(q.queue, q.length, q.consumers, q.exists) for q in reading.queues]
    assert got[0] == (queues[0], 5, 0, True)
    assert got[1] == (missing, 0, 0, False)
    assert got[2][0] == queues[1] and got[2][2] == 1  # one consumer attached
    assert again.queues[0].exists is False
    # reported once, not every cycle
    assert sum("does not exist" in r.getMessage() for r in caplog.records) == 1
    # the queue after the missing one was read on a fresh channel (its consumer count above)
    assert got[2][3] is True and reading.queues[2].error is None


def test_a_locked_or_overlong_queue_fails_only_itself(queues: list[str]) -> None:
    app = Celery("producer", broker=RABBITMQ_URL, set_as_current=False)
    for _ in range(3):
        app.send_task("jobs.a", queue=queues[0])
    with Connection(RABBITMQ_URL) as other:
        # an exclusive queue of another connection: passive declare answers 405
        Queue(queues[1], exclusive=True).bind(other.channel()).declare()
        reader = open_reader(BrokerSettings(url=RABBITMQ_URL))
        reading = reader.read([queues[1], "q" * 300, queues[0]])
    locked, long_name, ok = reading.queues
    assert locked.error is not None and "RESOURCE_LOCKED" in locked.error.upper()
    assert long_name.error == "name longer than 255 bytes"
    assert (ok.length, ok.error) == (3, None)


def test_wrong_password_and_unreachable() -> None:
    bad = open_reader(BrokerSettings(url="amqp://guest:not-the-password@127.0.0.1:5672//"))
    with pytest.raises(BrokerAuthError) as err:
        bad.read(["celery"])
    assert "not-the-password" not in str(err.value)
    down = open_reader(BrokerSettings(url="amqp://guest:pw@127.0.0.1:1//", connect_timeout=1))
    with pytest.raises(BrokerUnreachable):
        down.read(["celery"])

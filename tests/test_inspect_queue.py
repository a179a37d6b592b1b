"""``celery-ecs inspect-queue``: what waits in one queue, by task name, without taking it.

Real Redis (db 1, a key prefix per test) filled by a real Celery producer (ETA tasks, several
priority levels, the publish stamp) plus malformed messages; real RabbitMQ through its
management API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection

from tests.conftest import QUEUES_REDIS_URL
from tests.test_collector_accuracy import amqp_url, vhost  # noqa: F401 - the fixture
from toolkit.cli import main
from toolkit.collector.brokers.peek_redis import peek_redis
from toolkit.collector.composition import parse_message
from toolkit.stamp import HEADER


def producer(prefix: str) -> Celery:
    app = Celery("inspect-producer", broker=QUEUES_REDIS_URL, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    return app


def fill(prefix: str, queue: str) -> None:
    """12 app.report (3 with a countdown, 2 at priority 9), 5 app.email at priority 3, 2 of
    another producer's (no stamp), and 3 malformed messages."""
    from celery.signals import before_task_publish

    age = {"seconds": 0.0}

    def stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
        # after toolkit.install's own receiver, if another test connected it: ours is older
        if headers is not None:
            headers[HEADER] = round(time.time() - age["seconds"], 3)

    app = producer(prefix)
    before_task_publish.connect(stamp, weak=False, dispatch_uid=f"inspect-{prefix}")
    try:
        with app.producer_or_acquire() as prod:
            for seconds, task, n, options in (
                (100.0, "app.report", 7, {}), (50.0, "app.report", 3, {"countdown": 600}),
                (10.0, "app.report", 2, {"priority": 9}), (5.0, "app.email", 5, {"priority": 3}),
            ):
                age["seconds"] = seconds
                for _ in range(n):
                    app.send_task(task, queue=queue, producer=prod, **options)
    finally:
        before_task_publish.disconnect(dispatch_uid=f"inspect-{prefix}")
        app.close()
    client = redis.Redis.from_url(QUEUES_REDIS_URL)
    other = json.dumps({"body": "e30=", "headers": {"task": "other.prod", "eta": None}})
    client.lpush(prefix + queue, other, other)  # another producer's: no publish stamp
    client.lpush(prefix + queue, b"\xff not json", b"[1, 2]", b'{"headers": {"lang": "py"}}')
    client.close()


def inspect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["inspect-queue", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_filled_queue_every_priority_level_eta_and_malformed_messages(
    prefix: str, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    queue = f"reports-{unique}"
    fill(prefix, queue)
    config = tmp_path / "celery-ecs.toml"
    config.write_text(f'[broker]\nurl = "{QUEUES_REDIS_URL}"\nglobal_keyprefix = "{prefix}"\n')
    code, out, _ = inspect(capsys, queue, "--config", str(config), "--json")
    assert code == 0
    doc = json.loads(out)
    assert (doc["queue"], doc["total"], doc["sampled"], doc["unparsed"]) == (queue, 22, 22, 3)
    tasks = {t["task"]: t for t in doc["tasks"]}
    assert [t["task"] for t in doc["tasks"]] == ["app.report", "app.email", "other.prod"]
    assert (tasks["app.report"]["count"], tasks["app.report"]["eta"]) == (12, 3)
    assert (tasks["app.email"]["count"], tasks["app.email"]["eta"]) == (5, 0)
    assert 100 <= tasks["app.report"]["oldest_age"] < 160  # the oldest stamp of the 12
    assert 5 <= tasks["app.email"]["oldest_age"] < 60
    assert tasks["other.prod"]["oldest_age"] is None  # no stamp: no age, not a guess
    client = redis.Redis.from_url(QUEUES_REDIS_URL)
    try:
        assert client.llen(prefix + queue) == 15 and client.llen(f"{prefix}{queue}\x06\x169") == 2
    finally:
        client.close()

    code, out, _ = inspect(capsys, queue, "--config", str(config))  # the table
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"queue {queue}: 22 waiting, 22 read (all)"
    assert lines[1].split() == ["TASK", "COUNT", "ETA", "OLDEST"]
    assert lines[2].split()[:3] == ["app.report", "12", "3"]  # the biggest first
    assert lines[3].split()[:3] == ["app.email", "5", "0"]
    assert lines[-1].split()[-3:] == ["3", "-", "-"] and "unparsed" in lines[-1]


def test_the_limit_reads_the_oldest_first_across_priority_lists_in_batches(
    client: redis.Redis, prefix: str,
) -> None:
    client.lpush(prefix + "q", *[_msg("step0", i) for i in range(6)])  # oldest at the right
    client.lpush(prefix + "q\x06\x163", *[_msg("step3", i) for i in range(4)])
    comp = peek_redis(client, "q", limit=8, prefix=prefix, batch=3)  # 3 round trips
    assert (comp.total, comp.sampled) == (10, 8)
    assert [(g.task, g.count) for g in comp.tasks] == [("step0", 6), ("step3", 2)]
    assert comp.tasks[1].oldest_stamp == 1000.0  # the two oldest of step 3: stamps 1000, 1001
    every = peek_redis(client, "q", limit=100, prefix=prefix, batch=4)
    assert (every.sampled, [g.count for g in every.tasks]) == (10, [6, 4])


def _msg(task: str, i: int) -> bytes:
    return json.dumps({"body": "e30=", "headers": {"lang": "py", "task": task, "eta": None,
                                                    HEADER: 1000.0 + i}}).encode()


def test_names_with_quotes_escapes_and_another_spacing(client: redis.Redis, prefix: str) -> None:
    odd = 'we"ird\\name\n✉'
    client.lpush(prefix + "q", json.dumps({"headers": {"task": odd, "eta": "2030-01-01"}}),
                 json.dumps({"headers": {"task": odd}}, separators=(",", ":")),
                 json.dumps({"headers": {"task": "compact", "eta": None}},
                            separators=(",", ":")))
    comp = peek_redis(client, "q", limit=10, prefix=prefix)
    assert [(g.task, g.count, g.eta) for g in comp.tasks] == [(odd, 2, 1), ("compact", 1, 0)]


def test_an_unknown_queue_is_total_zero_exit_zero(capsys: pytest.CaptureFixture[str],
                                                  unique: str) -> None:
    code, out, _ = inspect(capsys, f"nothing-{unique}", "--broker", QUEUES_REDIS_URL, "--json")
    assert code == 0
    assert json.loads(out) == {"queue": f"nothing-{unique}", "total": 0, "sampled": 0,
                               "unparsed": 0, "tasks": []}


@pytest.mark.parametrize("limit", ["0", "-5", "ten"])
def test_a_limit_below_one_is_exit_2(capsys: pytest.CaptureFixture[str], limit: str) -> None:
    code, _, err = inspect(capsys, "q", "--broker", QUEUES_REDIS_URL, "--limit", limit)
    assert code == 2 and "--limit" in err


def test_an_unreachable_broker_is_one_line_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = inspect(capsys, "q", "--broker", "redis://:pw-1@127.0.0.1:1/0")
    assert code == 1 and err.count("\n") == 1 and "pw-1" not in err


def test_protocol_1_messages_and_no_task_are_read_as_such() -> None:
    import base64

    body = base64.b64encode(json.dumps({"task": "old.style", "eta": "2030-01-01"}).encode())
    v1 = {"body": body.decode(), "headers": {}, "properties": {"body_encoding": "base64"}}
    assert parse_message(json.dumps(v1)) == ("old.style", True, None)
    assert parse_message(b"\x00\x01") is None
    assert parse_message('{"headers": {"task": 5}}') is None


@pytest.mark.rabbitmq
def test_rabbitmq_peeks_through_the_management_api_and_says_so(
    vhost: str, capsys: pytest.CaptureFixture[str],  # noqa: F811 - the fixture
) -> None:
    url = amqp_url(vhost)
    app = Celery("producer", broker=url, set_as_current=False)
    app.conf.broker_transport_options = {"confirm_publish": True}
    for _ in range(4):
        app.send_task("jobs.a", queue="work")
    app.send_task("jobs.b", queue="work", countdown=300)
    app.close()
    code, out, err = inspect(capsys, "work", "--broker", url, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["total"], doc["sampled"]) == (5, 5)
    assert [(t["task"], t["count"], t["eta"]) for t in doc["tasks"]] == [
        ("jobs.a", 4, 0), ("jobs.b", 1, 1)]
    assert "marked redelivered" in err
    with Connection(url) as conn:  # nothing was taken
        _, ready, _ = conn.channel().queue_declare(queue="work", passive=True)
    assert ready == 5
    code, out, _ = inspect(capsys, "absent", "--broker", url, "--json")
    assert code == 0 and json.loads(out)["total"] == 0


@pytest.mark.rabbitmq
def test_rabbitmq_without_the_management_api_is_not_supported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[broker]\nurl = "amqp://guest:guest@127.0.0.1:5672//"\n'
                      'management_url = ""\n')
    code, _, err = inspect(capsys, "work", "--config", str(config))
    assert code == 2 and "not supported" in err and err.count("\n") == 1

"""The Redis reader against the real Redis (db 1), fed by a real Celery app, and fakeredis."""

from __future__ import annotations

import json
import time

import fakeredis
import pytest
import redis
from celery import Celery
from kombu import Connection

import toolkit
from tests.conftest import QUEUES_REDIS_URL
from toolkit.collector.brokers import open_reader
from toolkit.collector.brokers.redis import RedisReader
from toolkit.config import BrokerSettings
from toolkit.errors import BrokerAuthError, BrokerUnreachable, UnsupportedBroker
from toolkit.stamp import HEADER

URL = QUEUES_REDIS_URL
pytestmark = pytest.mark.redis


def celery_app(prefix: str) -> Celery:
    app = Celery("producer", broker=URL, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    toolkit.install(app)
    return app


def test_lengths_sum_every_priority_list(client: redis.Redis, prefix: str) -> None:
    app = celery_app(prefix)
    for priority in range(10):  # every priority lands in one of the steps 0, 3, 6, 9
        for _ in range(priority + 1):
            app.send_task("jobs.resize", args=[priority], queue="images", priority=priority)
    for _ in range(7):
        app.send_task("jobs.send", queue="emails")
    # the messages really are spread over several lists
    assert client.llen(f"{prefix}images") > 0
    assert client.llen(f"{prefix}images\x06\x169") > 0
    reader = RedisReader(client, global_keyprefix=prefix)
    reading = reader.read(["images", "emails", "never-used"])
    assert [(q.queue, q.length) for q in reading.queues] == [
        ("images", sum(range(1, 11))), ("emails", 7), ("never-used", 0)
    ]
    assert reading.round_trips == 1
    assert reading.unacked == 0
    assert reading.queues[2].oldest_enqueued_at is None


def test_apply_async_of_a_registered_task(client: redis.Redis, prefix: str) -> None:
    app = celery_app(prefix)

    @app.task(name="jobs.report")
    def report(n: int) -> int:
        return n

    for n in range(10):
        report.apply_async((n,), queue="reports", priority=n)
    reading = RedisReader(client, global_keyprefix=prefix).read(["reports"])
    assert reading.queues[0].length == 10
    assert reading.queues[0].oldest_enqueued_at is not None


def test_oldest_stamp_is_the_first_published(client: redis.Redis, prefix: str) -> None:
    app = celery_app(prefix)
    before = time.time()
    app.send_task("jobs.a", queue="q", priority=9)  # oldest, in the highest priority list
    time.sleep(0.05)
    for p in (0, 3, 6):
        app.send_task("jobs.b", queue="q", priority=p)
    raw = client.lindex(f"{prefix}q\x06\x169", -1)
    assert raw is not None and HEADER.encode() in raw
    oldest = RedisReader(client, global_keyprefix=prefix).read(["q"]).queues[0].oldest_enqueued_at
    assert oldest is not None
    assert before - 0.01 <= oldest <= before + 0.05


def test_unstamped_messages_have_no_age(client: redis.Redis, prefix: str) -> None:
    app = Celery("plain", broker=URL, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    from toolkit.stamp import uninstall

    uninstall()
    try:
        app.send_task("jobs.a", queue="plain")
    finally:
        toolkit.install(app)
    reading = RedisReader(client, global_keyprefix=prefix).read(["plain"])
    assert reading.queues[0].length == 1
    assert reading.queues[0].oldest_enqueued_at is None


def test_unacked_counts_reserved_messages(client: redis.Redis, prefix: str) -> None:
    app = celery_app(prefix)
    for _ in range(3):
        app.send_task("jobs.a", queue="work")
    with Connection(URL, transport_options={"global_keyprefix": prefix}) as conn:
        queue = conn.SimpleQueue("work")
        reserved = [queue.get(timeout=2) for _ in range(2)]  # not acked
        reading = RedisReader(client, global_keyprefix=prefix).read(["work"])
        assert reading.queues[0].length == 1
        assert reading.unacked == 2
        for message in reserved:
            message.ack()
        queue.close()
    assert RedisReader(client, global_keyprefix=prefix).read(["work"]).unacked == 0


def test_discovery_finds_bound_queues_and_skips_internal(client: redis.Redis, prefix: str) -> None:
    app = celery_app(prefix)
    app.send_task("jobs.a", queue="alpha")
    app.send_task("jobs.b", queue="beta")
    client.sadd(f"{prefix}_kombu.binding.celery.pidbox", "\x06\x16\x06\x16node.celery.pidbox")
    assert RedisReader(client, global_keyprefix=prefix).discover_queues() == ["alpha", "beta"]
    # another prefix sees nothing: discovery honours global_keyprefix
    assert RedisReader(client, global_keyprefix=prefix + "other:").discover_queues() == []


def test_open_reader_by_scheme_and_errors(prefix: str) -> None:
    reader = open_reader(BrokerSettings(url=URL, global_keyprefix=prefix))
    assert reader.kind == "redis"
    assert reader.read(["x"]).queues[0].length == 0
    with pytest.raises(UnsupportedBroker, match=r"sqs://"):
        open_reader(BrokerSettings(url="sqs://key:secret@"))
    dead = open_reader(BrokerSettings(url="redis://:hunter2@127.0.0.1:1/0", connect_timeout=1))
    with pytest.raises(BrokerUnreachable) as err:
        dead.read(["x"])
    assert "hunter2" not in str(err.value) and "127.0.0.1:1" in str(err.value)


def test_wrong_password_is_an_auth_error(client: redis.Redis, unique: str) -> None:
    user = f"celery-ecs-{unique}"
    client.execute_command("ACL", "SETUSER", user, "on", ">right-pass", "~*", "+@all")
    try:
        reader = open_reader(BrokerSettings(url=f"redis://{user}:wrong-pass@127.0.0.1:6379/1"))
        with pytest.raises(BrokerAuthError) as err:
            reader.read(["x"])
        assert "wrong-pass" not in str(err.value)
        good = open_reader(BrokerSettings(url=f"redis://{user}:right-pass@127.0.0.1:6379/1"))
        assert good.read(["x"]).queues[0].length == 0
    finally:
        client.execute_command("ACL", "DELUSER", user)


# --- fakeredis: logic that does not depend on the server -------------------------------------


def fake_message(stamp: float | None) -> str:
    headers = {} if stamp is None else {HEADER: stamp}
    return json.dumps({"body": "e30=", "headers": headers, "properties": {}})


@pytest.mark.parametrize("use_script", [True, False])
def test_script_and_pipeline_agree(use_script: bool) -> None:
    r = fakeredis.FakeRedis()
    r.lpush("q", fake_message(50.0), fake_message(60.0))
    r.lpush("q\x06\x166", fake_message(40.5))
    r.lpush("q\x06\x169", fake_message(None))
    r.hset("unacked", mapping={"a": "1", "b": "2"})
    reader = RedisReader(r, use_script=use_script)
    reading = reader.read(["q", "empty"])
    assert [(q.length, q.oldest_enqueued_at) for q in reading.queues] == [(4, 40.5), (0, None)]
    assert reading.unacked == 2


def test_queue_names_with_odd_bytes_round_trip() -> None:
    r = fakeredis.FakeRedis()
    odd = "caf\u00e9 \u2603 \udcff"  # non-ASCII and a byte that is not UTF-8
    raw_key = odd.encode("utf-8", "surrogateescape")
    r.lpush(raw_key, fake_message(1.0))
    r.sadd("_kombu.binding." + "x", b"\x06\x16\x06\x16" + raw_key)
    reader = RedisReader(r)
    assert reader.discover_queues() == [odd]
    assert reader.read([odd]).queues[0].length == 1


def test_custom_separator_and_steps() -> None:
    r = fakeredis.FakeRedis()
    r.lpush("q:5", fake_message(None))
    r.lpush("q", fake_message(None))
    r.lpush("q\x06\x163", fake_message(None))  # not a list of this configuration
    reader = RedisReader(r, priority_steps=(0, 5), separator=":")
    assert reader.read(["q"]).queues[0].length == 2


@pytest.mark.parametrize("use_script", [True, False])
def test_queue_consumers_come_from_the_heartbeat_registry(use_script: bool) -> None:
    from toolkit.registry import WorkerHeartbeat, write_heartbeat

    r = fakeredis.FakeRedis()
    reader = RedisReader(r, global_keyprefix="p:", use_script=use_script)
    # no registry at all: Redis cannot tell consumers, so nothing is reported
    assert reader.read(["emails"]).queues[0].consumers is None
    now = time.time()
    write_heartbeat(r, WorkerHeartbeat("celery@a", ("emails", "default"), now), 30, prefix="p:")
    write_heartbeat(r, WorkerHeartbeat("celery@b", ("emails",), now), 30, prefix="p:")
    write_heartbeat(r, WorkerHeartbeat("celery@gone", ("reports",), now), 30, prefix="p:")
    r.delete("p:celery-ecs:heartbeat:celery@gone")  # its entry expired: a dead worker
    reading = reader.read(["emails", "default", "reports"])
    assert [q.consumers for q in reading.queues] == [2, 1, 0]
    assert reading.workers is not None
    assert sorted(w.node for w in reading.workers) == ["celery@a", "celery@b"]
    assert reading.round_trips == (1 if use_script else 2)  # the fallback needs an MGET


# --- awkward contents on the real Redis -------------------------------------------------------


def test_a_key_of_the_wrong_type_fails_only_its_queue(client: redis.Redis, prefix: str) -> None:
    client.lpush(f"{prefix}good", fake_message(10.0))
    client.set(f"{prefix}clash\x06\x163", "not a list")  # e.g. an app key named like a queue
    for use_script in (True, False):
        reading = RedisReader(client, global_keyprefix=prefix, use_script=use_script).read(
            ["good", "clash"]
        )
        good, clash = reading.queues
        assert (good.length, good.error) == (1, None)
        assert clash.error is not None and "WRONGTYPE" in clash.error


def test_odd_list_entries_and_where_the_stamp_sits(client: redis.Redis, prefix: str) -> None:
    client.lpush(f"{prefix}junk", "not json at all", b"\xff\xfe binary")
    big = json.dumps({"body": "A" * 200_000, "headers": {HEADER: 42.5},
                      "properties": {"x": "y" * 3000}})  # the stamp is far from the end
    client.lpush(f"{prefix}big", big)
    client.lpush(f"{prefix}spaced name", fake_message(7.0))
    reading = RedisReader(client, global_keyprefix=prefix).read(["junk", "big", "spaced name"])
    assert [(q.length, q.oldest_enqueued_at) for q in reading.queues] == [
        (2, None), (1, 42.5), (1, 7.0)
    ]


def test_user_without_scripting_falls_back_to_the_pipeline(
    client: redis.Redis, prefix: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    user = f"noscript-{unique}"
    client.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "+@all", "-@scripting")
    client.lpush(f"{prefix}q", fake_message(3.0), fake_message(4.0))
    try:
        reader = open_reader(
            BrokerSettings(url=f"redis://{user}:pw@127.0.0.1:6379/1", global_keyprefix=prefix)
        )
        first = reader.read(["q"])
        second = reader.read(["q"])
    finally:
        client.execute_command("ACL", "DELUSER", user)
    assert (first.queues[0].length, first.queues[0].oldest_enqueued_at) == (2, 3.0)
    assert second.queues[0].length == 2
    assert sum("using the pipeline reader" in r.getMessage() for r in caplog.records) == 1


def test_a_registry_entry_with_a_bad_number_is_skipped_not_a_failed_read() -> None:
    """One corrupt entry (a float overflow, NaN) must not blank the queue metrics."""
    import fakeredis

    from toolkit.registry import index_key, marker_key, registry_key

    client = fakeredis.FakeRedis()
    client.set(marker_key(), "1")
    for node, body in (("celery@bad", b'{"node": "celery@bad", "queues": ["q"], "updated": 1,'
                                      b' "active": 1e999}'),
                       ("celery@ok", b'{"node": "celery@ok", "queues": ["q"], "updated": 1}')):
        client.set(registry_key(node), body)
        client.zadd(index_key(), {node: time.time()})
    client.lpush("q", b"{}")
    reading = RedisReader(client).read(["q"])
    assert reading.queues[0].length == 1
    assert [w.node for w in reading.workers or ()] == ["celery@ok"]

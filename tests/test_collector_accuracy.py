"""Collector accuracy against the real brokers: discovery neither invents nor misses a queue,
misconfiguration is one clear error, running tasks are visible, and what is read equals what a
drain takes out (issue 14)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection, Exchange, Queue

import toolkit
from tests.conftest import QUEUES_REDIS_URL, RABBITMQ_URL, port_open
from toolkit.collector.brokers import open_reader
from toolkit.collector.brokers.bindings import direct_separator, split_binding
from toolkit.collector.brokers.redis import RedisReader
from toolkit.collector.cycle import run_cycle
from toolkit.collector.publisher import dimension_value
from toolkit.config import BrokerSettings, Settings
from toolkit.errors import BrokerError
from toolkit.metricnames import BY_NAME, QUEUE_DIMS, SERVICE_DIMS
from toolkit.registry import WorkerHeartbeat, write_heartbeat

REDIS_URL = QUEUES_REDIS_URL
CLI = str(Path(sys.executable).parent / "celery-ecs")
MANAGEMENT = "http://127.0.0.1:15672"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CELERY_ECS_CONFIG": ""}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=60)


def by_metric(doc: dict[str, Any], name: str) -> dict[str, float]:
    return {m["dimensions"]["Queue"]: m["value"] for m in doc["metrics"] if m["name"] == name}


# --- Redis --------------------------------------------------------------------------------------


def redis_app(options: dict[str, Any]) -> Celery:
    app = Celery("producer", broker=REDIS_URL, set_as_current=False)
    app.conf.broker_transport_options = options
    toolkit.install(app)
    return app


def test_binding_entries_are_cut_as_kombu_writes_them() -> None:
    assert split_binding("xc:colon:xc:colon:xc:colon", ":") is not None
    cut = split_binding("xc:colon:xc:colon:xc:colon", ":")
    assert cut is not None and cut.queue == "xc:colon" and cut.routing_key == "xc:colon"
    fanout = split_binding("::a:b", ":")
    assert fanout is not None and fanout.queue == "a:b"
    assert split_binding("a:a:a", "\x06\x16") is None
    assert direct_separator("xc2-a:xc2-a:xc2-a") == ":"
    assert direct_separator("xc2-a::xc2-a") == ":"  # Celery: empty pattern
    assert direct_separator("q\x06\x16q\x06\x16q") == "\x06\x16"
    assert direct_separator("topic.#\x06\x16^topic\\.\x06\x16q") is None


@pytest.mark.redis
def test_discovery_with_names_holding_the_separator_prefix_and_unicode(
    client: redis.Redis, prefix: str
) -> None:
    options = {"sep": ":", "priority_steps": list(range(10)), "global_keyprefix": prefix}
    app = redis_app(options)
    counts = {"xc:colon": 2, f"{prefix}inner": 3, "e-mails ✉:eu": 4, "plain": 1}
    for queue, n in counts.items():
        for i in range(n):
            app.send_task("jobs.a", queue=queue, priority=i)
    reader = RedisReader(client, global_keyprefix=prefix, separator=":",
                         priority_steps=range(10))
    assert reader.discover_queues() == sorted(counts)  # nothing invented, nothing missed
    reading = reader.read(sorted(counts))
    assert {q.queue: q.length for q in reading.queues} == counts


@pytest.mark.redis
def test_a_wrong_separator_is_one_clear_error(
    client: redis.Redis, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = redis_app({"sep": ":", "global_keyprefix": prefix})
    for i in range(10):
        app.send_task("jobs.a", queue="xc2-a", priority=i)
    reader = RedisReader(client, global_keyprefix=prefix)  # kombu's default separator
    with pytest.raises(BrokerError, match=r'set \[broker\] separator = ":"'):
        reader.discover_queues()
    config = tmp_path / "c.toml"
    config.write_text(f'[broker]\nglobal_keyprefix = "{prefix}"\n')
    proc = cli("collect", "--config", str(config), "--broker", REDIS_URL, "--environment", "s",
               "--dry-run", "--json")
    assert proc.returncode == 1, proc.stdout
    assert proc.stderr.count("\n") == 1 and 'separator = ":"' in proc.stderr
    assert json.loads(proc.stdout)["queues"] == []  # no invented queue
    # with the right separator the same data reads right
    config.write_text(f'[broker]\nglobal_keyprefix = "{prefix}"\nseparator = ":"\n')
    ok = cli("collect", "--config", str(config), "--broker", REDIS_URL, "--environment", "s",
             "--dry-run", "--json")
    assert ok.returncode == 0, ok.stderr
    assert by_metric(json.loads(ok.stdout), "QueueLength") == {"xc2-a": 10}
    # a mix: the parsable entries are read, the others are one warning, once
    client.sadd(f"{prefix}_kombu.binding.other", "ok\x06\x16ok\x06\x16ok")
    caplog.set_level(logging.WARNING)
    assert reader.discover_queues() == ["ok"]
    assert reader.discover_queues() == ["ok"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and 'separator = ":"' in warnings[0]


@pytest.mark.redis
def test_tasks_running_and_escaped_dimensions_in_dry_run_json(
    client: redis.Redis, prefix: str, tmp_path: Path
) -> None:
    app = redis_app({"global_keyprefix": prefix})
    app.send_task("jobs.a", queue="e-mails ✉")
    now = time.time()
    write_heartbeat(client, WorkerHeartbeat("w1@h", ("e-mails ✉", "reports"), now, active=2),
                    30, prefix=prefix)
    write_heartbeat(client, WorkerHeartbeat("w2@h", ("e-mails ✉",), now, active=1), 30,
                    prefix=prefix)
    config = tmp_path / "c.toml"
    config.write_text(f'[broker]\nglobal_keyprefix = "{prefix}"\n')
    proc = cli("collect", "--config", str(config), "--broker", REDIS_URL, "--environment", "t",
               "--queue", "e-mails ✉", "--queue", "idle", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    sent = dimension_value("e-mails ✉")
    assert sent == "e-mails \\u2709"
    assert by_metric(doc, "QueueLength") == {sent: 1, "idle": 0}
    assert by_metric(doc, "TasksRunning") == {sent: 3, "idle": 0}
    spec = BY_NAME["TasksRunning"]
    assert spec.unit == "Count" and spec.dimension_sets == (QUEUE_DIMS, SERVICE_DIMS)


# --- RabbitMQ -----------------------------------------------------------------------------------


def _management_up() -> bool:
    if port_open("127.0.0.1", 15672):
        return True
    # the test run may enable the plugin, exactly as .ci/run does
    if shutil.which("rabbitmq-plugins"):
        subprocess.run(["rabbitmq-plugins", "enable", "rabbitmq_management"],
                       capture_output=True, timeout=120)
        for _ in range(60):
            if port_open("127.0.0.1", 15672):
                return True
            time.sleep(1)
    return False


def _api(method: str, path: str, body: Any = None) -> None:
    import base64

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{MANAGEMENT}/api/{path}", data=data, method=method, headers={
        "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
        "content-type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture
def vhost(unique: str) -> Iterator[str]:
    """A virtual host of its own, so discovery sees exactly this test's queues."""
    if not _management_up():
        pytest.skip("the rabbitmq_management plugin is not enabled (.ci/run enables it)")
    name = f"acc-{unique}"
    _api("PUT", f"vhosts/{name}")
    _api("PUT", f"permissions/{name}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    yield name
    _api("DELETE", f"vhosts/{name}")


def amqp_url(vhost: str) -> str:
    return RABBITMQ_URL.rstrip("/") + "/" + vhost


@pytest.mark.rabbitmq
def test_rabbitmq_discovery_lists_queues_through_the_management_api(vhost: str) -> None:
    url = amqp_url(vhost)
    app = Celery("producer", broker=url, set_as_current=False)
    app.conf.broker_transport_options = {"confirm_publish": True}
    for queue, n in {"alpha": 3, "e-mails ✉": 2}.items():
        for _ in range(n):
            app.send_task("jobs.a", queue=queue)
    with Connection(url) as conn:
        Queue("declared-empty").bind(conn.channel()).declare()
        Queue("node1.celery.pidbox", auto_delete=True).bind(conn.channel()).declare()
        proc = cli("collect", "--broker", url, "--environment", "r", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [(q["queue"], q["length"], q["status"]) for q in doc["queues"]] == [
        ("alpha", 3, "ok"), ("declared-empty", 0, "ok"), ("e-mails ✉", 2, "ok")
    ]


@pytest.mark.rabbitmq
def test_rabbitmq_without_the_management_api_fails_when_nothing_read_exists(
    vhost: str, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[broker]\nmanagement_url = "http://127.0.0.1:1"\n')
    url = amqp_url(vhost)
    proc = cli("collect", "--config", str(config), "--broker", url, "--environment", "r",
               "--dry-run")
    assert proc.returncode == 1
    assert "no queues found" in proc.stderr and "management API at http://127.0.0.1:1" \
        in proc.stderr and "rabbitmq_management" in proc.stderr
    assert "guest:guest" not in proc.stderr
    with Connection(url) as conn:
        Queue("celery").bind(conn.channel()).declare()
    assert cli("collect", "--config", str(config), "--broker", url, "--environment", "r",
               "--dry-run").returncode == 0


# --- cross-check: read == drained ---------------------------------------------------------------


def drain(url: str, queue: str, options: dict[str, Any]) -> int:
    with Connection(url, transport_options=options) as conn:
        simple = conn.SimpleQueue(queue, no_ack=True)
        taken = 0
        while True:
            try:
                simple.get(block=False)
            except simple.Empty:
                break
            taken += 1
        simple.close()
        return taken


REDIS_SCENARIOS: dict[str, tuple[dict[str, Any], dict[str, int]]] = {
    "default": ({}, {"q": 5}),
    "ten-steps-colon": ({"sep": ":", "priority_steps": list(range(10))}, {"p:q": 10, "r": 3}),
    "keyprefix": ({"global_keyprefix": "{prefix}"}, {"q": 4}),
    "unicode": ({"global_keyprefix": "{prefix}"}, {"e-mails ✉": 3}),
    "empty-declared": ({"global_keyprefix": "{prefix}"}, {"empty": 0, "full": 2}),
}


@pytest.mark.redis
@pytest.mark.parametrize("scenario", sorted(REDIS_SCENARIOS))
def test_redis_read_equals_drained(scenario: str, prefix: str, unique: str) -> None:
    raw_options, counts = REDIS_SCENARIOS[scenario]
    options = {k: (v.format(prefix=prefix) if isinstance(v, str) else v)
               for k, v in raw_options.items()}
    if "global_keyprefix" not in options:  # unprefixed: the names carry the token instead
        counts = {f"{q}-{unique}": n for q, n in counts.items()}
    app = redis_app(options)
    for queue, n in counts.items():
        with Connection(REDIS_URL, transport_options=options) as conn:  # as a worker's -Q does
            Queue(queue, Exchange(queue), routing_key=queue).bind(conn.channel()).declare()
        for i in range(n):
            app.send_task("jobs.a", queue=queue, priority=i % 10)
    settings = Settings(environment="x", broker=BrokerSettings(
        url=REDIS_URL, global_keyprefix=options.get("global_keyprefix", ""),
        separator=options.get("sep", "\x06\x16"),
        priority_steps=tuple(options.get("priority_steps", (0, 3, 6, 9)))))
    assert settings.broker is not None
    reader = open_reader(settings.broker)
    try:
        result = run_cycle(reader, settings, None)
    finally:
        reader.close()
    assert result.ok, result.errors
    prefixed = "global_keyprefix" in options
    read = {q.queue: q.length for q in result.queues if prefixed or unique in q.queue}
    try:
        assert read == counts  # discovery invented nothing and missed nothing
        assert read == {q: drain(REDIS_URL, q, options) for q in counts}
    finally:
        if not prefixed:
            r = redis.Redis.from_url(REDIS_URL)
            keys = list(r.scan_iter(match=f"*{unique}*"))
            if keys:
                r.delete(*keys)
            r.close()


@pytest.mark.redis
def test_redis_ten_thousand_messages_read_equals_drained(client: redis.Redis, prefix: str) -> None:
    options = {"global_keyprefix": prefix}
    redis_app(options).send_task("jobs.a", queue="bulk")  # a real message, and its binding
    body = client.lindex(f"{prefix}bulk", 0)
    pipe = client.pipeline(transaction=False)
    for _ in range(9_999):
        pipe.lpush(f"{prefix}bulk", body)
    pipe.execute()
    settings = Settings(environment="x", broker=BrokerSettings(url=REDIS_URL,
                                                               global_keyprefix=prefix))
    assert settings.broker is not None
    result = run_cycle(open_reader(settings.broker), settings, None)
    assert [(q.queue, q.length) for q in result.queues] == [("bulk", 10_000)]
    assert client.pipeline(transaction=False).llen(f"{prefix}bulk").execute() == [10_000]
    assert drain(REDIS_URL, "bulk", options) == 10_000


@pytest.mark.redis
@pytest.mark.parametrize("acks_late", [False, True])
def test_redis_reserved_messages(client: redis.Redis, prefix: str, acks_late: bool) -> None:
    """A consumer holds two messages: with acks_late both stay in ``unacked`` while running;
    with early acknowledgement they are acked at once and only ``TasksRunning`` sees them."""
    options = {"global_keyprefix": prefix}
    app = redis_app(options)
    for _ in range(5):
        app.send_task("jobs.a", queue="work")
    write_heartbeat(client, WorkerHeartbeat("w@h", ("work",), time.time(), active=2), 30,
                    prefix=prefix)
    settings = Settings(environment="x", broker=BrokerSettings(url=REDIS_URL,
                                                               global_keyprefix=prefix))
    assert settings.broker is not None
    with Connection(REDIS_URL, transport_options=options) as conn:
        queue = conn.SimpleQueue("work")
        held = [queue.get(timeout=2) for _ in range(2)]
        if not acks_late:
            for message in held:
                message.ack()
        result = run_cycle(open_reader(settings.broker), settings, None)
        values = {s.name: s.value for s in result.samples}
        assert result.unacked == client.hlen(f"{prefix}unacked") == (2 if acks_late else 0)
        assert values["QueueLength"] == 3 and values["TasksRunning"] == 2
        if acks_late:
            for message in held:
                message.ack()
        queue.close()
    assert drain(REDIS_URL, "work", options) == 3


RABBIT_SCENARIOS = {"default": {"q": 5}, "unicode": {"e-mails ✉": 3},
                    "empty-declared": {"empty": 0, "full": 2}, "ten-thousand": {"bulk": 10_000}}


@pytest.mark.rabbitmq
@pytest.mark.parametrize("scenario", sorted(RABBIT_SCENARIOS))
def test_rabbitmq_read_equals_drained(scenario: str, vhost: str) -> None:
    counts = RABBIT_SCENARIOS[scenario]
    url = amqp_url(vhost)
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        for name, n in counts.items():
            queue = Queue(name, Exchange(name), routing_key=name)
            producer = conn.Producer()
            queue.bind(conn.channel()).declare()
            for i in range(n):
                producer.publish({"n": i}, exchange=name, routing_key=name)
    settings = Settings(environment="x", broker=BrokerSettings(url=url))
    assert settings.broker is not None
    result = run_cycle(open_reader(settings.broker), settings, None)
    assert result.ok, result.errors
    read = {q.queue: q.length for q in result.queues}
    assert read == counts
    assert read == {q: drain(url, q, {}) for q in counts}


@pytest.mark.rabbitmq
@pytest.mark.parametrize("acks_late", [False, True])
def test_rabbitmq_reserved_messages_are_not_ready(vhost: str, acks_late: bool) -> None:
    url = amqp_url(vhost)
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer()
        Queue("work", Exchange("work"), routing_key="work").bind(conn.channel()).declare()
        for i in range(5):
            producer.publish({"n": i}, exchange="work", routing_key="work")
        bound = Queue("work", Exchange("work"), routing_key="work").bind(conn.channel())
        held = [bound.get(no_ack=False) for _ in range(2)]  # basic.get: exactly two reserved
        assert all(m is not None for m in held)
        if not acks_late:
            for message in held:
                message.ack()  # type: ignore[union-attr]
        settings = Settings(environment="x", broker=BrokerSettings(url=url))
        assert settings.broker is not None
        result = run_cycle(open_reader(settings.broker), settings, None)
        assert [(q.queue, q.length) for q in result.queues] == [("work", 3)]
        if acks_late:
            for message in held:
                message.ack()  # type: ignore[union-attr]
    assert drain(url, "work", {}) == 3

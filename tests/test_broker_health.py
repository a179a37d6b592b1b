"""The broker's memory and evictions and celery beat's age, as the collector publishes them.

Real Redis: the shared one (db 1, a key prefix of this test's own, never its configuration)
for the beat age and memory read in the queue read's round trip, and a Redis of this module's
own on a free port with a tiny ``maxmemory`` for utilization, evictions and an ACL user without
``INFO``. Metrics are read back from moto's CloudWatch. RabbitMQ's node memory comes from the
real management API.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import fakeredis
import pytest
import redis
from moto import mock_aws

from tests.conftest import RABBITMQ_URL, free_port, port_open
from toolkit.beatregistry import BeatTick, beat_index_key, beat_key, write_tick
from toolkit.collector.brokers import open_reader
from toolkit.collector.brokers.base import BrokerReading, BrokerStats, QueueReading
from toolkit.collector.brokers.redis import RedisReader
from toolkit.collector.cycle import QueueSource, run_cycle
from toolkit.collector.health import EvictionCounter, Health, assess
from toolkit.collector.publisher import CloudWatchPublisher, PublishReport, Sample
from toolkit.collector.services import ServiceChecker, with_registry
from toolkit.config import BrokerSettings, ServiceSettings, Settings

REGION = "eu-west-1"


class Recorder:
    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def publish(self, samples: Sequence[Sample]) -> PublishReport:
        self.samples = list(samples)
        return PublishReport(len(self.samples), 1)

    def value(self, name: str) -> float | None:
        return next((s.value for s in self.samples if s.name == name), None)


def info(client: redis.Redis, section: str) -> dict[str, Any]:
    out: dict[str, Any] = client.info(section)
    return out


def read_back(cw: Any, env: str, name: str, stat: str = "Maximum") -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    points: list[dict[str, Any]] = cw.get_metric_statistics(
        Namespace="Celery", MetricName=name, Dimensions=[{"Name": "Environment", "Value": env}],
        StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=5), Period=60,
        Statistics=[stat])["Datapoints"]
    return points


# --- the shared Redis: one round trip, read back from moto -----------------------------------


@pytest.mark.redis
@mock_aws
def test_beat_age_and_memory_published_from_the_queue_reads_round_trip(
    client: redis.Redis, prefix: str, unique: str
) -> None:
    # a beat whose last tick the broker scored 30 s ago (the pipeline writer, offset -30 s)
    write_tick(client, BeatTick("beat-host:1", time.time(), 5.0), prefix, script=False,
               offset=-30.0)
    client.lpush(f"{prefix}emails", b"{}")
    env = f"e{unique}"
    settings = Settings(environment=env, only_queues=("emails",))
    reader = RedisReader(client, global_keyprefix=prefix)
    cw = boto3.client("cloudwatch", region_name=REGION)
    source = QueueSource(settings)
    before = info(client, "stats")["evicted_keys"]
    first = run_cycle(reader, settings, CloudWatchPublisher("Celery", client=cw), source=source)
    second = run_cycle(reader, settings, CloudWatchPublisher("Celery", client=cw), source=source)
    evicted = info(client, "stats")["evicted_keys"] - before
    used = info(client, "memory")["used_memory"]
    assert first.ok and second.ok, (first.errors, second.errors)
    assert first.round_trips == second.round_trips == 1  # queues, registry, INFO, beat: 1 trip

    (age,) = read_back(cw, env, "BeatHeartbeatAge")  # both cycles in one minute: the max
    assert 30.0 <= age["Maximum"] < 40.0 and age["Unit"] == "Seconds"
    (memory,) = read_back(cw, env, "BrokerMemoryBytes")
    assert abs(memory["Maximum"] - used) < 0.2 * used and memory["Unit"] == "Bytes"
    if info(client, "memory")["maxmemory"] == 0:  # the shared Redis has no limit
        assert read_back(cw, env, "BrokerMemoryUtilization") == []
    # evictions: no baseline in the first cycle, the difference in the second
    assert "BrokerEvictedKeys" not in {s.name for s in first.samples}
    (keys,) = read_back(cw, env, "BrokerEvictedKeys", "Sum")
    assert keys["Sum"] == evicted
    assert second.health is not None and second.health.warnings == ()
    assert second.health.beat is not None and second.health.beat.instance == "beat-host:1"


@pytest.mark.redis
def test_a_beat_entry_that_is_not_json_is_stale_not_a_crash(
    client: redis.Redis, prefix: str, unique: str
) -> None:
    settings = Settings(environment="t", only_queues=("q",))
    # only a corrupt entry, freshly scored: no beat is proven, nothing published, no error
    client.set(beat_key("corrupt:1", prefix), b"\xff{not json")
    client.zadd(beat_index_key(prefix), {"corrupt:1": time.time() + 100})
    for use_script in (True, False):
        pub = Recorder()
        result = run_cycle(RedisReader(client, global_keyprefix=prefix, use_script=use_script),
                           settings, pub)
        assert result.ok and pub.value("BeatHeartbeatAge") is None
        assert pub.value("QueueLength") == 0
    # a valid tick beside it: its age is the one published, the corrupt one does not freshen it
    write_tick(client, BeatTick("good:2", time.time(), 1.0), prefix, script=False, offset=-50.0)
    pub = Recorder()
    run_cycle(RedisReader(client, global_keyprefix=prefix), settings, pub)
    age = pub.value("BeatHeartbeatAge")
    assert age is not None and 50.0 <= age < 60.0


# --- a Redis of our own: a tiny maxmemory, an ACL user without INFO ----------------------------


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    port = free_port()
    folder: Path = tmp_path_factory.mktemp("own-redis")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port, 0.1):
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server failed"
            time.sleep(0.02)
        client = redis.Redis(host="127.0.0.1", port=port)
        yield client
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)


def _fill(client: redis.Redis, unique: str) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(300):  # 300 x 40 KB = 12 MB into 4 MB: allkeys-lru evicts
        pipe.set(f"fill-{unique}-{i}", b"x" * 40_000)
    pipe.execute()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "1")
    with mock_aws():
        ecs = boto3.client("ecs", region_name=REGION)
        ecs.create_cluster(clusterName="prod")
        ecs.register_task_definition(family="worker", containerDefinitions=[
            {"name": "worker", "image": "w", "memory": 256, "essential": True}])
        for name in ("alpha", "beta"):
            ecs.create_service(cluster="prod", serviceName=name, taskDefinition="worker",
                               desiredCount=1)
        yield ecs, boto3.client("cloudwatch", region_name=REGION)


@pytest.mark.redis
def test_evictions_counted_across_two_cycles_and_every_verdict_says_so(
    own_redis: redis.Redis, unique: str, aws: tuple[Any, Any]
) -> None:
    ecs, cw = aws
    settings = Settings(environment=f"e{unique}", only_queues=("a", "b"), services=(
        ServiceSettings("prod", "alpha", ("a",)), ServiceSettings("prod", "beta", ("b",))))
    source = QueueSource(settings, services=ServiceChecker(settings, ecs=ecs, cloudwatch=cw))
    reader = RedisReader(own_redis)
    publisher = CloudWatchPublisher("Celery", client=cw)
    _fill(own_redis, f"{unique}-early")  # evictions before the collector's first look
    before = info(own_redis, "stats")["evicted_keys"]
    first = run_cycle(reader, settings, publisher, source=source)
    _fill(own_redis, unique)
    evicted = info(own_redis, "stats")["evicted_keys"] - before
    memory = info(own_redis, "memory")
    second = run_cycle(reader, settings, publisher, source=source)
    assert before > 0 and evicted > 0 and first.ok and second.ok, (first.errors, second.errors)

    # the first cycle only sets the baseline: what was evicted before it is not counted
    assert "BrokerEvictedKeys" not in {s.name for s in first.samples}
    (keys,) = read_back(cw, settings.environment, "BrokerEvictedKeys", "Sum")
    assert first.health is not None and first.health.stats is not None
    assert second.health is not None and second.health.stats is not None
    seen = (second.health.stats.evicted_keys or 0) - (first.health.stats.evicted_keys or 0)
    assert keys["Sum"] == seen == second.health.evicted
    # Redis also evicts while over the limit at the next commands (the reads themselves), so
    # the test's own reads around the fill differ by a few keys
    assert abs(seen - evicted) <= 20 and seen >= 200
    (share,) = read_back(cw, settings.environment, "BrokerMemoryUtilization")
    expected = 100.0 * memory["used_memory"] / memory["maxmemory"]
    assert abs(share["Maximum"] - expected) < 5 and share["Maximum"] >= 90
    assert share["Unit"] == "Percent" and memory["maxmemory"] == 4 * 1024 * 1024

    # a reason line on every service's verdict; the verdict itself is the one it was
    assert [v.verdict for v in first.services] == [v.verdict for v in second.services]
    line = (f"broker evicted {seen} keys since the last cycle (maxmemory-policy allkeys-lru): "
            "queued messages may be lost")
    for verdict in first.services:
        assert not any(r.startswith("broker evicted") for r in verdict.reasons)
    for verdict in second.services:
        assert line in verdict.reasons
        assert any(r.startswith("broker memory at ") and "of its 4 MiB limit" in r
                   for r in verdict.reasons), verdict.reasons
    assert len(second.services) == 2
    from toolkit.collector.render import render_table

    table = render_table(second, settings)
    assert f" of 4 MiB ({second.health.stats.utilization:.0f}%), evicted {seen}" in table, table


@pytest.mark.redis
@pytest.mark.parametrize("use_script", [True, False], ids=["script", "pipeline"])
def test_info_refused_by_an_acl_the_metric_is_missing_and_collector_errors_says_why(
    own_redis: redis.Redis, unique: str, use_script: bool
) -> None:
    user = f"noinfo-{unique}"
    own_redis.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-info")
    port = own_redis.connection_pool.connection_kwargs["port"]
    own_redis.lpush(f"q-{unique}", b"{}", b"{}")
    try:
        reader = open_reader(BrokerSettings(url=f"redis://{user}:pw@127.0.0.1:{port}/0"))
        assert isinstance(reader, RedisReader)
        reader.use_script = use_script
        pub = Recorder()
        result = run_cycle(reader, Settings(environment="t", only_queues=(f"q-{unique}",)), pub)
        reader.close()
    finally:
        own_redis.execute_command("ACL", "DELUSER", user)
    assert pub.value("QueueLength") == 2 and pub.value("CollectorHeartbeat") == 1
    assert pub.value("BrokerMemoryBytes") is None and pub.value("BrokerEvictedKeys") is None
    assert pub.value("CollectorErrors") == 1
    (error,) = result.errors
    assert error.startswith("broker memory unreadable: INFO refused (")
    assert ("can't run this command" in error) or ("no permissions to run the 'info'" in error)


# --- RabbitMQ: node memory and alarms from the management API ---------------------------------


@pytest.mark.rabbitmq
def test_rabbitmq_node_memory_from_the_management_api() -> None:
    import base64
    import json
    import urllib.request

    reader = open_reader(BrokerSettings(url=RABBITMQ_URL))
    reading = reader.read(["celery"])
    request = urllib.request.Request(
        "http://127.0.0.1:15672/api/nodes?columns=mem_used,mem_limit",
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
        (node,) = json.loads(response.read())
    stats = reading.stats
    assert stats is not None and stats.error is None and stats.alarms == ()
    assert stats.max_memory == node["mem_limit"]
    assert stats.used_memory is not None
    assert abs(stats.used_memory - node["mem_used"]) < 0.2 * node["mem_used"]
    assert stats.utilization == pytest.approx(100 * stats.used_memory / node["mem_limit"])
    assert reading.round_trips == 3  # connect + one passive declare + one HTTP request

    wrong = open_reader(BrokerSettings(url=RABBITMQ_URL,
                                       management_url="http://nobody:nope@127.0.0.1:15672"))
    refused = wrong.read(["celery"]).stats
    assert refused is not None and refused.used_memory is None
    assert refused.error == ("broker memory unreadable: the RabbitMQ management API at "
                             "http://127.0.0.1:15672 refused our credentials")
    off = open_reader(BrokerSettings(url=RABBITMQ_URL, management_url=""))
    assert off.read(["celery"]).stats is None
    # the plugin not enabled (nothing listens): no broker metrics, not an error of every cycle
    closed = open_reader(BrokerSettings(url=RABBITMQ_URL,
                                        management_url=f"http://127.0.0.1:{free_port()}"))
    assert closed.read(["celery"]).stats is None


# --- pure parts ---------------------------------------------------------------------------------


def test_eviction_counter_needs_a_baseline_and_survives_a_restart() -> None:
    counter = EvictionCounter()
    assert counter.delta(100) is None  # the first cycle of a process
    assert counter.delta(130) == 30
    assert counter.delta(None) is None and counter.delta(130) == 0  # unread cycle: no reset
    assert counter.delta(7) == 7  # the counter went down: Redis restarted


@pytest.mark.parametrize("used,evicted,alarms,expected", [
    (89, 0, (), ()),
    (90, 0, (), ("broker memory at 90% of its 100 MiB limit (maxmemory-policy noeviction): "
                 "at the limit it evicts keys or refuses writes",)),
    (10, 3, (), ("broker evicted 3 keys since the last cycle (maxmemory-policy noeviction): "
                 "queued messages may be lost",)),
    (10, 0, ("memory on rabbit@a",), ("broker resource alarm: memory on rabbit@a (publishers "
                                      "blocked)",)),
])
def test_warnings(used: int, evicted: int, alarms: tuple[str, ...],
                  expected: tuple[str, ...]) -> None:
    stats = BrokerStats(used * 1048576, 100 * 1048576, 0, "noeviction", alarms)
    assert Health(stats=stats, evicted=evicted).warnings == expected


def test_no_limit_no_utilization_and_beat_age_on_the_brokers_clock() -> None:
    reading = BrokerReading(
        (QueueReading("q", 0),), stats=BrokerStats(5000, 0, 0, "noeviction"), clock=2000.0,
        beats=(BeatTick("a:1", 99999.0, 1.0, beat_at=1990.0),
               BeatTick("b:2", 1.0, 1.0, beat_at=1500.0)))
    health = assess(reading, EvictionCounter(), now=9_999_999.0)  # this host's clock is off
    assert health.stats is not None and health.stats.utilization is None
    assert health.beat_age == 10.0 and health.beat is not None and health.beat.instance == "a:1"
    assert assess(BrokerReading((), beats=()), EvictionCounter(), 0.0).beat_age is None


def test_a_registry_outside_the_broker_brings_the_beat_ticks() -> None:
    registry = fakeredis.FakeRedis()
    write_tick(registry, BeatTick("beat:9", time.time(), 2.0))
    reading, error = with_registry(BrokerReading((QueueReading("q", 0),), beats=None), registry,
                                   time.time())
    assert error is None and reading.beats is not None
    assert [t.instance for t in reading.beats] == ["beat:9"]
    assert reading.workers is None  # no worker registry there: beats still count

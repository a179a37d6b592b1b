"""The heartbeat bootstep and its Redis registry.

Unit tests use fakeredis and the real Redis (db 2); the bootstep tests run real prefork workers
(``tests/hc_app.py``) with a local HTTP server standing in for the ECS task metadata endpoint.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
import redis

from tests.conftest import free_port
from tests.helpers_workers import REDIS_BROKER, WorkerPool, run_cli, send_task, wait_for
from toolkit.registry import (
    ActiveTask,
    WorkerHeartbeat,
    consumers_per_queue,
    fresh,
    index_key,
    read_registry,
    read_registry_at,
    registry_exists,
    registry_key,
    remove_heartbeat,
    workers_per_service,
    write_heartbeat,
)
from toolkit.worker import bootstep
from toolkit.worker.beater import Beater, TaskOutcomes, TaskView
from toolkit.worker.bootstep import consuming
from toolkit.worker.metadata import EcsMetadata, fetch_ecs_metadata
from toolkit.worker.settings import HeartbeatSettings

TASK_ARN = "arn:aws:ecs:eu-west-1:111122223333:task/prod/8f03e41243824aea923aca126495f665"


def _beat(node: str, queues: tuple[str, ...] = ("default",), **kw: Any) -> WorkerHeartbeat:
    return WorkerHeartbeat(node=node, queues=queues, updated=kw.pop("updated", 1000.0), **kw)


# --- the entry and the registry -----------------------------------------------------------------


T = time.time()  # registry scores are the broker's clock: the tests' beats are "now"-ish


def test_entry_json_roundtrip_and_contract_keys() -> None:
    beat = _beat(
        "celery@a", ("emails", "default"), started=5, succeeded=3, failed=1, active=1,
        last_task_started=999.5, ecs_task_arn=TASK_ARN, ecs_cluster="prod",
        ecs_container="worker", ecs_service="worker-emails", pool="prefork", concurrency=4,
        booted=900.0, held=3, prefetched=1, eta=1, rate_limited=1,
        tasks=(ActiveTask("app.export", "id-1", 999.5, 7200.0),), youngest_start=999.5,
        longest_limit=7200.0,
    )
    data = json.loads(beat.to_json())
    assert data["node"] == "celery@a" and data["queues"] == ["emails", "default"]
    assert data["version"] == 3 and data["ecs_task_arn"] == TASK_ARN
    assert data["tasks"] == [["app.export", "id-1", 999.5, 7200.0]] and data["held"] == 3
    assert (data["prefetched"], data["eta"], data["rate_limited"]) == (1, 1, 1)
    assert "beat_at" not in data  # the index score, not part of the entry
    assert WorkerHeartbeat.from_json(beat.to_json()) == beat
    assert WorkerHeartbeat.from_json(beat.to_json().encode()) == beat
    assert beat.details


def test_format_2_entries_parse_without_the_task_details() -> None:
    old = WorkerHeartbeat.from_dict({"node": "celery@old", "queues": ["q"], "updated": 5.0,
                                     "ttl": 30, "version": 2, "active": 1, "concurrency": 4})
    assert not old.details and old.held is None and old.tasks == () and old.booted is None


@pytest.mark.parametrize(
    "raw", [b"not json", b"[]", b'{"queues": []}', b'{"node": "n", "queues": "q", "updated": 1}',
            b'{"node": "n", "queues": [], "updated": 1, "tasks": "t"}',
            b'{"node": "n", "queues": [], "updated": 1, "tasks": [["a", "b"]]}',
            # a bad number in one entry must not blank the collector: it is skipped
            b'{"node": "n", "queues": [], "updated": 1, "active": 1e999}',
            b'{"node": "n", "queues": [], "updated": NaN}',
            b'{"node": "n", "queues": [], "updated": 1, "held": -2}',
            b'{"node": "n", "queues": [], "updated": 1, "version": 2.5}']
)
def test_malformed_entries_raise_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        WorkerHeartbeat.from_json(raw)


def test_read_registry_skips_expired_and_malformed_and_respects_prefix() -> None:
    client = fakeredis.FakeRedis()
    write_heartbeat(client, _beat("celery@b", ("q1",), updated=T), ttl=60)
    write_heartbeat(client, _beat("celery@a", ("q1", "q2"), updated=T), ttl=60)
    write_heartbeat(client, _beat("celery@gone", updated=T), ttl=60)
    client.delete(registry_key("celery@gone"))  # expired: still indexed, no entry
    client.set(registry_key("celery@junk"), b"{broken")
    client.zadd(index_key(), {"celery@junk": T})
    write_heartbeat(client, _beat("celery@other-app", updated=T), ttl=60, prefix="other:")

    beats = read_registry(client)
    assert [b.node for b in beats] == ["celery@a", "celery@b"]
    assert consumers_per_queue(beats) == {"q1": 2, "q2": 1}
    assert [b.node for b in read_registry(client, "other:")] == ["celery@other-app"]

    remove_heartbeat(client, "celery@a")
    assert [b.node for b in read_registry(client)] == ["celery@b"]
    assert client.zscore(index_key(), "celery@a") is None


def test_read_registry_in_batches() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    for i in range(7):
        write_heartbeat(client, _beat(f"celery@n{i}", updated=T), ttl=60)
    assert len(read_registry(client, batch=3)) == 7


def test_beats_are_scored_and_aged_on_the_broker_clock_whatever_the_worker_clock() -> None:
    """A worker 100 s behind (or 2 h ahead) of everyone: its beat is as fresh as anyone's."""
    client = fakeredis.FakeRedis()
    now = time.time()
    for node, skew in (("celery@behind", -100.0), ("celery@ahead", 7200.0)):
        beat = _beat(node, updated=now + skew, booted=now + skew - 50, last_task_started=now + skew
                     - 20, held=0, tasks=(ActiveTask("t", "i", now + skew - 5),),
                     youngest_start=now + skew - 5)
        score = write_heartbeat(client, beat, ttl=30)
        assert abs(score - now) < 5  # the broker's clock, not the worker's
    read = read_registry_at(client, include_dead=True)
    assert abs(read.now - now) < 5
    for beat in read.beats:
        assert beat.alive(read.now) and abs(beat.age(read.now)) < 5
        moved = beat.on_broker_clock()
        # the worker's own intervals survive the move: booted 50 s, last start 20 s, task 5 s
        assert moved.updated == pytest.approx(beat.beat_at)
        assert moved.updated - moved.booted == pytest.approx(50)
        assert moved.updated - moved.last_task_started == pytest.approx(20)
        assert moved.updated - moved.tasks[0].started == pytest.approx(5)


def test_without_scripting_the_writer_scores_with_its_clock_and_the_last_offset() -> None:
    client = fakeredis.FakeRedis()
    now = time.time()
    score = write_heartbeat(client, _beat("celery@p", updated=now - 100), ttl=30, script=False,
                            offset=100.0)
    assert score == pytest.approx(now) and client.zscore(index_key(), "celery@p") == score


def test_format_2_writers_are_judged_on_their_own_clock() -> None:
    """An entry of an older toolkit was scored with its worker's clock: no offset to apply."""
    beat = replace(_beat("celery@old", updated=T - 100, version=2), beat_at=T - 100)
    assert beat.offset == 0.0 and beat.on_broker_clock() == beat


def test_dead_workers_stay_identifiable_and_a_clean_stop_leaves_an_empty_registry() -> None:
    client = fakeredis.FakeRedis()
    write_heartbeat(client, _beat("celery@frozen", ecs_service="svc", ecs_task_arn="arn:t/1",
                                  updated=T), ttl=30, script=False, offset=-100.0)
    write_heartbeat(client, _beat("celery@ok", updated=T), ttl=30)
    # 100 s later the frozen worker is dead, but its entry (service, task ARN) is still there
    assert [b.node for b in read_registry(client)] == ["celery@ok"]
    read = read_registry_at(client, include_dead=True)
    dead = {b.node: b for b in read.beats}
    assert dead["celery@frozen"].ecs_task_arn == "arn:t/1"
    assert not dead["celery@frozen"].alive(read.now)
    assert 2_690_000 < client.pttl(registry_key("celery@frozen")) <= 2_700_000
    remove_heartbeat(client, "celery@frozen")
    remove_heartbeat(client, "celery@ok")
    assert not client.exists(index_key())  # the last member took the index with it
    assert registry_exists(client)  # but the marker says "a registry with 0 workers"
    assert read_registry(client) == []


def test_format_1_entries_are_alive_while_present() -> None:
    old = WorkerHeartbeat.from_dict({"node": "celery@old", "queues": ["q"], "updated": 5.0,
                                     "version": 1})
    assert old.ttl == 0 and old.version == 1 and old.alive(now=1e9)


def test_writer_prunes_index_members_older_than_a_day() -> None:
    client = fakeredis.FakeRedis()
    client.zadd(index_key(), {"celery@old": T - 90000})
    write_heartbeat(client, _beat("celery@new", updated=T), ttl=60)
    assert client.zrange(index_key(), 0, -1) == [b"celery@new"]


@pytest.mark.redis
def test_entries_expire_on_real_redis(unique: str) -> None:
    client = redis.Redis.from_url(REDIS_BROKER)
    prefix = f"t-{unique}:"
    try:
        write_heartbeat(client, _beat("celery@short", updated=time.time()), ttl=2, prefix=prefix)
        write_heartbeat(client, _beat("celery@long", updated=time.time()), ttl=60, prefix=prefix)
        # a 2 s TTL leaves a loaded CI box time to read before the expiry
        assert [b.node for b in read_registry(client, prefix)] == ["celery@long", "celery@short"]
        assert wait_for(
            lambda: [b.node for b in read_registry(client, prefix)] == ["celery@long"], timeout=10
        )
    finally:
        client.delete(registry_key("celery@long", prefix), index_key(prefix))
        client.close()


class _CountingRedis(fakeredis.FakeRedis):  # type: ignore[misc]
    """Counts round trips: direct commands and pipeline executions."""

    trips: int = 0

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self.trips += 1
        return super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction=transaction, shard_hint=shard_hint)
        assert transaction is False  # no MULTI/EXEC: nothing needs to be atomic
        original = pipe.execute

        def execute(*args: Any, **kwargs: Any) -> Any:
            self.trips += 1
            return original(*args, **kwargs)

        pipe.execute = execute
        return pipe


def test_one_beat_is_one_registry_round_trip() -> None:
    client = _CountingRedis()
    write_heartbeat(client, _beat("celery@a", updated=T), ttl=60)
    assert client.trips == 1
    assert [b.node for b in read_registry(client)] == ["celery@a"]
    client.trips = 0
    remove_heartbeat(client, "celery@a")
    assert client.trips == 1 and client.zscore(index_key(), "celery@a") is None


def test_pure_helpers() -> None:
    beats = [
        _beat("celery@a", ("q",), updated=100.0, ecs_cluster="arn:aws:ecs:r:1:cluster/prod",
              ecs_service="svc"),
        _beat("celery@b", ("q", "q"), updated=50.0, ecs_cluster="prod", ecs_service="svc"),
        _beat("celery@c", ("q",), updated=500.0),  # from the future: not fresh forever
    ]
    assert [b.node for b in fresh(beats, now=110.0, max_age=30)] == ["celery@a"]
    assert consumers_per_queue(beats) == {"q": 3}
    assert workers_per_service(beats) == {("prod", "svc"): 2}


# --- ECS task metadata --------------------------------------------------------------------------


class _MetadataHandler(BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        body = self.routes.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def ecs_metadata() -> Iterator[str]:
    """A local stand-in for ${ECS_CONTAINER_METADATA_URI_V4} (EC2 launch type, in a service)."""
    container = {
        "Name": "worker",
        "Labels": {
            "com.amazonaws.ecs.cluster": "prod",
            "com.amazonaws.ecs.container-name": "worker",
            "com.amazonaws.ecs.task-arn": TASK_ARN,
        },
    }
    task = {"Cluster": "prod", "TaskARN": TASK_ARN, "ServiceName": "worker-emails"}
    handler = type("H", (_MetadataHandler,), {"routes": {
        "/v4/abc": json.dumps(container).encode(),
        "/v4/abc/task": json.dumps(task).encode(),
        "/v4/junk": b"<html>",
    }})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v4/abc"
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_ecs_metadata(ecs_metadata: str) -> None:
    assert fetch_ecs_metadata(ecs_metadata) == EcsMetadata(
        task_arn=TASK_ARN, cluster="prod", container="worker", service="worker-emails"
    )
    assert fetch_ecs_metadata(ecs_metadata.replace("/abc", "/junk")) is None
    assert fetch_ecs_metadata(None) is None
    assert fetch_ecs_metadata("file:///etc/passwd") is None
    started = time.monotonic()
    assert fetch_ecs_metadata(f"http://127.0.0.1:{free_port()}/v4/x", timeout=0.5) is None
    assert time.monotonic() - started < 8.0


def test_ecs_metadata_bypasses_proxies(ecs_metadata: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint is link-local: an HTTP(S)_PROXY in the container must not be used for it."""
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, dead)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    # urlopen() caches an opener (and the proxies it read) at first use: start from none
    monkeypatch.setattr(urllib.request, "_opener", None)
    meta = fetch_ecs_metadata(ecs_metadata)
    assert meta is not None and meta.task_arn == TASK_ARN


def test_ecs_metadata_garbage_http_response_is_not_an_exception() -> None:
    """http.client.HTTPException (e.g. BadStatusLine) is neither OSError nor ValueError."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve() -> None:
        for _ in range(2):  # the container URL and its /task URL
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"NOT-HTTP garbage\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert fetch_ecs_metadata(f"http://127.0.0.1:{server.getsockname()[1]}/v4/x") is None
    finally:
        server.close()
        thread.join(5)


# --- the beater without a worker ----------------------------------------------------------------


def test_unwritable_path_warns_once_and_registry_still_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = fakeredis.FakeRedis()
    settings = HeartbeatSettings(
        file="/proc/celery-ecs-no/heartbeat", ready_file=str(tmp_path / "ready"), interval=1
    )
    beater = Beater(settings=settings, registry=client, node="celery@x", queues=("q",))
    with caplog.at_level(logging.WARNING, logger="toolkit.heartbeat"):
        for _ in range(5):
            beater.beat()
    warnings = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1 and "/proc/celery-ecs-no/heartbeat" in warnings[0].getMessage()
    assert (tmp_path / "ready").exists()
    assert [b.node for b in read_registry(client)] == ["celery@x"]


class _BrokenRedis(fakeredis.FakeRedis):  # type: ignore[misc]
    def eval(self, *args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("down")

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = super().pipeline(*args, **kwargs)

        def execute(*_: Any, **__: Any) -> Any:
            raise redis.ConnectionError("down")

        pipe.execute = execute
        return pipe


def test_registry_failure_warns_once_and_backs_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = HeartbeatSettings(file=str(tmp_path / "hb"), ready_file=str(tmp_path / "r"))
    beater = Beater(settings=settings, registry=_BrokenRedis(), node="celery@x")
    with caplog.at_level(logging.WARNING, logger="toolkit.heartbeat"):
        for _ in range(3):
            beater.beat()
    assert [r.getMessage() for r in caplog.records] == [
        "celery-ecs heartbeat: registry write failed: down"
    ]
    assert (tmp_path / "hb").exists()  # the file heartbeat does not depend on Redis


def test_shutdown_removes_files_and_entry(tmp_path: Path) -> None:
    client = fakeredis.FakeRedis()
    settings = HeartbeatSettings(file=str(tmp_path / "hb"), ready_file=str(tmp_path / "ready"))
    beater = Beater(settings=settings, registry=client, node="celery@x")
    beater.beat()
    assert (tmp_path / "hb").exists() and (tmp_path / "ready").exists()
    assert client.zscore(index_key(), "celery@x") is not None
    beater.shutdown()
    assert not (tmp_path / "hb").exists() and not (tmp_path / "ready").exists()
    assert read_registry(client) == []
    assert client.zscore(index_key(), "celery@x") is None
    assert not client.exists(registry_key("celery@x"))


def test_no_beat_after_shutdown_and_the_helper_thread_is_joined(tmp_path: Path) -> None:
    """The solo helper thread used to be able to beat after shutdown() and re-create the files
    and the registry entry."""
    client = fakeredis.FakeRedis()
    settings = HeartbeatSettings(
        file=str(tmp_path / "hb"), ready_file=str(tmp_path / "ready"), interval=0.05
    )
    beater = Beater(settings=settings, registry=client, node="celery@x", busy_limit=60)
    beater.task_started_here()  # a task "runs" until after shutdown
    keeper = beater._keeper
    assert keeper is not None
    assert wait_for(lambda: (tmp_path / "hb").exists(), timeout=5)
    beater.shutdown()
    assert not keeper.is_alive()
    beater.beat()  # a beat racing with shutdown (e.g. from the loop) is a no-op
    time.sleep(0.2)
    assert not (tmp_path / "hb").exists() and not (tmp_path / "ready").exists()
    assert read_registry(client) == [] and client.zscore(index_key(), "celery@x") is None


def test_ready_file_is_recreated_if_deleted_while_consuming(tmp_path: Path) -> None:
    settings = HeartbeatSettings(file=str(tmp_path / "hb"), ready_file=str(tmp_path / "ready"))
    beater = Beater(settings=settings)
    beater.beat()
    (tmp_path / "ready").unlink()
    beater.beat()
    assert (tmp_path / "ready").exists()


def test_helper_thread_stops_beating_after_the_busy_cap(tmp_path: Path) -> None:
    settings = HeartbeatSettings(
        file=str(tmp_path / "hb"), ready_file=str(tmp_path / "ready"), interval=0.05
    )
    client = fakeredis.FakeRedis()
    beater = Beater(settings=settings, busy_limit=60, registry=client, node="celery@solo")
    try:
        beater.task_started_here(limit=0.4)  # the task's own limit wins over busy_limit
        assert wait_for(lambda: (tmp_path / "hb").exists(), timeout=5)
        time.sleep(0.8)  # past the cap: no more beats of the file
        mtime = (tmp_path / "hb").stat().st_mtime_ns
        score = client.zscore(index_key(), "celery@solo")
        time.sleep(0.4)
        assert (tmp_path / "hb").stat().st_mtime_ns == mtime
        # ...but the registry still says "alive, running since": the collector judges a long
        # solo task by max_task_runtime, never as a dead worker to redeploy
        assert client.zscore(index_key(), "celery@solo") > score
        beater.task_finished_here()
        beater.task_started_here()  # a new task, no limit of its own: busy_limit (60 s)
        assert wait_for(lambda: (tmp_path / "hb").stat().st_mtime_ns > mtime, timeout=5)
    finally:
        beater.shutdown()


def test_task_time_limit_from_request_then_task_class() -> None:
    from toolkit.worker.bootstep import _task_time_limit

    def task(timelimit: Any = None, **attrs: Any) -> Any:
        return SimpleNamespace(request=SimpleNamespace(timelimit=timelimit), **attrs)

    assert _task_time_limit(task((120, 100))) == 120.0
    assert _task_time_limit(task((None, 90))) == 90.0
    assert _task_time_limit(task([None, None], time_limit=300)) == 300.0
    assert _task_time_limit(task(None, soft_time_limit=45)) == 45.0
    assert _task_time_limit(task((None, None), time_limit=None)) is None
    assert _task_time_limit(None) is None
    assert _task_time_limit(task("junk")) is None


def test_helper_thread_only_for_the_solo_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The threads (and every other) pool keeps running its loop during tasks: a helper thread
    there would only hide a blocked loop."""
    settings = HeartbeatSettings(file=str(tmp_path / "hb"), ready_file=str(tmp_path / "ready"))
    beater = Beater(settings=settings, busy_limit=60)
    monkeypatch.setattr(bootstep, "_ACTIVE", beater)
    task = SimpleNamespace(request=SimpleNamespace(timelimit=(7, None)))
    bootstep.on_task_prerun(task=task)
    assert beater._keeper is None
    beater.solo = True
    bootstep.on_task_prerun(task=task)
    assert beater._keeper is not None and beater._busy_cap == 7.0
    beater.shutdown()


def _bump_forever(outcomes: TaskOutcomes, slot: int, started: Any) -> None:
    started.set()
    while True:
        outcomes.add(slot, failed=False)


def test_a_pool_process_killed_mid_count_never_freezes_the_counts() -> None:
    """Production: the OOM killer takes a prefork child while it records a task. The other
    processes keep counting and the main process keeps reading; at most that child's one
    unfinished increment is lost (no lock is shared between processes)."""
    import multiprocessing

    outcomes = TaskOutcomes()
    ctx = multiprocessing.get_context("fork")
    started = ctx.Event()
    child = ctx.Process(target=_bump_forever, args=(outcomes, outcomes.slot_for(0), started))
    child.start()
    assert started.wait(10)
    time.sleep(0.05)
    os.kill(child.pid or 0, signal.SIGKILL)
    child.join(10)
    before, _ = outcomes.totals()
    assert before > 0
    began = time.monotonic()
    outcomes.add(outcomes.slot_for(None), failed=False)  # the main process (solo / threads)
    outcomes.add(outcomes.slot_for(1), failed=True)  # another pool child
    assert time.monotonic() - began < 0.5
    assert outcomes.totals() == (before + 1, 1)
    # the replacement child gets the dead one's index, hence its slot: counts carry on
    assert outcomes.slot_for(0) == 1 and outcomes.slot_for(63) == 1 + 63 % 63


def test_snapshot_reports_running_held_and_the_newest_start() -> None:
    settings = HeartbeatSettings(file="/nonexistent/hb", ready_file="/nonexistent/ready")
    clock = [1000.0]
    view = [TaskView()]
    beater = Beater(settings=settings, clock=lambda: clock[0], tasks=lambda: view[0],
                    booted=990.0)
    first = beater.snapshot()
    assert (first.active, first.held, first.started, first.last_task_started) == (0, 0, 0, None)
    assert first.booted == 990.0 and first.details
    # a task started at 1003 and still runs; two more wait (prefetched)
    clock[0] = 1005.0
    view[0] = TaskView((ActiveTask("app.long", "id-1", 1003.0),), prefetched=2, started=1)
    beat = beater.snapshot()
    assert (beat.active, beat.held, beat.last_task_started, beat.youngest_start) == (
        1, 2, 1003.0, 1003.0)
    assert beat.tasks == (ActiveTask("app.long", "id-1", 1003.0),)
    # two quick tasks started and finished between beats: "some time up to now"
    clock[0] = 1010.0
    view[0] = TaskView((ActiveTask("app.long", "id-1", 1003.0),), started=3)
    assert beater.snapshot().last_task_started == 1010.0
    # nothing new started: the last start stays
    clock[0] = 1020.0
    assert beater.snapshot().last_task_started == 1010.0


def test_consuming_needs_a_task_consumer_and_a_connected_connection() -> None:
    up = SimpleNamespace(connected=True)
    down = SimpleNamespace(connected=False)
    assert consuming(SimpleNamespace(task_consumer=object(), connection=up))
    assert not consuming(SimpleNamespace(task_consumer=object(), connection=down))
    assert not consuming(SimpleNamespace(task_consumer=object(), connection=None))
    assert not consuming(SimpleNamespace(task_consumer=None, connection=up))

    class Broken:
        @property
        def connected(self) -> bool:
            raise OSError("gone")

    assert not consuming(SimpleNamespace(task_consumer=object(), connection=Broken()))


# --- the bootstep in real workers ---------------------------------------------------------------


@pytest.mark.redis
def test_worker_registry_entry_counts_tasks_and_carries_ecs_metadata(
    tmp_path: Path, unique: str, ecs_metadata: str
) -> None:
    """Prefork worker, broker global_keyprefix, ECS metadata, and an unwritable heartbeat file."""
    prefix = f"hc{unique}:"
    pool = WorkerPool(tmp_path, unique)
    client = redis.Redis.from_url(REDIS_BROKER)
    try:
        worker = pool.start(
            name="reg",
            env={
                "HC_KEYPREFIX": prefix,
                "ECS_CONTAINER_METADATA_URI_V4": ecs_metadata,
                "CELERY_ECS_HEARTBEAT_FILE": "/proc/celery-ecs-no/heartbeat",
            },
        )
        before = time.time()
        for name, args in (("hc.sleep", (0,)), ("hc.fail", ()), ("hc.sleep", (0.2,))):
            send_task(worker.broker, worker.queue, name, *args, keyprefix=prefix)

        def entry() -> WorkerHeartbeat | None:
            beats = {b.node: b for b in read_registry(client, prefix)}
            return beats.get(worker.node)

        assert wait_for(lambda: (b := entry()) is not None and b.started == 3
                        and b.succeeded + b.failed == 3, timeout=20), (entry(), worker.log())
        beat = entry()
        assert beat is not None
        assert (beat.started, beat.succeeded, beat.failed, beat.active) == (3, 2, 1, 0)
        assert beat.last_task_started is not None
        assert before <= beat.last_task_started <= time.time()
        assert beat.queues == (worker.queue,)
        assert (beat.pool, beat.concurrency, beat.pid) == ("prefork", 1, worker.pid)
        assert (beat.ecs_task_arn, beat.ecs_cluster, beat.ecs_container, beat.ecs_service) == (
            TASK_ARN, "prod", "worker", "worker-emails"
        )
        assert client.pttl(registry_key(worker.node, prefix)) > 0
        assert not client.exists(registry_key(worker.node))  # only under the prefix

        # The unwritable heartbeat path: one warning, the worker keeps running and answering.
        assert worker.proc.poll() is None
        assert worker.log().count("cannot write /proc/celery-ecs-no/heartbeat") == 1
        rc, out, _, _ = run_cli("healthcheck", "ping", "--broker", REDIS_BROKER,
                                "--node", worker.node, "--timeout", "1")
        assert rc == 1, out  # the pidbox lives under the prefix too...
        rc, out, _, _ = run_cli("healthcheck", "ping", "--broker", REDIS_BROKER,
                                "--node", worker.node, "--keyprefix", prefix)
        assert rc == 0, out  # ...so the probe must be told about it
    finally:
        pool.close()
        client.delete(registry_key(f"hc-reg-{unique}-0@127.0.0.1", prefix), index_key(prefix))
        client.close()


@pytest.mark.redis
def test_worker_with_an_unusable_registry_url_still_starts_and_beats(
    tmp_path: Path, unique: str
) -> None:
    """A ';' failover list (or any URL redis-py rejects) used to raise in the bootstep's start()
    and kill the worker. Now: one warning, no password in it, the files still work."""
    pool = WorkerPool(tmp_path, unique)
    try:
        worker = pool.start(
            pool="solo",
            name="badreg",
            env={
                "CELERY_ECS_HEARTBEAT_REGISTRY":
                    "redis://:Pw9Secret@127.0.0.1:6379;redis://127.0.0.1:6380/0",
                "ECS_CONTAINER_METADATA_URI_V4": "http://[::1",  # malformed too
            },
        )
        assert worker.ready_file.exists()
        mtime = worker.heartbeat_file.stat().st_mtime_ns
        assert wait_for(lambda: worker.heartbeat_file.stat().st_mtime_ns > mtime, timeout=10)
        send_task(worker.broker, worker.queue, "hc.sleep", 0)
        rc, out, _, _ = run_cli("healthcheck", "ping", "--broker", REDIS_BROKER,
                                "--node", worker.node, "--timeout", "5")
        assert rc == 0, out
        log = worker.log()
        assert worker.proc.poll() is None
        assert log.count("cannot use registry URL") == 1, log[-3000:]
        assert "redis://:***@" in log and "Pw9Secret" not in log
        assert "Traceback" not in log
    finally:
        pool.close()


@pytest.mark.redis
def test_frozen_worker_leaves_registry_and_shutdown_cleans_up(tmp_path: Path, unique: str) -> None:
    pool = WorkerPool(tmp_path, unique)
    client = redis.Redis.from_url(REDIS_BROKER)
    try:
        worker = pool.start(name="life", env={"CELERY_ECS_HEARTBEAT_TTL": "2"})

        def registered() -> bool:
            return worker.node in {b.node for b in read_registry(client)}

        assert wait_for(registered, timeout=5)
        assert worker.heartbeat_file.exists() and worker.ready_file.exists()
        worker.freeze()
        try:
            assert wait_for(lambda: not registered(), timeout=10)  # TTL 2 s, no more beats
            mtime = worker.heartbeat_file.stat().st_mtime
            time.sleep(1.0)
            assert worker.heartbeat_file.stat().st_mtime == mtime
        finally:
            worker.thaw()
        assert wait_for(registered, timeout=10)  # back after SIGCONT

        assert worker.terminate() == 0  # warm shutdown, as ECS stops a task
        assert not worker.heartbeat_file.exists()
        assert not worker.ready_file.exists()
        assert not registered()
        assert client.zscore(index_key(), worker.node) is None
    finally:
        pool.close()
        client.close()


def test_install_is_idempotent_and_rejects_bad_interval() -> None:
    from celery import Celery

    from toolkit.errors import ConfigError
    from toolkit.worker.bootstep import install

    app = Celery("t", broker="memory://", set_as_current=False)
    install(app, HeartbeatSettings(interval=1))
    install(app, HeartbeatSettings(interval=1))
    steps = [s for s in app.steps["consumer"] if getattr(s, "label", "") == "celery-ecs heartbeat"]
    assert len(steps) == 1
    with pytest.raises(ConfigError, match="interval must be greater than 0"):
        other = Celery("u", broker="memory://", set_as_current=False)
        install(other, HeartbeatSettings(interval=0))
    with pytest.raises(ConfigError, match="must be longer than the interval"):
        install(other, HeartbeatSettings(interval=10, registry_ttl=10))


def test_reading_the_registry_does_not_import_celery() -> None:
    code = (
        "import sys, toolkit.registry, toolkit.heartbeat\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'celery', 'kombu', 'boto3'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


class _NoScripting(fakeredis.FakeRedis):  # type: ignore[misc]
    def eval(self, *args: Any, **kwargs: Any) -> Any:
        raise redis.ResponseError("NOPERM this user has no permissions to run the 'eval' command")


def test_a_redis_that_refuses_scripts_gets_pipelined_beats(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = _NoScripting()
    settings = HeartbeatSettings(file=str(tmp_path / "hb"), ready_file=str(tmp_path / "r"))
    beater = Beater(settings=settings, registry=client, node="celery@x")
    with caplog.at_level(logging.WARNING, logger="toolkit.heartbeat"):
        beater.beat()
        beater.beat()
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "celery-ecs heartbeat: Redis refused the heartbeat script"]
    (entry,) = read_registry(client)
    assert entry.node == "celery@x" and entry.beat_at == pytest.approx(time.time(), abs=5)


def test_pool_slots_are_the_autoscale_maximum_and_one_for_solo() -> None:
    from toolkit.worker.bootstep import pool_slots

    def c(**controller: Any) -> SimpleNamespace:
        return SimpleNamespace(controller=SimpleNamespace(**controller))

    assert pool_slots(c(concurrency=8, max_concurrency=2), solo=False) == 2  # --autoscale=2,1
    assert pool_slots(c(concurrency=8, max_concurrency=None), solo=False) == 8
    assert pool_slots(c(concurrency=2), solo=True) == 1
    assert pool_slots(SimpleNamespace(), solo=False) == 0


def test_task_view_reads_celerys_own_sets_and_the_token_buckets() -> None:
    """Held work comes from the sets Celery clears when its connection closes (nothing stale
    after a reconnect), split by kind; each running task carries its own hard time limit."""
    from collections import deque

    from celery.worker import state

    from toolkit.worker.bootstep import task_view

    class Req:
        def __init__(self, i: int, start: float | None, limits: Any = (None, None)) -> None:
            self.id, self.name, self.time_start, self.time_limits = f"r{i}", "app.t", start, limits
            self.task = SimpleNamespace(time_limit=None)

    running = [Req(0, 1000.0, (7200, 7000)), Req(1, 990.0)]
    waiting = [Req(2, None), Req(3, None)]
    eta = [Req(4, None)]
    consumer = SimpleNamespace(task_buckets={"app.limited": SimpleNamespace(
        contents=deque([(Req(5, None), 1)] * 3)), "app.other": None})
    scheduled = getattr(state, "scheduled_requests", None)  # Celery 5.5 and newer
    state.active_requests.update(running)
    state.reserved_requests.update(running + waiting)
    if scheduled is not None:
        scheduled.update(eta)
    try:
        view = task_view(consumer, default_limit=600.0, slots=4)
    finally:
        for kind in (state.active_requests, state.reserved_requests, scheduled):
            if kind is not None:
                kind.clear()
    due = 1 if scheduled is not None else 0  # older Celery: ETA requests are timer entries
    assert (view.prefetched, view.eta, view.rate_limited, view.held) == (2, due, 3, 5 + due)
    assert [(t.id, t.limit) for t in view.active] == [("r1", 600.0), ("r0", 7200.0)]
    assert view.slots == 4
    state.reserved_requests.clear()  # after a reconnect Celery clears them: nothing held
    assert task_view(consumer, None, 4).prefetched == 0

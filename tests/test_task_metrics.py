"""Per-task metrics with real workers (prefork and threads) on real Redis, published to moto.

Each worker runs ``tests/task_app.py`` under a key prefix of its own in db 2 (the worker tests'
database). A known workload (20 succeeding, 5 failing, 3 retrying once then succeeding) must
come out exactly in CloudWatch, cycle after cycle, through a killed pool process and a worker
restart.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from moto import mock_aws

from tests.helpers_workers import REDIS_BROKER, Worker, WorkerPool, send_task, wait_for
from tests.moto_metrics import total
from tests.test_cli_collect import cli, moto_endpoint  # noqa: F401 - the fixture
from toolkit.collector.brokers.redis import RedisReader
from toolkit.collector.cycle import CycleResult, QueueSource, run_cycle
from toolkit.collector.publisher import CloudWatchPublisher
from toolkit.config import Settings
from toolkit.taskcounts import TaskRequest, TaskTotals, claim_counts

REGION = "eu-west-1"
NS = "Celery"
pytestmark = pytest.mark.redis


@pytest.fixture
def db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_BROKER)
    yield client
    client.close()


def pending(db: redis.Redis, prefix: str) -> dict[str, TaskTotals]:
    """What the workers flushed and no collector claimed yet, summed per task name."""
    claim = claim_counts(db, prefix, TaskRequest("test-peek", mode="peek", top=0))
    out: dict[str, TaskTotals] = {}
    for minute in claim.minutes:
        for name, totals in minute.tasks.items():
            out.setdefault(name, TaskTotals()).merge(totals)
    return out


def counts(totals: dict[str, TaskTotals]) -> dict[str, tuple[int, int, int, int]]:
    return {n: (t.succeeded, t.failed, t.retried, t.runs) for n, t in sorted(totals.items())}


def wait_counts(db: redis.Redis, prefix: str, want: dict[str, tuple[int, int, int, int]],
                worker: Worker, timeout: float = 30.0) -> None:
    assert wait_for(lambda: counts(pending(db, prefix)) == want, timeout=timeout,
                    interval=0.1), (counts(pending(db, prefix)), worker.log()[-3000:])


def start(workers: WorkerPool, prefix: str, **kw: Any) -> Worker:
    env = {"HC_KEYPREFIX": prefix, **kw.pop("env", {})}
    return workers.start(app="tests.task_app", env=env, **kw)


def workload(worker: Worker, prefix: str) -> None:
    for i in range(20):
        send_task(worker.broker, worker.queue, "tm.ok", 0.02 + 0.001 * i, keyprefix=prefix)
    for _ in range(5):
        send_task(worker.broker, worker.queue, "tm.fail", 0.01, keyprefix=prefix)
    for _ in range(3):
        send_task(worker.broker, worker.queue, "tm.flaky", 0.01, keyprefix=prefix)


def cycle(db: redis.Redis, prefix: str, env: str, cw: Any, source: QueueSource) -> CycleResult:
    settings = Settings(environment=env, only_queues=("unused",))
    reader = RedisReader(db, global_keyprefix=prefix)
    return run_cycle(reader, settings, CloudWatchPublisher(NS, client=cw), source=source)


def stats(cw: Any, metric: str, env: str, task: str | None) -> dict[str, float]:
    dims = [{"Name": "Environment", "Value": env}]
    if task is not None:
        dims.append({"Name": "Task", "Value": task})
    now = datetime.now(UTC)
    got = cw.get_metric_statistics(
        Namespace=NS, MetricName=metric, Dimensions=dims, StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(minutes=5), Period=60,
        Statistics=["Sum", "SampleCount", "Minimum", "Maximum"])["Datapoints"]
    if not got:
        return {}
    return {"Sum": sum(p["Sum"] for p in got), "SampleCount": sum(p["SampleCount"] for p in got),
            "Minimum": min(p["Minimum"] for p in got), "Maximum": max(p["Maximum"] for p in got)}


def sums(cw: Any, env: str, task: str | None) -> tuple[float, ...]:
    """The three counts published for ``task`` (None: the environment's sums, read from moto's
    store: its GetMetricStatistics would add the per-task metrics in)."""
    names = ("TasksSucceeded", "TasksFailed", "TasksRetried")
    if task is None:
        return tuple(total(NS, m, {"Environment": env}) for m in names)
    return tuple(stats(cw, m, env, task).get("Sum", 0.0) for m in names)


@pytest.mark.parametrize("pool_kind,concurrency", [("prefork", 2), ("threads", 4)])
def test_a_known_workload_gives_exact_metrics_two_cycles_never_twice(
    tmp_path: Path, unique: str, db: redis.Redis, pool_kind: str, concurrency: int,
) -> None:
    prefix = f"tm{unique}:"
    env = f"tm-{unique}"
    pool = WorkerPool(tmp_path, unique)
    try:
        worker = start(pool, prefix, pool=pool_kind, concurrency=concurrency, interval=0.3)
        workload(worker, prefix)
        wait_counts(db, prefix, {"tm.fail": (0, 5, 0, 5), "tm.flaky": (3, 0, 3, 6),
                                 "tm.ok": (20, 0, 0, 20)}, worker)
        with mock_aws():
            cw = boto3.client("cloudwatch", region_name=REGION)
            source = QueueSource(Settings(environment=env))
            first = cycle(db, prefix, env, cw, source)
            assert first.ok, first.errors
            assert first.tasks is not None and first.tasks.state == "claimed"
            assert sums(cw, env, "tm.ok") == (20, 0, 0)
            assert sums(cw, env, "tm.fail") == (0, 5, 0)
            assert sums(cw, env, "tm.flaky") == (3, 0, 3)  # each retry counted once
            assert sums(cw, env, None) == (23, 5, 3)  # the environment's sums
            runtime = stats(cw, "TaskRuntime", env, "tm.ok")
            assert runtime["SampleCount"] == 20
            # each run sleeps 0.020..0.039 s: the published values stay within the runs' bounds
            assert 0.02 <= runtime["Minimum"] <= runtime["Maximum"] < 0.039 + 0.5
            assert 20 * 0.02 < runtime["Sum"] < 20 * 0.039 + 20 * 0.5
            assert stats(cw, "TaskRuntime", env, "tm.flaky")["SampleCount"] == 6
            assert pending(db, prefix) == {}  # claimed, published, committed

            for _ in range(2):
                send_task(worker.broker, worker.queue, "tm.ok", 0.0, keyprefix=prefix)
            wait_counts(db, prefix, {"tm.ok": (2, 0, 0, 2)}, worker)
            second = cycle(db, prefix, env, cw, source)
            assert second.ok, second.errors
            assert sums(cw, env, "tm.ok") == (22, 0, 0)  # 20 + 2: nothing counted twice
            assert sums(cw, env, None) == (25, 5, 3)
            third = cycle(db, prefix, env, cw, source)
            task_metrics = {"TasksSucceeded", "TasksFailed", "TasksRetried", "TaskRuntime"}
            assert third.ok and not [s for s in third.samples if s.name in task_metrics]
            assert sums(cw, env, "tm.ok") == (22, 0, 0)
    finally:
        pool.close()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_a_killed_pool_process_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, unique: str, db: redis.Redis,
) -> None:
    """The counts live in shared memory the main process flushes: a child SIGKILLed right
    after its tasks (before the next beat), or killed by its own task, loses none of them, and
    its replacement (same pool index) continues them."""
    prefix = f"tm{unique}:"
    pool = WorkerPool(tmp_path, unique)
    try:
        worker = start(pool, prefix, pool="prefork", concurrency=1, interval=1.0)
        for _ in range(5):
            send_task(worker.broker, worker.queue, "tm.ok", 0.0, keyprefix=prefix)
        assert wait_for(lambda: "tm.ok" in worker.log() and worker.log().count(
            "succeeded in") == 5, timeout=20), worker.log()[-2000:]
        (child,) = _children(worker.pid)
        os.kill(child, signal.SIGKILL)  # at most 1 s after its last task: before a flush, often
        send_task(worker.broker, worker.queue, "tm.die", keyprefix=prefix)  # kills its child
        for _ in range(5):
            send_task(worker.broker, worker.queue, "tm.ok", 0.0, keyprefix=prefix)
        # killed at its hard time limit: Celery reports that failure twice, counted once
        send_task(worker.broker, worker.queue, "tm.ok", 30.0, keyprefix=prefix, time_limit=1)
        want = {"tm.die": (0, 1, 0, 0), "tm.ok": (10, 1, 0, 10)}
        wait_counts(db, prefix, want, worker)
        time.sleep(2.5)  # two more beats: nothing is flushed again
        assert counts(pending(db, prefix)) == want
    finally:
        pool.close()


def test_a_restarted_worker_continues_without_counting_twice(
    tmp_path: Path, unique: str, db: redis.Redis,
) -> None:
    """A warm shutdown flushes last (a task finishing during the shutdown included); the new
    worker on the same node is a new incarnation and counts only its own tasks."""
    prefix = f"tm{unique}:"
    pool = WorkerPool(tmp_path, unique)
    try:
        first = start(pool, prefix, pool="prefork", concurrency=1, interval=5.0)
        for _ in range(3):
            send_task(first.broker, first.queue, "tm.ok", 0.0, keyprefix=prefix)
        started = tmp_path / "started"
        send_task(first.broker, first.queue, "tm.mark", str(started), 1.0, keyprefix=prefix)
        assert wait_for(started.exists, timeout=20), first.log()[-2000:]
        assert first.terminate() == 0  # while tm.mark runs; no beat since (interval 5 s)
        assert counts(pending(db, prefix)) == {"tm.mark": (1, 0, 0, 1), "tm.ok": (3, 0, 0, 3)}
        second = start(pool, prefix, pool="prefork", concurrency=1, interval=0.3,
                       queue=first.queue)
        for _ in range(2):
            send_task(second.broker, second.queue, "tm.fail", 0.0, keyprefix=prefix)
        wait_counts(db, prefix, {"tm.fail": (0, 2, 0, 2), "tm.mark": (1, 0, 0, 1),
                                 "tm.ok": (3, 0, 0, 3)}, second)
        seqs = sorted(k.decode() for k in db.scan_iter(match=f"{prefix}celery-ecs:tasks:seq:*"))
        assert len(seqs) == 2  # two incarnations, each applied once
    finally:
        pool.close()


def test_the_issues_workload_through_collect_once_against_a_moto_server(
    tmp_path: Path, unique: str, db: redis.Redis, moto_endpoint: str,  # noqa: F811
) -> None:
    """What the issue tried: a real worker runs 20 succeeding, 5 failing and 3 retrying
    tasks, then ``celery-ecs collect --once``. A dry run first shows them and takes nothing."""
    prefix = f"tm{unique}:"
    env = f"once-{unique}"
    pool = WorkerPool(tmp_path, unique)
    try:
        worker = start(pool, prefix, pool="prefork", concurrency=2, interval=0.3)
        workload(worker, prefix)
        want = {"tm.fail": (0, 5, 0, 5), "tm.flaky": (3, 0, 3, 6), "tm.ok": (20, 0, 0, 20)}
        wait_counts(db, prefix, want, worker)
        config = tmp_path / "celery-ecs.toml"
        config.write_text(f'environment = "{env}"\n[broker]\nurl = "{REDIS_BROKER}"\n'
                          f'global_keyprefix = "{prefix}"\n')
        common = ["collect", "--once", "--config", str(config), "--queue", worker.queue]
        dry = cli(*common, "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        doc = json.loads(dry.stdout)
        assert doc["tasks"]["state"] == "peeked"
        assert doc["tasks"]["by_task"]["tm.flaky"] == {"succeeded": 3, "failed": 0,
                                                       "retried": 3, "runs": 6}
        assert counts(pending(db, prefix)) == want  # a dry run takes nothing
        run = cli(*common, env={"AWS_ENDPOINT_URL": moto_endpoint})
        assert run.returncode == 0, run.stderr
        assert "tasks: 31 finished, 3 name(s)" in run.stdout
        cw = boto3.client("cloudwatch", region_name=REGION, endpoint_url=moto_endpoint)
        assert sums(cw, env, "tm.ok") == (20, 0, 0)
        assert sums(cw, env, "tm.fail") == (0, 5, 0)
        assert sums(cw, env, "tm.flaky") == (3, 0, 3)
        assert stats(cw, "TaskRuntime", env, "tm.ok")["SampleCount"] == 20
        assert pending(db, prefix) == {}
    finally:
        pool.close()

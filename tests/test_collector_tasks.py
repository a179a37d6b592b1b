"""The collector's per-task metrics: which names get a dimension, the samples of a claim, and
cycles against real Redis (db 1) and moto: never twice, a failed or partial publish published
once later, a collector down for three cycles, two collectors, dry runs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import boto3
import fakeredis
import pytest
import redis
from moto import mock_aws

from tests.moto_metrics import datapoints
from toolkit.collector.brokers.redis import RedisReader
from toolkit.collector.cycle import QueueSource, run_cycle
from toolkit.collector.publisher import (
    CloudWatchPublisher,
    PublishReport,
    Sample,
    batches,
    to_datum,
)
from toolkit.collector.tasks import task_samples
from toolkit.config import Settings
from toolkit.errors import PublishError
from toolkit.taskcounts import (
    MinuteCounts,
    TaskClaim,
    TaskRequest,
    TaskTotals,
    bucket_of,
    claim_counts,
    flush_counts,
    task_dimension,
)
from toolkit.taskcounts.settings import TaskMetricSettings, parse_task_table

REGION = "eu-west-1"
EIGHTH = bucket_of(0.125)
TASK_METRICS = {"TasksSucceeded", "TasksFailed", "TasksRetried", "TaskRuntime"}


def totals(s: int = 0, f: int = 0, r: int = 0, runs: tuple[float, ...] = ()) -> TaskTotals:
    t = TaskTotals(s, f, r)
    for seconds in runs:
        t.add(f"c{bucket_of(seconds)}", 1)
        t.add(f"t{bucket_of(seconds)}", seconds * 1e6)
    return t


def task_rows(samples: Sequence[Sample]) -> dict[tuple[str, str | None, int], float]:
    return {(s.name, s.dimension("Task"), int(s.timestamp.timestamp()) if s.timestamp else 0):
            s.value for s in samples if s.name in TASK_METRICS and not s.values}


# --- pure: names and samples -----------------------------------------------------------------


def test_include_and_top_get_their_own_dimension_the_rest_is_other() -> None:
    claim = TaskClaim("claimed", (MinuteCounts(600, {
        "big": totals(s=50), "mid": totals(f=20), "small": totals(r=5),
        "tiny": totals(s=1), "billing.charge": totals(s=2, runs=(0.5, 0.6)),
    }),), ranking=("big", "mid", "small"))
    tasks = parse_task_table({"include": ["billing.charge"], "top": 2})
    rows = task_rows(task_samples("prod", claim, tasks))
    assert {task for _, task, _ in rows} == {"big", "mid", "billing.charge", "other", None}
    assert rows[("TasksRetried", "other", 600)] == 5 and rows[("TasksSucceeded", "other", 600)] == 1
    assert rows[("TasksFailed", "big", 600)] == 0  # zeros published: a rate exists every minute
    assert (rows[("TasksSucceeded", None, 600)], rows[("TasksFailed", None, 600)],
            rows[("TasksRetried", None, 600)]) == (53, 20, 5)  # summed over every name
    runtime = [s for s in task_samples("prod", claim, tasks) if s.name == "TaskRuntime"]
    assert [(s.dimension("Task"), s.counts) for s in runtime] == [("billing.charge", (2.0,))]
    assert runtime[0].values == pytest.approx((0.55,))
    assert all(s.group == 600 for s in task_samples("prod", claim, tasks))


def test_top_zero_and_disabled() -> None:
    claim = TaskClaim("claimed", (MinuteCounts(60, {"a": totals(s=1)}),), ranking=("a",))
    rows = task_rows(task_samples("e", claim, TaskMetricSettings(top=0)))
    assert {t for _, t, _ in rows} == {"other", None}
    assert task_samples("e", claim, TaskMetricSettings(enabled=False)) == []
    assert task_samples("e", TaskClaim("busy"), TaskMetricSettings()) == []


@pytest.mark.parametrize("raw,message", [
    ({"top": -1}, "must not be negative"),
    ({"top": 240, "include": ["a"]}, "at most 240"),
    ({"include": "a"}, "list of task names"),
    ({"colour": 1}, "unknown keys: colour"),
    ({"failure_rate_alarm": 0}, "percentage"),
    ({"failure_rate_alarm": 150}, "percentage"),
])
def test_bad_tasks_tables_are_one_line_errors(raw: dict[str, Any], message: str) -> None:
    from toolkit.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_task_table(raw)


def test_include_names_are_matched_as_dimension_values() -> None:
    long = "n" * 300
    tasks = parse_task_table({"include": [long, "a\tb"], "top": 0})
    assert tasks.include == (task_dimension(long), "a\\tb")


def test_a_group_is_never_split_across_requests() -> None:
    loose = [to_datum(Sample("QueueLength", 1, "Count", (("Environment", "e"),)))] * 990
    grouped = [to_datum(Sample("TasksSucceeded", 1, "Count", (("Environment", "e"),)))] * 50
    out = list(batches(loose + grouped, [None] * 990 + [7] * 50))
    assert [len(b) for b in out] == [990, 50]
    assert [len(b) for b in batches(loose + grouped)] == [1000, 40]  # without groups


# --- cycles against real Redis and moto --------------------------------------------------------


class Publisher:
    """In memory; fails as told: ``fail`` cycles in a row, ``partial`` = groups sent first."""

    def __init__(self) -> None:
        self.fail = 0
        self.partial: frozenset[int] = frozenset()
        self.sent: list[Sample] = []

    def publish(self, samples: Sequence[Sample]) -> PublishReport:
        if self.fail:
            self.fail -= 1
            self.sent += [s for s in samples if s.group in self.partial]
            raise PublishError("PutMetricData failed: Throttling", sent_groups=self.partial)
        self.sent += list(samples)
        return PublishReport(len(samples), 1)

    def succeeded(self, task: str) -> dict[int, float]:
        out: dict[int, float] = {}
        for s in self.sent:
            if s.name == "TasksSucceeded" and s.dimension("Task") == task and s.timestamp:
                at = int(s.timestamp.timestamp())
                out[at] = out.get(at, 0.0) + s.value
        return out


def settings(env: str = "t") -> Settings:
    """The test minutes are long past: no ranking, so "a" is named in include."""
    return Settings(environment=env, only_queues=("q",),
                    tasks=TaskMetricSettings(include=("a", "app.report", "bad\\x00name")))


def test_publish_failures_are_published_once_later_and_partial_ones_only_the_rest(
    client: redis.Redis, prefix: str,
) -> None:
    reader = RedisReader(client, global_keyprefix=prefix)
    pub, src = Publisher(), QueueSource(settings())
    flush_counts(client, prefix, "w:1", 1, [("s:a", "3")], at=60.0)
    flush_counts(client, prefix, "w:1", 2, [("s:a", "4")], at=120.0)
    pub.fail, pub.partial = 1, frozenset({60})
    failed = run_cycle(reader, settings(), pub, source=src)
    assert not failed.ok and failed.tasks is not None and failed.tasks.owned == (60, 120)
    assert pub.succeeded("a") == {60: 3}  # the first request went out; the second did not
    run_cycle(reader, settings(), pub, source=src)
    assert pub.succeeded("a") == {60: 3, 120: 4}  # 120 once more, 60 not again
    run_cycle(reader, settings(), pub, source=src)
    assert pub.succeeded("a") == {60: 3, 120: 4}


def test_a_second_collector_publishes_no_task_metric_while_the_first_holds_the_claim(
    client: redis.Redis, prefix: str,
) -> None:
    reader = RedisReader(client, global_keyprefix=prefix)
    first, second = Publisher(), Publisher()
    a, b = QueueSource(settings()), QueueSource(settings())
    flush_counts(client, prefix, "w:1", 1, [("s:a", "3")], at=60.0)
    first.fail = 1
    run_cycle(reader, settings(), first, source=a)  # claimed, not published
    busy = run_cycle(reader, settings(), second, source=b)
    assert busy.tasks is not None and busy.tasks.state == "busy"
    assert not [s for s in second.sent if s.name in TASK_METRICS]
    assert busy.ok  # another collector publishing them is not an error
    run_cycle(reader, settings(), first, source=a)
    assert first.succeeded("a") == {60: 3}
    flush_counts(client, prefix, "w:1", 2, [("s:a", "1")], at=180.0)
    run_cycle(reader, settings(), second, source=b)  # the lease is free again
    assert second.succeeded("a") == {180: 1} and first.succeeded("a") == {60: 3}


def test_a_dry_run_peeks_and_changes_nothing(client: redis.Redis, prefix: str) -> None:
    reader = RedisReader(client, global_keyprefix=prefix)
    flush_counts(client, prefix, "w:1", 1, [("s:a", "3")], at=60.0)
    dry = run_cycle(reader, settings(), None, source=QueueSource(settings()))
    assert dry.tasks is not None and dry.tasks.state == "peeked"
    assert task_rows(dry.samples)[("TasksSucceeded", "a", 60)] == 3
    again = claim_counts(client, prefix, TaskRequest("x", mode="peek"))
    assert [m.minute for m in again.minutes] == [60]


class CommitFailsOnce(RedisReader):
    failures = 1

    def commit_tasks(self, collector: str, minutes: Sequence[int]) -> str:
        if self.failures:
            self.failures -= 1
            raise redis.ConnectionError("gone")
        return super().commit_tasks(collector, minutes)


def test_a_commit_that_failed_is_sent_with_the_next_claim_never_republished(
    client: redis.Redis, prefix: str,
) -> None:
    reader = CommitFailsOnce(client, global_keyprefix=prefix)
    pub, src = Publisher(), QueueSource(settings())
    flush_counts(client, prefix, "w:1", 1, [("s:a", "3")], at=60.0)
    first = run_cycle(reader, settings(), pub, source=src)
    assert any("not committed" in e for e in first.errors) and src.uncommitted == (60,)
    flush_counts(client, prefix, "w:1", 2, [("s:a", "2")], at=120.0)
    second = run_cycle(reader, settings(), pub, source=src)
    assert second.ok and src.uncommitted == ()
    assert pub.succeeded("a") == {60: 3, 120: 2}  # 60 not published again


def test_a_collector_down_for_three_cycles_publishes_each_minute_once_at_its_time(
    client: redis.Redis, prefix: str, unique: str,
) -> None:
    now = int(datetime.now(UTC).timestamp() // 60 * 60)
    minutes = [now - 240, now - 180, now - 120]
    for i, minute in enumerate(minutes):  # three cycles' worth of tasks, no collector
        flush_counts(client, prefix, "w:1", i + 1,
                     [("s:app.report", str(i + 1)), ("f:app.report", "1"),
                      (f"c{EIGHTH}:app.report", "1"), (f"t{EIGHTH}:app.report", "125000"),
                      ("s:bad\\x00name", "1")], at=minute + 5.0)
    env = f"down-{unique}"
    with mock_aws():
        cw = boto3.client("cloudwatch", region_name=REGION)
        reader = RedisReader(client, global_keyprefix=prefix)
        result = run_cycle(reader, settings(env), CloudWatchPublisher("Celery", client=cw),
                           source=QueueSource(settings(env)))
        assert result.ok, result.errors
        dims = {"Environment": env, "Task": "app.report"}
        got = datapoints("Celery", "TasksSucceeded", dims)
        assert [(int(t.timestamp()), v) for t, v in got] == [
            (minutes[0], 1.0), (minutes[1], 2.0), (minutes[2], 3.0)]
        assert [v for _, v in datapoints("Celery", "TasksFailed", dims)] == [1.0, 1.0, 1.0]
        runtime = datapoints("Celery", "TaskRuntime", dims)
        assert [(int(t.timestamp()), v) for t, v in runtime] == [(m, 0.125) for m in minutes]
        assert len(datapoints("Celery", "TasksSucceeded",
                              {"Environment": env, "Task": "bad\\x00name"})) == 3
        later = run_cycle(reader, settings(env), CloudWatchPublisher("Celery", client=cw),
                          source=QueueSource(settings(env)))
        assert later.ok and len(datapoints("Celery", "TasksSucceeded", dims)) == 3


def test_the_registry_outside_the_broker_holds_and_commits_the_counts(
    client: redis.Redis, prefix: str,
) -> None:
    registry = fakeredis.FakeRedis()
    flush_counts(registry, "", "w:1", 1, [("s:a", "2")], at=60.0)
    reader = RedisReader(client, global_keyprefix=prefix)
    pub, src = Publisher(), QueueSource(settings(), registry=registry)
    result = run_cycle(reader, settings(), pub, source=src)
    assert result.ok, result.errors
    assert pub.succeeded("a") == {60: 2}
    assert claim_counts(registry, "", TaskRequest("x", mode="peek")).minutes == ()


def test_without_scripting_there_are_no_task_metrics(
    client: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture,
) -> None:
    flush_counts(client, prefix, "w:1", 1, [("s:a", "2")], at=60.0)
    reader = RedisReader(client, global_keyprefix=prefix, use_script=False)
    with caplog.at_level(logging.WARNING):
        reading = reader.read_with_tasks(["q"], TaskRequest("x"))
    assert reading.tasks is None and "need Redis scripting" in caplog.text


def test_names_cloudwatch_refuses_are_sanitised_from_the_worker_to_cloudwatch(
    client: redis.Redis, prefix: str, unique: str,
) -> None:
    from toolkit.worker.counting import TaskFlusher, TaskTable

    raw = {"ctl": "bad\x00name\n", "long": "n" * 300, "long2": "n" * 299 + "m",
           "unicode": "tâche.été", "blank": "   "}
    table = TaskTable(slots=1)
    for name in raw.values():
        table.record(0, name, "failed", 0.5)
    assert TaskFlusher(table, "w").flush(client, prefix)
    env = f"names-{unique}"
    with mock_aws():
        cw = boto3.client("cloudwatch", region_name=REGION)
        result = run_cycle(RedisReader(client, global_keyprefix=prefix), settings(env),
                           CloudWatchPublisher("Celery", client=cw),
                           source=QueueSource(settings(env)))
        assert result.ok, result.errors  # CloudWatch (moto) took every dimension value
        names = {d["Value"] for m in cw.list_metrics(Namespace="Celery")["Metrics"]
                 for d in m["Dimensions"] if d["Name"] == "Task"}
    assert names == {task_dimension(n) for n in raw.values()}
    assert "bad\\x00name\\n" in names and "t\\xe2che.\\xe9t\\xe9" in names
    assert all(len(n) <= 255 and n.isascii() and n.isprintable() for n in names)
    assert len({n for n in names if n.startswith("n" * 200)}) == 2  # still two names

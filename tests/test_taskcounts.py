"""The per-task counts contract: names, runtime buckets, the worker's shared-memory table and
its flushes, and the Redis store's claim and commit (real Redis, db 1, a prefix per test)."""

from __future__ import annotations

import math
import multiprocessing
import time
from array import array
from typing import Any

import fakeredis
import pytest
import redis

from toolkit.taskcounts import (
    BUCKETS,
    OTHER,
    TaskRequest,
    TaskTotals,
    bucket_bounds,
    bucket_of,
    claim_counts,
    commit_claim,
    flush_counts,
    task_dimension,
)
from toolkit.taskcounts.store import tasks_key
from toolkit.worker.counting import FIELDS, TaskCounter, TaskFlusher, TaskTable

# --- names and buckets ---------------------------------------------------------------------


@pytest.mark.parametrize("name,expected", [
    ("billing.charge", "billing.charge"),
    ("", "(empty)"),
    ("  ", "\\x20\\x20"),
    ("a\nb\x00c", "a\\nb\\x00c"),
    ("tâche.été", "t\\xe2che.\\xe9t\\xe9"),
    ("emoji.\U0001F600", "emoji.\\U0001f600"),
])
def test_task_names_become_dimension_values(name: str, expected: str) -> None:
    assert task_dimension(name) == expected


def test_long_names_are_cut_to_255_and_stay_distinct() -> None:
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    da, db_ = task_dimension(a), task_dimension(b)
    assert len(da) == len(db_) == 255 and da != db_
    assert da.startswith("x" * 246 + "~") and da.isascii() and da.isprintable()
    assert task_dimension("y" * 255) == "y" * 255  # exactly 255: unchanged
    assert len(task_dimension("\x01" * 100)) == 255  # escaping can make it long, too


def test_runtime_buckets_cover_every_runtime_at_half_an_octave() -> None:
    assert bucket_of(0.0) == bucket_of(-1.0) == bucket_of(math.nan) == 0
    assert bucket_of(math.inf) == bucket_of(1e9) == BUCKETS - 1
    for seconds in (0.001, 0.0123, 0.25, 1.0, 3.7, 60.0, 3599.0, 16000.0):
        low, high = bucket_bounds(bucket_of(seconds))
        assert low <= seconds < high and (high / low <= 2 ** 0.5 + 1e-9 or low == 0)
    assert [bucket_bounds(i)[1] for i in range(BUCKETS - 1)] == [
        bucket_bounds(i + 1)[0] for i in range(BUCKETS - 1)]  # contiguous


def test_the_histogram_is_exact_in_count_and_sum() -> None:
    totals = TaskTotals()
    runs = [0.2] * 10 + [0.21] * 5 + [3.0, 3.1]
    for r in runs:
        b = bucket_of(r)
        totals.add(f"c{b}", 1)
        totals.add(f"t{b}", r * 1e6)  # stored in microseconds
    values, counts = totals.histogram()
    assert sum(counts) == len(runs)
    assert sum(v * c for v, c in zip(values, counts, strict=True)) == pytest.approx(sum(runs))
    assert values[0] == pytest.approx((10 * 0.2 + 5 * 0.21) / 15)  # one bucket: its mean
    assert not totals.add("z9", 1) and not totals.add(f"c{BUCKETS}", 1)  # unknown: ignored


# --- the worker's table and its flushes ------------------------------------------------------


def _child_counts(table: TaskTable, n: int) -> None:
    counter = TaskCounter(table, main_pid=-1)  # not the main process: a pool slot
    counter._slot = (multiprocessing.current_process().pid or 0, table.slot_for(0))
    for i in range(n):
        counter.started(f"id{i}")
        counter.finished(f"id{i}", "app.child", "SUCCESS")


def test_a_replacement_process_continues_its_slot_and_the_main_process_sums() -> None:
    table = TaskTable(slots=3, names=8)
    ctx = multiprocessing.get_context("fork")
    for _ in range(2):  # a child, then its replacement with the same pool index
        child = ctx.Process(target=_child_counts, args=(table, 4))
        child.start()
        child.join(10)
        assert child.exitcode == 0
    table.record(0, "app.child", "failed", None)  # the main process: its own slot
    entries = table.entries()
    assert [table.name_at(e) for e in entries] == ["app.child", "app.child"]
    by_slot = {e // table.names: array("d", table.raw(e)) for e in entries}
    assert by_slot[1][0] == 8 and by_slot[0][1] == 1  # one entry per slot, continued
    flusher = TaskFlusher(table, "n")
    pending = flusher.pending()
    assert pending is not None
    got = dict(pending[1])
    assert (got["s:app.child"], got["f:app.child"]) == ("8", "1")
    assert sum(int(v) for k, v in got.items() if k.startswith("c")) == 8


def test_names_past_a_slots_capacity_are_counted_as_other() -> None:
    table = TaskTable(slots=1, names=4)
    for name in ("a", "b", "c", "d", "e", "a"):
        table.record(0, name, "succeeded", 0.01)
    names = [table.name_at(e) for e in table.entries()]
    assert names == ["a", "b", "c", OTHER]
    other = array("d", table.raw(table.entries()[-1]))
    assert other[0] == 2  # d and e
    assert len(other) == FIELDS


def test_states_other_than_success_failure_retry_are_not_counted() -> None:
    table = TaskTable(slots=1)
    counter = TaskCounter(table)
    for state in ("SUCCESS", "FAILURE", "RETRY", "IGNORED", "REJECTED"):
        counter.started("x")
        counter.finished("x", "t", state)
    counter.failed_elsewhere("lost", "t")  # ran elsewhere (a lost child): failed, no runtime
    counter.failed_elsewhere("lost", "t")  # a hard time limit is reported twice: once
    counter.started("here")
    counter.failed_elsewhere("here", "t")  # runs here: finished() counts it, not this
    row = array("d", table.raw(table.entries()[0]))
    assert (row[0], row[1], row[2]) == (1, 2, 1)
    assert sum(row[3::2]) == 3  # three timed runs


class LosesReplies:
    """Runs the script, then raises as if the reply had been lost on the way back."""

    def __init__(self, client: redis.Redis) -> None:
        self.client, self.lose = client, 1

    def eval(self, *args: Any) -> Any:
        reply = self.client.eval(*args)
        if self.lose:
            self.lose -= 1
            raise redis.ConnectionError("reply lost")
        return reply


def test_a_flush_whose_reply_was_lost_is_sent_again_and_applied_once(
    client: redis.Redis, prefix: str,
) -> None:
    table = TaskTable(slots=1)
    flusher = TaskFlusher(table, "celery@a")
    for _ in range(3):
        table.record(0, "app.t", "succeeded", 0.05)
    lossy = LosesReplies(client)
    with pytest.raises(redis.ConnectionError):
        flusher.flush(lossy, prefix)  # applied in Redis, not acknowledged here
    table.record(0, "app.t", "succeeded", 0.05)  # the 4th: waits for the next flush
    assert flusher.flush(lossy, prefix)  # the same flush again: applied once
    assert flusher.flush(lossy, prefix)  # then the 4th
    assert not flusher.flush(lossy, prefix)  # nothing new: no round trip
    claim = claim_counts(client, prefix, TaskRequest("c", mode="peek"))
    (minute,) = claim.minutes
    assert minute.tasks["app.t"].succeeded == 4 and minute.tasks["app.t"].runs == 4
    assert minute.tasks["app.t"].histogram()[0] == (0.05,)


def test_flush_script_applies_each_sequence_number_once(client: redis.Redis, prefix: str) -> None:
    assert flush_counts(client, prefix, "w:1", 1, [("s:a", "2")], at=120.0) == 120
    assert flush_counts(client, prefix, "w:1", 1, [("s:a", "2")], at=120.0) is None
    assert flush_counts(client, prefix, "w:2", 1, [("s:a", "1")], at=150.0) == 120  # another
    assert client.hget(tasks_key(prefix, "m:120"), "s:a") == b"3"
    assert client.pttl(tasks_key(prefix, "m:120")) > 0  # a dead collector cannot fill Redis


# --- claims and commits ----------------------------------------------------------------------


def test_claim_commit_lease_and_peek(client: redis.Redis, prefix: str) -> None:
    flush_counts(client, prefix, "w:1", 1, [("s:a", "2"), ("f:b", "1")], at=60.0)
    flush_counts(client, prefix, "w:1", 2, [("s:a", "1")], at=125.0)
    peek = claim_counts(client, prefix, TaskRequest("A", mode="peek"))
    assert peek.state == "peeked" and [m.minute for m in peek.minutes] == [60, 120]
    assert client.zcard(tasks_key(prefix, "minutes")) == 2  # a peek changes nothing
    a = claim_counts(client, prefix, TaskRequest("A"))
    assert a.state == "claimed" and a.owned == (60, 120)
    assert claim_counts(client, prefix, TaskRequest("B")).state == "busy"  # A's lease
    flush_counts(client, prefix, "w:1", 3, [("s:a", "5")], at=125.0)  # after A's claim
    again = claim_counts(client, prefix, TaskRequest("A"))  # A's publish failed: all again
    assert again.owned == (60, 120) and again.minutes[1].tasks["a"].succeeded == 6
    assert commit_claim(client, prefix, "A", [60]) == "ok"
    rest = claim_counts(client, prefix, TaskRequest("A"))
    assert rest.owned == (120,)
    assert commit_claim(client, prefix, "A", [120]) == "ok"
    assert not client.exists(tasks_key(prefix, "lease"))  # nothing left: the lease is free
    assert claim_counts(client, prefix, TaskRequest("B")) .minutes == ()


def test_a_collector_that_died_holding_a_claim_is_taken_over_after_its_lease(
    client: redis.Redis, prefix: str,
) -> None:
    flush_counts(client, prefix, "w:1", 1, [("s:a", "7")], at=60.0)
    dead = claim_counts(client, prefix, TaskRequest("dead", lease=0.3))
    assert dead.owned == (60,)
    assert claim_counts(client, prefix, TaskRequest("next")).state == "busy"
    time.sleep(0.4)
    taken = claim_counts(client, prefix, TaskRequest("next"))
    assert taken.owned == (60,) and taken.minutes[0].tasks["a"].succeeded == 7
    assert commit_claim(client, prefix, "dead", [60]) == "taken"  # too late: said so


def test_at_most_max_minutes_per_claim_oldest_first(client: redis.Redis, prefix: str) -> None:
    for i in range(5):
        flush_counts(client, prefix, "w:1", i + 1, [("s:a", "1")], at=60.0 * (i + 1))
    first = claim_counts(client, prefix, TaskRequest("A", max_minutes=3))
    assert first.owned == (60, 120, 180)
    commit_claim(client, prefix, "A", first.owned)
    assert claim_counts(client, prefix, TaskRequest("A", max_minutes=3)).owned == (240, 300)


def test_commits_ride_the_next_claim(client: redis.Redis, prefix: str) -> None:
    flush_counts(client, prefix, "w:1", 1, [("s:a", "1")], at=60.0)
    assert claim_counts(client, prefix, TaskRequest("A")).owned == (60,)
    flush_counts(client, prefix, "w:1", 2, [("s:a", "1")], at=120.0)
    nxt = claim_counts(client, prefix, TaskRequest("A", commit=(60,)))  # 60 was published
    assert nxt.owned == (120,)


def test_the_ranking_is_by_volume_today_and_yesterday(client: redis.Redis, prefix: str) -> None:
    flush_counts(client, prefix, "w:1", 1, [("s:big", "50"), ("f:mid", "20"), ("r:small", "5"),
                                            ("c3:big", "50")])
    claim = claim_counts(client, prefix, TaskRequest("A", top=2))
    assert claim.ranking == ("big", "mid")
    day = int(time.time() // 86400)
    assert client.zscore(tasks_key(prefix, f"volume:{day}"), "big") == 50  # c3 not volume


def test_the_standalone_claim_works_on_fakeredis_too() -> None:
    fake = fakeredis.FakeRedis()
    flush_counts(fake, "", "w:1", 1, [("s:a", "1"), ("t4:a", "250000"), ("c4:a", "1")], at=60.0)
    claim = claim_counts(fake, "", TaskRequest("A"))
    assert claim.owned == (60,) and claim.minutes[0].tasks["a"].buckets == {4: [1.0, 0.25]}


def test_a_name_not_yet_fully_visible_is_flushed_at_the_next_beat() -> None:
    """Another process's name write may show its length before its bytes (weakly ordered
    CPUs): the length carries a checksum, and such an entry waits for the next flush."""
    table = TaskTable(slots=1)
    table.record(0, "app.visible", "succeeded", None)
    entry = table.entries()[0]
    tag = table._name_len[entry]
    at = entry * 255
    table._name_bytes[at:at + 3] = b"xxx"  # as if the bytes were not there yet
    flusher = TaskFlusher(table, "n")
    assert table.name_at(entry) is None and flusher.pending() is None
    table._name_bytes[at:at + 3] = b"app"
    assert table._name_len[entry] == tag and table.name_at(entry) == "app.visible"
    pending = flusher.pending()
    assert pending is not None and dict(pending[1]) == {"s:app.visible": "1"}


@pytest.mark.parametrize("options,slots", [
    ({"concurrency": 3, "pool": "prefork"}, 4),  # the main process and one per child
    ({"autoscale": (8, 2), "pool": "prefork"}, 9),  # the autoscaler's maximum
    ({"concurrency": 4, "pool": "threads"}, 1),  # threads count in the main process
    ({"pool": "solo"}, 1),
])
def test_the_table_has_a_slot_per_pool_process(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], slots: int,
) -> None:
    import importlib
    import warnings

    from celery.worker import WorkController

    from toolkit.worker import bootstep

    monkeypatch.setenv("HC_BROKER", "redis://127.0.0.1:6379/2")
    monkeypatch.setenv("C_FORCE_ROOT", "1")  # the suite may run as root; nothing is started
    app = importlib.import_module("tests.task_app").app
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the bare WorkController (not app.Worker): built, not started, no logging set up
            WorkController(app=app, **options, without_mingle=True, without_gossip=True,
                           hostname="slots@probe")
        assert bootstep._ACTIVE is not None and bootstep._ACTIVE.counter is not None
        assert bootstep._ACTIVE.counter.table.slots == slots
    finally:
        bootstep._ACTIVE = None

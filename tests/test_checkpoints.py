"""toolkit.checkpoints on SQLite and on the real MariaDB (127.0.0.1:3306, database test):
versioned saves, concurrent writers, SIGKILL mid-run then resume, corrupt rows, unreachable
databases."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.conftest import MYSQL_URL, free_port
from tests.helpers import task_safety
from toolkit.errors import ToolkitError
from toolkit.tasks.checkpoints import (
    CheckpointCorrupt,
    CheckpointError,
    CheckpointStore,
    CheckpointUnavailable,
    StaleCheckpoint,
    checkpointed,
    open_store,
)

SPAWN = mp.get_context("spawn")


def mysql_conn() -> pymysql.Connection:  # type: ignore[type-arg]
    return pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test",
                           autocommit=True, connect_timeout=2)


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def url(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> Iterator[str]:
    """A store URL with its own table, dropped afterwards."""
    table = f"ckpt_{unique}"
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'checkpoints.db'}?table={table}"
        return
    try:
        conn = mysql_conn()
    except pymysql.MySQLError:
        # the suite needs the real services (.ci/run starts them): a skip would hide the gap
        pytest.fail("no MariaDB on 127.0.0.1:3306 (root, no password, database test)",
                    pytrace=False)
    yield f"{MYSQL_URL}?table={table}"
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS `{table}`")
    conn.close()


@pytest.fixture
def store(url: str) -> Iterator[CheckpointStore]:
    with open_store(url) as s:
        yield s


def raw_execute(url: str, sql: str, params: tuple[object, ...]) -> None:
    """Write behind the store's back (to plant corrupt rows)."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///").split("?")[0]
        with sqlite3.connect(path) as conn:
            conn.execute(sql.replace("%s", "?").replace("`", '"'), params)
        return
    conn = mysql_conn()
    with conn.cursor() as cur:
        cur.execute(sql, params)
    conn.close()


# --- basic contract -------------------------------------------------------------------------


def test_save_load_clear(store: CheckpointStore) -> None:
    assert store.load("reports.rebuild", "2024-06") is None
    assert store.save("reports.rebuild", "2024-06", {"position": 5, "ids": [1, 2]}) == 1
    assert store.save("reports.rebuild", "2024-06", {"position": 9}) == 2
    assert store.load("reports.rebuild", "2024-06") == {"position": 9}
    assert store.load("reports.rebuild", "2024-07") is None  # keys are separate
    assert store.load("reports.other", "2024-06") is None  # tasks are separate
    got = store.get("reports.rebuild", "2024-06")
    assert got is not None and got.version == 2 and abs(got.updated_at - time.time()) < 5
    assert store.clear("reports.rebuild", "2024-06") is True
    assert store.clear("reports.rebuild", "2024-06") is False
    assert store.load("reports.rebuild", "2024-06") is None


def test_keys_are_case_sensitive_and_unicode(store: CheckpointStore) -> None:
    store.save("t", "Key", {"a": "é"})
    store.save("t", "key", {"a": "😀"})
    assert store.load("t", "Key") == {"a": "é"}
    assert store.load("t", "key") == {"a": "😀"}


def test_trailing_spaces_make_different_keys(store: CheckpointStore) -> None:
    """MySQL/MariaDB VARCHAR with a PAD SPACE collation would make "k" and "k " one key."""
    store.save("t", "k", {"a": 1})
    store.save("t", "k ", {"a": 2})
    store.save("t ", "k", {"a": 3})
    assert store.load("t", "k") == {"a": 1}
    assert store.load("t", "k ") == {"a": 2}
    assert store.load("t ", "k") == {"a": 3}
    assert store.clear("t", "k ") is True
    assert store.load("t", "k") == {"a": 1}


def test_stale_writer_cannot_overwrite_newer_progress(store: CheckpointStore) -> None:
    assert store.save("t", "k", {"position": 500}, version=500) == 500
    with pytest.raises(StaleCheckpoint) as stale:
        store.save("t", "k", {"position": 100}, version=100)
    assert stale.value.stored == 500 and stale.value.version == 100
    assert "task 't' key 'k'" in str(stale.value)
    with pytest.raises(StaleCheckpoint):
        store.save("t", "k", {"position": 999}, version=500)  # equal is not newer
    assert store.load("t", "k") == {"position": 500}
    assert store.save("t", "k", {"position": 600}, version=600) == 600
    assert store.get("t", "k").version == 600  # type: ignore[union-attr]


def test_completion_leaves_a_tombstone_stale_writers_cannot_overwrite(url: str) -> None:
    now = [1000.0]
    with open_store(url, clock=lambda: now[0]) as s:
        s.save("t", "k", {"position": 100}, version=100)
        assert s.complete("t", "k", version=400) == 400
        assert s.load("t", "k") is None and s.get("t", "k") is None  # "no checkpoint"
        assert s.completed("t", "k") == 400
        with pytest.raises(StaleCheckpoint) as stale:  # a run that was between saves
            s.save("t", "k", {"position": 350}, version=350)
        assert stale.value.completed is True and stale.value.stored == 400
        assert "completed at version 400" in str(stale.value)
        assert s.load("t", "k") is None  # the stale progress did not come back
        # the next run of the key writes above the tombstone
        assert s.save("t", "k", {"position": 1}, version=401) == 401
        assert s.completed("t", "k") is None and s.load("t", "k") == {"position": 1}
        assert s.complete("t", "k", version=5) == 401  # completing never lowers the version
        assert s.complete("t", "new") == 1  # nothing saved before: version 1
        now[0] += 8 * 86400
        assert s.purge(older_than=7 * 86400) == 2  # tombstones are purged like checkpoints
        assert s.completed("t", "k") is None and s.completed("t", "new") is None


def test_conditional_clear(store: CheckpointStore) -> None:
    store.save("t", "k", {"position": 5}, version=5)
    assert store.clear("t", "k", version=4) is False
    assert store.load("t", "k") == {"position": 5}
    assert store.clear("t", "k", version=5) is True
    assert store.load("t", "k") is None


def test_purge_deletes_old_checkpoints(url: str) -> None:
    now = [1000.0]
    with open_store(url, clock=lambda: now[0]) as s:
        s.save("t", "old", {})
        now[0] = 5000.0
        s.save("t", "new", {})
        assert s.purge(older_than=3600) == 1
        assert s.load("t", "old") is None and s.load("t", "new") == {}


def test_bad_arguments(store: CheckpointStore) -> None:
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        store.save("t", "k", {"when": object()})
    with pytest.raises(CheckpointError, match="must be a dict"):
        store.save("t", "k", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="version must be an integer >= 1"):
        store.save("t", "k", {}, version=0)
    for bad in (1.5, 2.0, True, "3", 2**63):
        with pytest.raises(CheckpointError, match="version must be an integer"):
            store.save("t", "k", {}, version=bad)  # type: ignore[arg-type]
        with pytest.raises(CheckpointError, match="version must be an integer"):
            store.complete("t", "k", version=bad)  # type: ignore[arg-type]
        with pytest.raises(CheckpointError, match="version must be an integer"):
            store.clear("t", "k", version=bad)  # type: ignore[arg-type]
    assert store.save("t", "k", {}, version=2**63 - 1) == 2**63 - 1
    assert store.clear("t", "k") is True
    with pytest.raises(CheckpointError, match="longer than 191"):
        store.load("t", "k" * 192)
    with pytest.raises(CheckpointError, match="non-empty string"):
        store.load("", "k")
    assert store.load("t", "k") is None  # nothing was written


# --- corrupt rows ---------------------------------------------------------------------------


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", "NaN-ish"])
def test_corrupt_checkpoint_names_task_and_key(url: str, garbage: str) -> None:
    with open_store(url) as s:
        s.save("billing.run", "acct-7", {"position": 3})
        table = url.split("table=")[1]
        sql = f"UPDATE `{table}` SET state = %s WHERE task_key = %s"
        raw_execute(url, sql, (garbage, "acct-7"))
        with pytest.raises(CheckpointCorrupt, match="task 'billing.run' key 'acct-7'") as err:
            s.load("billing.run", "acct-7")
        assert err.value.task == "billing.run" and err.value.key == "acct-7"
        assert isinstance(err.value, CheckpointError) and isinstance(err.value, ToolkitError)
        with pytest.raises(CheckpointCorrupt):  # the helper refuses too: no silent restart
            list(checkpointed(s, "billing.run", "acct-7", range(5)))
    with open_store(url, on_corrupt="restart") as s:  # starting over only when configured
        assert s.load("billing.run", "acct-7") is None
        assert s.get("billing.run", "acct-7") is None  # and the bad row is gone


def test_restart_deletes_only_the_corrupt_version_it_read(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = url.split("table=")[1]
    with open_store(url, on_corrupt="restart") as s:
        s.save("t", "k", {"position": 3}, version=3)
        raw_execute(url, f"UPDATE `{table}` SET state = %s WHERE task_key = %s", ("{bad", "k"))
        real_fetch = s._fetch

        def fetch_then_newer_progress_lands(task: str, key: str) -> Any:
            row = real_fetch(task, key)  # the corrupt row, version 3
            raw_execute(url, f"UPDATE `{table}` SET state = %s, version = 4 WHERE task_key = %s",
                        ('{"position":4}', "k"))  # another run saves between read and delete
            return row

        monkeypatch.setattr(s, "_fetch", fetch_then_newer_progress_lands)
        assert s.load("t", "k") is None  # what it read was corrupt: starting over
        monkeypatch.undo()
        assert s.load("t", "k") == {"position": 4}  # the newer row was not deleted


def test_malformed_position_is_corrupt_for_the_helper(store: CheckpointStore) -> None:
    store.save("t", "k", {"position": "seven"})
    with pytest.raises(CheckpointCorrupt, match=r"'position' must be a non-negative integer"):
        next(checkpointed(store, "t", "k", range(10)))


# --- the resume helper ----------------------------------------------------------------------


def test_checkpointed_saves_every_n_and_clears_at_the_end(store: CheckpointStore) -> None:
    versions: list[int | None] = []
    for item in checkpointed(store, "t", "k", range(10), every=4, seconds=3600):
        got = store.get("t", "k")
        versions.append(None if got is None else got.version)
        assert item == len(versions) - 1
    assert versions == [None] * 4 + [4] * 4 + [8] * 2  # saved once 4 and 8 items were done
    assert store.load("t", "k") is None


def test_checkpointed_saves_every_s_seconds(store: CheckpointStore) -> None:
    now = [0.0]
    positions = []
    for _ in checkpointed(store, "t", "k", range(6), every=1000, seconds=10, clock=lambda: now[0]):
        now[0] += 4  # each item takes 4 "seconds"
        state = store.load("t", "k")
        positions.append(None if state is None else state["position"])
    assert positions == [None, None, None, 3, 3, 3]  # saved once 3 items were done (12 s)


def test_checkpointed_resumes_and_saves_on_error(store: CheckpointStore) -> None:
    handled: list[int] = []
    with pytest.raises(RuntimeError):
        for item in checkpointed(store, "t", "k", range(20), every=100):
            if item == 7:
                raise RuntimeError("transient")
            handled.append(item)
    assert store.load("t", "k") == {"position": 7}  # saved on the way out, not at 100
    handled += list(checkpointed(store, "t", "k", range(20), every=100))
    assert handled == list(range(20))  # nothing lost, nothing twice
    assert store.load("t", "k") is None


def test_checkpointed_with_block_saves_on_error_even_while_referenced(
    store: CheckpointStore,
) -> None:
    run = checkpointed(store, "t", "k", range(20), every=100)
    with pytest.raises(RuntimeError), run as todo:
        for item in todo:
            if item == 7:
                raise RuntimeError("transient")
    # `run` is still referenced, so generator finalisation has not happened: the with block
    # saved the position when it ended, before the exception reached the caller
    assert store.load("t", "k") == {"position": 7}
    with checkpointed(store, "t", "k", range(20), every=100) as todo:
        for item in todo:
            if item == 12:
                break
    assert store.load("t", "k") == {"position": 12}  # break saves too
    with checkpointed(store, "t", "k", range(20), every=100) as todo:
        assert list(todo) == list(range(12, 20))
    assert store.load("t", "k") is None and store.completed("t", "k") == 20
    with pytest.raises(CheckpointError, match="every must be at least 1"):
        checkpointed(store, "t", "k", range(3), every=0)  # checked at once, not at next()


def test_stale_run_after_completion_is_refused(store: CheckpointStore) -> None:
    stale = checkpointed(store, "t", "k", range(30), every=5)
    assert [next(stale) for _ in range(3)] == [0, 1, 2]
    assert list(checkpointed(store, "t", "k", range(30), every=5)) == list(range(30))
    assert store.load("t", "k") is None and store.completed("t", "k") == 30
    with pytest.raises(StaleCheckpoint) as err:  # its save at position 5 is refused
        for _ in stale:
            pass
    assert err.value.completed is True
    assert store.load("t", "k") is None  # the completed work's checkpoint did not come back
    # a new run of the same key starts over, its versions above the tombstone
    with checkpointed(store, "t", "k", range(30), every=5) as again:
        assert [next(again) for _ in range(6)] == list(range(6))
        got = store.get("t", "k")
        assert got is not None and got.state == {"position": 5} and got.version == 35
    resumed = checkpointed(store, "t", "k", range(30), every=5)
    assert next(resumed) == 5  # position 5 of the new run, not of the old one
    resumed.close()


def test_checkpointed_stops_a_stale_run(store: CheckpointStore) -> None:
    stale = checkpointed(store, "t", "k", range(100), every=5)
    assert [next(stale) for _ in range(3)] == [0, 1, 2]
    store.save("t", "k", {"position": 50}, version=50)  # a newer run got further
    with pytest.raises(StaleCheckpoint):
        for _ in stale:
            pass
    assert store.load("t", "k") == {"position": 50}


# --- processes: SIGKILL and resume, concurrent writers --------------------------------------


def test_sigkilled_run_resumes_from_its_last_checkpoint(url: str, tmp_path: Path) -> None:
    total, every = 400, 25
    side = tmp_path / "handled.txt"
    args = (url, "import.rows", "batch-1", total, every, str(side), 0.002)
    first = SPAWN.Process(target=task_safety.process_items, args=args)
    first.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _count(side) < 160:
        time.sleep(0.005)
    first.kill()
    first.join(5)
    assert first.exitcode == -9
    before = [int(x) for x in side.read_text().split()]
    with open_store(url) as s:
        position = s.load("import.rows", "batch-1")["position"]  # type: ignore[index]
    assert 160 <= len(before) < total  # killed mid-run
    assert before == list(range(len(before)))
    assert position % every == 0 and 0 <= len(before) - position <= every

    second = SPAWN.Process(target=task_safety.process_items, args=args)
    second.start()
    second.join(30)
    assert second.exitcode == 0
    handled = [int(x) for x in side.read_text().split()]
    counts = Counter(handled)
    assert set(counts) == set(range(total))  # no item lost
    twice = sorted(i for i, n in counts.items() if n > 1)
    assert twice == list(range(position, len(before)))  # only those after the checkpoint
    assert len(twice) <= every and max(counts.values()) <= 2
    with open_store(url) as s:
        assert s.load("import.rows", "batch-1") is None  # cleared on completion
    print(f"\nkill/resume {url.split(':')[0]}: killed after {len(before)} items, "
          f"checkpoint at {position}, {len(twice)} redone (every={every})")


def _count(path: Path) -> int:
    try:
        return path.read_text().count("\n")
    except FileNotFoundError:
        return 0


def _run_writers(target: Any, arg_lists: list[tuple[Any, ...]]) -> list[Any]:
    """Start one spawned writer per argument tuple; they wait on one barrier, so they overlap."""
    barrier, results = SPAWN.Barrier(len(arg_lists)), SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(*args, barrier, results)) for args in arg_lists]
    for p in procs:
        p.start()
    outs = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return outs


def test_concurrent_conditional_writers(url: str) -> None:
    open_store(url).close()  # create the table once
    versions = list(range(1, 301))
    shares = [versions[i::3] for i in range(3)]
    shares[1].reverse()  # one writer goes backwards: 299, 296, ..., 2
    outs = _run_writers(task_safety.conditional_writer, [(url, "t", "cond", s) for s in shares])
    # the writers overlapped: each started before any other had finished
    assert max(out[0][2] for out in outs) < min(out[-1][3] for out in outs)
    saves = [save for out in outs for save in out]
    assert sorted(v for v, *_ in saves) == versions
    accepted = [save for save in saves if save[1]]
    refused = [save for save in saves if not save[1]]
    backwards = next(out for out in outs if out[0][0] == 299)
    # after its first save (299) the stored version is >= 299: nothing lower may land
    assert all(not ok for _, ok, *_ in backwards[1:])
    assert 300 in {v for v, *_ in accepted}  # the highest version always lands
    for v, _, _, ended, stored in refused:
        assert stored is not None and stored >= v  # refused only by an equal or newer version
        # ... that was written before this save finished
        assert any(w > v and w_start < ended for w, _, w_start, _, _ in accepted), v
    for v, _, started, _, _ in accepted:
        # no save landed after a higher version had finished landing
        assert not any(w > v and w_end < started for w, _, _, w_end, _ in accepted), v
    with open_store(url) as s:
        final = s.get("t", "cond")
        assert final is not None and final.version == 300 and final.state == {"v": 300}


def test_concurrent_unconditional_writers(url: str) -> None:
    open_store(url).close()
    outs = _run_writers(task_safety.bumping_writer, [(url, "t", "bump", 100)] * 3)
    assert max(started for _, started, _ in outs) < min(ended for _, _, ended in outs)
    got = sorted(v for versions, _, _ in outs for v in versions)
    assert got == list(range(1, 301))  # every save got its own version: no increment lost
    with open_store(url) as s:
        bumped = s.get("t", "bump")
        assert bumped is not None and bumped.version == 300


# --- unreachable databases and bad URLs -----------------------------------------------------


def test_unreachable_mysql_hides_the_password() -> None:
    url = f"mysql://app:s3cret-pw@127.0.0.1:{free_port()}/test?connect_timeout=1"
    with pytest.raises(CheckpointUnavailable) as err:
        open_store(url)
    message = str(err.value)
    assert "cannot connect to checkpoint database mysql://app:***@127.0.0.1:" in message
    # what a log handler prints (the chain included), and the suppressed context itself
    printed = "".join(traceback.format_exception(err.value))
    assert "cannot connect to checkpoint database" in printed
    assert "s3cret-pw" not in printed
    assert "s3cret-pw" not in repr(err.value.__context__)
    assert err.value.__cause__ is None and err.value.__suppress_context__


@pytest.mark.mysql
def test_wrong_mysql_password_is_a_clear_error() -> None:
    with pytest.raises(CheckpointUnavailable, match=r"\(1045\) Access denied") as err:
        open_store("mysql://nobody-here:wr0ng-pw@127.0.0.1:3306/test")
    assert "wr0ng-pw" not in str(err.value)


def test_sqlite_file_that_cannot_be_opened(tmp_path: Path) -> None:
    with pytest.raises(CheckpointUnavailable, match="unable to open database file"):
        open_store(f"sqlite:///{tmp_path}/missing-dir/ckpt.db")


def test_sqlite_errors_that_are_not_unavailability(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database\n" * 200)
    with pytest.raises(CheckpointError, match="not a database") as err:
        open_store(f"sqlite:///{garbage}")
    assert not isinstance(err.value, CheckpointUnavailable)
    path = tmp_path / "ok.db"
    with open_store(f"sqlite:///{path}?table=ckpt") as s:
        with sqlite3.connect(path) as other:
            other.execute("DROP TABLE ckpt")
        with pytest.raises(CheckpointError, match="no such table") as err:
            s.load("t", "k")
        assert not isinstance(err.value, CheckpointUnavailable)


def test_sqlite_locked_database_is_unavailable(tmp_path: Path) -> None:
    from toolkit.tasks.checkpoints.sqlite import SQLiteStore

    path = tmp_path / "locked.db"
    store = SQLiteStore(str(path), timeout=0.1)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(CheckpointUnavailable, match="database is locked"):
            store.save("t", "k", {})
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.save("t", "k", {}) == 1
    store.close()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("postgres://u:pw@h/db", r"unsupported checkpoint URL postgres://u:\*\*\*@h/db"),
        ("sqlite:///", "names no file"),
        ("mysql://root@127.0.0.1:3306/", "names no database"),
        ("sqlite:///x.db?table=drop;table", "invalid checkpoint table name"),
    ],
)
def test_bad_urls(bad: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        open_store(bad)


def test_worked_example_lock_and_checkpoint_together(tmp_path: Path) -> None:
    """docs/task-safety.md's example, eagerly: a failure mid-run retries from the checkpoint."""
    import fakeredis
    from celery import Celery

    from toolkit.errors import LockError
    from toolkit.tasks.decorator import single_instance

    app = Celery("billing", broker="memory://", set_as_current=False)
    store = open_store(f"sqlite:///{tmp_path / 'billing.db'}")
    redis_client = fakeredis.FakeRedis()
    sent: list[int] = []
    failed_once: list[int] = []

    @app.task(bind=True, max_retries=3, autoretry_for=(LockError, CheckpointError, ConnectionError),
              dont_autoretry_for=(StaleCheckpoint,), default_retry_delay=0)
    @single_instance(ttl=30, key_args=("account_id", "month"), client=redis_client)
    def bill_account(self: object, account_id: int, month: str) -> int:
        done = 0
        with checkpointed(store, "billing.bill_account", f"{account_id}:{month}",
                          range(40), every=5) as invoices:
            for invoice in invoices:
                if invoice == 17 and not failed_once:
                    failed_once.append(invoice)
                    raise ConnectionError("SMTP went away")
                sent.append(invoice)
                done += 1
        return done

    assert bill_account.apply((42, "2024-06")).get() == 40 - 17  # the retry's own count
    assert sent == list(range(40))  # resumed at the failed invoice: none lost, none twice
    assert store.load("billing.bill_account", "42:2024-06") is None
    assert store.completed("billing.bill_account", "42:2024-06") == 40
    assert redis_client.keys("*") == []
    store.close()

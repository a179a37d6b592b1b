"""toolkit.locks: lock logic on fakeredis, races, kills and renewal on the real Redis (db 4),
the single_instance decorator on eager tasks and on a real Celery worker."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import fakeredis
import pytest
import redis
from celery import Celery
from celery.exceptions import MaxRetriesExceededError
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import REDIS_HOST, REDIS_PORT, free_port
from tests.helpers import task_safety
from toolkit.errors import LockError, ToolkitError
from toolkit.tasks.decorator import (
    REDELIVERY_MARGIN,
    broker_redis,
    current_lock,
    lock_name,
    single_instance,
)
from toolkit.tasks.lock import DEFAULT_PREFIX, SKIPPED, LockNotAcquired, LockUnavailable, TaskLock

REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/4"
SPAWN = mp.get_context("spawn")


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def real(unique: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        # the suite needs the real services (.ci/run starts them): a skip would hide the gap
        pytest.fail("no Redis on 127.0.0.1:6379", pytrace=False)
    yield client
    for key in client.scan_iter(f"*{unique}*"):
        client.delete(key)
    client.close()


def dead_redis() -> redis.Redis:
    """A client for a closed port, without redis-py's default retries and backoff."""
    return redis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


# --- TaskLock on fakeredis ------------------------------------------------------------------


def test_acquire_is_exclusive_and_release_frees(fake: fakeredis.FakeRedis) -> None:
    a, b = TaskLock(fake, "job", 10), TaskLock(fake, "job", 10)
    assert a.acquire() is True
    assert fake.get(DEFAULT_PREFIX + "job") == a.token.encode()  # type: ignore[union-attr]
    assert 9000 < fake.pttl(DEFAULT_PREFIX + "job") <= 10000
    assert b.acquire() is False
    assert b.token is None
    assert a.release() is True
    assert fake.exists(DEFAULT_PREFIX + "job") == 0
    assert b.acquire() is True


def test_release_by_non_owner_is_refused(fake: fakeredis.FakeRedis) -> None:
    owner, other = TaskLock(fake, "job", 10), TaskLock(fake, "job", 10)
    owner.acquire()
    assert other.release() is False
    other.token = "forged"  # a stale owner whose lock expired and was re-taken looks like this
    assert other.release() is False
    assert other.extend() is False
    assert fake.get(owner.key) == owner.token.encode()  # type: ignore[union-attr]


def test_expired_owner_cannot_release_the_next_owner(fake: fakeredis.FakeRedis) -> None:
    first, second = TaskLock(fake, "job", 0.05), TaskLock(fake, "job", 10)
    first.acquire()
    time.sleep(0.1)
    assert second.acquire() is True
    assert first.release() is False
    assert first.extend() is False
    assert second.owned() is True


def test_extend_resets_the_ttl(fake: fakeredis.FakeRedis) -> None:
    lock = TaskLock(fake, "job", 1)
    lock.acquire()
    assert lock.extend(30) is True
    assert 29000 < fake.pttl(lock.key) <= 30000
    assert lock.extend() is True
    assert fake.pttl(lock.key) <= 1000


def test_wait_gives_up_after_the_timeout(fake: fakeredis.FakeRedis) -> None:
    TaskLock(fake, "job", 10).acquire()
    lock = TaskLock(fake, "job", 10, retry_interval=0.01)
    started = time.monotonic()
    assert lock.acquire(wait=0.2) is False
    assert 0.18 <= time.monotonic() - started < 1.0


def test_wait_succeeds_when_the_holders_ttl_runs_out(fake: fakeredis.FakeRedis) -> None:
    holder = TaskLock(fake, "job", 0.15)
    holder.acquire()
    started = time.monotonic()
    assert TaskLock(fake, "job", 10, retry_interval=0.01).acquire(wait=2) is True
    assert 0.1 <= time.monotonic() - started < 1.0  # freed by the holder's TTL
    assert holder.release() is False  # ... not released by the holder


def test_wait_succeeds_when_the_holder_releases(fake: fakeredis.FakeRedis) -> None:
    holder = TaskLock(fake, "job", 60)
    holder.acquire()
    releaser = threading.Timer(0.15, holder.release)
    releaser.start()
    started = time.monotonic()
    assert TaskLock(fake, "job", 10, retry_interval=0.01).acquire(wait=2) is True
    assert 0.1 <= time.monotonic() - started < 1.0  # long before the holder's 60 s TTL
    releaser.join()


def test_context_manager_raises_when_held(fake: fakeredis.FakeRedis) -> None:
    TaskLock(fake, "job", 10).acquire()
    with pytest.raises(LockNotAcquired, match="celery-ecs:lock:job"), TaskLock(fake, "job", 10):
        pytest.fail("body ran without the lock")
    assert issubclass(LockNotAcquired, LockError) and issubclass(LockError, ToolkitError)


def test_context_manager_releases_on_error(fake: fakeredis.FakeRedis) -> None:
    with pytest.raises(ZeroDivisionError), TaskLock(fake, "job", 10) as lock:
        assert fake.exists(lock.key) == 1
        1 / 0  # noqa: B018
    assert fake.exists(DEFAULT_PREFIX + "job") == 0


def test_double_acquire_and_bad_ttl(fake: fakeredis.FakeRedis) -> None:
    lock = TaskLock(fake, "job", 10)
    lock.acquire()
    with pytest.raises(LockError, match="already held by this instance"):
        lock.acquire()
    with pytest.raises(ValueError, match="ttl"):
        TaskLock(fake, "job", 0)
    assert "held" in repr(lock)


def test_renewal_notices_a_lost_lock(fake: fakeredis.FakeRedis) -> None:
    lock = TaskLock(fake, "job", 0.3, auto_renew=True)
    lock.acquire()
    fake.set(lock.key, "someone-else")
    time.sleep(0.25)  # one renewal period (ttl / 3) and some
    assert lock.lost is True
    assert fake.get(lock.key) == b"someone-else"
    assert lock.release() is False


class FailingEval(fakeredis.FakeRedis):
    """``eval`` (extend, release) raises ``error`` ``failures`` times, then works again."""

    def __init__(self, error: Exception, failures: int = 1_000_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error, self.failures, self.calls = error, failures, 0

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:  # type: ignore[override]
        if "pexpire" in script:
            self.calls += 1
            if self.calls <= self.failures:
                raise self.error
        return super().eval(script, numkeys, *keys_and_args)


def renewers(lock: TaskLock) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"lock-renew:{lock.key}"]


def test_renewal_survives_any_error_until_the_ttl_runs_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FailingEval(ValueError("bad reply"))
    lock = TaskLock(client, "failing", 0.3, auto_renew=True)
    with caplog.at_level(logging.WARNING, logger="toolkit.locks"):
        lock.acquire()
        time.sleep(0.15)  # the first renewal (at 0.1 s) failed: the thread must still be alive
        assert renewers(lock) and lock.lost is False
        time.sleep(0.35)  # past the TTL: renewals kept failing, the lock is gone
    assert client.calls >= 3
    assert lock.lost is True
    assert renewers(lock) == []  # ... and the thread has stopped
    assert "renewal failed, retrying: ValueError: bad reply" in caplog.text
    assert "renewal kept failing until its TTL ran out" in caplog.text


def test_renewal_recovers_after_a_transient_error() -> None:
    client = FailingEval(ValueError("blip"), failures=1)
    lock = TaskLock(client, "blip", 0.3, auto_renew=True)
    lock.acquire()
    time.sleep(0.7)  # more than two TTLs
    assert client.calls >= 3 and lock.lost is False and lock.owned() is True
    assert lock.release() is True


class SlowExtend(fakeredis.FakeRedis):
    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:  # type: ignore[override]
        if "pexpire" in script:
            time.sleep(2)
        return super().eval(script, numkeys, *keys_and_args)


def test_release_does_not_wait_forever_for_a_stuck_renewal() -> None:
    lock = TaskLock(SlowExtend(), "stuck", 0.6, auto_renew=True)
    lock.join_timeout = 0.2
    lock.acquire()
    time.sleep(0.3)  # the renewal thread is now inside a 2 s eval (it started at 0.2 s)
    started = time.monotonic()
    assert lock.release() is True
    assert time.monotonic() - started < 1.0
    assert lock.lost is False  # its late extend found no token: not reported as a loss


def test_renewal_thread_stops_on_release(fake: fakeredis.FakeRedis) -> None:
    lock = TaskLock(fake, "renew-stop", 5, auto_renew=True)
    lock.acquire()
    assert [t.is_alive() for t in renewers(lock)] == [True]
    lock.release()
    assert renewers(lock) == []
    lock.acquire()  # a re-acquired lock gets one new renewal thread, not two
    assert len(renewers(lock)) == 1
    lock.release()
    assert renewers(lock) == []


def test_unreachable_redis_raises_lock_unavailable() -> None:
    lock = TaskLock(dead_redis(), "job", 10)
    with pytest.raises(LockUnavailable, match=r"cannot acquire lock .* on redis://127\.0\.0\.1:"):
        lock.acquire()


def test_lock_name_formats_and_hashes() -> None:
    assert lock_name("app.sync", []) == "app.sync"
    assert lock_name("app.sync", [("customer", 7), ("kind", "full")]) == (
        'app.sync(customer=7,kind="full")'
    )
    long = lock_name("app.sync", [("ids", list(range(100)))])
    assert long.startswith("app.sync(sha1:") and len(long) == len("app.sync(sha1:)") + 40
    assert long == lock_name("app.sync", [("ids", list(range(100)))])


# --- real Redis: race, kill, renewal --------------------------------------------------------


def _race(name: str, iterations: int, broken: bool = False) -> tuple[int, int, float]:
    holders, violations = SPAWN.Value("i", 0), SPAWN.Value("i", 0)
    acquired = SPAWN.Value("i", 0)
    barrier = SPAWN.Barrier(2)
    procs = [
        SPAWN.Process(
            target=task_safety.race,
            args=(REDIS_URL, name, iterations, holders, violations, acquired, barrier, broken),
        )
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    started = time.monotonic()
    for p in procs:
        p.join(60)
    elapsed = time.monotonic() - started
    assert [p.exitcode for p in procs] == [0, 0]
    return acquired.value, violations.value, elapsed


@pytest.mark.redis
def test_two_processes_race_1000_times_never_two_holders(
    real: redis.Redis, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    acquired, violations, elapsed = _race(f"race-{unique}", 1000)
    assert acquired == 2000
    assert violations == 0
    assert real.exists(DEFAULT_PREFIX + f"race-{unique}") == 0
    with capsys.disabled():
        print(f"\nlock race: 2 x 1000 acquisitions, {violations} overlaps, {elapsed:.2f}s")


@pytest.mark.redis
def test_race_harness_catches_a_broken_lock(real: redis.Redis, unique: str) -> None:
    acquired, violations, _ = _race(f"broken-{unique}", 300, broken=True)
    assert acquired == 600
    assert violations > 0


@pytest.mark.redis
def test_real_redis_release_by_a_non_owner_is_refused(real: redis.Redis, unique: str) -> None:
    owner, other = TaskLock(real, f"owner-{unique}", 10), TaskLock(real, f"owner-{unique}", 10)
    assert owner.acquire() is True
    assert other.acquire() is False and other.release() is False
    other.token = "forged"  # a stale owner whose lock expired and was re-taken
    assert other.release() is False and other.extend(60) is False
    assert real.get(owner.key) == owner.token.encode()  # type: ignore[union-attr]
    assert 9000 < real.pttl(owner.key) <= 10000  # not extended by the forger either
    assert owner.release() is True and real.exists(owner.key) == 0


@pytest.mark.redis
def test_lock_of_a_sigkilled_owner_expires_after_its_ttl(real: redis.Redis, unique: str) -> None:
    ready = SPAWN.Event()
    owner = SPAWN.Process(target=task_safety.hold, args=(REDIS_URL, f"kill-{unique}", 1.0, ready))
    owner.start()
    assert ready.wait(20)
    time.sleep(1.2)  # past one TTL: the owner's renewal thread keeps it
    other = TaskLock(real, f"kill-{unique}", 10, retry_interval=0.02)
    assert other.acquire() is False
    owner.kill()
    owner.join(5)
    killed = time.monotonic()
    assert owner.exitcode == -9
    assert other.acquire() is False  # still held right after the kill
    assert other.acquire(wait=3) is True
    assert 0.5 < time.monotonic() - killed <= 1.5  # freed by the TTL, not before
    other.release()


@pytest.mark.redis
def test_renewal_keeps_a_long_task_past_its_ttl(real: redis.Redis, unique: str) -> None:
    with TaskLock(real, f"long-{unique}", 0.6, auto_renew=True) as lock:
        time.sleep(2.0)  # more than three TTLs
        assert lock.owned() is True
        assert TaskLock(real, f"long-{unique}", 5).acquire() is False
        assert 0 < real.pttl(lock.key) <= 600
        assert lock.lost is False
    assert real.exists(lock.key) == 0
    # the control: the same lock without renewal is gone after its TTL
    plain = TaskLock(real, f"long-{unique}", 0.6)
    plain.acquire()
    time.sleep(0.8)
    assert plain.owned() is False
    assert TaskLock(real, f"long-{unique}", 5).acquire() is True


# --- single_instance on eager tasks ---------------------------------------------------------


def make_app(**conf: Any) -> Celery:
    app = Celery("locktest", set_as_current=False)
    app.conf.update(broker_url="memory://", **conf)
    return app


def test_duplicate_is_skipped_with_one_log_line(
    fake: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    app = make_app()

    @app.task(bind=True)
    @single_instance(client=fake, key_args=("customer",))
    def sync(self: Any, customer: int, full: bool = False) -> int:
        calls.append(customer)
        return customer * 10

    held = TaskLock(fake, lock_name(sync.name, [("customer", 1)]), 10)
    held.acquire()
    with caplog.at_level(logging.INFO, logger="toolkit.locks"):
        assert sync.apply((1,)).get() == SKIPPED
    ours = [r.getMessage() for r in caplog.records if r.name == "toolkit.locks"]
    assert ours == [f"{sync.name} skipped: already running (lock {held.key!r})"]
    assert sync.apply((2,), {"full": True}).get() == 20  # other arguments, other lock
    assert calls == [2]
    assert held.owned() is True  # the skipped run did not release the holder's lock


def test_lock_released_on_success_failure_and_retry(fake: fakeredis.FakeRedis) -> None:
    app = make_app()
    seen: list[int] = []
    key = DEFAULT_PREFIX + "locktest.work"

    @app.task(bind=True, name="locktest.work", max_retries=1, default_retry_delay=0)
    @single_instance(client=fake)
    def work(self: Any, mode: str) -> str:
        seen.append(fake.exists(key))
        if mode == "fail":
            raise ValueError("boom")
        if mode == "retry" and self.request.retries == 0:
            raise self.retry()
        return mode

    assert work.apply(("ok",)).get() == "ok"
    assert fake.exists(key) == 0
    failed = work.apply(("fail",))
    assert failed.state == "FAILURE" and isinstance(failed.result, ValueError)
    assert fake.exists(key) == 0
    assert work.apply(("retry",)).get() == "retry"  # the retry took the lock again
    assert fake.exists(key) == 0
    assert seen == [1, 1, 1, 1]  # every run held the lock while it ran


def test_duplicate_retried_on_request(fake: fakeredis.FakeRedis) -> None:
    app = make_app()
    calls: list[int] = []

    @app.task(bind=True, max_retries=2)
    @single_instance(client=fake, on_duplicate="retry", retry_countdown=0)
    def job(self: Any) -> int:
        calls.append(1)
        return 1

    TaskLock(fake, job.name, 10).acquire()
    result = job.apply()  # eager retries run inline, so they run out while the lock is held
    assert isinstance(result.result, MaxRetriesExceededError)
    assert calls == []


def test_current_lock_is_the_running_tasks_lock(fake: fakeredis.FakeRedis) -> None:
    app = make_app()
    seen: list[tuple[str, bool]] = []

    @app.task(bind=True)
    @single_instance(client=fake, key_args=("x",))
    def inspect_lock(self: Any, x: int) -> int:
        lock = current_lock()
        assert lock is not None
        seen.append((lock.key, lock.owned()))
        return x

    assert current_lock() is None
    assert inspect_lock.apply((3,)).get() == 3
    assert seen == [(DEFAULT_PREFIX + inspect_lock.name + "(x=3)", True)]
    assert current_lock() is None  # reset after the run


def test_lost_lock_is_logged_and_visible_to_the_task(
    fake: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    flags: list[bool] = []

    @app.task(bind=True, name="locktest.lossy")
    @single_instance(client=fake, ttl=0.3, key_args=("how",))
    def lossy(self: Any, how: str) -> str:
        lock = current_lock()
        assert lock is not None
        if how == "taken":  # another owner took it (e.g. after an expiry); renewal notices
            fake.set(lock.key, "someone-else")
            time.sleep(0.25)
        else:  # expired with no renewal run yet: only the release notices
            fake.delete(lock.key)
        flags.append(lock.lost)
        return how

    with caplog.at_level(logging.WARNING, logger="toolkit.locks"):
        assert lossy.apply(("taken",)).get() == "taken"
        assert lossy.apply(("expired",)).get() == "expired"
    assert flags == [True, False]
    lost = [r for r in caplog.records if "lost its lock" in r.getMessage()]
    assert len(lost) == 2 and all(r.levelno == logging.WARNING for r in lost)
    assert fake.get(DEFAULT_PREFIX + 'locktest.lossy(how="taken")') == b"someone-else"


def test_renewal_thread_stops_when_the_task_ends(fake: fakeredis.FakeRedis) -> None:
    app = make_app()
    locks: list[TaskLock] = []

    @app.task(bind=True)
    @single_instance(client=fake, ttl=5)
    def renewed(self: Any, fail: bool) -> int:
        lock = current_lock()
        assert lock is not None and len(renewers(lock)) == 1
        locks.append(lock)
        if fail:
            raise RuntimeError("boom")
        return 1

    renewed.apply((False,))
    renewed.apply((True,))
    assert len(locks) == 2 and [renewers(lock) for lock in locks] == [[], []]


class FakeTask:
    """Enough of a bound Celery task for SingleInstance.duplicate()."""

    name = "locktest.fake"

    def __init__(self, redelivered: bool | None) -> None:
        self.request = type("Request", (), {"delivery_info": {"redelivered": redelivered}})()
        self.retries: list[dict[str, Any]] = []

    def retry(self, **kwargs: Any) -> Exception:
        self.retries.append(kwargs)
        return RuntimeError("retry")


@pytest.mark.parametrize("mode", ["skip", "retry"])
def test_redelivered_duplicate_is_retried_after_the_locks_ttl(
    fake: fakeredis.FakeRedis, mode: str
) -> None:
    held = TaskLock(fake, "locktest.fake", 20)
    held.acquire()
    fake.pexpire(held.key, 7000)  # a dead run's lock, 7 s left
    options = single_instance(client=fake, on_duplicate=mode, retry_countdown=3)  # type: ignore[arg-type]
    task = FakeTask(redelivered=True)
    with pytest.raises(RuntimeError, match="retry"):
        options.duplicate(task, TaskLock(fake, "locktest.fake", 20))
    assert len(task.retries) == 1
    assert 7.0 < task.retries[0]["countdown"] <= 7.0 + REDELIVERY_MARGIN  # >= the TTL left
    # a first delivery is still skipped (or retried after retry_countdown)
    fresh = FakeTask(redelivered=False)
    if mode == "skip":
        assert options.duplicate(fresh, TaskLock(fake, "locktest.fake", 20)) == SKIPPED
    else:
        with pytest.raises(RuntimeError):
            options.duplicate(fresh, TaskLock(fake, "locktest.fake", 20))
        assert fresh.retries[0]["countdown"] == 3


def test_unreachable_redis_fails_closed_by_default() -> None:
    app = make_app()
    calls: list[int] = []

    @app.task
    @single_instance(client=dead_redis())
    def guarded() -> int:
        calls.append(1)
        return 1

    result = guarded.apply()
    assert isinstance(result.result, LockUnavailable)
    assert "cannot acquire lock 'celery-ecs:lock:" in str(result.result)
    assert calls == []


def test_unreachable_redis_fail_open_runs_the_task(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()

    @app.task
    @single_instance(client=dead_redis, fail_open=True)  # a factory is accepted too
    def relaxed() -> int:
        return 7

    with caplog.at_level(logging.WARNING, logger="toolkit.locks"):
        assert relaxed.apply().get() == 7
    assert "without its lock (fail_open)" in caplog.text


def test_default_client_fails_closed_quickly_when_redis_is_down() -> None:
    app = make_app()
    app.conf.broker_url = f"redis://127.0.0.1:{free_port()}/4"

    @app.task
    @single_instance()
    def closed() -> int:
        return 1

    started = time.monotonic()
    result = closed.apply()
    elapsed = time.monotonic() - started
    assert isinstance(result.result, LockUnavailable)
    assert elapsed < 0.5
    # an unanswered connect (a black-holed host) costs the connect timeout per attempt:
    # one immediate retry, not redis-py's default of 10 with backoff
    client, _ = broker_redis(app)
    retry = client.get_retry()  # type: ignore[attr-defined]
    assert retry is not None and retry.get_retries() == 1
    kwargs = client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
    assert kwargs["socket_connect_timeout"] == 2 and kwargs["socket_timeout"] == 5


@pytest.mark.redis
def test_default_client_is_the_brokers_redis_with_its_keyprefix(
    real: redis.Redis, unique: str
) -> None:
    app = make_app(broker_transport_options={"global_keyprefix": f"{unique}:"})
    app.conf.broker_url = REDIS_URL
    observed: list[int] = []

    @app.task(name=f"locktest.default-{unique}")
    @single_instance(ttl=30)
    def default_client() -> str:
        observed.append(real.exists(f"{unique}:{DEFAULT_PREFIX}locktest.default-{unique}"))
        return "done"

    assert default_client.apply().get() == "done"
    assert observed == [1]
    assert real.exists(f"{unique}:{DEFAULT_PREFIX}locktest.default-{unique}") == 0


def test_non_redis_broker_needs_a_client() -> None:
    app = make_app()
    app.conf.broker_url = "amqp://guest:secret@127.0.0.1:5672//"

    @app.task
    @single_instance()
    def amqp_task() -> int:
        return 1

    result = amqp_task.apply()
    assert isinstance(result.result, LockError)
    assert "pass client=" in str(result.result) and "secret" not in str(result.result)


def test_malformed_broker_url_does_not_leak_the_password() -> None:
    app = make_app()
    app.conf.broker_url = "redis://u:pa/ss@127.0.0.1:6379/4"  # unencoded '/' in the password

    @app.task
    @single_instance()
    def leaky() -> int:
        return 1

    result = leaky.apply()
    assert isinstance(result.result, LockError)
    text = str(result.result)
    assert "malformed broker URL" in text and "pa/ss" not in text and "'pa'" not in text


def test_bad_options_and_plain_calls(fake: fakeredis.FakeRedis) -> None:
    with pytest.raises(ValueError, match="on_duplicate"):
        single_instance(on_duplicate="queue")  # type: ignore[arg-type]

    @single_instance(client=fake)
    def not_a_task() -> None: ...

    with pytest.raises(LockError, match="not running as a Celery task"):
        not_a_task()

    app = make_app()

    @app.task
    @single_instance(client=fake, key_args=("nope",))
    def typo(x: int) -> int:
        return x

    assert "key_args not in typo(): nope" in str(typo.apply((1,)).result)


# --- single_instance on a real worker (threads pool, Redis db 4) ----------------------------


class Worker(NamedTuple):
    app: Celery
    proc: subprocess.Popen[bytes]


def start_worker(real: redis.Redis, unique: str, pool: str) -> Iterator[Worker]:
    from tests.helpers.task_safety_app import make_app

    prefix = f"ts-{unique}:"
    env = {**os.environ, "TASK_SAFETY_PREFIX": prefix}
    concurrency = "4" if pool == "threads" else "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.helpers.task_safety_app", "worker",
         "-P", pool, "-c", concurrency, "--without-heartbeat", "--without-gossip",
         "--without-mingle", "-l", "warning", "-n", f"ts-{unique}@localhost"],
        cwd=Path(__file__).resolve().parent.parent, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    app = make_app(prefix)
    try:
        yield Worker(app, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()
        app.close()
        for key in real.scan_iter(f"{prefix}*"):
            real.delete(key)


@pytest.fixture
def worker(real: redis.Redis, unique: str) -> Iterator[Worker]:
    yield from start_worker(real, unique, "threads")


@pytest.fixture
def prefork_worker(real: redis.Redis, unique: str) -> Iterator[Worker]:
    yield from start_worker(real, unique, "prefork")


@pytest.mark.redis
def test_real_worker_skips_a_duplicate(worker: Worker, real: redis.Redis, unique: str) -> None:
    first = worker.app.send_task("task_safety.slow", args=(1, 2.0))
    key = f"ts-{unique}:{DEFAULT_PREFIX}task_safety.slow(x=1)"
    deadline = time.monotonic() + 20
    while not real.exists(key) and time.monotonic() < deadline:  # the worker is starting up
        time.sleep(0.02)
    assert real.exists(key) == 1 and 0 < real.pttl(key) <= 5000
    duplicate = worker.app.send_task("task_safety.slow", args=(1, 0.0))
    other = worker.app.send_task("task_safety.slow", args=(2, 0.0))
    assert duplicate.get(timeout=30) == SKIPPED
    assert other.get(timeout=30)[0] == 2  # a different key_args value is not a duplicate
    assert first.get(timeout=30)[0] == 1
    assert list(real.scan_iter(f"ts-{unique}:{DEFAULT_PREFIX}*")) == []  # released


@pytest.mark.redis
def test_real_worker_retries_a_duplicate_until_the_first_ends(worker: Worker) -> None:
    runs = [worker.app.send_task("task_safety.queued", args=(i, 0.8)) for i in range(2)]
    (a, a_start, a_end, a_retries), (b, b_start, b_end, b_retries) = sorted(
        (r.get(timeout=30) for r in runs), key=lambda run: run[1]
    )
    assert {a, b} == {0, 1}
    assert b_start >= a_end  # never overlapped: the duplicate waited for the lock
    assert a_retries == 0 and b_retries >= 1  # ... by retrying, not by luck of timing


@pytest.mark.redis
def test_real_worker_killed_mid_task_frees_the_lock_after_its_ttl(
    worker: Worker, real: redis.Redis, unique: str
) -> None:
    worker.app.send_task("task_safety.slow", args=(3, 30.0))
    key = f"ts-{unique}:{DEFAULT_PREFIX}task_safety.slow(x=3)"
    deadline = time.monotonic() + 20
    while not real.exists(key) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(2.0)  # renewed at least once (ttl 5 s, every 1.67 s)
    assert 3000 < real.pttl(key) <= 5000
    worker.proc.kill()
    assert worker.proc.wait(5) == -signal.SIGKILL
    killed = time.monotonic()
    while real.exists(key) and time.monotonic() - killed < 8:
        time.sleep(0.05)
    freed_after = time.monotonic() - killed
    assert real.exists(key) == 0
    assert 2.0 < freed_after <= 5.2  # expired by its TTL, not released


@pytest.mark.redis
def test_real_worker_killed_child_task_runs_again_after_the_lock_expires(
    prefork_worker: Worker, real: redis.Redis, unique: str
) -> None:
    """acks_late + reject_on_worker_lost + on_duplicate="skip" (the docs' worked example): the
    SIGKILLed child's message is requeued at once and finds the dead run's lock still alive. It
    must not be skipped (and acked, losing the job) but retried once the lock has expired."""
    result = prefork_worker.app.send_task("task_safety.resumable", args=(5, 30.0))
    runs_key = f"ts-{unique}:runs:5"
    lock_key = f"ts-{unique}:{DEFAULT_PREFIX}task_safety.resumable(x=5)"
    deadline = time.monotonic() + 20
    while not real.llen(runs_key) and time.monotonic() < deadline:  # the worker is starting up
        time.sleep(0.02)
    child_pid = json.loads(real.lindex(runs_key, 0))[0]  # type: ignore[arg-type]
    time.sleep(1.5)  # renewed at least once (ttl 4 s, every 1.33 s)
    os.kill(child_pid, signal.SIGKILL)
    killed = time.time()
    left = real.pttl(lock_key) / 1000
    assert 2.0 < left <= 4.0  # the dead run's lock is still there, renewed

    runs, finished, retries = result.get(timeout=20)
    assert runs == 2  # the body ran again: the job was not skipped and lost
    # the requeued message came back while the lock lived (else this test proves nothing)
    # and was retried, not skipped
    assert retries >= 1
    second_start = json.loads(real.lindex(runs_key, 1))[1]  # type: ignore[arg-type]
    assert second_start >= killed + left - 0.05  # only once the dead run's lock had expired
    assert json.loads(real.lindex(runs_key, 1))[0] != child_pid  # type: ignore[arg-type]
    assert real.exists(lock_key) == 0
    print(f"\nprefork kill: lock had {left:.2f}s left, second run "
          f"{second_start - killed:.2f}s after the kill")

"""Subprocess bodies for tests/test_locks.py and tests/test_checkpoints.py (spawned, so each
runs in a fresh interpreter with its own Redis / database connections)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import redis

from toolkit.tasks.checkpoints import checkpointed, open_store
from toolkit.tasks.lock import TaskLock


class NoNXLock(TaskLock):
    """A deliberately broken lock (plain SET, no NX): the race harness must catch it."""

    def acquire(self, wait: float | None = None) -> bool:
        self.token = "broken"
        self.client.set(self.key, self.token, px=self.ttl_ms)
        return True


def race(
    url: str, name: str, iterations: int, holders: Any, violations: Any, acquired: Any,
    barrier: Any, broken: bool = False,
) -> None:
    """Take and release the lock ``iterations`` times, counting concurrent holders."""
    client = redis.Redis.from_url(url)
    cls = NoNXLock if broken else TaskLock
    lock = cls(client, name, ttl=10, retry_interval=0.001)
    barrier.wait()
    for _ in range(iterations):
        if not lock.acquire(wait=20):
            raise SystemExit(3)
        with holders.get_lock():
            holders.value += 1
            inside = holders.value
        if inside != 1:
            with violations.get_lock():
                violations.value += 1
        time.sleep(0.0002)  # hold the lock across a scheduling point
        with holders.get_lock():
            holders.value -= 1
        with acquired.get_lock():
            acquired.value += 1
        lock.release()
    client.close()


def hold(url: str, name: str, ttl: float, ready: Any) -> None:
    """Acquire the lock (with auto-renewal) and sleep until killed."""
    lock = TaskLock(redis.Redis.from_url(url), name, ttl=ttl, auto_renew=True)
    if not lock.acquire():
        raise SystemExit(3)
    ready.set()
    time.sleep(60)


def process_items(
    url: str, task: str, key: str, total: int, every: int, side_file: str, delay: float
) -> None:
    """The work loop under test: record each handled item in ``side_file``."""
    store = open_store(url)
    with Path(side_file).open("a") as out:
        for item in checkpointed(store, task, key, range(total), every=every, seconds=3600):
            time.sleep(delay)
            out.write(f"{item}\n")
            out.flush()
    store.close()


def conditional_writer(
    url: str, task: str, key: str, versions: list[int], barrier: Any, results: Any
) -> None:
    """Save each version (state {"v": version}) once every writer is ready; put on ``results``
    one (version, accepted, started, ended, stored-if-refused) per save, with
    ``time.monotonic()`` (one clock for all processes on Linux)."""
    from toolkit.tasks.checkpoints import StaleCheckpoint

    store = open_store(url)
    store.load(task, key)  # connect before the barrier
    out: list[tuple[int, bool, float, float, int | None]] = []
    barrier.wait()
    for version in versions:
        started = time.monotonic()
        try:
            store.save(task, key, {"v": version}, version=version)
        except StaleCheckpoint as exc:
            out.append((version, False, started, time.monotonic(), exc.stored))
        else:
            out.append((version, True, started, time.monotonic(), None))
    store.close()
    results.put(out)


def bumping_writer(url: str, task: str, key: str, saves: int, barrier: Any, results: Any) -> None:
    """Unconditional saves once every writer is ready; put the versions returned on ``results``
    with the time window of the run."""
    store = open_store(url)
    store.load(task, key)
    barrier.wait()
    started = time.monotonic()
    got = [store.save(task, key, {"i": i}) for i in range(saves)]
    store.close()
    results.put((got, started, time.monotonic()))

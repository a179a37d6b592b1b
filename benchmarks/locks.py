#!/usr/bin/env python3
"""Lock race figures against the real Redis: N processes contending for one TaskLock.

    python benchmarks/locks.py [--processes 2] [--iterations 1000] [--redis redis://127.0.0.1:6379/13]

Each process takes the lock ITERATIONS times (``acquire(wait=...)`` with a 1 ms retry interval),
holds it for HOLD seconds and releases it. A shared-memory counter records how many processes
were inside at once; any value above one is an overlap. Also reports uncontended
acquire+release round trips per second, and the same race with a deliberately broken lock
(plain SET, no NX) to show the harness detects overlaps: the broken lock is the baseline, run
in the same run. The uncontended figure is the median (min-max) of 5 batches after one warm-up
batch. The lock key is removed after; db 13 is the benchmarks' own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from toolkit.tasks.lock import TaskLock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summary import record, spread  # noqa: E402


class _NoNX(TaskLock):
    def acquire(self, wait: float | None = None) -> bool:
        self.token = "broken"
        self.client.set(self.key, self.token, px=self.ttl_ms)
        return True


def _worker(url: str, name: str, iterations: int, hold: float, broken: bool,
            inside: Any, overlaps: Any, waits: Any, barrier: Any) -> None:
    cls = _NoNX if broken else TaskLock
    lock = cls(redis.Redis.from_url(url), name, 10, retry_interval=0.001)
    barrier.wait()
    for _ in range(iterations):
        started = time.perf_counter()
        if not lock.acquire(wait=30):
            raise SystemExit("timed out waiting for the lock")
        with waits.get_lock():
            waits.value += time.perf_counter() - started
        with inside.get_lock():
            inside.value += 1
            if inside.value > 1:
                overlaps.value += 1
        time.sleep(hold)
        with inside.get_lock():
            inside.value -= 1
        lock.release()


def race(url: str, processes: int, iterations: int, hold: float, broken: bool) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    inside, overlaps, waits = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("d", 0.0)
    barrier = ctx.Barrier(processes + 1)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    procs = [
        ctx.Process(target=_worker,
                    args=(url, name, iterations, hold, broken, inside, overlaps, waits, barrier))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    started = time.perf_counter()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    redis.Redis.from_url(url).delete(f"celery-ecs:lock:{name}")
    total = processes * iterations
    return {
        "lock": "broken (no NX)" if broken else "TaskLock",
        "processes": processes,
        "acquisitions": total,
        "overlaps": overlaps.value,
        "seconds": round(elapsed, 3),
        "acquisitions_per_second": round(total / elapsed),
        "mean_wait_ms": round(waits.value / total * 1000, 3),
        "all_exited_ok": all(p.exitcode == 0 for p in procs),
    }


def uncontended(url: str, rounds: int = 400, batches: int = 5) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    lock = TaskLock(client, f"bench-solo-{uuid.uuid4().hex[:8]}", 10)
    per_round = []
    for batch in range(batches + 1):  # the first batch warms up: not kept
        started = time.perf_counter()
        for _ in range(rounds):
            lock.acquire()
            lock.release()
        if batch:
            per_round.append((time.perf_counter() - started) / rounds)
    client.close()
    return {"uncontended_acquire_release_per_second": round(1 / statistics.median(per_round)),
            "uncontended_round_trip_us": spread(per_round, 1e6 / 2),
            "_per_round": per_round}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=0.0002, help="seconds held per acquisition")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    if not args.redis.startswith("redis://127.0.0.1"):
        raise SystemExit("the benchmark runs against Redis on 127.0.0.1 only")
    solo = uncontended(args.redis)
    per_round = solo.pop("_per_round")
    good = race(args.redis, args.processes, args.iterations, args.hold, broken=False)
    bad = race(args.redis, args.processes, min(args.iterations, 300), args.hold, broken=True)
    print(json.dumps([solo, good, bad], indent=2))
    record("locks", f"TaskLock overlaps, {good['processes']} processes x "
           f"{args.iterations} acquisitions", f"{good['overlaps']} overlaps, "
           f"{good['acquisitions_per_second']}/s", f"broken lock (no NX): {bad['overlaps']} "
           f"overlaps in {bad['acquisitions']}", "", "0 overlaps (and > 0 for the broken one)",
           good["overlaps"] == 0 and good["all_exited_ok"] and bad["overlaps"] > 0)
    record("locks", "uncontended acquire + release, per round trip",
           f"{spread(per_round, 1e6 / 2)} µs")


if __name__ == "__main__":
    main()

"""Benchmark the per-task metrics and ``inspect-queue``, each against a baseline in the same run.

    .venv/bin/python benchmarks/tasks.py [--tasks 2000] [--rounds 3] [--messages 100000]

(1) Per task, in process: the bootstep's hooks with the per-task counting (prerun, postrun,
    success: shared-memory table, runtime bucket) against the same hooks with counting off,
    and one beat's flush of 20 task names to Redis (once per beat, not per task).
(2) Per task, real workers: two prefork -c 1 workers of benchmarks/bench_app.py, one with the
    bootstep (heartbeat and per-task counting) and one without it (BENCH_HEARTBEAT=0), each
    draining ``--tasks`` tasks per round, rounds alternating. Target: under 0.1 ms per task.
(3) ``inspect-queue`` on ``--messages`` waiting Celery messages (4 priority lists, 20 task
    names, a tenth with an ETA): the toolkit's reader (one script per 5,000 messages, bodies
    stay in Redis) against the hand-written way (LRANGE everything, json.loads each), and the
    whole command as an operator runs it. Target: under 2 s for 100,000 messages.

Timings are medians with min-max (of 5 timeit repeats in (1), of the rounds in (2), of 3 runs
in (3)), each series after one warm-up that is not measured. The broker defaults to db 13, a db
of the benchmarks' own (the test suite runs workers in db 2); keys are removed after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import timeit
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.heartbeat import real_workers  # noqa: E402 - after the path is set
from benchmarks.summary import record, spread  # noqa: E402

TARGET_MS = 0.1
INSPECT_TARGET_S = 2.0
NAMES = [f"app.tasks.job_{i:02d}" for i in range(20)]


def hooks(n: int = 20000) -> tuple[list[float], list[float]]:
    """(µs per task with counting, µs per task without), one figure per timeit repeat."""
    from toolkit.worker import bootstep
    from toolkit.worker.beater import Beater
    from toolkit.worker.counting import TaskCounter, TaskTable
    from toolkit.worker.settings import HeartbeatSettings

    settings = HeartbeatSettings(file=os.devnull, ready_file=os.devnull)
    task = SimpleNamespace(name="app.tasks.job_01",
                           request=SimpleNamespace(timelimit=(None, None)))

    def one_task() -> None:
        bootstep.on_task_prerun(task=task, task_id="id-1")
        bootstep.on_task_postrun(task=task, task_id="id-1", state="SUCCESS")
        bootstep.on_task_success()

    out = []
    for counting in (True, False):
        beater = Beater(settings=settings)
        beater.counter = TaskCounter(TaskTable(5)) if counting else None
        bootstep._ACTIVE = beater
        one_task()  # warm-up
        out.append([t / n * 1e6 for t in timeit.repeat(one_task, number=n, repeat=5)])
    bootstep._ACTIVE = None
    return out[0], out[1]


def flush_cost(broker: str) -> list[float]:
    """ms for one beat's flush of 20 task names, each with a few runtime buckets (the first
    flush, a warm-up, not kept)."""
    import redis

    from toolkit.worker.counting import TaskFlusher, TaskTable

    client = redis.Redis.from_url(broker)
    prefix = f"bench-flush-{uuid.uuid4().hex[:6]}:"
    table = TaskTable(5)
    flusher = TaskFlusher(table, "bench@host")
    took = []
    try:
        for _ in range(21):
            for i, name in enumerate(NAMES):
                for k in range(5):
                    table.record(1 + k % 4, name, "succeeded", 0.01 * (i + 1) * (k + 1))
            started = time.perf_counter()
            flusher.flush(client, prefix)
            took.append(time.perf_counter() - started)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
    return [t * 1000 for t in took[1:]]


def fill(client: Any, prefix: str, queue: str, messages: int) -> None:
    """Celery protocol 2 messages shaped exactly as kombu writes them to Redis."""
    import json

    from toolkit.stamp import HEADER

    def message(i: int) -> bytes:
        headers = {"lang": "py", "task": NAMES[i % len(NAMES)], "id": uuid.uuid4().hex,
                   "shadow": None, "eta": "2030-01-01T00:00:00+00:00" if i % 10 == 0 else None,
                   "expires": None, "group": None, "group_index": None, "retries": 0,
                   "timelimit": [None, None], "root_id": "r", "parent_id": None,
                   "argsrepr": f"({i},)", "kwargsrepr": "{}", "origin": "gen1@host",
                   "ignore_result": False, HEADER: 1764150000.0 + i}
        return json.dumps({"body": "W1sxXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbH1d",
                           "content-encoding": "utf-8", "content-type": "application/json",
                           "headers": headers, "properties": {
                               "correlation_id": headers["id"], "reply_to": "x",
                               "delivery_mode": 2, "delivery_info": {"exchange": "",
                                                                     "routing_key": queue},
                               "priority": 0, "body_encoding": "base64",
                               "delivery_tag": uuid.uuid4().hex}}).encode()

    keys = [prefix + queue] + [f"{prefix}{queue}\x06\x16{s}" for s in (3, 6, 9)]
    pipe = client.pipeline(transaction=False)
    for i in range(messages):
        pipe.lpush(keys[i % 4], message(i))
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def hand_written(client: Any, prefix: str, queue: str) -> dict[str, int]:
    """What an operator scripts by hand: every message over the network, parsed in Python."""
    import json

    counts: dict[str, int] = {}
    for key in [prefix + queue] + [f"{prefix}{queue}\x06\x16{s}" for s in (3, 6, 9)]:
        for raw in client.lrange(key, 0, -1):
            name = json.loads(raw)["headers"]["task"]
            counts[name] = counts.get(name, 0) + 1
    return counts


def inspect_queue(broker: str, messages: int) -> dict[str, list[float]]:
    import redis

    from toolkit.collector.brokers.peek_redis import peek_redis

    client = redis.Redis.from_url(broker)
    prefix = f"bench-inspect-{uuid.uuid4().hex[:6]}:"
    queue = "reports"
    out: dict[str, list[float]] = {}
    try:
        fill(client, prefix, queue, messages)
        runs: dict[str, list[float]] = {"toolkit": [], "toolkit_10k": [], "hand": []}
        peek_redis(client, queue, limit=messages, prefix=prefix)  # warm-up: script cache
        hand_written(client, prefix, queue)
        for _ in range(3):
            started = time.perf_counter()
            comp = peek_redis(client, queue, limit=messages, prefix=prefix)
            runs["toolkit"].append(time.perf_counter() - started)
            assert comp.sampled == messages and sum(g.count for g in comp.tasks) == messages
            started = time.perf_counter()
            peek_redis(client, queue, limit=10_000, prefix=prefix)
            runs["toolkit_10k"].append(time.perf_counter() - started)
            started = time.perf_counter()
            counted = hand_written(client, prefix, queue)
            runs["hand"].append(time.perf_counter() - started)
            assert sum(counted.values()) == messages
        out = dict(runs)
        cli = str(Path(sys.executable).with_name("celery-ecs"))
        config = Path(f"/tmp/{prefix.rstrip(':')}.toml")
        config.write_text(f'[broker]\nurl = "{broker}"\nglobal_keyprefix = "{prefix}"\n')
        try:
            started = time.perf_counter()
            subprocess.run([cli, "inspect-queue", queue, "--config", str(config), "--limit",
                            str(messages), "--json"], check=True, capture_output=True)
            out["command"] = [time.perf_counter() - started]
        finally:
            config.unlink()
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, broker {args.broker}\n")
    with_runs, without_runs = hooks()
    with_, without = statistics.median(with_runs), statistics.median(without_runs)
    flush = flush_cost(args.broker)
    print("(1) in process")
    print(f"    hooks with per-task counting: {spread(with_runs, 1, 2)} µs per task, without: "
          f"{spread(without_runs, 1, 2)} µs -> counting adds {with_ - without:.2f} µs = "
          f"{(with_ - without) / (TARGET_MS * 1000):.3f} x the {TARGET_MS} ms target")
    print(f"    one beat's flush of {len(NAMES)} task names: {spread(flush, 1, 2)} ms "
          "per beat (one round trip)")
    record("tasks", "per-task counting in the bootstep hooks, in process",
           f"{spread(with_runs, 1, 2)} µs", f"hooks without counting: "
           f"{spread(without_runs, 1, 2)} µs", f"+{with_ - without:.2f} µs",
           f"< +{TARGET_MS:g} ms", with_ - without < TARGET_MS * 1000)
    record("tasks", f"one beat's flush of {len(NAMES)} task names", f"{spread(flush, 1, 2)} ms")

    a_runs, b_runs = real_workers(args.broker, args.tasks, args.rounds)
    a, b = statistics.median(a_runs), statistics.median(b_runs)
    per_task = (a - b) / args.tasks * 1000
    print(f"\n(2) real prefork -c 1 workers, {args.tasks} tasks x {args.rounds} rounds")
    print(f"    with the bootstep:    {spread(a_runs, 1, 2)} s "
          f"({a / args.tasks * 1000:.3f} ms per task)")
    print(f"    without the bootstep: {spread(b_runs, 1, 2)} s "
          f"({b / args.tasks * 1000:.3f} ms per task)")
    print(f"    overhead: {per_task:+.3f} ms per task (target < {TARGET_MS} ms); ratio "
          f"{a / b:.3f} with/without")
    record("tasks", f"real worker with bootstep + counting, {args.tasks} tasks x {args.rounds}",
           f"{spread(a_runs, 1, 2)} s", f"without bootstep: {spread(b_runs, 1, 2)} s",
           f"{per_task:+.3f} ms/task", f"< +{TARGET_MS:g} ms/task", per_task < TARGET_MS)

    runs = inspect_queue(args.broker, args.messages)
    got = {k: statistics.median(v) for k, v in runs.items()}
    n = args.messages
    print(f"\n(3) inspect-queue, {n:,} messages in 4 priority lists, {len(NAMES)} task names")
    print(f"    toolkit, all {n:,}:  {spread(runs['toolkit'], 1, 2)} s "
          f"(target < {INSPECT_TARGET_S} s)")
    print(f"    toolkit, --limit 10,000 (the default): {spread(runs['toolkit_10k'], 1, 2)} s")
    print(f"    by hand (LRANGE + json.loads): {spread(runs['hand'], 1, 2)} s -> toolkit "
          f"{got['hand'] / got['toolkit']:.1f}x faster")
    print(f"    the whole command (celery-ecs inspect-queue --limit {n}): {got['command']:.2f} s")
    record("tasks", f"inspect-queue reader, {n:,} messages", f"{spread(runs['toolkit'], 1, 2)} s",
           f"by hand (LRANGE + json.loads): {spread(runs['hand'], 1, 2)} s",
           f"{got['hand'] / got['toolkit']:.1f}x", f"< {INSPECT_TARGET_S:g} s",
           got["toolkit"] < INSPECT_TARGET_S)
    record("tasks", f"celery-ecs inspect-queue --limit {n:,}, whole command (1 run)",
           f"{got['command']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

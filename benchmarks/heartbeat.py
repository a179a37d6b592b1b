"""Benchmark what the heartbeat's busy-vs-hung fields cost: per task on the worker, per cycle on
the collector.

    .venv/bin/python benchmarks/heartbeat.py [--tasks 2000] [--rounds 3] [--broker URL]

(1) In process: the bootstep's per-task hooks (started, finished, outcome) against the target
    of 0.2 ms per task, and one beat's view of Celery's own bookkeeping (16 tasks running, 40
    prefetched, 10 ETA) with the snapshot built from it: once per beat, not per task.
(2) Real workers, same run: two prefork -c 1 workers of benchmarks/bench_app.py, one with the
    heartbeat bootstep and one without (BENCH_HEARTBEAT=0), each drains ``--tasks`` tasks per
    round, rounds alternating so load drifts hit both; the per-task overhead is the difference
    of the medians divided by the task count.
(3) The collector's read: queue lengths, ages, unacked and 200 registry entries of format 3 in
    one round trip (the script), against the pipeline reader, same run, reads alternating.

Timings are medians with min-max (of 5 timeit repeats in (1), of the rounds in (2), of 15 reads
each in (3), after one warm-up read each). The broker defaults to db 13, a db of the benchmarks'
own (the test suite runs workers in db 2); keys are removed after.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from keys import drop_new, shared_keys  # noqa: E402
from summary import record, spread  # noqa: E402

TARGET_MS = 0.2


def in_process(n: int = 20000) -> tuple[list[float], list[float]]:
    """(µs per task for the hooks, µs per beat for the view and snapshot), one per repeat."""
    from celery.worker import state

    from toolkit.worker import bootstep
    from toolkit.worker.beater import Beater
    from toolkit.worker.settings import HeartbeatSettings

    settings = HeartbeatSettings(file=os.devnull, ready_file=os.devnull)
    beater = Beater(settings=settings)
    bootstep._ACTIVE = beater
    task = SimpleNamespace(request=SimpleNamespace(timelimit=(None, None)))

    def one_task() -> None:
        bootstep.on_task_prerun(task=task)
        bootstep.on_task_postrun()
        bootstep.on_task_success()

    one_task()  # warm-up
    hooks = [t / n * 1e6 for t in timeit.repeat(one_task, number=n, repeat=5)]

    class Request:  # the attributes of a celery Request the view reads (weak-referenceable)
        def __init__(self, i: int, start: float | None) -> None:
            self.id, self.name, self.time_start = f"id-{i}", "app.task", start
            self.time_limits = (None, None)
            self.task = None

    kept = [Request(i, 1000.0 + i if i < 16 else None) for i in range(66)]
    state.active_requests.update(kept[:16])
    state.reserved_requests.update(kept[:56])
    state.scheduled_requests.update(kept[56:])
    beater.tasks = lambda: bootstep.task_view(None, None, 4)
    beater.snapshot()  # warm-up
    snap = [t / 2000 * 1e6 for t in timeit.repeat(beater.snapshot, number=2000, repeat=5)]
    for kind in (state.active_requests, state.reserved_requests, state.scheduled_requests):
        kind.clear()
    bootstep._ACTIVE = None
    return hooks, snap


def start_worker(tag: str, queue: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    tmp = Path(tempfile.mkdtemp(prefix=f"celery-ecs-bench-{tag}-"))
    env = {**env, "CELERY_ECS_HEARTBEAT_FILE": str(tmp / "heartbeat"),
           "CELERY_ECS_READY_FILE": str(tmp / "ready")}
    with (tmp / "log").open("wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "celery"), "-A", "benchmarks.bench_app", "worker", "-P", "prefork", "-c",
             "1", "-n", f"{queue}@127.0.0.1", "-Q", queue, "--without-mingle",
             "--without-gossip", "-l", "warning"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc


def drain(client: object, app: object, queue: str, tasks: int) -> float:
    key = f"{queue}:done:{uuid.uuid4().hex[:6]}"
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:  # type: ignore[attr-defined]
        for _ in range(tasks):
            app.send_task("bench.count", args=[key], queue=queue,  # type: ignore[attr-defined]
                          producer=producer)
    while int(client.get(key) or 0) < tasks:  # type: ignore[attr-defined]
        time.sleep(0.01)
    took = time.perf_counter() - started
    client.delete(key)  # type: ignore[attr-defined]
    return took


def real_workers(broker: str, tasks: int, rounds: int) -> tuple[list[float], list[float]]:
    import redis
    from celery import Celery

    token = uuid.uuid4().hex[:8]
    env = {**os.environ, "BENCH_BROKER": broker, "PYTHONWARNINGS": "ignore"}
    queues = {"with": f"hb-with-{token}", "without": f"hb-without-{token}"}
    procs = {"with": start_worker("with", queues["with"], env),
             "without": start_worker("without", queues["without"],
                                     {**env, "BENCH_HEARTBEAT": "0"})}
    client = redis.Redis.from_url(broker)
    before = shared_keys(client)
    app = Celery("bench-producer", broker=broker)
    times: dict[str, list[float]] = {"with": [], "without": []}
    try:
        for name in procs:  # warm up: the workers are consuming once a small batch drains
            drain(client, app, queues[name], 50)
        for _ in range(rounds):
            for name in ("with", "without"):
                times[name].append(drain(client, app, queues[name], tasks))
    finally:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        keys = list(client.scan_iter(match=f"*{token}*"))
        if keys:
            client.delete(*keys)
        drop_new(client, before)  # the registry marker, kombu's binding deadlines
        client.close()
        app.close()
    return times["with"], times["without"]


def collector_read(
    broker: str, workers: int = 200, queues: int = 50, reads: int = 15
) -> dict[str, tuple[int, list[float]]]:
    import redis

    from toolkit.collector.brokers.redis import RedisReader
    from toolkit.registry import ActiveTask, WorkerHeartbeat, write_heartbeat

    client = redis.Redis.from_url(broker)
    prefix = f"hb-read-{uuid.uuid4().hex[:6]}:"
    names = [f"q{i}" for i in range(queues)]
    try:
        for i in range(workers):
            beat = WorkerHeartbeat(
                node=f"celery@w{i}", queues=(names[i % queues],), updated=time.time(),
                concurrency=4, active=2, held=1, booted=time.time() - 600,
                tasks=tuple(ActiveTask("app.t", f"id{k}", time.time() - k) for k in range(2)),
                youngest_start=time.time(), ecs_task_arn=f"arn:aws:ecs:r:1:task/c/{i}",
                ecs_cluster="c", ecs_service=f"s{i % 10}")
            write_heartbeat(client, beat, 30.0, prefix)
        for i, q in enumerate(names):
            client.lpush(prefix + q, *[b'{"headers": {}}'] * (i % 5 + 1))
        out: dict[str, tuple[int, list[float]]] = {}
        readers = {label: RedisReader(client, global_keyprefix=prefix, use_script=script)
                   for label, script in (("script", True), ("pipeline", False))}
        for label, reader in readers.items():  # warm-up, and the check
            reading = reader.read(names)
            assert reading.workers is not None and len(reading.workers) == workers
            out[label] = (reading.round_trips, [])
        for _ in range(reads):
            for label, reader in readers.items():
                started = time.perf_counter()
                reader.read(names)
                out[label][1].append((time.perf_counter() - started) * 1000)
        return out
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    if not args.broker.startswith("redis://127.0.0.1"):
        raise SystemExit("the benchmark runs against Redis on 127.0.0.1 only")

    hooks, snap = in_process()
    hook = statistics.median(hooks)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, broker {args.broker}\n")
    print("(1) in process")
    print(f"    per-task hooks (prerun, postrun, success): {spread(hooks, 1, 2)} µs per task "
          f"= {hook / (TARGET_MS * 1000):.3f} x the {TARGET_MS} ms target")
    print(f"    one beat's view and snapshot (16 running, 40 prefetched, 10 ETA): "
          f"{spread(snap)} µs per beat")
    record("heartbeat", "bootstep hooks per task, in process", f"{spread(hooks, 1, 2)} µs", "",
           "", f"< {TARGET_MS:g} ms", hook < TARGET_MS * 1000)
    record("heartbeat", "one beat's view + snapshot (16 running, 40 prefetched, 10 ETA)",
           f"{spread(snap)} µs")
    with_, without = real_workers(args.broker, args.tasks, args.rounds)
    a, b = statistics.median(with_), statistics.median(without)
    per_task = (a - b) / args.tasks * 1000
    print(f"\n(2) real prefork -c 1 workers, {args.tasks} tasks x {args.rounds} rounds")
    print(f"    with the bootstep:    {spread(with_, 1, 2)} s "
          f"({a / args.tasks * 1000:.3f} ms per task), runs {', '.join(f'{t:.2f}' for t in with_)}")
    print(f"    without the bootstep: {spread(without, 1, 2)} s "
          f"({b / args.tasks * 1000:.3f} ms per task), runs "
          f"{', '.join(f'{t:.2f}' for t in without)}")
    print(f"    overhead: {per_task:+.3f} ms per task (target < {TARGET_MS} ms; ratio "
          f"{a / b:.3f} with/without)")
    record("heartbeat", f"real worker, {args.tasks} tasks x {args.rounds} rounds, with bootstep",
           f"{spread(with_, 1, 2)} s", f"without bootstep: {spread(without, 1, 2)} s",
           f"{per_task:+.3f} ms/task", f"< +{TARGET_MS:g} ms/task", per_task < TARGET_MS)
    reads = collector_read(args.broker)
    print("\n(3) collector read: 50 queues x 4 priority lists, 200 format-3 registry entries")
    for label, (trips, ms) in reads.items():
        print(f"    {label:<9} {trips} round trip(s), {spread(ms, 1, 2)} ms per read")
    ratio = statistics.median(reads["pipeline"][1]) / statistics.median(reads["script"][1])
    print(f"    script vs pipeline: {ratio:.2f}x faster, "
          f"{reads['pipeline'][0] - reads['script'][0]} round trip(s) fewer")
    record("heartbeat", "collector read, 50 queues + 200 registry entries (script)",
           f"{spread(reads['script'][1], 1, 2)} ms, {reads['script'][0]} round trip",
           f"pipeline reader: {spread(reads['pipeline'][1], 1, 2)} ms, "
           f"{reads['pipeline'][0]} round trips", f"{ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

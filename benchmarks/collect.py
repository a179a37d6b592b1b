#!/usr/bin/env python3
"""Queue-metrics benchmark against the real Redis: the toolkit's reader vs the seed's loop.

    python benchmarks/collect.py [--queues 1000] [--runs 15] [--rtt-ms 0.5] [--redis URL]

Fills QUEUES queues x 4 priority lists with real kombu-shaped messages (stamped), then times:
  seed      one LLEN per queue (what the seed ran; it also misses every priority list but 0)
  naive     a correct per-list loop: LLEN + LINDEX of every list (lengths and ages)
  toolkit   RedisReader: one EVAL for all lists, lengths + oldest stamps + unacked
  no ages   RedisReader with queue ages off (``queue_age = false``)
  pipeline  RedisReader's fallback for servers without scripting (LLEN + LINDEX pipelined)
round-robin (one warm-up read each first, not measured; each round's order rotated; the slow
naive loop in every fifth round only), and reports the median and min-max cycle time, the
ratio of medians to the seed's loop, Redis round trips per cycle (counted at the socket, one
send per round trip, in one more read after the timed ones) and PutMetricData calls for the
resulting metrics. ``--rtt-ms`` puts benchmarks/latency_proxy.py (a process of its own) between
the readers and Redis, adding that round trip. Everything is measured in this process, in
this run, so the ratios compare like with like. Keys are removed after. The peer (Flower's
reader) is measured by benchmarks/collect_peers.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.connection

from toolkit.collector.brokers.redis import RedisReader
from toolkit.collector.cycle import collector_sample, queue_samples, queue_statuses
from toolkit.collector.publisher import CloudWatchPublisher
from toolkit.config import Settings
from toolkit.stamp import HEADER

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_proxy import network  # noqa: E402
from summary import record, spread  # noqa: E402

STEPS = (0, 3, 6, 9)
SENDS = 0
_original_send = redis.connection.Connection.send_packed_command


def _counting_send(self: Any, command: Any, check_health: bool = True) -> None:
    global SENDS
    SENDS += 1
    _original_send(self, command, check_health)


def message(i: int) -> str:
    body = "W1s" + "A" * 600  # a base64 body of a typical small task
    return json.dumps({
        "body": body, "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"lang": "py", "task": "jobs.work", "id": str(uuid.uuid4()),
                    "argsrepr": f"({i},)", HEADER: round(time.time() - i, 3)},
        "properties": {"delivery_mode": 2, "priority": 0, "body_encoding": "base64"},
    })


def fill(client: redis.Redis, prefix: str, queues: list[str], per_list: int) -> None:
    pipe = client.pipeline(transaction=False)
    for n, q in enumerate(queues):
        for step in STEPS:
            key = prefix + q if step == 0 else f"{prefix}{q}\x06\x16{step}"
            pipe.lpush(key, *[message(n + k) for k in range(per_list)])
        if n % 100 == 99:
            pipe.execute()
    pipe.execute()


def clean(client: redis.Redis, prefix: str) -> None:
    batch = []
    for key in client.scan_iter(match=f"{prefix}*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)


def rounds(fns: dict[str, Callable[[], object]], runs: int,
           every: dict[str, int]) -> dict[str, list[float]]:
    """Round-robin timing: one warm-up call each (connection, script cache; not measured), then
    ``runs`` rounds, each calling every function once (those in ``every`` only each k-th
    round), the order rotated from round to round so that load drifts hit all alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for r in range(runs):
        for name in order[r % len(order):] + order[:r % len(order)]:
            if r % every.get(name, 1):
                continue
            started = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - started)
    return times


def round_trips(fn: Callable[[], object]) -> int:
    """Sends (one per round trip) of one more call, outside the timed ones."""
    global SENDS
    redis.connection.Connection.send_packed_command = _counting_send  # type: ignore[method-assign]
    try:
        SENDS = 0
        fn()
        return SENDS
    finally:
        redis.connection.Connection.send_packed_command = _original_send  # type: ignore[method-assign]


class CountingCloudWatch:
    def __init__(self) -> None:
        self.calls = 0

    def put_metric_data(self, **_: Any) -> None:
        self.calls += 1


def readers(client: redis.Redis, prefix: str,
            queues: list[str]) -> dict[str, Callable[[], object]]:
    def seed() -> list[int]:
        return [int(client.llen(prefix + q)) for q in queues]

    def naive_correct() -> list[int]:
        # what a correct per-queue loop costs: every priority list, plus its oldest message
        out = []
        for q in queues:
            total = 0
            for step in STEPS:
                key = prefix + q if step == 0 else f"{prefix}{q}\x06\x16{step}"
                total += int(client.llen(key))
                client.lindex(key, -1)
            out.append(total)
        return out

    reader = RedisReader(client, global_keyprefix=prefix, priority_steps=STEPS)
    lengths_only = RedisReader(client, global_keyprefix=prefix, priority_steps=STEPS,
                               read_age=False)
    pipe_reader = RedisReader(client, global_keyprefix=prefix, priority_steps=STEPS,
                              use_script=False)
    return {"seed": seed, "naive": naive_correct, "toolkit": lambda: reader.read(queues),
            "no ages": lambda: lengths_only.read(queues),
            "pipeline": lambda: pipe_reader.read(queues)}


ROWS = (  # name, label, what it reads
    ("seed", "seed: LLEN per queue", "priority-0 list only: {per} of {all} messages per queue"),
    ("naive", "naive: every list+age", "lengths, ages"),
    ("toolkit", "toolkit (EVAL)", "lengths, ages, unacked"),
    ("no ages", "toolkit, no ages", "lengths, unacked"),
    ("pipeline", "toolkit pipeline", "lengths, ages, unacked (no-scripting fallback)"),
)
TARGET = 20.0  # x the seed's loop, both reader modes


def publish_calls(reader: RedisReader, queues: list[str]) -> tuple[int, int]:
    """(metrics per cycle, PutMetricData calls) for one reading."""
    reading = reader.read(queues)
    settings = Settings(environment="bench")
    statuses = queue_statuses(reading, settings, time.time())
    samples = queue_samples("bench", statuses, reading.unacked)
    samples += [collector_sample("bench", "CollectorHeartbeat", 1),
                collector_sample("bench", "CollectorErrors", 0)]
    cw = CountingCloudWatch()
    CloudWatchPublisher("Celery", client=cw).publish(samples)
    return len(samples), cw.calls


def report(times: dict[str, list[float]], trips: dict[str, int], where: str, queues: int,
           per_list: int) -> None:
    expected = len(STEPS) * per_list
    seed_t = statistics.median(times["seed"])
    w = 24
    print(f"\n{'reader':<{w}}{'median ms (min-max)':>24}{'vs seed':>9}{'round trips':>13}  "
          "reads")
    for name, label, what in ROWS:
        med = statistics.median(times[name])
        print(f"{label:<{w}}{spread(times[name], 1000):>24}{seed_t / med:>8.1f}x"
              f"{trips[name]:>13}  {what.format(per=per_list, all=expected)}")
    print(f"({len(times['seed'])} rounds, {len(times['naive'])} for the naive loop; {where})")
    net = where.split(" (")[0]
    print(f"\ntarget: >= {TARGET:g}x faster than the seed's loop (one LLEN per queue), same run:")
    for name, label in (("toolkit", "lengths + ages + unacked"), ("no ages", "lengths + unacked")):
        ratio = seed_t / statistics.median(times[name])
        verdict = "met" if ratio >= TARGET else "NOT met"
        print(f"  toolkit, {label + ':':<26}{ratio:6.1f}x  {verdict}")
        record("collect vs seed", f"toolkit, {label}, {queues:,} queues x 4 lists, {net}",
               f"{spread(times[name], 1000)} ms", f"seed loop: {spread(times['seed'], 1000)} ms",
               f"{ratio:.1f}x", f">= {TARGET:g}x", ratio >= TARGET)
    ratio = seed_t / statistics.median(times["pipeline"])
    record("collect vs seed", f"toolkit pipeline fallback, {queues:,} queues, {net}",
           f"{spread(times['pipeline'], 1000)} ms",
           f"seed loop: {spread(times['seed'], 1000)} ms", f"{ratio:.1f}x")
    naive = statistics.median(times["naive"]) / statistics.median(times["toolkit"])
    print(f"  (for reference: {naive:.1f}x faster than a per-list loop that reads what the "
          "toolkit reads)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queues", type=int, default=1000)
    ap.add_argument("--per-list", type=int, default=2, help="messages in each priority list")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/1")
    ap.add_argument("--rtt-ms", type=float, default=0.0,
                    help="route Redis traffic through a loopback proxy adding this round trip, "
                         "to model a network hop (0: direct)")
    ap.add_argument("--latency-ms", type=float, default=0.0,
                    help="the same as a one-way delay (--rtt-ms twice this), kept for old runs")
    args = ap.parse_args()
    if urlsplit(args.redis).hostname != "127.0.0.1":
        raise SystemExit("the benchmark runs against 127.0.0.1 only")
    rtt = (args.rtt_ms or 2 * args.latency_ms) / 1000
    admin = redis.Redis.from_url(args.redis)
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    queues = [f"queue-{i:04d}" for i in range(args.queues)]
    try:
        t = time.perf_counter()
        fill(admin, prefix, queues, args.per_list)
        print(f"filled {args.queues} queues x {len(STEPS)} priority lists x {args.per_list} "
              f"messages in {time.perf_counter() - t:.1f}s")
        with network(args.redis, rtt) as (url, where):
            client = redis.Redis.from_url(url)
            fns = readers(client, prefix, queues)
            times = rounds(fns, args.runs, {"naive": 5})
            trips = {name: round_trips(fn) for name, fn in fns.items()}
            reading = RedisReader(client, global_keyprefix=prefix, priority_steps=STEPS)
            expected = len(STEPS) * args.per_list
            assert all(q.length == expected for q in reading.read(queues).queues), "lengths"
            # the seed sees one list in four
            assert sum(fns["seed"]()) == args.queues * args.per_list
            metrics, calls = publish_calls(reading, queues)
            client.close()
        report(times, trips, where, args.queues, args.per_list)
        print(f"\nmetrics per cycle: {metrics}; PutMetricData calls: {calls} "
              f"(ceil({metrics}/1000) = {-(-metrics // 1000)})")
        if not rtt:
            record("collect vs seed", f"PutMetricData calls per cycle, {args.queues:,} queues",
                   f"{calls} calls for {metrics} metrics", "", "",
                   f"ceil({metrics}/1000) = {-(-metrics // 1000)}", calls == -(-metrics // 1000))
    finally:
        clean(admin, prefix)
        admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

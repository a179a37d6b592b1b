#!/usr/bin/env python3
"""Queue-metrics benchmark against the real Redis: the toolkit's reader vs the seed's loop.

    python benchmarks/collect.py [--queues 1000] [--runs 15] [--redis redis://127.0.0.1:6379/1]

Fills QUEUES queues x 4 priority lists with real kombu-shaped messages (stamped), then times:
  seed      one LLEN per queue (what the seed ran; it also misses every priority list but 0)
  toolkit   RedisReader: one EVAL for all lists, lengths + oldest stamps + unacked
  pipeline  RedisReader's fallback for servers without scripting (LLEN + LINDEX pipelined)
and reports median cycle time, the ratio to the seed, Redis round trips per cycle (counted at
the socket: one send per round trip) and PutMetricData calls for the resulting metrics.
Everything runs in this process, so the ratios compare like with like. Keys are removed after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
import redis.connection

from toolkit.collector.brokers.redis import RedisReader
from toolkit.collector.cycle import collector_sample, queue_samples, queue_statuses
from toolkit.collector.publisher import CloudWatchPublisher
from toolkit.config import Settings
from toolkit.stamp import HEADER

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


def measure(fn: Callable[[], object], runs: int) -> tuple[float, int]:
    global SENDS
    fn()  # warm up (connection, script cache)
    times = []
    sends = 0
    for _ in range(runs):
        SENDS = 0
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        sends = SENDS
    return statistics.median(times), sends


class CountingCloudWatch:
    def __init__(self) -> None:
        self.calls = 0

    def put_metric_data(self, **_: Any) -> None:
        self.calls += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queues", type=int, default=1000)
    ap.add_argument("--per-list", type=int, default=2, help="messages in each priority list")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/1")
    ap.add_argument("--latency-ms", type=float, default=0.0,
                    help="route Redis traffic through a loopback proxy adding this one-way "
                         "delay, to model a network hop (0: direct)")
    args = ap.parse_args()
    url = args.redis
    if args.latency_ms:
        from urllib.parse import urlsplit

        from latency_proxy import LatencyProxy

        parts = urlsplit(url)
        proxy = LatencyProxy(parts.hostname or "127.0.0.1", parts.port or 6379,
                             args.latency_ms / 1000)
        url = url.replace(parts.netloc, f"127.0.0.1:{proxy.port}")

    redis.connection.Connection.send_packed_command = _counting_send  # type: ignore[method-assign]
    client = redis.Redis.from_url(url)
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    queues = [f"queue-{i:04d}" for i in range(args.queues)]
    try:
        pings = []
        for _ in range(50):
            t = time.perf_counter()
            client.ping()
            pings.append(time.perf_counter() - t)
        rtt = statistics.median(pings)
        print(f"median PING round trip: {rtt * 1000:.3f} ms")
        t = time.perf_counter()
        fill(client, prefix, queues, args.per_list)
        print(f"filled {args.queues} queues x {len(STEPS)} priority lists x {args.per_list} "
              f"messages in {time.perf_counter() - t:.1f}s")

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
        seed_t, seed_rt = measure(seed, args.runs)
        nc_t, nc_rt = measure(naive_correct, max(3, args.runs // 5))
        tk_t, tk_rt = measure(lambda: reader.read(queues), args.runs)
        lo_t, lo_rt = measure(lambda: lengths_only.read(queues), args.runs)
        pl_t, pl_rt = measure(lambda: pipe_reader.read(queues), args.runs)

        reading = reader.read(queues)
        expected = len(STEPS) * args.per_list
        assert all(q.length == expected for q in reading.queues), "lengths are wrong"
        assert sum(seed()) == args.queues * args.per_list  # the seed sees one list in four
        settings = Settings(environment="bench")
        statuses = queue_statuses(reading, settings, time.time())
        samples = queue_samples("bench", statuses, reading.unacked)
        samples += [collector_sample("bench", "CollectorHeartbeat", 1),
                    collector_sample("bench", "CollectorErrors", 0)]
        cw = CountingCloudWatch()
        CloudWatchPublisher("Celery", client=cw).publish(samples)

        w = 24
        print(f"\n{'reader':<{w}}{'median ms':>10}{'vs seed':>9}{'round trips':>13}  reads")
        rows = [
            ("seed: LLEN per queue", seed_t, seed_rt,
             f"priority-0 list only: {args.per_list} of {expected} messages per queue"),
            ("naive: every list+age", nc_t, nc_rt, "lengths, ages"),
            ("toolkit (EVAL)", tk_t, tk_rt, "lengths, ages, unacked"),
            ("toolkit, no ages", lo_t, lo_rt, "lengths, unacked"),
            ("toolkit pipeline", pl_t, pl_rt, "lengths, ages, unacked (no-scripting fallback)"),
        ]
        for name, t_, rt, what in rows:
            print(f"{name:<{w}}{t_ * 1000:>10.1f}{seed_t / t_:>8.1f}x{rt:>13}  {what}")
        if args.latency_ms:
            print(f"(every round trip crossed a loopback proxy: effective round trip "
                  f"{rtt * 1000:.2f} ms, asked {2 * args.latency_ms:.2f} ms)")
        print(f"\nmetrics per cycle: {len(samples)}; PutMetricData calls: {cw.calls} "
              f"(ceil({len(samples)}/1000) = {-(-len(samples) // 1000)})")
        def verdict(ratio: float) -> str:
            return "met" if ratio >= 20 else "NOT met"

        full, lengths = seed_t / tk_t, seed_t / lo_t
        print("\ntarget: >= 20x faster than the seed's loop (one LLEN per queue), same run:")
        print(f"  toolkit, lengths + ages + unacked: {full:6.1f}x  {verdict(full)}")
        print(f"  toolkit, lengths + unacked:        {lengths:6.1f}x  {verdict(lengths)}")
        print(f"  (for reference: {nc_t / tk_t:.1f}x faster than a per-list loop that reads "
              "what the toolkit reads)")
    finally:
        redis.connection.Connection.send_packed_command = _original_send  # type: ignore[method-assign]
        clean(client, prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Queue lengths against the peer: Flower 2.2's own Redis reader and the toolkit's, same process.

    python benchmarks/collect_peers.py [--queues 1000 10000] [--rtt-ms 0 0.5] [--rounds 15]

Runs in the benchmarks' own venv (``.venv-bench``, made on first use by benchmarks/benchvenv.py;
started from any other interpreter, the script re-executes itself there): Flower is a peer, not
a dependency of the project. For each queue count it fills QUEUES queues x 4 priority lists x
``--per-list`` stamped kombu-shaped messages under a unique key prefix (db 1 by default), then,
for each network (Redis on loopback, and Redis behind benchmarks/latency_proxy.py adding
``--rtt-ms`` per round trip, in a process of its own), times these readers round-robin:

  flower    ``flower.utils.broker.Broker(url, broker_options=...).queues(names)``, what Flower's
            broker page and its queue-length API run per HTTP request: a new redis.asyncio
            client, one MULTI/EXEC pipeline of LLEN per list, the client closed. One event loop
            serves every call, as Flower's IOLoop would.
  lengths   the toolkit's RedisReader with queue ages off (``queue_age = false``): one EVAL,
            lengths of every list + unacked (and its registry and INFO reads), client kept
            between reads as the collector keeps it.
  full      the toolkit's RedisReader as shipped: lengths + oldest-task ages + unacked.

Each reader reads once before the rounds (not measured); each round runs all three, its order
rotated from round to round, with a ``gc.collect()`` before every read (not measured). Reported:
median and min-max per reader, the ratio of Flower's median to the reader's (and the min-max of
the per-round ratios), round trips and TCP connections per read (counted in one more read after
the timed ones, so the counting costs nothing measured), and how long each read keeps the
single-threaded Redis server busy (``INFO commandstats``: EXEC for Flower, which includes its
LLENs, EVAL for the toolkit: the least of 5 more untimed reads; a ``*`` means other clients of
the shared server ran the same command during that read, so it is an upper bound). Every
reader's lengths are checked against what was filled. Targets, as ratios against Flower in the
same run: lengths at least 10x, lengths + ages at least 5x. Keys are removed after; everything
stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchvenv  # noqa: E402

if not benchvenv.in_bench_venv() and __name__ == "__main__":
    try:
        import flower  # noqa: F401
    except ImportError:
        py = benchvenv.ensure()
        os.execv(py, [str(py), __file__, *sys.argv[1:]])

import redis  # noqa: E402
from collect import STEPS, clean, fill  # noqa: E402
from latency_proxy import network  # noqa: E402
from summary import record, spread  # noqa: E402

from toolkit.collector.brokers.redis import RedisReader  # noqa: E402

SEP = "\x06\x16"
TARGETS = {"lengths": 10.0, "full": 5.0}
LABELS = {
    "flower": "Flower 2.2 Redis reader",
    "lengths": "toolkit, lengths (no ages)",
    "full": "toolkit, lengths+ages+unacked",
}
READS = {
    "flower": "lengths; new client per request",
    "lengths": "lengths, unacked, registry, INFO",
    "full": "lengths, oldest-task ages, unacked, registry, INFO",
}


@contextlib.contextmanager
def counting() -> Iterator[dict[str, int]]:
    """Round trips (a send after a reply, or the first send, per connection) and TCP connects of
    redis-py's sync and asyncio clients while the block runs."""
    import redis.asyncio.connection as aconn
    import redis.connection as sconn

    counts = {"trips": 0, "connects": 0}
    patched: list[tuple[type, str, Any]] = []

    def patch(cls: type, name: str, wrapper: Callable[[Any], Any]) -> None:
        original = cls.__dict__[name]
        patched.append((cls, name, original))
        setattr(cls, name, wrapper(original))

    def send(original: Any) -> Any:
        def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not getattr(self, "_bench_waiting", False):
                counts["trips"] += 1
                self._bench_waiting = True
            return original(self, *args, **kwargs)
        return wrapped

    def read(original: Any) -> Any:
        def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
            self._bench_waiting = False
            return original(self, *args, **kwargs)
        return wrapped

    def connect(original: Any) -> Any:
        def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
            counts["connects"] += 1
            self._bench_waiting = False
            return original(self, *args, **kwargs)
        return wrapped

    for module in (sconn, aconn):
        patch(module.AbstractConnection, "send_packed_command", send)
        patch(module.AbstractConnection, "read_response", read)
        patch(module.Connection, "_connect", connect)
    try:
        yield counts
    finally:
        for cls, name, original in reversed(patched):
            setattr(cls, name, original)


def readers(url: str, prefix: str, names: list[str],
            loop: asyncio.AbstractEventLoop) -> dict[str, Callable[[], list[int]]]:
    from flower.utils.broker import Broker

    options = {"global_keyprefix": prefix, "priority_steps": list(STEPS), "sep": SEP}

    def flower() -> list[int]:
        # what flower.views.BaseHandler.get_broker + BrokerView.get run for each request
        broker = Broker(url, http_api=None, broker_options=options, broker_use_ssl=None)
        rows = loop.run_until_complete(broker.queues(names))
        return [row["messages"] for row in rows]

    client = redis.Redis.from_url(url)
    lengths_only = RedisReader(client, global_keyprefix=prefix, priority_steps=STEPS,
                               separator=SEP, read_age=False)
    full = RedisReader(client, global_keyprefix=prefix, priority_steps=STEPS, separator=SEP)
    return {
        "flower": flower,
        "lengths": lambda: [q.length for q in lengths_only.read(names).queues],
        "full": lambda: [q.length for q in full.read(names).queues],
    }


# the commands whose server time a read costs, and how many of them one read runs
SERVER_COMMANDS = {"flower": ("exec", 1), "lengths": ("eval", 2), "full": ("eval", 2)}


def server_ms(admin: redis.Redis, name: str, fn: Callable[[], list[int]],
              reads: int = 5) -> str:
    """Milliseconds the Redis server spent in the reader's commands during one read (EXEC
    includes the LLENs it runs, EVAL the commands of its script): the least of ``reads`` untimed
    reads, with a ``*`` when other clients ran the same command during that read too."""
    command, per_read = SERVER_COMMANDS[name]

    def stat() -> tuple[int, int]:
        row = admin.info("commandstats").get(f"cmdstat_{command}", {})
        return int(row.get("calls", 0)), int(row.get("usec", 0))

    samples = []
    for _ in range(reads):
        calls0, usec0 = stat()
        fn()
        calls1, usec1 = stat()
        samples.append(((usec1 - usec0) / 1000, calls1 - calls0 - per_read))
    ms, others = min(samples)
    return f"{ms:.1f}" + ("*" if others else "")


def timed_rounds(fns: dict[str, Callable[[], list[int]]], rounds: int,
                 expected: list[int]) -> dict[str, list[float]]:
    for name, fn in fns.items():  # warm-up: connection, script cache, imports; not measured
        if fn() != expected:
            raise SystemExit(f"{name} read wrong lengths")
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            gc.collect()
            t = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t)
    return times


def report(title: str, where: str, times: dict[str, list[float]],
           trips: dict[str, tuple[int, int, str]]) -> list[tuple[str, float, bool]]:
    base = statistics.median(times["flower"])
    print(f"\n{title}, {where}")
    print(f"{'reader':<31}{'median ms (min-max)':>24}{'vs Flower':>11}{'per-round':>14}"
          f"{'trips':>7}{'conns':>7}{'Redis busy ms':>15}  reads")
    held = []
    for name, values in times.items():
        med = statistics.median(values)
        ratio = base / med
        rounds = [f / v for f, v in zip(times["flower"], values, strict=True)]
        per_round = "" if name == "flower" else f"{min(rounds):.1f}-{max(rounds):.1f}x"
        print(f"{LABELS[name]:<31}{spread(values, 1000):>24}{ratio:>10.1f}x{per_round:>14}"
              f"{trips[name][0]:>7}{trips[name][1]:>7}{trips[name][2]:>15}  {READS[name]}")
        if name in TARGETS:
            ok = ratio >= TARGETS[name]
            held.append((name, ratio, ok))
            record("collect vs Flower", f"{LABELS[name]}, {title}, {where.split(' (')[0]}",
                   f"{spread(values, 1000)} ms; Redis busy {trips[name][2]} ms",
                   f"Flower 2.2: {spread(times['flower'], 1000)} ms; Redis busy "
                   f"{trips['flower'][2]} ms", f"{ratio:.1f}x", f">= {TARGETS[name]:g}x", ok)
    return held


def versions(client: redis.Redis) -> str:
    info = client.info("server")
    libs = ", ".join(f"{d} {importlib.metadata.version(d)}" for d in ("redis", "celery", "flower"))
    return (f"python {sys.version.split()[0]}, redis-server {info['redis_version']}, {libs}, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queues", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0, 0.5],
                    help="round trip the latency proxy adds (0: Redis directly)")
    ap.add_argument("--per-list", type=int, default=2, help="messages in each priority list")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/1")
    args = ap.parse_args()
    if urlsplit(args.redis).hostname != "127.0.0.1":
        raise SystemExit("the benchmark runs against 127.0.0.1 only")

    admin = redis.Redis.from_url(args.redis)
    print(versions(admin))
    print(f"{args.rounds} rounds, round-robin, order rotated each round; medians (min-max)")
    loop = asyncio.new_event_loop()
    outcomes: list[tuple[str, str, str, float, bool]] = []
    try:
        for n in args.queues:
            prefix = f"benchpeer{uuid.uuid4().hex[:8]}:"
            names = [f"queue-{i:05d}" for i in range(n)]
            title = f"{n:,} queues x {len(STEPS)} lists x {args.per_list} messages"
            try:
                t = time.perf_counter()
                fill(admin, prefix, names, args.per_list)
                print(f"\nfilled {title} in {time.perf_counter() - t:.1f}s")
                expected = [len(STEPS) * args.per_list] * n
                for rtt_ms in args.rtt_ms:
                    with network(args.redis, rtt_ms / 1000) as (url, where):
                        fns = readers(url, prefix, names, loop)
                        times = timed_rounds(fns, args.rounds, expected)
                        trips = {}
                        for name, fn in fns.items():
                            with counting() as counts:
                                fn()
                            trips[name] = (counts["trips"], counts["connects"],
                                           server_ms(admin, name, fn))
                    for name, ratio, ok in report(title, where, times, trips):
                        outcomes.append((f"{n:,} queues", where.split(" (")[0], name, ratio, ok))
            finally:
                clean(admin, prefix)
    finally:
        loop.close()
        admin.close()

    print("\ntargets, as ratios against Flower's reader in the same run:")
    for queues, where, name, ratio, ok in outcomes:
        print(f"  {LABELS[name]:<31} {queues:>14}, {where:<40} {ratio:6.1f}x  "
              f"(>= {TARGETS[name]:g}x) {'held' if ok else 'NOT held'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

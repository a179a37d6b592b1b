"""A small Celery app, as a user's ``proj/celery.py`` would look, for benchmarks/healthcheck.py.

Real apps import much more at ``-A app`` time (Django settings, models, SDKs), so probe (a) in
the benchmark is a lower bound for what ``celery -A app inspect ping`` costs in production.
"""

from __future__ import annotations

import os

from celery import Celery

import toolkit.heartbeat

app = Celery("bench_app", broker=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/2"))
app.conf.broker_connection_retry_on_startup = True
if os.environ.get("BENCH_HEARTBEAT", "1") != "0":  # benchmarks/heartbeat.py compares both
    toolkit.heartbeat.install(app)
    toolkit.heartbeat.install_beat(app)  # `celery beat` of this app ticks its beat file


@app.task(name="bench.noop")
def noop() -> None:
    return None


@app.task(name="bench.count", ignore_result=True)
def count(key: str) -> None:
    """Counts itself in Redis, so the benchmark knows when a batch is done."""
    import redis

    client = _CLIENT.get(key[:0]) or _CLIENT.setdefault(
        "", redis.Redis.from_url(os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/2")))
    client.incr(key)


_CLIENT: dict[str, object] = {}

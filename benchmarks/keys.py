"""Shared Redis keys a benchmark's Celery processes create without its token in the name.

A worker with the heartbeat bootstep sets the registry marker, kombu keeps its binding
deadlines: :func:`shared_keys` lists such keys before the run, :func:`drop_new` deletes those
that appeared during it (run in a db of its own, nothing else can have made them).
"""

from __future__ import annotations

from typing import Any

PATTERNS = ("celery-ecs:*", "_kombu.binding*")


def shared_keys(client: Any) -> set[bytes]:
    return {key for pattern in PATTERNS for key in client.scan_iter(match=pattern, count=1000)}


def drop_new(client: Any, before: set[bytes]) -> int:
    new = shared_keys(client) - before
    if new:
        client.delete(*new)
    return len(new)

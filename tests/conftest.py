"""Shared fixtures. Real services are on loopback; each area of the suite uses its own Redis
database number so parallel work never collides:

    db 1: queue metrics (brokers, collector)     db 2: heartbeats / health checks
    db 3: sandbox / end-to-end                   db 4: locks
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

EVENTS_DIR = Path(__file__).parent / "events"
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
MYSQL_URL = "mysql://root@127.0.0.1:3306/test"
QUEUES_REDIS_URL = "redis://127.0.0.1:6379/1"  # db 1: queue metrics (brokers, collector)


def load_event(name: str) -> dict[str, Any]:
    """Load an AWS event fixture from tests/events/NAME(.json)."""
    path = EVENTS_DIR / (name if name.endswith(".json") else f"{name}.json")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def unique() -> str:
    """A short unique token for queue names, key prefixes, table names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    """A client of the queue-metrics Redis database (db 1)."""
    c = redis.Redis.from_url(QUEUES_REDIS_URL)
    yield c
    c.close()


@pytest.fixture
def prefix(client: redis.Redis, unique: str) -> Iterator[str]:
    """A unique key prefix in db 1; every key under it is deleted afterwards."""
    p = f"t{unique}:"
    yield p
    keys = list(client.scan_iter(match=f"{p}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never let a test reach AWS: fake credentials, a fixed region, no profile or config file
    that could name another endpoint. Tests that use a moto server set AWS_ENDPOINT_URL."""
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL") or name in {
            "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
            "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        }:
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")


#: the long runs (whole sandbox stories, real-worker scenarios, the wheel build), longest first:
#: scripts/dev.py hands tests to the xdist workers two at a time (--maxschedchunk 1), so they
#: spread over the workers and overlap the many short tests instead of trailing after them
LONG_FIRST = ("test_sandbox.py", "test_busy_vs_hung.py", "test_wheel.py",
              "test_alarm_budget.py", "test_collector_accuracy.py", "test_check_e2e.py",
              "test_task_metrics.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONG_FIRST.index(name) if name in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)  # stable: the order within each file stays


def _atomic_moto_dynamodb() -> None:
    """DynamoDB's conditional writes are atomic; moto's are a check then a set in Python, and
    two threads racing (two Lambda containers in one test) both win about 1 time in 150. One
    lock around moto's writes makes moto keep the promise the toolkit's claims rely on."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        original = getattr(DynamoDBBackend, name)
        if getattr(original, "_celery_ecs_atomic", False):
            continue

        @functools.wraps(original)
        def atomic(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return __original(*args, **kwargs)

        atomic._celery_ecs_atomic = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, atomic)


_atomic_moto_dynamodb()


@pytest.fixture(autouse=True)
def _celery_join_may_block() -> Iterator[None]:
    """A test that runs a worker in this process (its bootsteps, ``setup_worker_optimizations``)
    leaves Celery's process-wide "in a worker: result.get() would deadlock" flag set; every
    later ``result.get()`` in the same xdist worker then raises "Never call result.get() within
    a task!". Each test starts outside a worker, as a producer does."""
    import sys

    state = sys.modules.get("celery._state")
    if state is not None:
        state._set_task_join_will_block(False)
    yield

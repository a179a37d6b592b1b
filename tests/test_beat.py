"""The collector as a Celery beat task, against the real Redis (db 1)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import redis
from celery import Celery

import toolkit
from toolkit.collector.beat import (
    SCHEDULE_NAME,
    TASK_NAME,
    broker_settings_from_app,
    register_collector,
)
from toolkit.collector.publisher import PublishReport, Sample

URL = "redis://127.0.0.1:6379/1"
pytestmark = pytest.mark.redis


class Recorder:
    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def publish(self, samples: Sequence[Sample]) -> PublishReport:
        self.samples.extend(samples)
        return PublishReport(len(samples), 1)


@pytest.fixture
def app(unique: str) -> Iterator[Celery]:
    prefix = f"beat{unique}:"
    app = Celery("proj", broker=URL, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix, "priority_steps": [0, 9]}
    toolkit.install(app)
    yield app
    r = redis.Redis.from_url(URL)
    keys = list(r.scan_iter(match=f"{prefix}*"))
    if keys:
        r.delete(*keys)


def test_broker_settings_follow_the_app(app: Celery) -> None:
    s = broker_settings_from_app(app)
    assert s.url == URL and s.priority_steps == (0, 9) and s.global_keyprefix.startswith("beat")


def test_register_schedules_on_its_own_queue_and_collects(app: Celery) -> None:
    rec = Recorder()
    task = register_collector(app, environment="seed", every=30, publisher=rec)
    entry = app.conf.beat_schedule[SCHEDULE_NAME]
    assert entry["task"] == TASK_NAME == task.name
    assert entry["schedule"] == 30.0
    assert entry["options"] == {"queue": "celery-ecs", "expires": 30.0}
    for p in (0, 9, 9):
        app.send_task("jobs.x", queue="reports", priority=p)
    result = task.run()  # what the worker runs when beat sends it
    assert result["ok"] is True
    assert result["queues"] == {"reports": 3}  # discovered through the app's key prefix
    lengths = {s.dimension("Queue"): s.value for s in rec.samples if s.name == "QueueLength"}
    assert lengths == {"reports": 3}
    assert all(("Environment", "seed") in s.dimensions for s in rec.samples)

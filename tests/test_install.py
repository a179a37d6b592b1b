from __future__ import annotations

from celery import Celery
from celery.signals import before_task_publish

import toolkit
from toolkit.stamp import HEADER, stamp_headers


def test_install_wires_stamp_and_heartbeat_once() -> None:
    app = Celery("install-test", broker="memory://", set_as_current=False)
    before = len(app.steps["consumer"])
    toolkit.install(app)
    toolkit.install(app)
    assert len(app.steps["consumer"]) == before + 1
    receivers = [r for r in before_task_publish.receivers if "celery-ecs" in str(r[0])]
    assert len(receivers) == 1


def test_install_can_skip_the_heartbeat() -> None:
    app = Celery("install-test-2", broker="memory://", set_as_current=False)
    before = len(app.steps["consumer"])
    toolkit.install(app, heartbeat=False)
    assert len(app.steps["consumer"]) == before


def test_each_publish_gets_its_own_stamp() -> None:
    headers: dict[str, object] = {}
    stamp_headers(headers, now=lambda: 1000.12345)
    assert headers == {HEADER: 1000.123}
    stamp_headers(headers, now=lambda: 2000.0)  # a retry waits anew: its stamp is the retry's
    assert headers == {HEADER: 2000.0}

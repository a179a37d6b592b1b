"""The Celery app of the sandbox's workers: ``celery -A toolkit.sandbox.app worker``.

The broker is ``$CELERY_BROKER_URL``; on a Redis the user named with ``--broker`` every key is
prefixed with ``$CELERY_ECS_SANDBOX_KEYPREFIX``. The toolkit is wired in with
``toolkit.install(app)``, as in any app.
"""

from __future__ import annotations

import os
import time

from celery import Celery

import toolkit
from toolkit.env import ENV_BROKER_URL_FALLBACK, ENV_SANDBOX_KEYPREFIX

app = Celery("sandbox", broker=os.environ.get(ENV_BROKER_URL_FALLBACK))
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)
if os.environ.get(ENV_SANDBOX_KEYPREFIX):
    app.conf.broker_transport_options = {
        "global_keyprefix": os.environ[ENV_SANDBOX_KEYPREFIX]}
toolkit.install(app)  # the one line every user adds: publish stamp and heartbeat bootstep


@app.task(name="sandbox.work", ignore_result=True)  # type: ignore[untyped-decorator]
def work(n: int, seconds: float = 0.05) -> int:
    time.sleep(seconds)
    return n


@app.task(name="sandbox.long", ignore_result=True)  # type: ignore[untyped-decorator]
def long(seconds: float) -> float:
    """A legitimate long task (an export): longer than stuck_after, under max_task_runtime."""
    time.sleep(seconds)
    return seconds

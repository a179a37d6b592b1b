"""The collector as a Celery task, scheduled by beat (the seed's setup).

    from toolkit.collector.beat import register_collector
    register_collector(app, environment="production", every=60)

registers the task ``celery_ecs.collect`` and a beat entry that sends it to its own queue
(``celery-ecs`` by default), so one small worker consumes it:
``celery -A proj worker -Q celery-ecs -c 1`` next to ``celery -A proj beat``. Keep that worker
separate from the ones it watches: a collector stuck behind a backlog reports nothing. The
recommended home for the collector is the scheduled Lambda (see docs/architecture.md).

Broker settings come from the app: ``broker_url`` and ``broker_transport_options``
(``global_keyprefix``, ``priority_steps``, ``sep``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from toolkit.celeryapp import broker_of
from toolkit.config import BrokerSettings, Settings, load_settings

TASK_NAME = "celery_ecs.collect"
SCHEDULE_NAME = "celery-ecs-collect"
DEFAULT_QUEUE = "celery-ecs"


def broker_settings_from_app(app: Any) -> BrokerSettings:
    """BrokerSettings matching how ``app`` consumes from its broker (:func:`broker_of`)."""
    broker = broker_of(app, "read")
    return BrokerSettings(
        url=broker.url,
        global_keyprefix=broker.global_keyprefix,
        priority_steps=broker.priority_steps,
        separator=broker.separator,
    )


def register_collector(
    app: Any,
    *,
    environment: str | None = None,
    every: float = 60.0,
    queue: str = DEFAULT_QUEUE,
    queues: Sequence[str] | None = None,
    config_file: str | None = None,
    namespace: str | None = None,
    publisher: Any = None,
) -> Any:
    """Register the collection task on ``app`` and schedule it every ``every`` seconds.

    Returns the task. ``publisher`` is injected in tests; by default a CloudWatch publisher is
    built on first run.
    """
    state: dict[str, Any] = {}

    def _settings() -> Settings:
        if "settings" not in state:
            base = load_settings(
                config_file,
                environment=environment,
                namespace=namespace,
                queues=queues,
                require_broker=False,
            )
            state["settings"] = replace(base, broker=base.broker or broker_settings_from_app(app))
        settings: Settings = state["settings"]
        return settings

    @app.task(name=TASK_NAME, ignore_result=True, acks_late=False)  # type: ignore[untyped-decorator]
    def collect() -> dict[str, Any]:
        from toolkit.collector.brokers import open_reader
        from toolkit.collector.cycle import QueueSource, run_cycle
        from toolkit.collector.publisher import CloudWatchPublisher

        settings = _settings()
        assert settings.broker is not None
        if "reader" not in state:
            state["reader"] = open_reader(settings.broker)
            state["source"] = QueueSource(settings)
        pub = publisher or state.setdefault(
            "publisher",
            CloudWatchPublisher(settings.namespace, high_resolution=settings.high_resolution),
        )
        result = run_cycle(state["reader"], settings, pub, source=state["source"])
        return {
            "ok": result.ok,
            "errors": list(result.errors),
            "queues": {q.queue: q.length for q in result.queues},
            "metrics": len(result.samples),
        }

    schedule = dict(app.conf.beat_schedule or {})
    schedule[SCHEDULE_NAME] = {
        "task": TASK_NAME,
        "schedule": float(every),
        # a collection that waited longer than one period is stale: drop it, the next one comes
        "options": {"queue": queue, "expires": float(every)},
    }
    app.conf.beat_schedule = schedule
    return collect

"""Public path of the worker heartbeat: ``toolkit.heartbeat.install(app)``.

The code lives in :mod:`toolkit.worker` (settings, metadata, beater, bootstep); the registry
contract in :mod:`toolkit.registry`. This module re-exports the names the docs show.
"""

from toolkit.registry import (
    RedisLike,
    WorkerHeartbeat,
    consumers_per_queue,
    fresh,
    index_key,
    read_registry,
    registry_key,
    remove_heartbeat,
    workers_per_service,
    write_heartbeat,
)
from toolkit.worker.beatbeat import BeatHeartbeatMixin
from toolkit.worker.beatbeat import install as install_beat
from toolkit.worker.beater import Beater, TaskOutcomes, TaskView
from toolkit.worker.bootstep import install
from toolkit.worker.metadata import EcsMetadata, fetch_ecs_metadata
from toolkit.worker.settings import HeartbeatSettings

__all__ = [
    "BeatHeartbeatMixin",
    "Beater",
    "EcsMetadata",
    "HeartbeatSettings",
    "RedisLike",
    "TaskOutcomes",
    "TaskView",
    "WorkerHeartbeat",
    "consumers_per_queue",
    "fetch_ecs_metadata",
    "fresh",
    "index_key",
    "install",
    "install_beat",
    "read_registry",
    "registry_key",
    "remove_heartbeat",
    "workers_per_service",
    "write_heartbeat",
]

"""Heartbeat settings: where the worker bootstep writes its liveness, read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from toolkit.env import (
    DEFAULT_HEARTBEAT_FILE,
    DEFAULT_READY_FILE,
    ENV_ECS_METADATA_URI,
    ENV_HEARTBEAT_FILE,
    ENV_HEARTBEAT_INTERVAL,
    ENV_HEARTBEAT_MAX_BUSY,
    ENV_HEARTBEAT_REGISTRY,
    ENV_HEARTBEAT_TTL,
    ENV_READY_FILE,
    parse_float,
)


@dataclass(frozen=True)
class HeartbeatSettings:
    """Where the worker bootstep writes its liveness files."""

    file: str = DEFAULT_HEARTBEAT_FILE
    ready_file: str = DEFAULT_READY_FILE
    interval: float = 5.0
    # Heartbeat registry (toolkit.heartbeat): a Redis URL, "off", or None for "the broker's URL
    # when the broker is Redis". Entries expire after registry_ttl seconds without a beat.
    registry: str | None = None
    registry_ttl: float = 30.0
    ecs_metadata_uri: str | None = None
    # Solo pool only: a helper thread beats while a task runs, for at most this many seconds
    # (or the task's own time limit), so a hung task goes stale instead of healthy forever.
    max_busy: float = 1800.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HeartbeatSettings:
        env = os.environ if environ is None else environ
        base = cls()

        def number(name: str, default: float) -> float:
            return parse_float(env.get(name), name, default)

        return cls(
            file=env.get(ENV_HEARTBEAT_FILE) or base.file,
            ready_file=env.get(ENV_READY_FILE) or base.ready_file,
            interval=number(ENV_HEARTBEAT_INTERVAL, base.interval),
            registry=env.get(ENV_HEARTBEAT_REGISTRY) or None,
            registry_ttl=number(ENV_HEARTBEAT_TTL, base.registry_ttl),
            ecs_metadata_uri=env.get(ENV_ECS_METADATA_URI) or None,
            max_busy=number(ENV_HEARTBEAT_MAX_BUSY, base.max_busy),
        )

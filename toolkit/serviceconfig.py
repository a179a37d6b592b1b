"""The ``[[services]]`` entries of ``celery-ecs.toml`` and the ``[verdicts]`` table.

One ECS service per Celery worker: its cluster, service name and queues; the verdict thresholds
(``[verdicts]``, overridable per service) that ``celery-ecs check`` and ``WorkerStuck`` use; and
the optional deployment keys only ``celery-ecs deploy`` reads. Part of the config model:
:mod:`toolkit.config` re-exports these names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from toolkit.env import parse_bool, parse_int, parse_queue_list, parse_str
from toolkit.errors import ConfigError

# --- [[services]] deployment keys (celery-ecs deploy) ------------------------------------------
# Optional in every [[services]] entry; only `celery-ecs deploy` reads them (the task size and
# autoscaling range of the service's stack, and the celery-ecs:remediate opt-in tag).
DEPLOYMENT_KEYS = (
    "cpu", "memory", "concurrency", "desired_count", "min_capacity", "max_capacity", "remediate",
)


@dataclass(frozen=True)
class ServiceDeployment:
    """How ``celery-ecs deploy`` sizes and scales one worker service."""

    cpu: int = 512  # task CPU units (1024 = 1 vCPU)
    memory: int = 1024  # MiB
    concurrency: int = 4  # celery worker -c
    desired_count: int = 2
    min_capacity: int = 1
    max_capacity: int = 10
    remediate: bool = False  # the celery-ecs:remediate tag: opt-in to forced redeployment


def parse_deployment(item: Mapping[str, Any], where: str) -> ServiceDeployment:
    base = ServiceDeployment()

    def number(key: str, low: int) -> int:
        value = parse_int(item.get(key), f"{where}.{key}", getattr(base, key))
        if value < low:
            raise ConfigError(f"{where}.{key} must be at least {low}, got {value}")
        return value

    out = ServiceDeployment(
        cpu=number("cpu", 128),
        memory=number("memory", 128),
        concurrency=number("concurrency", 1),
        desired_count=number("desired_count", 0),
        min_capacity=number("min_capacity", 1),
        max_capacity=number("max_capacity", 1),
        remediate=parse_bool(item.get("remediate", False), f"{where}.remediate"),
    )
    if not out.min_capacity <= out.max_capacity:
        raise ConfigError(f"{where}: min_capacity {out.min_capacity} > max_capacity "
                          f"{out.max_capacity}")
    if not out.min_capacity <= out.desired_count <= out.max_capacity:
        raise ConfigError(f"{where}: desired_count {out.desired_count} is outside "
                          f"min_capacity..max_capacity ({out.min_capacity}..{out.max_capacity})")
    return out


@dataclass(frozen=True)
class VerdictSettings:
    """``[verdicts]``: when a worker service counts as dead, hung or short of memory."""

    dead_after: float = 90.0
    stuck_after: float = 300.0
    min_backlog: int = 1
    memory_high: float = 90.0
    max_task_runtime: float = 3600.0  # a task running longer is hung
    scale_out_grace: float = 300.0  # tasks pending longer than this: no-capacity


VERDICT_KEYS = ("dead_after", "stuck_after", "min_backlog", "memory_high", "max_task_runtime",
                "scale_out_grace")


@dataclass(frozen=True)
class ServiceSettings:
    """One ECS service running one Celery worker, and the queues it consumes."""

    cluster: str
    service: str
    queues: tuple[str, ...]
    deployment: ServiceDeployment = field(default_factory=ServiceDeployment)
    verdicts: VerdictSettings = field(default_factory=VerdictSettings)


def parse_verdicts(raw: Mapping[str, Any], where: str, base: VerdictSettings) -> VerdictSettings:
    """The ``[verdicts]`` keys of ``raw`` over ``base``; bad values are one-line ConfigErrors.

    TOML numbers only (no strings, booleans, ``inf`` or ``nan``): the durations and
    ``memory_high`` must be positive, ``min_backlog`` an integer of at least 1 (0 would make an
    idle service with nothing to do "stuck", and the alarm would redeploy it)."""
    changes: dict[str, Any] = {}
    for key in VERDICT_KEYS:
        if key not in raw:
            continue
        name, value = f"{where}.{key}", raw[key]
        if key == "min_backlog":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value!r}")
            changes[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{name} must be a positive number, got {value!r}")
        changes[key] = float(value)
    return replace(base, **changes)


def parse_verdict_table(raw: object) -> VerdictSettings:
    if raw is None:
        return VerdictSettings()
    if not isinstance(raw, dict):
        raise ConfigError("[verdicts] must be a table")
    unknown = set(raw) - set(VERDICT_KEYS)
    if unknown:
        raise ConfigError(f"[verdicts] has unknown keys: {', '.join(sorted(unknown))}")
    return parse_verdicts(raw, "verdicts", VerdictSettings())


def parse_services(raw: object, defaults: VerdictSettings) -> tuple[ServiceSettings, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("[[services]] must be an array of tables")
    out = []
    for i, item in enumerate(raw):
        where = f"services[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a table")
        missing = {"cluster", "service", "queues"} - set(item)
        if missing:
            raise ConfigError(f"{where} is missing {', '.join(sorted(missing))}")
        unknown = set(item) - {"cluster", "service", "queues", *VERDICT_KEYS, *DEPLOYMENT_KEYS}
        if unknown:
            raise ConfigError(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
        out.append(
            ServiceSettings(
                cluster=parse_str(item["cluster"], f"{where}.cluster"),
                service=parse_str(item["service"], f"{where}.service"),
                queues=parse_queue_list(item["queues"], f"{where}.queues"),
                deployment=parse_deployment(item, where),
                verdicts=parse_verdicts(item, where, defaults),
            )
        )
    return tuple(out)

"""Settings: frozen dataclasses, environment variable names, and the ``celery-ecs.toml`` file.

The environment is read here and nowhere else. Precedence, highest first: explicit arguments
(command-line flags), the config file, the environment, the defaults below.

A config file looks like this (every key is optional except where noted)::

    environment = "production"          # required somewhere: file, --environment or ENVIRONMENT
    namespace = "Celery"
    high_resolution = false             # StorageResolution 1 on every metric
    interval = 60                       # seconds between cycles for `collect --interval`

    [broker]
    url = "redis://redis.internal:6379/0"   # or set CELERY_ECS_BROKER_URL
    global_keyprefix = ""
    priority_steps = [0, 3, 6, 9]
    separator = "\\u0006\\u0016"
    management_url = "http://rabbitmq.internal:15672"   # RabbitMQ queue discovery

    [thresholds]                        # defaults for every queue
    max_length = 1000
    max_age = 600

    [queues.emails]                     # per-queue overrides
    max_length = 50

    [verdicts]                          # service verdicts (`celery-ecs check`, WorkerStuck)
    dead_after = 90                     # s without any heartbeat: the workers are dead
    stuck_after = 300                   # s with free slots, work ready and no task start: hung
    min_backlog = 1                     # below this backlog nothing is stuck
    memory_high = 90                    # % MemoryUtilization over the whole window
    max_task_runtime = 3600             # s: a task running longer is hung (your longest task)
    scale_out_grace = 300               # s tasks may stay pending before it is no-capacity

    [[services]]                        # one per ECS worker service
    cluster = "prod"
    service = "worker-emails"
    queues = ["emails"]
    dead_after = 60                     # any [verdicts] key, for this service only

    state_table = "prod-celery-ecs-state"   # or STATE_TABLE: write each cycle's verdicts there

    [tasks]                             # per-task metrics (toolkit.taskcounts.settings)
    include = ["billing.charge"]        # always their own Task dimension
    top = 20                            # plus the 20 busiest names; the rest are Task=other

The heartbeat registry is read from ``[broker] registry_url``, else
``$CELERY_ECS_HEARTBEAT_REGISTRY`` (what the workers write to), else the broker itself.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from toolkit.env import (
    DEFAULT_CONFIG_FILE,
    DEFAULT_INTERVAL,
    DEFAULT_NAMESPACE,
    DEFAULT_PRIORITY_STEPS,
    DEFAULT_SEPARATOR,
    ENV_BROKER_URL,
    ENV_BROKER_URL_FALLBACK,
    ENV_CONFIG_FILE,
    ENV_ENVIRONMENT,
    ENV_HEARTBEAT_REGISTRY,
    ENV_HIGH_RESOLUTION,
    ENV_NAMESPACE,
    ENV_QUEUES,
    ENV_STATE_TABLE,
    check_interval,
    check_queue_name,
    parse_bool,
    parse_float,
    parse_int,
    parse_queue_list,
    parse_str,
)
from toolkit.errors import ConfigError
from toolkit.serviceconfig import (
    ServiceDeployment,
    ServiceSettings,
    VerdictSettings,
    parse_services,
    parse_verdict_table,
)
from toolkit.taskcounts.settings import TaskMetricSettings, parse_task_table

__all__ = [
    "BrokerSettings",
    "ServiceDeployment",
    "ServiceSettings",
    "Settings",
    "TaskMetricSettings",
    "Thresholds",
    "VerdictSettings",
    "load_settings",
    "read_config_file",
]
from toolkit.urls import check_broker_url, redact_url, url_scheme


@dataclass(frozen=True)
class BrokerSettings:
    url: str = field(repr=False)  # may hold a password: never in a repr or a log line
    global_keyprefix: str = ""
    priority_steps: tuple[int, ...] = DEFAULT_PRIORITY_STEPS
    separator: str = DEFAULT_SEPARATOR
    connect_timeout: float = 5.0
    # read the oldest message of every non-empty priority list for QueueAge (Redis); off saves
    # about three quarters of the server time of a cycle when producers do not stamp messages
    queue_age: bool = True
    # RabbitMQ management API for queue discovery: None derives it from the broker URL's host,
    # "" turns it off; credentials default to the broker URL's
    management_url: str | None = field(default=None, repr=False)
    # where the workers' heartbeat registry lives when not on the broker's Redis (no key prefix)
    registry_url: str | None = field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        return url_scheme(self.url)

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)


@dataclass(frozen=True)
class Thresholds:
    """When a queue counts as critical in the CLI table (``None``: never)."""

    max_length: int | None = None
    max_age: float | None = None


@dataclass(frozen=True)
class Settings:
    environment: str
    broker: BrokerSettings | None = None
    namespace: str = DEFAULT_NAMESPACE
    high_resolution: bool = False
    interval: float = DEFAULT_INTERVAL
    # queues named in the config file: always read, on top of the discovered ones
    queues: tuple[str, ...] = ()
    # `--queue` flags or CELERY_ECS_QUEUES: read exactly these, no discovery
    only_queues: tuple[str, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    queue_thresholds: Mapping[str, Thresholds] = field(default_factory=dict)
    services: tuple[ServiceSettings, ...] = ()
    # DynamoDB table (the alarm handler's STATE_TABLE) the collector writes verdict records to
    state_table: str | None = None
    tasks: TaskMetricSettings = field(default_factory=TaskMetricSettings)

    def thresholds_for(self, queue: str) -> Thresholds:
        return self.queue_thresholds.get(queue, self.thresholds)

    def configured_queues(self) -> tuple[str, ...]:
        """Queues named in the file or by a worker service, in order, without repeats."""
        seen: dict[str, None] = dict.fromkeys(self.queues)
        for svc in self.services:
            seen.update(dict.fromkeys(svc.queues))
        return tuple(seen)


# --- loading ----------------------------------------------------------------------------------


def _thresholds(raw: object, name: str) -> Thresholds:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] must be a table")
    unknown = set(raw) - {"max_length", "max_age"}
    if unknown:
        raise ConfigError(f"[{name}] has unknown keys: {', '.join(sorted(unknown))}")
    length = raw.get("max_length")
    age = raw.get("max_age")
    return Thresholds(
        max_length=None if length is None else parse_int(length, f"{name}.max_length", 0),
        max_age=None if age is None else parse_float(age, f"{name}.max_age", 0.0),
    )


def _broker(
    raw: object, url_override: str | None, env_url: str | None, queue_age: bool | None = None,
    registry_env: str | None = None,
) -> BrokerSettings | None:
    table: dict[str, Any] = {}
    if raw is not None:
        if not isinstance(raw, dict):
            raise ConfigError("[broker] must be a table")
        table = raw
        unknown = set(table) - {
            "url", "global_keyprefix", "priority_steps", "separator",
            "connect_timeout", "queue_age", "management_url", "registry_url",
        }
        if unknown:
            raise ConfigError(f"[broker] has unknown keys: {', '.join(sorted(unknown))}")
    file_url = parse_str(table["url"], "broker.url") if "url" in table else None
    url = url_override or file_url or env_url
    if not url:
        return None
    check_broker_url(url)
    steps_raw = table.get("priority_steps", list(DEFAULT_PRIORITY_STEPS))
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ConfigError("broker.priority_steps must be a non-empty list of integers")
    steps = tuple(sorted({parse_int(s, "broker.priority_steps", 0) for s in steps_raw}))
    return BrokerSettings(
        url=url,
        global_keyprefix=parse_str(table.get("global_keyprefix", ""), "broker.global_keyprefix"),
        priority_steps=steps,
        separator=parse_str(table.get("separator", DEFAULT_SEPARATOR), "broker.separator"),
        connect_timeout=parse_float(table.get("connect_timeout"), "broker.connect_timeout", 5.0),
        queue_age=(
            queue_age if queue_age is not None
            else parse_bool(table.get("queue_age", True), "broker.queue_age")
        ),
        management_url=_management_url(table.get("management_url")),
        registry_url=_registry_url(table.get("registry_url"), registry_env),
    )


def _management_url(raw: object) -> str | None:
    if raw is None:
        return None
    url = parse_str(raw, "broker.management_url")
    if url and url_scheme(url) not in ("http", "https"):
        raise ConfigError(f"broker.management_url must be an http:// or https:// URL, got "
                          f"{redact_url(url)}")
    return url


def _registry_url(raw: object, env_value: str | None) -> str | None:
    value = parse_str(raw, "broker.registry_url") if raw is not None else env_value
    if not value or value.strip().lower() == "off":
        return None
    if url_scheme(value) not in ("redis", "rediss"):
        raise ConfigError(
            f"broker.registry_url must be a redis:// or rediss:// URL, got {redact_url(value)}"
        )
    return value


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML config file, turning every failure into a one-line :class:`ConfigError`."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None


_TOP_KEYS = {
    "environment", "namespace", "high_resolution", "interval", "queues", "broker", "thresholds",
    "services", "verdicts", "state_table", "tasks",
}


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    *,
    environment: str | None = None,
    broker_url: str | None = None,
    namespace: str | None = None,
    queues: Sequence[str] | None = None,
    high_resolution: bool | None = None,
    interval: float | None = None,
    queue_age: bool | None = None,
    environ: Mapping[str, str] | None = None,
    require_broker: bool = True,
) -> Settings:
    """Build :class:`Settings` from flags (the keyword arguments), a file, and the environment.

    ``config_file`` defaults to ``$CELERY_ECS_CONFIG``, then ``./celery-ecs.toml`` if it exists.
    """
    env = os.environ if environ is None else environ
    path: str | os.PathLike[str] | None = config_file or env.get(ENV_CONFIG_FILE) or None
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    data: dict[str, Any] = read_config_file(path) if path is not None else {}
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"config file has unknown keys: {', '.join(sorted(unknown))}")

    env_name = environment or (
        parse_str(data["environment"], "environment") if "environment" in data else None
    ) or env.get(ENV_ENVIRONMENT)
    if not env_name:
        raise ConfigError(
            "no environment name: pass --environment, set it in the config file or "
            f"{ENV_ENVIRONMENT}"
        )

    env_url = env.get(ENV_BROKER_URL) or env.get(ENV_BROKER_URL_FALLBACK)
    broker = _broker(data.get("broker"), broker_url, env_url, queue_age,
                     env.get(ENV_HEARTBEAT_REGISTRY))
    if broker is None and require_broker:
        raise ConfigError(
            f"no broker URL: pass --broker, set [broker] url in the config file or {ENV_BROKER_URL}"
        )

    queue_names, only, defaults, per_queue = _queue_config(data, queues, env)

    if high_resolution is None:
        if "high_resolution" in data:
            high_resolution = parse_bool(data["high_resolution"], "high_resolution")
        else:
            high_resolution = parse_bool(env.get(ENV_HIGH_RESOLUTION, ""), ENV_HIGH_RESOLUTION)
    ns = namespace or (
        parse_str(data["namespace"], "namespace") if "namespace" in data else None
    ) or env.get(ENV_NAMESPACE) or DEFAULT_NAMESPACE
    every = interval if interval is not None else parse_float(
        data.get("interval"), "interval", DEFAULT_INTERVAL
    )
    check_interval(every, "interval")

    return Settings(
        environment=env_name,
        broker=broker,
        namespace=ns,
        high_resolution=high_resolution,
        interval=every,
        queues=queue_names,
        only_queues=only,
        thresholds=defaults,
        queue_thresholds=per_queue,
        services=parse_services(data.get("services"), parse_verdict_table(data.get("verdicts"))),
        state_table=(
            parse_str(data["state_table"], "state_table") if "state_table" in data
            else env.get(ENV_STATE_TABLE)
        ) or None,
        tasks=parse_task_table(data.get("tasks")),
    )


def _queue_config(
    data: Mapping[str, Any], queues: Sequence[str] | None, env: Mapping[str, str]
) -> tuple[tuple[str, ...], tuple[str, ...], Thresholds, dict[str, Thresholds]]:
    """The file's queues (read in addition to discovery), the exclusive list (flags, else
    CELERY_ECS_QUEUES), and the thresholds."""
    queue_tables = data.get("queues", {})
    queue_names: tuple[str, ...] = ()
    per_queue: dict[str, Thresholds] = {}
    if isinstance(queue_tables, list):  # `queues = ["a", "b"]`
        queue_names = parse_queue_list(queue_tables, "queues")
    elif isinstance(queue_tables, dict):  # `[queues.a]` tables
        for name, table in queue_tables.items():
            per_queue[name] = _thresholds(table, f"queues.{name}")
        queue_names = tuple(per_queue)
    else:
        raise ConfigError("queues must be a list of names or [queues.NAME] tables")
    only: tuple[str, ...] = ()
    if queues:
        only = tuple(check_queue_name(q, "--queue") for q in queues)
    elif env.get(ENV_QUEUES):
        only = parse_queue_list(env[ENV_QUEUES], ENV_QUEUES)
    defaults = Thresholds()
    if "thresholds" in data:
        defaults = _thresholds(data["thresholds"], "thresholds")
    merged = {
        q: replace(defaults, **{k: v for k, v in vars(t).items() if v is not None})
        for q, t in per_queue.items()
    }
    return queue_names, only, defaults, merged

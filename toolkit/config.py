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
    visibility_timeout = 3600

    [thresholds]                        # defaults for every queue
    max_length = 1000
    max_age = 600

    [queues.emails]                     # per-queue overrides
    max_length = 50

    [[services]]                        # one per ECS worker service
    cluster = "prod"
    service = "worker-emails"
    queues = ["emails"]
"""

from __future__ import annotations

import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from toolkit.errors import ConfigError

# --- environment variable names (the contract in docs/configuration.md) -----------------------
ENV_ENVIRONMENT = "ENVIRONMENT"
ENV_CONFIG_FILE = "CELERY_ECS_CONFIG"
ENV_BROKER_URL = "CELERY_ECS_BROKER_URL"
ENV_BROKER_URL_FALLBACK = "CELERY_BROKER_URL"
ENV_NAMESPACE = "CELERY_ECS_NAMESPACE"
ENV_QUEUES = "CELERY_ECS_QUEUES"
ENV_HIGH_RESOLUTION = "CELERY_ECS_HIGH_RESOLUTION"
# alarm handler Lambda
ENV_SLACK_WEBHOOK_URL = "SLACK_WEBHOOK_URL"
ENV_SLACK_BOT_TOKEN = "SLACK_BOT_TOKEN"
ENV_SLACK_CHANNEL = "SLACK_CHANNEL"
ENV_SLACK_SECRET_ARN = "SLACK_SECRET_ARN"
ENV_SLACK_API_URL = "SLACK_API_URL"
ENV_REMEDIATION = "REMEDIATION"
ENV_COOLDOWN_SECONDS = "COOLDOWN_SECONDS"
ENV_MAX_REMEDIATIONS_PER_HOUR = "MAX_REMEDIATIONS_PER_HOUR"
ENV_STATE_TABLE = "STATE_TABLE"
ENV_REMEDIATING_METRICS = "REMEDIATING_METRICS"
ENV_GRAFANA_URL = "GRAFANA_DASHBOARD_URL"
# worker heartbeat
ENV_HEARTBEAT_FILE = "CELERY_ECS_HEARTBEAT_FILE"
ENV_READY_FILE = "CELERY_ECS_READY_FILE"
ENV_HEARTBEAT_INTERVAL = "CELERY_ECS_HEARTBEAT_INTERVAL"
ENV_ECS_METADATA_URI = "ECS_CONTAINER_METADATA_URI_V4"
ENV_HEARTBEAT_REGISTRY = "CELERY_ECS_HEARTBEAT_REGISTRY"  # Redis URL, or "off"; default: broker
ENV_HEARTBEAT_TTL = "CELERY_ECS_HEARTBEAT_TTL"
ENV_HEARTBEAT_MAX_BUSY = "CELERY_ECS_HEARTBEAT_MAX_BUSY"  # solo pool: longest task kept alive

DEFAULT_CONFIG_FILE = "celery-ecs.toml"
DEFAULT_NAMESPACE = "Celery"
DEFAULT_PRIORITY_STEPS: tuple[int, ...] = (0, 3, 6, 9)
DEFAULT_SEPARATOR = "\x06\x16"
DEFAULT_VISIBILITY_TIMEOUT = 3600
DEFAULT_INTERVAL = 60.0

RemediationMode = Literal["enabled", "dry-run", "off"]
REMEDIATION_MODES: tuple[RemediationMode, ...] = ("enabled", "dry-run", "off")


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe for logs and errors).

    Works on the text rather than on a parse, because a password with an unencoded ``#``, ``/``,
    ``?`` or ``@`` defeats URL parsers: everything between ``scheme://user:`` and the last ``@``
    is masked. Errs towards masking too much.
    """
    url = _SECRET_PARAM.sub(r"\1***", url)  # redis-py also takes ?password=...
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else "<URL with credentials>"
    at = rest.rfind("@")
    if at == -1:
        return url
    creds, host = rest[:at], rest[at + 1:]
    user, colon, _ = creds.partition(":")
    if not colon:  # `scheme://secret@host`: a bare token may be a password; hide it
        return f"{scheme}://***@{host}"
    return f"{scheme}://{user}:***@{host}"


_SECRET_PARAM = re.compile(
    r"([?&;](?:password|passwd|pass|pwd|token|secret|auth|sasl_password|api_key)=)[^&;#]*",
    re.IGNORECASE,
)


MIN_INTERVAL = 1.0  # CloudWatch's finest resolution; anything shorter only burns API calls


def check_interval(seconds: float, name: str) -> None:
    if not math.isfinite(seconds) or seconds < MIN_INTERVAL:
        raise ConfigError(
            f"{name} must be a finite number of seconds, at least {MIN_INTERVAL:g}; got {seconds}"
        )


def check_broker_url(url: str) -> None:
    """Refuse a URL that cannot be parsed, with a one-line error that does not echo the password."""
    # the parser's own messages quote the text it choked on, which can be part of a password
    # with an unencoded '/', '?' or '#': give fixed reasons only
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"malformed broker URL {redact_url(url)}: cannot be parsed") from None
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError(
            f"malformed broker URL {redact_url(url)}: the port is not a number (a password "
            "with '/', '?' or '#' must be percent-encoded)"
        ) from None
    if not parts.scheme or "://" not in url:
        raise ConfigError(f"malformed broker URL {redact_url(url)}: expected scheme://host")
    if parts.scheme.lower() in {"redis", "rediss"}:
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ConfigError(
                f"malformed broker URL {redact_url(url)}: the Redis database must be a number, "
                f"got {db!r}"
            )


@dataclass(frozen=True)
class BrokerSettings:
    url: str = field(repr=False)  # may hold a password: never in a repr or a log line
    global_keyprefix: str = ""
    priority_steps: tuple[int, ...] = DEFAULT_PRIORITY_STEPS
    separator: str = DEFAULT_SEPARATOR
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT
    connect_timeout: float = 5.0
    # read the oldest message of every non-empty priority list for QueueAge (Redis); off saves
    # about three quarters of the server time of a cycle when producers do not stamp messages
    queue_age: bool = True

    @property
    def scheme(self) -> str:
        try:
            return urlsplit(self.url).scheme.lower()
        except ValueError:
            return ""

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)


@dataclass(frozen=True)
class Thresholds:
    """When a queue counts as critical in the CLI table (``None``: never)."""

    max_length: int | None = None
    max_age: float | None = None


@dataclass(frozen=True)
class ServiceSettings:
    """One ECS service running one Celery worker, and the queues it consumes."""

    cluster: str
    service: str
    queues: tuple[str, ...]


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

    def thresholds_for(self, queue: str) -> Thresholds:
        return self.queue_thresholds.get(queue, self.thresholds)

    def configured_queues(self) -> tuple[str, ...]:
        """Queues named in the file or by a worker service, in order, without repeats."""
        seen: dict[str, None] = dict.fromkeys(self.queues)
        for svc in self.services:
            seen.update(dict.fromkeys(svc.queues))
        return tuple(seen)


@dataclass(frozen=True)
class HeartbeatSettings:
    """Where the worker bootstep writes its liveness files."""

    file: str = "/tmp/celery-ecs-heartbeat"
    ready_file: str = "/tmp/celery-ecs-ready"
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
        return cls(
            file=env.get(ENV_HEARTBEAT_FILE) or base.file,
            ready_file=env.get(ENV_READY_FILE) or base.ready_file,
            interval=_float(env.get(ENV_HEARTBEAT_INTERVAL), ENV_HEARTBEAT_INTERVAL, base.interval),
            registry=env.get(ENV_HEARTBEAT_REGISTRY) or None,
            registry_ttl=_float(env.get(ENV_HEARTBEAT_TTL), ENV_HEARTBEAT_TTL, base.registry_ttl),
            ecs_metadata_uri=env.get(ENV_ECS_METADATA_URI) or None,
            max_busy=_float(env.get(ENV_HEARTBEAT_MAX_BUSY), ENV_HEARTBEAT_MAX_BUSY, base.max_busy),
        )


MIN_COOLDOWN_SECONDS = 60  # COOLDOWN_SECONDS below this is clamped up, with a warning


@dataclass(frozen=True)
class AlarmHandlerSettings:
    """What the alarm handler Lambda (and ``celery-ecs remediate``) reads from its environment."""

    environment: str = ""
    slack_webhook_url: str | None = field(default=None, repr=False)
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_channel: str | None = None
    slack_secret_arn: str | None = None
    slack_api_url: str | None = None
    remediation: RemediationMode = "off"
    cooldown_seconds: int = 900
    max_remediations_per_hour: int = 3
    state_table: str | None = None
    remediating_metrics: tuple[str, ...] = ("WorkerStuck",)
    grafana_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AlarmHandlerSettings:
        env = os.environ if environ is None else environ
        mode = (env.get(ENV_REMEDIATION) or "off").strip().lower()
        if mode not in REMEDIATION_MODES:
            raise ConfigError(
                f"{ENV_REMEDIATION} must be one of {', '.join(REMEDIATION_MODES)}, got {mode!r}"
            )
        metrics = tuple(
            m.strip() for m in (env.get(ENV_REMEDIATING_METRICS) or "WorkerStuck").split(",")
        )
        cooldown = _int(env.get(ENV_COOLDOWN_SECONDS), ENV_COOLDOWN_SECONDS, 900)
        if cooldown < MIN_COOLDOWN_SECONDS:
            # Below a minute a stuck service could be redeployed in a loop before its new tasks
            # even start: clamp (not refuse, so a typo does not disable alerting) and say so.
            logging.getLogger("toolkit.config").warning(
                "%s=%d is below the minimum of %d s: using %d",
                ENV_COOLDOWN_SECONDS, cooldown, MIN_COOLDOWN_SECONDS, MIN_COOLDOWN_SECONDS,
            )
            cooldown = MIN_COOLDOWN_SECONDS
        return cls(
            environment=env.get(ENV_ENVIRONMENT, ""),
            slack_webhook_url=env.get(ENV_SLACK_WEBHOOK_URL) or None,
            slack_bot_token=env.get(ENV_SLACK_BOT_TOKEN) or None,
            slack_channel=env.get(ENV_SLACK_CHANNEL) or None,
            slack_secret_arn=env.get(ENV_SLACK_SECRET_ARN) or None,
            slack_api_url=env.get(ENV_SLACK_API_URL) or None,
            remediation=mode,  # narrowed by the membership check above
            cooldown_seconds=cooldown,
            max_remediations_per_hour=_int(
                env.get(ENV_MAX_REMEDIATIONS_PER_HOUR), ENV_MAX_REMEDIATIONS_PER_HOUR, 3
            ),
            state_table=env.get(ENV_STATE_TABLE) or None,
            remediating_metrics=tuple(m for m in metrics if m),
            grafana_url=env.get(ENV_GRAFANA_URL) or None,
        )


# --- loading ----------------------------------------------------------------------------------


def _int(raw: object, name: str, default: int) -> int:
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ConfigError(f"{name} must be an integer, got {raw!r}")
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {value}")
    return value


def _float(raw: object, name: str, default: float) -> float:
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ConfigError(f"{name} must be a number, got {raw!r}")
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < 0 or value != value:
        raise ConfigError(f"{name} must be a non-negative number, got {raw!r}")
    return value


def _bool(raw: object, name: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(raw, str) and raw.strip().lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _str(raw: object, name: str) -> str:
    if not isinstance(raw, str):
        raise ConfigError(f"{name} must be a string, got {type(raw).__name__}")
    return raw


def check_queue_name(queue: str, where: str) -> str:
    """A queue name is taken as written; empty, blank or control characters are refused."""
    if not queue.strip() or any(not ch.isprintable() for ch in queue):
        raise ConfigError(
            f"{where}: invalid queue name {queue!r} (empty, or contains control characters)"
        )
    return queue


def _queue_list(raw: object, name: str) -> tuple[str, ...]:
    if isinstance(raw, str):  # "a, b" from an environment variable: spaces around commas go
        items: Sequence[object] = [q.strip() for q in raw.split(",")]
    elif isinstance(raw, list):
        items = raw
    else:
        raise ConfigError(f"{name} must be a list of queue names")
    return tuple(check_queue_name(_str(item, name), name) for item in items)


def _thresholds(raw: object, name: str) -> Thresholds:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] must be a table")
    unknown = set(raw) - {"max_length", "max_age"}
    if unknown:
        raise ConfigError(f"[{name}] has unknown keys: {', '.join(sorted(unknown))}")
    length = raw.get("max_length")
    age = raw.get("max_age")
    return Thresholds(
        max_length=None if length is None else _int(length, f"{name}.max_length", 0),
        max_age=None if age is None else _float(age, f"{name}.max_age", 0.0),
    )


def _broker(
    raw: object, url_override: str | None, env_url: str | None, queue_age: bool | None = None
) -> BrokerSettings | None:
    table: dict[str, Any] = {}
    if raw is not None:
        if not isinstance(raw, dict):
            raise ConfigError("[broker] must be a table")
        table = raw
        unknown = set(table) - {
            "url", "global_keyprefix", "priority_steps", "separator", "visibility_timeout",
            "connect_timeout", "queue_age",
        }
        if unknown:
            raise ConfigError(f"[broker] has unknown keys: {', '.join(sorted(unknown))}")
    file_url = _str(table["url"], "broker.url") if "url" in table else None
    url = url_override or file_url or env_url
    if not url:
        return None
    check_broker_url(url)
    steps_raw = table.get("priority_steps", list(DEFAULT_PRIORITY_STEPS))
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ConfigError("broker.priority_steps must be a non-empty list of integers")
    steps = tuple(sorted({_int(s, "broker.priority_steps", 0) for s in steps_raw}))
    return BrokerSettings(
        url=url,
        global_keyprefix=_str(table.get("global_keyprefix", ""), "broker.global_keyprefix"),
        priority_steps=steps,
        separator=_str(table.get("separator", DEFAULT_SEPARATOR), "broker.separator"),
        visibility_timeout=_int(
            table.get("visibility_timeout"), "broker.visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT
        ),
        connect_timeout=_float(table.get("connect_timeout"), "broker.connect_timeout", 5.0),
        queue_age=(
            queue_age if queue_age is not None
            else _bool(table.get("queue_age", True), "broker.queue_age")
        ),
    )


def _services(raw: object) -> tuple[ServiceSettings, ...]:
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
        out.append(
            ServiceSettings(
                cluster=_str(item["cluster"], f"{where}.cluster"),
                service=_str(item["service"], f"{where}.service"),
                queues=_queue_list(item["queues"], f"{where}.queues"),
            )
        )
    return tuple(out)


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
    "services",
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
        _str(data["environment"], "environment") if "environment" in data else None
    ) or env.get(ENV_ENVIRONMENT)
    if not env_name:
        raise ConfigError(
            "no environment name: pass --environment, set it in the config file or "
            f"{ENV_ENVIRONMENT}"
        )

    env_url = env.get(ENV_BROKER_URL) or env.get(ENV_BROKER_URL_FALLBACK)
    broker = _broker(data.get("broker"), broker_url, env_url, queue_age)
    if broker is None and require_broker:
        raise ConfigError(
            f"no broker URL: pass --broker, set [broker] url in the config file or {ENV_BROKER_URL}"
        )

    queue_names, only, defaults, per_queue = _queue_config(data, queues, env)

    if high_resolution is None:
        if "high_resolution" in data:
            high_resolution = _bool(data["high_resolution"], "high_resolution")
        else:
            high_resolution = _bool(env.get(ENV_HIGH_RESOLUTION, ""), ENV_HIGH_RESOLUTION)
    ns = namespace or (
        _str(data["namespace"], "namespace") if "namespace" in data else None
    ) or env.get(ENV_NAMESPACE) or DEFAULT_NAMESPACE
    every = interval if interval is not None else _float(
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
        services=_services(data.get("services")),
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
        queue_names = _queue_list(queue_tables, "queues")
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
        only = _queue_list(env[ENV_QUEUES], ENV_QUEUES)
    defaults = Thresholds()
    if "thresholds" in data:
        defaults = _thresholds(data["thresholds"], "thresholds")
    merged = {
        q: replace(defaults, **{k: v for k, v in vars(t).items() if v is not None})
        for q, t in per_queue.items()
    }
    return queue_names, only, defaults, merged

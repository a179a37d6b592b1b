"""Environment variable names, their defaults, and the parsers every setting goes through.

Core module: standard library only. The environment itself is read by the settings classes
(:mod:`toolkit.config`, :mod:`toolkit.worker.settings`, :mod:`toolkit.alarms.settings`); this
module only names what they read, so the names exist once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

from toolkit.errors import ConfigError

# --- collector (celery-ecs collect, the collector Lambda, the beat task) ----------------------
ENV_ENVIRONMENT = "ENVIRONMENT"
ENV_CONFIG_FILE = "CELERY_ECS_CONFIG"
ENV_BROKER_URL = "CELERY_ECS_BROKER_URL"
ENV_BROKER_URL_FALLBACK = "CELERY_BROKER_URL"
ENV_NAMESPACE = "CELERY_ECS_NAMESPACE"
ENV_QUEUES = "CELERY_ECS_QUEUES"
ENV_HIGH_RESOLUTION = "CELERY_ECS_HIGH_RESOLUTION"
# ARN of a Secrets Manager secret whose string is the broker URL (the deployed collector Lambda)
ENV_BROKER_SECRET_ARN = "CELERY_ECS_BROKER_SECRET_ARN"
# --- alarm handler Lambda ---------------------------------------------------------------------
ENV_SLACK_WEBHOOK_URL = "SLACK_WEBHOOK_URL"
ENV_SLACK_BOT_TOKEN = "SLACK_BOT_TOKEN"
ENV_SLACK_CHANNEL = "SLACK_CHANNEL"
ENV_SLACK_SECRET_ARN = "SLACK_SECRET_ARN"
ENV_SLACK_API_URL = "SLACK_API_URL"
ENV_SLACK_ESCALATION_MENTION = "SLACK_ESCALATION_MENTION"
ENV_REMEDIATION = "REMEDIATION"
ENV_COOLDOWN_SECONDS = "COOLDOWN_SECONDS"
ENV_MAX_REMEDIATIONS_PER_HOUR = "MAX_REMEDIATIONS_PER_HOUR"
ENV_STATE_TABLE = "STATE_TABLE"
ENV_REMEDIATING_METRICS = "REMEDIATING_METRICS"
ENV_GRAFANA_URL = "GRAFANA_DASHBOARD_URL"
# --- Slack buttons (lambdas/slack_actions/handler.py, a Lambda function URL) -------------------
ENV_SLACK_SIGNING_SECRET = "SLACK_SIGNING_SECRET"  # or the key of that name in SLACK_SECRET_ARN
ENV_SLACK_ALLOWED_USERS = "SLACK_ALLOWED_USERS"  # Slack user IDs, comma-separated; empty: nobody
ENV_LAMBDA_FUNCTION_NAME = "AWS_LAMBDA_FUNCTION_NAME"  # set by the Lambda runtime
# --- worker heartbeat and health check --------------------------------------------------------
ENV_HEARTBEAT_FILE = "CELERY_ECS_HEARTBEAT_FILE"
ENV_READY_FILE = "CELERY_ECS_READY_FILE"
ENV_HEARTBEAT_INTERVAL = "CELERY_ECS_HEARTBEAT_INTERVAL"
ENV_ECS_METADATA_URI = "ECS_CONTAINER_METADATA_URI_V4"
ENV_HEARTBEAT_REGISTRY = "CELERY_ECS_HEARTBEAT_REGISTRY"  # Redis URL, or "off"; default: broker
ENV_HEARTBEAT_TTL = "CELERY_ECS_HEARTBEAT_TTL"
ENV_HEARTBEAT_MAX_BUSY = "CELERY_ECS_HEARTBEAT_MAX_BUSY"  # solo pool: longest task kept alive
# celery beat's tick heartbeat (toolkit.install(app) in the beat process) and its probe
ENV_BEAT_FILE = "CELERY_ECS_BEAT_FILE"
# the sandbox's worker app (toolkit/sandbox/app.py): kombu global_keyprefix on a shared Redis
ENV_SANDBOX_KEYPREFIX = "CELERY_ECS_SANDBOX_KEYPREFIX"

# --- defaults ---------------------------------------------------------------------------------
DEFAULT_CONFIG_FILE = "celery-ecs.toml"
DEFAULT_NAMESPACE = "Celery"
DEFAULT_PRIORITY_STEPS: tuple[int, ...] = (0, 3, 6, 9)
DEFAULT_SEPARATOR = "\x06\x16"
DEFAULT_INTERVAL = 60.0
DEFAULT_HEARTBEAT_FILE = "/tmp/celery-ecs-heartbeat"
DEFAULT_READY_FILE = "/tmp/celery-ecs-ready"
BEAT_FILE_NAME = "celery-ecs-beat"  # in the temp folder: see default_beat_file()

MIN_INTERVAL = 1.0  # CloudWatch's finest resolution; anything shorter only burns API calls


def default_beat_file(environ: Mapping[str, str] | None = None) -> str:
    """``$CELERY_ECS_BEAT_FILE``, else ``celery-ecs-beat`` in the temp folder: ``$TMPDIR``
    (then ``$TEMP``, ``$TMP``), else ``/tmp``. Beat and its probe run in one container with one
    environment, so both sides find the same path without importing :mod:`tempfile`."""
    env = os.environ if environ is None else environ
    explicit = env.get(ENV_BEAT_FILE)
    if explicit:
        return explicit
    folder = env.get("TMPDIR") or env.get("TEMP") or env.get("TMP") or "/tmp"
    return os.path.join(folder, BEAT_FILE_NAME)


# --- value parsers: one short ConfigError naming the setting ----------------------------------


def parse_int(raw: object, name: str, default: int) -> int:
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


def parse_float(raw: object, name: str, default: float) -> float:
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


def parse_bool(raw: object, name: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(raw, str) and raw.strip().lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def parse_str(raw: object, name: str) -> str:
    if not isinstance(raw, str):
        raise ConfigError(f"{name} must be a string, got {type(raw).__name__}")
    return raw


def check_interval(seconds: float, name: str) -> None:
    if not math.isfinite(seconds) or seconds < MIN_INTERVAL:
        raise ConfigError(
            f"{name} must be a finite number of seconds, at least {MIN_INTERVAL:g}; got {seconds}"
        )


def check_queue_name(queue: str, where: str) -> str:
    """A queue name is taken as written; empty, blank or control characters are refused."""
    if not queue.strip() or any(not ch.isprintable() for ch in queue):
        raise ConfigError(
            f"{where}: invalid queue name {queue!r} (empty, or contains control characters)"
        )
    return queue


def parse_queue_list(raw: object, name: str) -> tuple[str, ...]:
    if isinstance(raw, str):  # "a, b" from an environment variable: spaces around commas go
        items: Sequence[object] = [q.strip() for q in raw.split(",")]
    elif isinstance(raw, list):
        items = raw
    else:
        raise ConfigError(f"{name} must be a list of queue names")
    return tuple(check_queue_name(parse_str(item, name), name) for item in items)

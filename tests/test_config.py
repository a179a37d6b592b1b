from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.config import Thresholds, load_settings
from toolkit.errors import ConfigError
from toolkit.urls import redact_url

CONFIG = """
environment = "staging"
namespace = "FromFile"
interval = 30

[broker]
url = "redis://file-host:6379/0"
global_keyprefix = "app:"
priority_steps = [0, 5]

[thresholds]
max_length = 100
max_age = 60

[queues.emails]
max_length = 5

[queues.reports]

[[services]]
cluster = "prod"
service = "worker-emails"
queues = ["emails", "bulk"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "celery-ecs.toml"
    path.write_text(text)
    return path


def test_file_values_are_read(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, CONFIG), environ={})
    assert s.environment == "staging"
    assert s.namespace == "FromFile"
    assert s.interval == 30
    assert s.broker is not None
    assert s.broker.url == "redis://file-host:6379/0"
    assert s.broker.global_keyprefix == "app:"
    assert s.broker.priority_steps == (0, 5)
    assert s.queues == ("emails", "reports")
    # per-queue values override the defaults, missing ones inherit them
    assert s.thresholds_for("emails") == Thresholds(max_length=5, max_age=60)
    assert s.thresholds_for("reports") == Thresholds(max_length=100, max_age=60)
    assert s.thresholds_for("other") == Thresholds(max_length=100, max_age=60)
    assert s.services[0].queues == ("emails", "bulk")
    assert s.configured_queues() == ("emails", "reports", "bulk")


def test_flags_beat_file_beat_environment(tmp_path: Path) -> None:
    env = {
        "ENVIRONMENT": "from-env",
        "CELERY_ECS_BROKER_URL": "redis://env-host/0",
        "CELERY_ECS_NAMESPACE": "EnvNS",
    }
    path = write(tmp_path, CONFIG)
    from_file = load_settings(path, environ=env)
    assert (from_file.environment, from_file.namespace) == ("staging", "FromFile")
    assert from_file.broker and from_file.broker.url == "redis://file-host:6379/0"
    flags = load_settings(path, environment="flag", broker_url="amqp://flag//", namespace="F",
                          queues=["x"], environ=env)
    assert (flags.environment, flags.namespace, flags.only_queues) == ("flag", "F", ("x",))
    assert flags.queues == ("emails", "reports")  # the file's queues stay, for their thresholds
    assert flags.broker and flags.broker.url == "amqp://flag//"
    # the file's broker table still applies to a broker URL given by flag
    assert flags.broker.global_keyprefix == "app:"
    only_env = load_settings(None, environ=env)
    assert (only_env.environment, only_env.namespace) == ("from-env", "EnvNS")
    assert only_env.broker and only_env.broker.url == "redis://env-host/0"


def test_celery_broker_url_is_a_fallback() -> None:
    s = load_settings(None, environ={"ENVIRONMENT": "e", "CELERY_BROKER_URL": "redis://x/1"})
    assert s.broker and s.broker.url == "redis://x/1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("environment = ", "not valid TOML"),
        ("environment = 'e'\nbogus = 1\n", "unknown keys: bogus"),
        ("environment = 'e'\n[broker]\nurl = 5\n", "broker.url must be a string"),
        ("environment = 'e'\n[broker]\nurl='redis://h'\npriority_steps = []\n", "priority_steps"),
        ("environment = 'e'\n[thresholds]\nmax_length = 'lots'\n", "max_length must be an integer"),
        ("environment = 'e'\n[[services]]\ncluster = 'c'\n", "services[0] is missing queues"),
        ("environment = 'e'\ninterval = 0\n", "interval must be a finite number"),
        ("environment = 'e'\ninterval = inf\n", "interval must be a finite number"),
    ],
)
def test_malformed_config_gives_one_line_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), broker_url="redis://h", environ={})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_environment_and_broker(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match="no environment name"):
        load_settings(None, broker_url="redis://h", environ={})
    with pytest.raises(ConfigError, match="no broker URL"):
        load_settings(None, environment="e", environ={})


def test_redact_url_hides_passwords_only() -> None:
    assert redact_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("amqp://guest:pw@127.0.0.1:5672//") == "amqp://guest:***@127.0.0.1:5672//"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
    assert "s3cret" not in redact_url("rediss://user:s3cret@[::1]:6380/2")


@pytest.mark.parametrize("password", ["p#ss", "pa/ss", "p?w", "p@w", "a:b", "[::1"])
def test_redact_url_survives_unencoded_special_characters(password: str) -> None:
    for url in (f"mysql://app:{password}@db:3306/x", f"redis://:{password}@h/0"):
        shown = redact_url(url)
        assert password not in shown and "***" in shown
    assert redact_url("redis://token-only@h/0") == "redis://***@h/0"


def test_redact_url_masks_secret_query_parameters() -> None:
    shown = redact_url("redis://127.0.0.1:1/0?password=sekrit&db=2")
    assert shown == "redis://127.0.0.1:1/0?password=***&db=2"
    assert "tok" not in redact_url("rediss://h/0?ssl_cert_reqs=none&Token=tok")


def test_alarm_handler_settings_from_env() -> None:
    s = AlarmHandlerSettings.from_env({"REMEDIATION": "dry-run", "COOLDOWN_SECONDS": "60",
                                       "SLACK_BOT_TOKEN": "xoxb-secret"})
    assert (s.remediation, s.cooldown_seconds, s.max_remediations_per_hour) == ("dry-run", 60, 3)
    assert "xoxb-secret" not in repr(s)
    with pytest.raises(ConfigError, match="REMEDIATION must be one of"):
        AlarmHandlerSettings.from_env({"REMEDIATION": "yes please"})
    with pytest.raises(ConfigError, match="COOLDOWN_SECONDS must be an integer"):
        AlarmHandlerSettings.from_env({"COOLDOWN_SECONDS": "soon"})

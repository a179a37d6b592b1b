"""The broker URL from Secrets Manager, for the collector Lambda the stack deploys.

``monitoring.yaml`` gives the collector ``CELERY_ECS_BROKER_SECRET_ARN`` (the secret whose string
is the broker URL) instead of the URL itself. :func:`collector_settings` reads it once per
container and passes it to :func:`toolkit.config.load_settings` as the explicit broker URL, so
it wins over a ``[broker] url`` in the bundled config and over ``CELERY_ECS_BROKER_URL``. The
URL is never logged: errors name the secret's ARN only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from toolkit.aws.clients import client as make_client
from toolkit.config import Settings, load_settings
from toolkit.env import ENV_BROKER_SECRET_ARN
from toolkit.errors import AwsError, ConfigError, aws_error_code


def secret_string(arn: str, client: Any = None) -> str:
    """The ``SecretString`` of ``arn``; one-line errors that never contain the value."""
    sm = client if client is not None else make_client("secretsmanager")
    try:
        value = sm.get_secret_value(SecretId=arn).get("SecretString")
    except Exception as exc:
        code = aws_error_code(exc)
        if code is None:
            raise
        if code == "ResourceNotFoundException":
            raise ConfigError(f"{ENV_BROKER_SECRET_ARN}: secret {arn} does not exist") from None
        raise AwsError(f"cannot read secret {arn}: {code}", code) from None
    if not value:
        raise ConfigError(f"{ENV_BROKER_SECRET_ARN}: secret {arn} has no string value")
    return str(value).strip()


def collector_settings(environ: Mapping[str, str] | None = None, client: Any = None) -> Settings:
    """Collector settings, with the broker URL from the secret when the environment names one."""
    env = os.environ if environ is None else environ
    arn = env.get(ENV_BROKER_SECRET_ARN)
    url = secret_string(arn, client) if arn else None
    return load_settings(broker_url=url, environ=env)

"""One way to build a boto3 client: standard retry mode and bounded timeouts everywhere.

Before this module, the collector, the alarm handler and ``celery-ecs remediate`` each built their
own clients, and ``remediate`` ran on botocore's defaults (60 s read timeout, legacy retries).
boto3 and botocore are imported on first use, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any

#: Bounded so that a stopping collector (SIGTERM, ECS stopTimeout) or a Lambda near its timeout
#: finishes in time when AWS does not answer: at most MAX_ATTEMPTS x (connect + read) seconds.
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 6.0
MAX_ATTEMPTS = 3


def client(
    service: str,
    *,
    region: str | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    max_attempts: int = MAX_ATTEMPTS,
    session: Any = None,
) -> Any:
    """A boto3 client for ``service`` with the toolkit's retry and timeout policy.

    The region and endpoint come from boto3's configuration chain unless ``region`` is given;
    ``session`` (a ``boto3.Session``) is used when given.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

    from toolkit.errors import ConfigError

    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    maker = session if session is not None else boto3
    try:
        return maker.client(service, region_name=region, config=config)
    except NoRegionError:
        raise ConfigError(
            "no AWS region configured: set AWS_DEFAULT_REGION or a profile's region"
        ) from None

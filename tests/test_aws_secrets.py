"""The collector's broker URL from Secrets Manager (CELERY_ECS_BROKER_SECRET_ARN), on moto."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from toolkit.aws.secrets import collector_settings, secret_string
from toolkit.errors import AwsError, ConfigError

URL = "rediss://:t0ken-value@redis.internal:6379/0"


@pytest.fixture
def sm() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="eu-west-1")


def test_the_secret_wins_over_the_file_and_the_environment(sm: Any, tmp_path: Path) -> None:
    arn = sm.create_secret(Name="broker", SecretString=URL + "\n")["ARN"]
    config = tmp_path / "celery-ecs.toml"
    config.write_text('environment = "prod"\n[broker]\nurl = "redis://localhost:6379/0"\n')
    settings = collector_settings(
        {"CELERY_ECS_BROKER_SECRET_ARN": arn, "CELERY_ECS_CONFIG": str(config),
         "CELERY_ECS_BROKER_URL": "redis://other:6379/0"}, client=sm)
    assert settings.broker is not None
    assert settings.broker.url == URL
    assert "t0ken" not in repr(settings) and "t0ken" not in settings.broker.safe_url


def test_without_the_variable_the_environment_url_is_used(sm: Any) -> None:
    settings = collector_settings(
        {"ENVIRONMENT": "prod", "CELERY_ECS_BROKER_URL": "redis://h:6379/0"}, client=sm)
    assert settings.broker is not None and settings.broker.url == "redis://h:6379/0"


def test_a_missing_secret_is_a_config_error_naming_the_arn(sm: Any) -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:nope-AbCdEf"
    with pytest.raises(ConfigError, match=f"secret {arn} does not exist"):
        secret_string(arn, sm)


def test_a_refused_read_is_an_aws_error_with_its_code() -> None:
    class Refusing:
        def get_secret_value(self, SecretId: str) -> dict[str, str]:  # noqa: N803
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}},
                              "GetSecretValue")

    with pytest.raises(AwsError) as failed:
        secret_string("arn:x", Refusing())
    assert failed.value.code == "AccessDeniedException"
    assert str(failed.value) == "cannot read secret arn:x: AccessDeniedException"


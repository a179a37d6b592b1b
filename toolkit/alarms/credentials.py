"""Slack credentials and secrecy: where the webhook URL or bot token come from, and the log
redaction that keeps them out of every log line and error message.

Credentials come from ``SLACK_SECRET_ARN`` (a Secrets Manager JSON secret, fetched once per
container) or the environment. slack_sdk logs to the ``toolkit.slack.http`` logger
(:data:`HTTP_LOG`), pinned at WARNING (slack_sdk logs ``Going to retry the same request: POST
<full URL>`` at INFO and URLs and headers at DEBUG), and a filter on that logger redacts URL paths
and tokens from whatever still gets through, even if someone lowers its level.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.aws.clients import client as aws_client
from toolkit.env import ENV_SLACK_SECRET_ARN
from toolkit.errors import SlackError, aws_error_code, is_transient

__all__ = ["HTTP_LOG", "SlackCredentials", "clear_secret_cache", "redact", "resolve_credentials"]

_REDACTIONS = (
    # A webhook URL's path is the secret: keep the scheme and host, drop path and query.
    (re.compile(r"(?i)\b(https?://[^/\s'\"<>]+)/[^\s'\"<>]*"), r"\1/[redacted]"),
    (re.compile(r"xox[a-zA-Z]-[A-Za-z0-9-]+"), "xox?-[redacted]"),
    (re.compile(r"(?i)(bearer\s+)[^\s'\",}]+"), r"\1[redacted]"),
)


def redact(text: str) -> str:
    """``text`` with URL paths and Slack tokens replaced by ``[redacted]``."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record must not escape unredacted
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info or record.exc_text:
            record.exc_info, record.exc_text = None, None  # tracebacks may hold the URL
        return True


# slack_sdk logs "Going to retry the same request: POST <full URL>" at INFO and URLs and headers at
# DEBUG (a webhook URL and a bot token are secrets): WARNING only, and redacted whatever the level.
HTTP_LOG = logging.getLogger("toolkit.slack.http")
HTTP_LOG.setLevel(logging.WARNING)
HTTP_LOG.addFilter(_RedactingFilter())

# --- credentials --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlackCredentials:
    webhook_url: str | None = field(default=None, repr=False)
    bot_token: str | None = field(default=None, repr=False)
    channel: str | None = None
    # Slack buttons: the app's signing secret (the Slack actions Lambda verifies requests with it)
    signing_secret: str | None = field(default=None, repr=False)

    @property
    def configured(self) -> bool:
        return bool(self.webhook_url or (self.bot_token and self.channel))


_SECRET_CACHE: dict[str, SlackCredentials] = {}


def clear_secret_cache(arn: str | None = None) -> None:
    """Forget the cached Slack secret ``arn`` (every secret when None): the next alarm reads it
    again from Secrets Manager."""
    if arn is None:
        _SECRET_CACHE.clear()
    else:
        _SECRET_CACHE.pop(arn, None)


def _pick(data: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def resolve_credentials(
    settings: AlarmHandlerSettings, *, secrets_client: Any = None, use_cache: bool = True
) -> SlackCredentials:
    """Credentials from ``SLACK_SECRET_ARN`` (fetched once per container) or the environment."""
    env_creds = SlackCredentials(
        settings.slack_webhook_url, settings.slack_bot_token, settings.slack_channel
    )
    arn = settings.slack_secret_arn
    if not arn:
        return env_creds
    if use_cache and arn in _SECRET_CACHE:
        return _SECRET_CACHE[arn]
    from botocore.exceptions import BotoCoreError, ClientError

    if secrets_client is None:
        secrets_client = aws_client("secretsmanager", read_timeout=5)
    try:
        raw = secrets_client.get_secret_value(SecretId=arn)["SecretString"]
    except ClientError as exc:
        code = aws_error_code(exc) or "ClientError"
        raise SlackError(
            f"{ENV_SLACK_SECRET_ARN}: cannot read the Slack secret: {code}",
            retryable=is_transient(exc),
        ) from None
    except (BotoCoreError, KeyError) as exc:
        raise SlackError(
            f"{ENV_SLACK_SECRET_ARN}: cannot read the Slack secret: {type(exc).__name__}",
            retryable=is_transient(exc),
        ) from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise SlackError(f"{ENV_SLACK_SECRET_ARN}: the Slack secret is not a JSON object") from None
    if not isinstance(data, dict):
        raise SlackError(f"{ENV_SLACK_SECRET_ARN}: the Slack secret is not a JSON object")
    creds = SlackCredentials(
        webhook_url=_pick(data, "SLACK_WEBHOOK_URL", "webhook_url") or env_creds.webhook_url,
        bot_token=_pick(data, "SLACK_BOT_TOKEN", "bot_token") or env_creds.bot_token,
        channel=_pick(data, "SLACK_CHANNEL", "channel") or env_creds.channel,
        signing_secret=_pick(data, "SLACK_SIGNING_SECRET", "signing_secret"),
    )
    _SECRET_CACHE[arn] = creds
    return creds

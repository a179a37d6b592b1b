"""Slack: Block Kit messages for alarms and remediation decisions, and the sender.

Messages are built by pure functions (:func:`alarm_message`, :func:`decision_message`) returning a
:class:`SlackMessage`; the senders post them with ``slack_sdk``:

* :class:`WebhookSender` - an incoming webhook (``SLACK_WEBHOOK_URL``); no threads.
* :class:`BotSender` - ``chat.postMessage`` with a bot token and channel; returns the message
  ``ts`` so the remediation outcome (and later the OK) can be posted as a threaded reply.

Both retry connection errors, rate limits (429, honouring ``Retry-After``) and 5xx answers with
slack_sdk's retry handlers, then raise :class:`~toolkit.errors.SlackError`, whose ``retryable``
says whether a later attempt may succeed (transport failure, timeout, 429, 5xx) or not
(``invalid_auth``, ``channel_not_found``, webhook 403/404, an unreadable secret).

Secrets (webhook URL, token) are kept out of logs and error messages: slack_sdk logs to the
``toolkit.slack.http`` logger, pinned at WARNING (slack_sdk logs
``Going to retry the same request: POST <full URL>`` at INFO and URLs and headers at DEBUG), and a
filter on that logger redacts URL paths and tokens from whatever still gets through, even if
someone lowers its lev"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from toolkit.alarms.messages import SlackMessage, cut_text
from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.aws.clients import client as aws_client
from toolkit.errors import SlackError, aws_error_code, is_transient

log = logging.getLogger(__name__)

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
_HTTP_LOG = logging.getLogger("toolkit.slack.http")
_HTTP_LOG.setLevel(logging.WARNING)
_HTTP_LOG.addFilter(_RedactingFilter())

# --- credentials --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlackCredentials:
    webhook_url: str | None = field(default=None, repr=False)
    bot_token: str | None = field(default=None, repr=False)
    channel: str | None = None

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
            f"cannot read the Slack secret: {code}", retryable=is_transient(exc)
        ) from None
    except (BotoCoreError, KeyError) as exc:
        raise SlackError(
            f"cannot read the Slack secret: {type(exc).__name__}",
            retryable=is_transient(exc),
        ) from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise SlackError("the Slack secret is not a JSON object") from None
    if not isinstance(data, dict):
        raise SlackError("the Slack secret is not a JSON object")
    creds = SlackCredentials(
        webhook_url=_pick(data, "SLACK_WEBHOOK_URL", "webhook_url") or env_creds.webhook_url,
        bot_token=_pick(data, "SLACK_BOT_TOKEN", "bot_token") or env_creds.bot_token,
        channel=_pick(data, "SLACK_CHANNEL", "channel") or env_creds.channel,
    )
    _SECRET_CACHE[arn] = creds
    return creds


# --- senders ------------------------------------------------------------------------------------


class SlackSender(Protocol):
    threads: bool

    def post(
        self, message: SlackMessage, *, thread_ts: str | None = None, broadcast: bool = False
    ) -> str | None:
        """Post ``message``; return its ``ts`` when the transport tells it (bot token)."""


def _retry_handlers(max_retries: int, backoff: float) -> list[Any]:
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )
    from slack_sdk.http_retry.builtin_interval_calculators import (
        BackoffRetryIntervalCalculator,
    )
    from slack_sdk.http_retry.jitter import Jitter

    class ProportionalJitter(Jitter):
        """Up to +100% of the interval (slack_sdk's default adds up to a whole second to every
        wait, whatever the backoff: 1-2 s per retry even with a 0.01 s backoff)."""

        def recalculate(self, duration: float) -> float:
            return duration * (1.0 + random.random())  # noqa: S311 - jitter, not crypto

    interval = BackoffRetryIntervalCalculator(backoff_factor=backoff, jitter=ProportionalJitter())
    from urllib.error import URLError

    return [
        ConnectionErrorRetryHandler(
            max_retry_count=max_retries,
            interval_calculator=interval,
            error_types=[URLError, ConnectionError, TimeoutError],
        ),
        RateLimitErrorRetryHandler(max_retry_count=max_retries),
        ServerErrorRetryHandler(max_retry_count=max_retries, interval_calculator=interval),
    ]


def _client_options(timeout: float, max_retries: int, backoff: float) -> dict[str, Any]:
    """What both slack_sdk clients are built with: timeout, the redacting logger, retries."""
    return {
        "timeout": int(max(1, timeout)),
        "logger": _HTTP_LOG,
        "retry_handlers": _retry_handlers(max_retries, backoff),
    }


def _transport_error(exc: BaseException) -> SlackError:
    reason = getattr(exc, "reason", None)
    detail = f": {redact(str(reason))}" if isinstance(reason, str | OSError) else ""
    return SlackError(f"Slack unreachable ({type(exc).__name__}{detail})", retryable=True)


def _retryable_status(status: object) -> bool:
    return isinstance(status, int) and (status == 429 or status >= 500)


# Web API error codes that say "try again later" even when the HTTP status is 200.
_RETRYABLE_API_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


class WebhookSender:
    """Incoming webhook: one message per call, no ``ts``, so no threads."""

    threads = False

    def __init__(
        self, url: str, *, timeout: float = 3.0, max_retries: int = 2, backoff: float = 0.5
    ) -> None:
        from slack_sdk.webhook import WebhookClient

        self._client = WebhookClient(url, **_client_options(timeout, max_retries, backoff))

    def post(
        self, message: SlackMessage, *, thread_ts: str | None = None, broadcast: bool = False
    ) -> str | None:
        try:
            response = self._client.send_dict(message.payload())
        except Exception as exc:  # noqa: BLE001 - URLError, timeouts, resets
            raise _transport_error(exc) from None
        if response.status_code != 200:
            raise SlackError(
                f"Slack webhook answered HTTP {response.status_code}: "
                f"{redact(cut_text(response.body or '', 80))}",
                retryable=_retryable_status(response.status_code),
            )
        return None


class BotSender:
    """``chat.postMessage`` with a bot token; supports threaded replies."""

    threads = True

    def __init__(
        self,
        token: str,
        channel: str,
        *,
        base_url: str | None = None,
        timeout: float = 3.0,
        max_retries: int = 2,
        backoff: float = 0.5,
    ) -> None:
        from slack_sdk import WebClient

        kwargs = _client_options(timeout, max_retries, backoff)
        if base_url:
            kwargs["base_url"] = base_url if base_url.endswith("/") else base_url + "/"
        self.channel = channel
        self._client = WebClient(token=token, **kwargs)

    def post(
        self, message: SlackMessage, *, thread_ts: str | None = None, broadcast: bool = False
    ) -> str | None:
        from slack_sdk.errors import SlackApiError

        payload = message.payload()
        if thread_ts:
            payload["thread_ts"] = thread_ts
            if broadcast:
                payload["reply_broadcast"] = True
        try:
            response = self._client.chat_postMessage(channel=self.channel, **payload)
        except SlackApiError as exc:
            status = getattr(exc.response, "status_code", "?")
            error = exc.response.get("error") if exc.response is not None else None
            raise SlackError(
                f"chat.postMessage failed: HTTP {status}, {error or 'no error code'}",
                retryable=_retryable_status(status) or error in _RETRYABLE_API_ERRORS,
            ) from None
        except Exception as exc:  # noqa: BLE001
            raise _transport_error(exc) from None
        ts = response.get("ts")
        return ts if isinstance(ts, str) else None


def build_sender(
    creds: SlackCredentials, settings: AlarmHandlerSettings, **options: Any
) -> SlackSender | None:
    """A bot sender when a token and channel are set, else a webhook sender, else ``None``."""
    if creds.bot_token and creds.channel:
        return BotSender(
            creds.bot_token, creds.channel, base_url=settings.slack_api_url, **options
        )
    if creds.webhook_url:
        return WebhookSender(creds.webhook_url, **options)
    return None

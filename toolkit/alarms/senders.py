"""Slack: Block Kit messages for alarms and remediation decisions, and the sender.

Messages are built by pure functions (:func:`alarm_message`, :func:`decision_message`) returning a
:class:`SlackMessage`; the senders post them with ``slack_sdk``:

* :class:`WebhookSender` - an incoming webhook (``SLACK_WEBHOOK_URL``); no threads.
* :class:`BotSender` - ``chat.postMessage`` with a bot token and channel; returns the message
  ``ts`` so the remediation outcome (and later the OK) can be posted as a threaded reply.

Both retry connection errors, rate limits (429, honouring ``Retry-After`` only when the wait fits
in the invocation's :class:`~toolkit.alarms.budget.Deadline`) and 5xx answers, then raise
:class:`~toolkit.errors.SlackError`, whose ``retryable`` says whether a later attempt may succeed
(transport failure, timeout, 429, 5xx, no time left) or not (``invalid_auth``,
``channel_not_found``, webhook 403/404, an unreadable secret). A message whose blocks Slack
refuses (``invalid_blocks``, a URL over its limit) is posted again as plain text.

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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from toolkit.alarms.budget import MIN_CALL_SECONDS, Deadline
from toolkit.alarms.messages import SlackMessage, cut_text
from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.aws.clients import client as aws_client
from toolkit.env import ENV_SLACK_SECRET_ARN
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


class _AttemptFailed(SlackError):
    """One request failed; ``retry_after`` is Slack's ``Retry-After`` (429) when it sent one,
    ``rich_refused`` says Slack refused the blocks themselves (plain text may still go)."""

    def __init__(
        self, message: str, *, retryable: bool, retry_after: float | None = None,
        rich_refused: bool = False,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.retry_after = retry_after
        self.rich_refused = rich_refused


# Slack's answers when it refuses the rich message itself: the same text without blocks goes.
_RICH_REFUSALS = ("invalid_blocks", "invalid_attachments", "invalid_blocks_format", "msg_too_long")


def _retry_after(headers: object) -> float | None:
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) and value else value
            try:
                return max(0.0, float(str(raw)))
            except ValueError:
                return None
    return None


def _transport_error(exc: BaseException) -> _AttemptFailed:
    reason = getattr(exc, "reason", None)
    detail = f": {redact(str(reason))}" if isinstance(reason, str | OSError) else ""
    return _AttemptFailed(f"Slack unreachable ({type(exc).__name__}{detail})", retryable=True)


def _retryable_status(status: object) -> bool:
    return isinstance(status, int) and (status == 429 or status >= 500)


# Web API error codes that say "try again later" even when the HTTP status is 200.
_RETRYABLE_API_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


class _RetryingSender:
    """The retry loop both senders share, inside the invocation's :class:`Deadline`.

    Transport failures, timeouts, 429 and 5xx are retried up to ``max_retries`` times; a 429 waits
    its ``Retry-After`` only when that wait (plus one more request) fits in the time left, else the
    message stays owed (a retryable :class:`SlackError`) for the next invocation. Each request's
    timeout is the smaller of ``timeout`` and the time left. When Slack refuses the blocks
    (``invalid_blocks``, a URL over its limit), the same message goes once more as plain text.
    """

    threads = False

    def __init__(
        self, *, timeout: float, max_retries: int, backoff: float,
        deadline: Deadline | None, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.deadline = deadline or Deadline()
        self._sleep = sleep

    def _once(self, payload: dict[str, Any], timeout: float) -> str | None:
        raise NotImplementedError

    def post(
        self, message: SlackMessage, *, thread_ts: str | None = None, broadcast: bool = False
    ) -> str | None:
        extra: dict[str, Any] = {}
        if thread_ts and self.threads:
            extra["thread_ts"] = thread_ts
            if broadcast:
                extra["reply_broadcast"] = True
        try:
            return self._retrying({**message.payload(), **extra})
        except _AttemptFailed as exc:
            if not exc.rich_refused:
                raise
            log.warning(json.dumps({"event": "slack_plain_text_fallback", "error": str(exc)}))
            return self._retrying({**message.fallback_payload(), **extra})

    def _retrying(self, payload: dict[str, Any]) -> str | None:
        attempt = 0
        while True:
            left = self.deadline.left()
            if left < MIN_CALL_SECONDS:
                raise SlackError(
                    "no time left in this invocation to reach Slack", retryable=True
                )
            try:
                return self._once(payload, min(self.timeout, left))
            except _AttemptFailed as exc:
                if not exc.retryable or attempt >= self.max_retries:
                    raise
                wait = exc.retry_after
                if wait is None:
                    wait = self.backoff * (2**attempt) * (1.0 + random.random())  # noqa: S311
                if wait + MIN_CALL_SECONDS > self.deadline.left():
                    raise _AttemptFailed(
                        f"{exc} (waiting {wait:.0f} s more would pass this invocation's "
                        "deadline: left for the retry)",
                        retryable=True,
                    ) from None
                self._sleep(wait)
                attempt += 1


class WebhookSender(_RetryingSender):
    """Incoming webhook: one message per call, no ``ts``, so no threads."""

    threads = False

    def __init__(
        self, url: str, *, timeout: float = 3.0, max_retries: int = 2, backoff: float = 0.5,
        deadline: Deadline | None = None,
    ) -> None:
        from slack_sdk.webhook import WebhookClient

        super().__init__(
            timeout=timeout, max_retries=max_retries, backoff=backoff, deadline=deadline
        )
        # retry_handlers=[]: the loop above retries, within the deadline.
        self._client = WebhookClient(
            url, timeout=int(max(1, timeout)), logger=_HTTP_LOG, retry_handlers=[]
        )

    def _once(self, payload: dict[str, Any], timeout: float) -> str | None:
        self._client.timeout = max(1, int(timeout))
        payload.pop("thread_ts", None)
        payload.pop("reply_broadcast", None)
        try:
            response = self._client.send_dict(payload)
        except Exception as exc:  # noqa: BLE001 - URLError, timeouts, resets
            raise _transport_error(exc) from None
        if response.status_code != 200:
            body = response.body or ""
            raise _AttemptFailed(
                f"Slack webhook answered HTTP {response.status_code}: "
                f"{redact(cut_text(body, 80))}",
                retryable=_retryable_status(response.status_code),
                retry_after=_retry_after(response.headers),
                rich_refused=response.status_code == 400
                and any(r in body for r in _RICH_REFUSALS),
            )
        return None


class BotSender(_RetryingSender):
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
        deadline: Deadline | None = None,
    ) -> None:
        from slack_sdk import WebClient

        super().__init__(
            timeout=timeout, max_retries=max_retries, backoff=backoff, deadline=deadline
        )
        kwargs: dict[str, Any] = {
            "timeout": int(max(1, timeout)), "logger": _HTTP_LOG, "retry_handlers": [],
        }
        if base_url:
            kwargs["base_url"] = base_url if base_url.endswith("/") else base_url + "/"
        self.channel = channel
        self._client = WebClient(token=token, **kwargs)

    def _once(self, payload: dict[str, Any], timeout: float) -> str | None:
        from slack_sdk.errors import SlackApiError

        self._client.timeout = max(1, int(timeout))
        try:
            response = self._client.chat_postMessage(channel=self.channel, **payload)
        except SlackApiError as exc:
            status = getattr(exc.response, "status_code", "?")
            error = exc.response.get("error") if exc.response is not None else None
            raise _AttemptFailed(
                f"chat.postMessage failed: HTTP {status}, {error or 'no error code'}",
                retryable=_retryable_status(status) or error in _RETRYABLE_API_ERRORS,
                retry_after=_retry_after(getattr(exc.response, "headers", None)),
                rich_refused=error in _RICH_REFUSALS,
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

"""Slack senders: what posts a :class:`~toolkit.alarms.messages.SlackMessage`, with ``slack_sdk``:

* :class:`WebhookSender` - an incoming webhook (``SLACK_WEBHOOK_URL``); no threads.
* :class:`BotSender` - ``chat.postMessage`` with a bot token and channel; returns the message
  ``ts`` so the remediation outcome (and later the OK) can be posted as a threaded reply.

Both retry connection errors, rate limits (429, honouring ``Retry-After`` only when the wait fits
in the invocation's :class:`~toolkit.alarms.budget.Deadline`) and 5xx answers, then raise
:class:`~toolkit.errors.SlackError`, whose ``retryable`` says whether a later attempt may succeed
(transport failure, timeout, 429, 5xx, no time left) or not (``invalid_auth``,
``channel_not_found``, webhook 403/404, an unreadable secret). A message whose blocks Slack
refuses (``invalid_blocks``, a URL over its limit) is posted again as plain text.

**A POST that may have landed is not sent again.** A failure before the request was sent
(refused, unreachable, a connect timeout: urllib's ``URLError``) is retried; one after it (a read
timeout, a reset while waiting for the answer) means Slack may have accepted the message. The
webhook sender then raises :class:`SlackMaybePosted` (not retryable: nothing can tell). The bot
sender tags every post with message metadata (``celery_ecs_message``, the message's ``key``) and
looks for it (``conversations.history``, or ``conversations.replies`` in a thread) before posting
again: found, its ``ts`` is returned; absent, it is posted again; the lookup failing leaves it
"maybe posted" (:class:`SlackMaybePosted`, retryable when a later lookup may answer).

Secrets (webhook URL, token) are kept out of logs and error messages
(:mod:`toolkit.alarms.credentials`: where they come from, and the redaction).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from toolkit.alarms.budget import MIN_CALL_SECONDS, Deadline
from toolkit.alarms.credentials import (
    HTTP_LOG,
    SlackCredentials,
    clear_secret_cache,
    redact,
    resolve_credentials,
)
from toolkit.alarms.messages import SlackMessage, cut_text
from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.errors import SlackError

__all__ = [
    "BotSender", "SlackCredentials", "SlackMaybePosted", "SlackSender", "WebhookSender",
    "build_sender", "clear_secret_cache", "redact", "resolve_credentials",
]

log = logging.getLogger(__name__)

# --- senders ------------------------------------------------------------------------------------


class SlackSender(Protocol):
    threads: bool

    def post(
        self, message: SlackMessage, *, thread_ts: str | None = None, broadcast: bool = False
    ) -> str | None:
        """Post ``message``; return its ``ts`` when the transport tells it (bot token)."""


class SlackMaybePosted(SlackError):
    """The request was sent but its answer never came: Slack may show the message. Not sent
    again; ``retryable`` when a later lookup (bot token) may still tell."""

    maybe_posted = True


class _AttemptFailed(SlackError):
    """One request failed; ``retry_after`` is Slack's ``Retry-After`` (429) when it sent one,
    ``rich_refused`` says Slack refused the blocks themselves (plain text may still go),
    ``maybe_sent`` that the request had gone out when it failed (Slack may have accepted it)."""

    def __init__(
        self, message: str, *, retryable: bool, retry_after: float | None = None,
        rich_refused: bool = False, maybe_sent: bool = False,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.retry_after = retry_after
        self.rich_refused = rich_refused
        self.maybe_sent = maybe_sent


METADATA_EVENT = "celery_ecs_message"  # the metadata event_type of the toolkit's posts
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
    """urllib raises ``URLError`` for what fails before the request is sent (connect, TLS,
    send); anything else (a read timeout, a reset or an unparsable answer while waiting) came
    after it: the request may have been accepted."""
    from urllib.error import URLError

    reason = getattr(exc, "reason", None)
    detail = f": {redact(str(reason))}" if isinstance(reason, str | OSError) else ""
    if isinstance(exc, URLError):
        return _AttemptFailed(f"Slack unreachable ({type(exc).__name__}{detail})", retryable=True)
    return _AttemptFailed(
        f"Slack did not answer after the request was sent ({type(exc).__name__}{detail})",
        retryable=True, maybe_sent=True,
    )


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

    def _landed(self, exc: _AttemptFailed, key: str | None, thread_ts: str | None) -> str | None:
        """After a request that may have landed: its ``ts`` when it did, ``None`` when it did not
        (post again), else :class:`SlackMaybePosted`. Without a way to look (a webhook), it is
        never sent again."""
        raise SlackMaybePosted(
            f"{exc}: Slack may have accepted it, so it is not sent again", retryable=False
        )

    def post(
        self, message: SlackMessage, *, thread_ts: str | None = None, broadcast: bool = False
    ) -> str | None:
        extra: dict[str, Any] = {}
        if thread_ts and self.threads:
            extra["thread_ts"] = thread_ts
            if broadcast:
                extra["reply_broadcast"] = True
        try:
            return self._retrying({**message.payload(), **extra}, message.key)
        except _AttemptFailed as exc:
            if not exc.rich_refused:
                raise
            log.warning(json.dumps({"event": "slack_plain_text_fallback", "error": str(exc)}))
            return self._retrying({**message.fallback_payload(), **extra}, message.key)

    def _retrying(self, payload: dict[str, Any], key: str | None = None) -> str | None:
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
                if exc.maybe_sent:
                    log.warning(json.dumps({"event": "slack_maybe_posted", "error": str(exc)}))
                    found = self._landed(exc, key, payload.get("thread_ts"))
                    if found is not None:
                        return found
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
            url, timeout=int(max(1, timeout)), logger=HTTP_LOG, retry_handlers=[]
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
    """``chat.postMessage`` with a bot token; supports threaded replies. Every post carries the
    message's ``key`` as metadata, so that :meth:`find` can tell whether it landed."""

    threads = True

    def _retrying(self, payload: dict[str, Any], key: str | None = None) -> str | None:
        if key:
            payload = {**payload, "metadata": {"event_type": METADATA_EVENT,
                                               "event_payload": {"key": key}}}
        return super()._retrying(payload, key)

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
            "timeout": int(max(1, timeout)), "logger": HTTP_LOG, "retry_handlers": [],
        }
        if base_url:
            kwargs["base_url"] = base_url if base_url.endswith("/") else base_url + "/"
        self.channel = channel
        self._client = WebClient(token=token, **kwargs)

    def _landed(self, exc: _AttemptFailed, key: str | None, thread_ts: str | None) -> str | None:
        if not key:
            return super()._landed(exc, key, thread_ts)
        try:
            return self.find(key, thread_ts)
        except SlackError as failed:
            raise SlackMaybePosted(
                f"{exc}; looking for it failed ({failed}): not sent again until a lookup answers",
                retryable=failed.retryable,
            ) from None

    def find(self, key: str, thread_ts: str | None = None) -> str | None:
        """The ``ts`` of the message posted with ``key`` (its metadata), ``None`` if Slack has no
        such message: ``conversations.history`` of the channel, or ``conversations.replies`` of
        ``thread_ts``. Needs ``channels:history`` (``groups:history`` for a private channel)."""
        from slack_sdk.errors import SlackApiError

        left = self.deadline.left()
        if left < MIN_CALL_SECONDS:
            raise SlackError("no time left in this invocation to look in Slack", retryable=True)
        self._client.timeout = max(1, int(min(self.timeout, left)))
        try:
            if thread_ts:
                response = self._client.conversations_replies(
                    channel=self.channel, ts=thread_ts, include_all_metadata=True, limit=200
                )
            else:
                response = self._client.conversations_history(
                    channel=self.channel, include_all_metadata=True, limit=100
                )
        except SlackApiError as exc:
            status = getattr(exc.response, "status_code", "?")
            error = exc.response.get("error") if exc.response is not None else None
            raise SlackError(
                f"conversations.{'replies' if thread_ts else 'history'} failed: HTTP {status}, "
                f"{error or 'no error code'}",
                retryable=_retryable_status(status) or error in _RETRYABLE_API_ERRORS,
            ) from None
        except Exception as exc:  # noqa: BLE001
            raise SlackError(str(_transport_error(exc)), retryable=True) from None
        messages = response.get("messages")
        for found in messages if isinstance(messages, list) else []:
            meta = found.get("metadata") if isinstance(found, dict) else None
            payload = meta.get("event_payload") if isinstance(meta, dict) else None
            if isinstance(payload, dict) and payload.get("key") == key:
                ts = found.get("ts")
                return ts if isinstance(ts, str) else None
        return None

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

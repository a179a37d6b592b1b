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
someone lowers its level.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from toolkit.alarms import AlarmEvent, AlarmState
from toolkit.config import AlarmHandlerSettings
from toolkit.errors import SlackError, aws_error_code
from toolkit.remediation import Decision

__all__ = [
    "BotSender",
    "SlackCredentials",
    "SlackMessage",
    "SlackSender",
    "WebhookSender",
    "alarm_message",
    "build_sender",
    "decision_message",
    "resolve_credentials",
]

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

STYLE: dict[AlarmState, tuple[str, str, str]] = {
    # state: (emoji, attachment colour, word)
    "ALARM": (":rotating_light:", "#E01E5A", "ALARM"),
    "OK": (":white_check_mark:", "#2EB67D", "Resolved"),
    "INSUFFICIENT_DATA": (":grey_question:", "#9E9E9E", "No data"),
}
VISIBILITY_NOTE = (
    "Tasks the old worker had reserved go back to the queue only after the broker's visibility "
    "timeout (1 hour by default on Redis), so they run late, not never."
)


@dataclass(frozen=True)
class SlackMessage:
    text: str  # the notification preview on a phone, and the fallback
    blocks: tuple[Mapping[str, Any], ...]
    color: str | None = None

    def payload(self) -> dict[str, Any]:
        if self.color is None:
            return {"text": self.text, "blocks": [dict(b) for b in self.blocks]}
        return {
            "text": self.text,
            "attachments": [{"color": self.color, "blocks": [dict(b) for b in self.blocks]}],
        }

    def plain(self) -> str:
        """A readable rendering of the blocks (for docs, logs and tests)."""
        lines: list[str] = []
        for block in self.blocks:
            kind = block.get("type")
            if kind == "header":
                lines.append(f"# {block['text']['text']}")
            elif kind == "section":
                if "text" in block:
                    lines.append(block["text"]["text"])
                for f in block.get("fields", []):
                    lines.append("  " + f["text"].replace("\n", ": ", 1))
            elif kind == "context":
                lines.append("  _" + " — ".join(e.get("text", "") for e in block["elements"]) + "_")
            elif kind == "actions":
                links = (f"[{e['text']['text']}]({e['url']})" for e in block["elements"])
                lines.append("  " + " | ".join(links))
        return "\n".join(lines)


# --- message builders ---------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.0f}" if value == int(value) and abs(value) < 1e15 else f"{value:.2f}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _subject(alarm: AlarmEvent) -> str | None:
    if alarm.cluster and alarm.service:
        return f"service `{alarm.service}` in cluster `{alarm.cluster}`"
    if alarm.queue:
        return f"queue `{alarm.queue}`"
    return None


_WORDS: dict[str, Callable[[AlarmEvent, str], str]] = {
    "WorkerStuck": lambda a, v: f"Workers of {a.service or 'the service'} stopped making progress.",
    "WorkersAlive": lambda a, v: f"Only {v} worker(s) of {a.service or 'the service'} are alive.",
    "QueueLength": lambda a, v: f"Queue {a.queue or '?'} has {v} messages waiting.",
    "QueueAge": lambda a, v: f"The oldest message in {a.queue or '?'} has waited {v} s.",
    "BacklogPerTask": lambda a, v: f"{v} queued messages per running task.",
    "CollectorHeartbeat": lambda a, v: "The collector stopped publishing metrics.",
    "CollectorErrors": lambda a, v: f"The collector reported {v} error(s) in a cycle.",
    "UnackedMessages": lambda a, v: f"{v} messages are reserved but not acknowledged.",
}


def reason_in_words(alarm: AlarmEvent) -> str:
    """One plain sentence a person on call understands without knowing CloudWatch."""
    metric = alarm.metric.name if alarm.metric else None
    if alarm.state == "OK":
        what = metric or alarm.name
        return f"{what} is back within its threshold. No action needed."
    if alarm.state == "INSUFFICIENT_DATA":
        what = metric or "this alarm"
        return (
            f"CloudWatch has no recent data for {what}: the collector may have stopped, "
            "or the service has no running task."
        )
    if alarm.kind == "composite":
        rule = alarm.alarm_rule or "one of its child alarms is in ALARM"
        return f"Composite alarm fired: {rule}."
    value = _fmt(alarm.current_value)
    if metric in _WORDS and alarm.kind == "metric":
        return _WORDS[metric](alarm, value)
    label = "metric math expression" if alarm.kind == "math" else (metric or "the metric")
    if alarm.current_value is not None and alarm.threshold is not None:
        return f"The {label} is {value}, past its threshold of {_fmt(alarm.threshold)}."
    return f"The {label} crossed its threshold."


def _fields(alarm: AlarmEvent) -> list[str]:
    fields = []
    if alarm.current_value is not None:
        now = _fmt(alarm.current_value)
        if alarm.threshold is not None:
            now += f" (threshold {_fmt(alarm.threshold)})"
        fields.append(f"*Now*\n{now}")
    elif alarm.threshold is not None:
        fields.append(f"*Threshold*\n{_fmt(alarm.threshold)}")
    if alarm.metric is not None:
        over = "math over " if alarm.kind == "math" else ""
        fields.append(f"*Metric*\n{over}{alarm.metric.namespace} {alarm.metric.name}")
    if alarm.timestamp is not None:
        fields.append(f"*Since*\n{alarm.timestamp:%Y-%m-%d %H:%M} UTC")
    if alarm.previous_state is not None:
        fields.append(f"*Was*\n{alarm.previous_state}")
    return fields


def alarm_message(
    alarm: AlarmEvent, *, grafana_url: str | None = None, environment: str = ""
) -> SlackMessage:
    """The alert: state, alarm name, subject, reason in words, numbers, links."""
    emoji, color, word = STYLE[alarm.state]
    subject = _subject(alarm)
    title = _cut(f"{emoji} {word}: {alarm.name}", 150)
    blocks: list[Mapping[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": True}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _cut(
                    (f"*{subject[0].upper()}{subject[1:]}*\n" if subject else "")
                    + reason_in_words(alarm)
                    + (f"\n_{alarm.description}_" if alarm.description else ""),
                    2900,
                ),
            },
        },
    ]
    fields = _fields(alarm)
    if fields:
        items = [{"type": "mrkdwn", "text": _cut(f, 1900)} for f in fields]
        blocks.append({"type": "section", "fields": items})
    buttons = []
    if alarm.console_url:
        buttons.append(("Open alarm", alarm.console_url))
    if grafana_url:
        buttons.append(("Grafana dashboard", grafana_url))
    if buttons:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": t}, "url": u}
                    for t, u in buttons
                ],
            }
        )
    where = " · ".join(
        x for x in (environment, alarm.region, f"account {alarm.account}" if alarm.account else "")
        if x
    )
    context = [where] if where else []
    if alarm.reason:
        context.append(f"AWS: {_cut(alarm.reason, 280)}")
    if context:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": c} for c in context]}
        )
    text = f"{word}: {alarm.name}" + (f" ({subject.replace('`', '')})" if subject else "")
    return SlackMessage(text=_cut(text, 300), blocks=tuple(blocks), color=color)


def decision_message(decision: Decision) -> SlackMessage:
    """The follow-up: what remediation did or why it did not."""
    target = f"`{decision.target}`" if decision.target else "the service"
    if decision.action == "deployed":
        head = f":recycle: Forced a new deployment of {target}."
        body = f"ECS is replacing the tasks. {VISIBILITY_NOTE}"
        color = "#36C5F0"
    elif decision.action == "dry-run":
        head = f":test_tube: Dry run: would force a new deployment of {target}."
        body = "All guards pass. Set REMEDIATION=enabled to let the handler act."
        color = "#ECB22E"
    elif decision.action == "failed":
        head = f":warning: Could not redeploy {target}: {decision.reason}."
        body = "Redeploy by hand: `celery-ecs remediate --cluster C --service S` (see the runbook)."
        color = "#E01E5A"
    else:
        head = f":no_entry_sign: Not redeploying {target}: {decision.reason}."
        body = "See the runbook for what to check by hand."
        color = "#9E9E9E"
    blocks: tuple[Mapping[str, Any], ...] = (
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"{head}\n{body}", 2900)}},
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"remediation: {decision.code} · mode {decision.mode}"}
            ],
        },
    )
    return SlackMessage(text=_cut(head.replace("`", ""), 300), blocks=blocks, color=color)


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
        import boto3

        secrets_client = boto3.client("secretsmanager")
    try:
        raw = secrets_client.get_secret_value(SecretId=arn)["SecretString"]
    except ClientError as exc:
        code = aws_error_code(exc) or "ClientError"
        raise SlackError(
            f"cannot read the Slack secret: {code}", retryable=code in _RETRYABLE_AWS_CODES
        ) from None
    except (BotoCoreError, KeyError) as exc:
        raise SlackError(
            f"cannot read the Slack secret: {type(exc).__name__}",
            retryable=_aws_unreachable(exc),
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


_RETRYABLE_AWS_CODES = frozenset({
    "ThrottlingException", "InternalServiceError", "InternalFailure", "ServiceUnavailable",
    "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException",
})


def _aws_unreachable(exc: BaseException) -> bool:
    from botocore.exceptions import (
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    transient = (
        EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError
    )
    return isinstance(exc, transient)


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
                f"{redact(_cut(response.body or '', 80))}",
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

"""Where a press's answer goes: the alert's thread, or only the presser's eyes.

* In the thread (:meth:`Replier.thread`): ``chat.postMessage`` with the bot token (from
  ``SLACK_SECRET_ARN``, as the alarm handler posts) in the press's channel with ``thread_ts`` =
  the alert; without a bot token, the press's ``response_url`` (``in_channel``, not replacing
  the alert).
* Ephemeral (:meth:`Replier.ephemeral`): the ``response_url``, which Slack shows to the presser
  alone.

A ``response_url`` is taken only when it is Slack's (``https://hooks.slack.com/``), or, with
``SLACK_API_URL`` set (a local Slack), on that URL's scheme, host and port: the request is
signed, but the handler posts nowhere else. It is never logged (it lets anyone post to the
channel for 30 minutes). A reply that fails is logged and dropped: the remedy stands, and the
decision line in the log is the record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from toolkit.alarms.budget import Deadline
from toolkit.alarms.credentials import HTTP_LOG, SlackCredentials
from toolkit.alarms.messages import SlackMessage
from toolkit.alarms.slackactions.click import Click
from toolkit.errors import ToolkitError

__all__ = ["Replier", "slack_response_url"]

log = logging.getLogger("toolkit.alarms.slackactions")

SLACK_HOOKS = "https://hooks.slack.com/"


def slack_response_url(url: str | None, api_url: str | None) -> bool:
    """Whether ``url`` is a response URL the handler may post to."""
    if not url:
        return False
    if url.startswith(SLACK_HOOKS):
        return True
    if not api_url:
        return False
    got, local = urlsplit(url), urlsplit(api_url)
    return (got.scheme, got.hostname, got.port) == (local.scheme, local.hostname, local.port)


class Replier:
    def __init__(self, credentials: Callable[[], SlackCredentials], *,
                 api_url: str | None = None, timeout: float = 3.0) -> None:
        self._credentials = credentials
        self.api_url = api_url
        self.timeout = timeout

    def thread(self, click: Click, message: SlackMessage) -> bool:
        """Post ``message`` under the alert the press came from; ``True`` when it went out."""
        try:
            creds = self._credentials()
        except ToolkitError as exc:
            log.error(json.dumps({"event": "slack_reply_failed", "error": str(exc)}))
            creds = SlackCredentials()
        if creds.bot_token and click.channel and click.message_ts:
            from toolkit.alarms.senders import BotSender

            sender = BotSender(creds.bot_token, click.channel, base_url=self.api_url,
                               timeout=self.timeout, deadline=Deadline())
            try:
                sender.post(message, thread_ts=click.message_ts)
                return True
            except ToolkitError as exc:
                log.error(json.dumps({"event": "slack_reply_failed", "error": str(exc),
                                      "via": "chat.postMessage"}))
                return False
        return self._respond(click, {**message.payload(), "response_type": "in_channel",
                                     "replace_original": False})

    def ephemeral(self, click: Click, payload: Mapping[str, Any]) -> bool:
        """``payload`` to the presser alone (``response_type: ephemeral``)."""
        return self._respond(click, dict(payload))

    def _respond(self, click: Click, payload: dict[str, Any]) -> bool:
        if not slack_response_url(click.response_url, self.api_url):
            log.warning(json.dumps({"event": "slack_reply_failed",
                                    "error": "no usable response_url (not Slack's)"}))
            return False
        from slack_sdk.webhook import WebhookClient

        assert click.response_url is not None  # checked above
        client = WebhookClient(click.response_url, timeout=int(max(1, self.timeout)),
                               logger=HTTP_LOG)
        try:
            response = client.send_dict(payload)
        except Exception as exc:  # noqa: BLE001 - URLError, timeouts, resets
            log.error(json.dumps({"event": "slack_reply_failed", "via": "response_url",
                                  "error": type(exc).__name__}))
            return False
        if response.status_code != 200:
            log.error(json.dumps({"event": "slack_reply_failed", "via": "response_url",
                                  "status": response.status_code}))
            return False
        return True

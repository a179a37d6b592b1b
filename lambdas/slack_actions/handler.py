"""Slack actions Lambda (a function URL: the Slack app's interactivity request URL): a press of
"Redeploy now", "Stop stuck tasks" or "Mute 1 h" on an alert -> signature and user checked,
acknowledged within Slack's 3 s -> every guard of the automatic path, the remedy, a reply in the
alert's thread.

Thin by design: settings are read and clients built once per container (on the first event, so
importing this module stays fast); everything else is ``toolkit.alarms.slackactions``.
"""

from __future__ import annotations

import logging
from typing import Any

from toolkit.alarms.slackactions import SlackActions, SlackActionsSettings, build_slack_actions

# Decisions and the audit lines are INFO; the Lambda runtime's root logger defaults to WARNING.
logging.getLogger("toolkit").setLevel(logging.INFO)

_app: SlackActions | None = None


def app() -> SlackActions:
    global _app
    if _app is None:
        _app = build_slack_actions(SlackActionsSettings.from_env())
    return _app


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return app().handle(event, context)

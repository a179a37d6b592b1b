"""Slack buttons: the on-call fixes a stuck worker from the alert, behind the same guards.

``lambdas/slack_actions/handler.py`` (a Lambda function URL, Slack's interactivity request URL)
is thin; everything is here:

    settings   ``SlackActionsSettings``: SLACK_SIGNING_SECRET, SLACK_ALLOWED_USERS and the alarm
               handler's settings (ENVIRONMENT, REMEDIATION, COOLDOWN_SECONDS, STATE_TABLE ...)
    request    the function URL request (payload 2.0, base64 or plain body) and Slack's
               signature, checked with slack_sdk's SignatureVerifier
    click      the press, read from the block_actions payload
    deferral   acknowledge first, act after: a self-invocation in Lambda, a thread elsewhere
    remedies   ``ClickRemediator``: redeploy, stop the stuck tasks, mute, each re-checked
    replies    what is said in the thread, or ephemerally (pure); reply: where it is posted
    app        ``SlackActions``: one request, one job, end to end
    factory    ``build_slack_actions``: wired from settings

The buttons themselves are built by :mod:`toolkit.alarms.buttons`; the mute is read by the alarm
handler through :mod:`toolkit.alarms.mute`.
"""

from toolkit.alarms.slackactions.app import SlackActions
from toolkit.alarms.slackactions.factory import build_slack_actions
from toolkit.alarms.slackactions.settings import SlackActionsSettings

__all__ = ["SlackActions", "SlackActionsSettings", "build_slack_actions"]

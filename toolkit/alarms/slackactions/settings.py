"""What the Slack actions Lambda reads from its environment.

The alarm handler's settings (``ENVIRONMENT``, ``REMEDIATION``, ``COOLDOWN_SECONDS``,
``MAX_REMEDIATIONS_PER_HOUR``, ``STATE_TABLE``, the Slack credentials of ``SLACK_SECRET_ARN``)
plus ``SLACK_SIGNING_SECRET`` (else the key of that name in the secret) and
``SLACK_ALLOWED_USERS``: Slack user IDs (``U0123ABC``, ``W0123ABC``), comma- or space-separated.
Empty means nobody may press; anything that is not a user ID is ignored with a warning (a name
or an ``@handle`` would never match the ID Slack sends).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from toolkit.alarms.settings import AlarmHandlerSettings, RemediationMode
from toolkit.env import (
    ENV_LAMBDA_FUNCTION_NAME,
    ENV_SLACK_ALLOWED_USERS,
    ENV_SLACK_SIGNING_SECRET,
)

__all__ = ["SlackActionsSettings", "click_mode", "parse_users"]

log = logging.getLogger("toolkit.alarms.slackactions")

_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")


def parse_users(raw: str | None) -> tuple[frozenset[str], tuple[str, ...]]:
    """The user IDs in ``raw`` and the tokens refused (not a Slack user ID)."""
    users: set[str] = set()
    refused: list[str] = []
    for token in re.split(r"[\s,]+", (raw or "").strip()):
        if not token:
            continue
        if _USER_ID.fullmatch(token):
            users.add(token)
        else:
            refused.append(token[:40])
    return frozenset(users), tuple(refused)


def click_mode(remediation: RemediationMode) -> RemediationMode:
    """What a press does under ``REMEDIATION``: ``dry-run`` says what it would do; ``off`` (the
    automatic path's switch) and ``enabled`` act, a person having decided."""
    return "dry-run" if remediation == "dry-run" else "enabled"


@dataclass(frozen=True)
class SlackActionsSettings:
    handler: AlarmHandlerSettings = field(default_factory=AlarmHandlerSettings)
    signing_secret: str | None = field(default=None, repr=False)
    allowed_users: frozenset[str] = frozenset()
    function_name: str | None = None  # AWS_LAMBDA_FUNCTION_NAME: the job is invoked on it

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SlackActionsSettings:
        env = os.environ if environ is None else environ
        users, refused = parse_users(env.get(ENV_SLACK_ALLOWED_USERS))
        if refused:
            log.warning(json.dumps({
                "event": "misconfigured", "setting": ENV_SLACK_ALLOWED_USERS,
                "ignored": list(refused),
                "message": "not Slack user IDs (U.../W..., see the member's profile, "
                "'Copy member ID')"}))
        return cls(
            handler=AlarmHandlerSettings.from_env(env),
            signing_secret=env.get(ENV_SLACK_SIGNING_SECRET) or None,
            allowed_users=users,
            function_name=env.get(ENV_LAMBDA_FUNCTION_NAME) or None,
        )

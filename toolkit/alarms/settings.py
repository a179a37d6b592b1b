"""What the alarm handler Lambda (and ``celery-ecs remediate``) reads from its environment."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from toolkit.env import (
    DEFAULT_NAMESPACE,
    ENV_COOLDOWN_SECONDS,
    ENV_ENVIRONMENT,
    ENV_GRAFANA_URL,
    ENV_MAX_REMEDIATIONS_PER_HOUR,
    ENV_NAMESPACE,
    ENV_REMEDIATING_METRICS,
    ENV_REMEDIATION,
    ENV_SLACK_API_URL,
    ENV_SLACK_BOT_TOKEN,
    ENV_SLACK_CHANNEL,
    ENV_SLACK_ESCALATION_MENTION,
    ENV_SLACK_SECRET_ARN,
    ENV_SLACK_WEBHOOK_URL,
    ENV_STATE_TABLE,
    parse_int,
)
from toolkit.errors import ConfigError
from toolkit.metricnames import WORKER_STUCK, WORKERS_STUCK

RemediationMode = Literal["enabled", "dry-run", "off"]
REMEDIATION_MODES: tuple[RemediationMode, ...] = ("enabled", "dry-run", "off")

MIN_COOLDOWN_SECONDS = 60  # COOLDOWN_SECONDS below this is clamped up, with a warning
DEFAULT_REMEDIATING_METRICS = (WORKER_STUCK, WORKERS_STUCK)
# What SLACK_ESCALATION_MENTION may hold: Slack's own mention syntax, or a bare ID.
_MENTION = re.compile(r"<(?:!subteam\^[A-Z0-9]+|@[UW][A-Z0-9]+|!here|!channel)(?:\|[^<>|]{1,80})?>")
_BARE = {"S": "<!subteam^{}>", "U": "<@{}>", "W": "<@{}>"}
_ID = re.compile(r"[SUW][A-Z0-9]{2,}")
_WORDS = {"@here": "<!here>", "@channel": "<!channel>", "here": "<!here>", "channel": "<!channel>"}


def slack_mentions(raw: str | None) -> tuple[str | None, tuple[str, ...]]:
    """``SLACK_ESCALATION_MENTION`` as mentions Slack notifies (``<!subteam^S0ONCALL>``,
    ``<@U0123>``, ``<!here>``; bare IDs ``S0ONCALL`` / ``U0123`` and ``@here`` are converted),
    and the tokens refused (anything else would be posted as text and notify nobody)."""
    mentions: list[str] = []
    refused: list[str] = []
    for token in re.split(r"[\s,]+", (raw or "").strip()):
        if not token:
            continue
        if _MENTION.fullmatch(token):
            mentions.append(token)
        elif token in _WORDS:
            mentions.append(_WORDS[token])
        elif _ID.fullmatch(token):
            mentions.append(_BARE[token[0]].format(token))
        else:
            refused.append(token[:40])
    return (" ".join(dict.fromkeys(mentions)) or None), tuple(refused)


@dataclass(frozen=True)
class AlarmHandlerSettings:
    """What the alarm handler Lambda (and ``celery-ecs remediate``) reads from its environment."""

    environment: str = ""
    slack_webhook_url: str | None = field(default=None, repr=False)
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_channel: str | None = None
    slack_secret_arn: str | None = None
    slack_api_url: str | None = None
    remediation: RemediationMode = "off"
    cooldown_seconds: int = 900
    max_remediations_per_hour: int = 3
    state_table: str | None = None
    remediating_metrics: tuple[str, ...] = DEFAULT_REMEDIATING_METRICS
    grafana_url: str | None = None
    # The namespace of the toolkit's own metrics: only WorkerStuck there is acted on.
    namespace: str = DEFAULT_NAMESPACE
    # Who the "still stuck after a forced deployment" escalation mentions (Slack mention syntax).
    escalation_mention: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AlarmHandlerSettings:
        env = os.environ if environ is None else environ
        mode = (env.get(ENV_REMEDIATION) or "off").strip().lower()
        if mode not in REMEDIATION_MODES:
            raise ConfigError(
                f"{ENV_REMEDIATION} must be one of {', '.join(REMEDIATION_MODES)}, got {mode!r}"
            )
        metrics = tuple(
            m.strip() for m in (env.get(ENV_REMEDIATING_METRICS) or ",".join(
                DEFAULT_REMEDIATING_METRICS
            )).split(",")
        )
        mention, refused = slack_mentions(env.get(ENV_SLACK_ESCALATION_MENTION))
        if refused:
            # Not refused outright: a typo must not stop the handler from alerting.
            logging.getLogger("toolkit.alarms.settings").warning(
                "%s: ignoring %s (use <!subteam^ID>, <@USER>, a bare S.../U... ID or @here)",
                ENV_SLACK_ESCALATION_MENTION, ", ".join(repr(t) for t in refused),
            )
        cooldown = parse_int(env.get(ENV_COOLDOWN_SECONDS), ENV_COOLDOWN_SECONDS, 900)
        if cooldown < MIN_COOLDOWN_SECONDS:
            # Below a minute a stuck service could be redeployed in a loop before its new tasks
            # even start: clamp (not refuse, so a typo does not disable alerting) and say so.
            logging.getLogger("toolkit.alarms.settings").warning(
                "%s=%d is below the minimum of %d s: using %d",
                ENV_COOLDOWN_SECONDS, cooldown, MIN_COOLDOWN_SECONDS, MIN_COOLDOWN_SECONDS,
            )
            cooldown = MIN_COOLDOWN_SECONDS
        return cls(
            environment=env.get(ENV_ENVIRONMENT, "").strip(),
            slack_webhook_url=env.get(ENV_SLACK_WEBHOOK_URL) or None,
            slack_bot_token=env.get(ENV_SLACK_BOT_TOKEN) or None,
            slack_channel=env.get(ENV_SLACK_CHANNEL) or None,
            slack_secret_arn=env.get(ENV_SLACK_SECRET_ARN) or None,
            slack_api_url=env.get(ENV_SLACK_API_URL) or None,
            remediation=mode,  # narrowed by the membership check above
            cooldown_seconds=cooldown,
            max_remediations_per_hour=parse_int(
                env.get(ENV_MAX_REMEDIATIONS_PER_HOUR), ENV_MAX_REMEDIATIONS_PER_HOUR, 3
            ),
            state_table=env.get(ENV_STATE_TABLE) or None,
            remediating_metrics=tuple(m for m in metrics if m),
            grafana_url=env.get(ENV_GRAFANA_URL) or None,
            namespace=(env.get(ENV_NAMESPACE) or "").strip() or DEFAULT_NAMESPACE,
            escalation_mention=mention,
        )

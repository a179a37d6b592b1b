"""Wire an :class:`~toolkit.alarms.responder.AlarmResponder` from the handler's settings.

Clients (ECS, CloudWatch, DynamoDB, Secrets Manager) and the Slack sender are built on first use
with timeouts that fit a Lambda invocation's budget; any client passed in is used instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from toolkit.alarms.budget import Deadline
from toolkit.alarms.evidence import LiveMetrics
from toolkit.alarms.guards import RemediationPolicy
from toolkit.alarms.remediator import Remediator
from toolkit.alarms.responder import AlarmResponder
from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.alarms.state import MemoryStateStore, StateStore
from toolkit.aws.clients import client as aws_client

log = logging.getLogger("toolkit.alarms.responder")


def build_responder(
    settings: AlarmHandlerSettings,
    *,
    ecs: Any = None,
    cloudwatch: Any = None,
    dynamodb: Any = None,
    secrets: Any = None,
    sender: Any = None,
    clock: Callable[[], datetime] | None = None,
) -> AlarmResponder:
    """Wire a responder from settings; any client passed in is used instead of a new one."""

    def make(service: str) -> Callable[[], Any]:
        def factory() -> Any:
            # Bounded so that a call fits the invocation's budget: at most 2 x (2 + 5) s.
            return aws_client(service, connect_timeout=2, read_timeout=5, max_attempts=2)

        return factory

    state: StateStore
    if settings.state_table:
        from toolkit.alarms.degraded import GuardedStateStore
        from toolkit.alarms.state import DynamoStateStore

        state = GuardedStateStore(
            DynamoStateStore(settings.state_table, dynamodb, client_factory=make("dynamodb")),
            settings.state_table,
        )
    else:
        state = MemoryStateStore()
        if settings.remediation != "off":
            log.warning(json.dumps({
                "event": "no_state_table",
                "message": "STATE_TABLE is not set: MAX_REMEDIATIONS_PER_HOUR is exact only within "
                "one container and one cluster; an exact cross-container cap (and de-duplicated "
                "Slack messages) needs STATE_TABLE",
            }))
    now = clock or (lambda: datetime.now(UTC))
    deadline = Deadline()
    remediator = Remediator(
        RemediationPolicy.from_settings(settings), ecs, state=state, ecs_factory=make("ecs"),
        clock=now, metrics=LiveMetrics(cloudwatch, factory=make("cloudwatch")),
    )

    def sender_factory() -> Any:
        if sender is not None:
            return sender
        from toolkit.alarms.senders import build_sender, resolve_credentials

        client = secrets
        if client is None and settings.slack_secret_arn:
            client = make("secretsmanager")()
        return build_sender(
            resolve_credentials(settings, secrets_client=client), settings, deadline=deadline
        )

    return AlarmResponder(
        settings, remediator=remediator, state=state, sender_factory=sender_factory, clock=now,
        deadline=deadline,
    )

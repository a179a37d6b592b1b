"""Wire :class:`~toolkit.alarms.slackactions.app.SlackActions` from its settings.

Clients (ECS, DynamoDB, Secrets Manager, Lambda) are built on first use with short timeouts;
any client passed in is used instead. The state store is the alarm handler's (``STATE_TABLE``:
one ledger, one cooldown lock, the mutes). The job runs in a self-invocation inside Lambda
(``AWS_LAMBDA_FUNCTION_NAME`` set) and in a thread elsewhere, unless a deferrer is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from toolkit.alarms.credentials import SlackCredentials, resolve_credentials
from toolkit.alarms.guards import RemediationPolicy
from toolkit.alarms.slackactions.app import SlackActions
from toolkit.alarms.slackactions.deferral import Deferrer, LambdaDeferrer, ThreadDeferrer
from toolkit.alarms.slackactions.remedies import ClickRemediator
from toolkit.alarms.slackactions.reply import Replier
from toolkit.alarms.slackactions.settings import SlackActionsSettings, click_mode
from toolkit.alarms.state import MemoryStateStore, StateStore
from toolkit.aws.clients import client as aws_client

__all__ = ["build_slack_actions"]


def build_slack_actions(
    settings: SlackActionsSettings,
    *,
    ecs: Any = None,
    dynamodb: Any = None,
    secrets: Any = None,
    lambda_client: Any = None,
    deferrer: Deferrer | None = None,
    clock: Callable[[], datetime] | None = None,
) -> SlackActions:
    def make(service: str) -> Callable[[], Any]:
        def factory() -> Any:
            return aws_client(service, connect_timeout=2, read_timeout=5, max_attempts=2)

        return factory

    handler = settings.handler
    state: StateStore
    if handler.state_table:
        from toolkit.alarms.degraded import GuardedStateStore
        from toolkit.alarms.state import DynamoStateStore

        state = GuardedStateStore(
            DynamoStateStore(handler.state_table, dynamodb, client_factory=make("dynamodb")),
            handler.state_table,
        )
    else:
        state = MemoryStateStore()  # every press is refused: see SlackActions._work
    now = clock or (lambda: datetime.now(UTC))
    policy = replace(RemediationPolicy.from_settings(handler), mode=click_mode(handler.remediation))
    remediator = ClickRemediator(policy, ecs, state=state, ecs_factory=make("ecs"), clock=now)

    def credentials() -> SlackCredentials:
        client = secrets
        if client is None and handler.slack_secret_arn:
            client = make("secretsmanager")()
        return resolve_credentials(handler, secrets_client=client)

    def signing_secret() -> str | None:
        return settings.signing_secret or credentials().signing_secret

    if deferrer is None:
        deferrer = (LambdaDeferrer(settings.function_name, lambda_client,
                                   factory=lambda: aws_client("lambda", connect_timeout=1,
                                                              read_timeout=2, max_attempts=2))
                    if settings.function_name else ThreadDeferrer())
    return SlackActions(
        settings, remediator=remediator, state=state, deferrer=deferrer,
        replier=Replier(credentials, api_url=handler.slack_api_url),
        signing_secret=signing_secret, clock=now,
    )

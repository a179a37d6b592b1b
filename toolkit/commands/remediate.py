"""``celery-ecs remediate --cluster C --service S [--dry-run]``: the Lambda's guarded path by hand.

Settings come from the same environment as the alarm handler (``REMEDIATION``,
``COOLDOWN_SECONDS``, ``MAX_REMEDIATIONS_PER_HOUR``, ``STATE_TABLE``). ``--dry-run`` runs every
guard and changes nothing, whatever ``REMEDIATION`` says. Exit 0 when the deployment was forced (or
the dry run passed), 1 when a guard refused or ECS failed, 2 on bad settings.
"""

from __future__ import annotations

import argparse
import json
import logging

from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.errors import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", required=True, help="ECS cluster name")
    parser.add_argument("--service", required=True, help="ECS service name")
    parser.add_argument(
        "--dry-run", action="store_true", help="run every guard, report, change nothing"
    )
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    settings = AlarmHandlerSettings.from_env()
    if not args.cluster.strip() or not args.service.strip():
        raise ConfigError("--cluster and --service must not be empty")
    from toolkit.alarms.guards import RemediationPolicy, Target, log_decision
    from toolkit.alarms.remediator import Remediator
    from toolkit.alarms.state import DynamoStateStore, MemoryStateStore, StateStore

    state: StateStore = (
        DynamoStateStore(settings.state_table) if settings.state_table else MemoryStateStore()
    )
    remediator = Remediator(RemediationPolicy.from_settings(settings), state=state)
    decision = remediator.remediate(
        Target(args.cluster, args.service), mode="dry-run" if args.dry_run else None
    )
    log_decision(decision, logging.getLogger("toolkit.remediation"))
    print(json.dumps(decision.to_log(), sort_keys=True) if args.json else decision.line())
    return 0 if decision.ok else 1

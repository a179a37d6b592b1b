"""What remediation decided: :class:`Decision` (taken or not, with its code and a reason in words),
its :class:`Target` service and the remedy it is about.

Two remedies exist: ``deploy`` (``UpdateService(forceNewDeployment=True)``, the ``WorkerStuck``
alarm) and ``stop-tasks`` (``StopTask`` on the tasks the collector judged dead or hung, the
``WorkersStuck`` alarm). Every decision is one JSON log line (:func:`log_decision`); a follow-up
owed to Slack is stored as that line and rebuilt with :meth:`Decision.from_log`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from toolkit.alarms.settings import RemediationMode

log = logging.getLogger("toolkit.alarms.guards")

Action = Literal["deployed", "stopped", "dry-run", "skipped", "failed"]
Remedy = Literal["deploy", "stop-tasks"]
REMEDIES: tuple[Remedy, ...] = ("deploy", "stop-tasks")
DecisionCode = Literal[
    "not-alarm",
    "not-remediating-metric",
    "no-target",
    "not-own-alarm",
    "remediation-off",
    "test-alarm",
    "no-evidence",
    "cloudwatch-error",
    "service-not-found",
    "not-opted-in",
    "deployment-in-progress",
    "cooldown",
    "still-stuck",
    "rate-limit",
    "no-record",
    "no-stuck-tasks",
    "foreign-task",
    "too-few-running",
    "dry-run",
    "deployed",
    "stopped",
    "ecs-error",
    "state-error",
    "foreign-namespace",
    "not-above-threshold",
    "missing-data",
    "misconfigured",
    "deadline",
]
# Codes that say "this alarm is not about remediation at all" (or, for a test, that the alert
# already said all there is): logged, not posted to Slack.
IRRELEVANT: frozenset[str] = frozenset({"not-alarm", "not-remediating-metric", "test-alarm"})


@dataclass(frozen=True)
class Target:
    cluster: str
    service: str

    def __str__(self) -> str:
        return f"{self.cluster}/{self.service}"


@dataclass(frozen=True)
class Decision:
    """One remediation decision, taken or not, with its reason in words."""

    action: Action
    code: DecisionCode
    reason: str
    target: Target | None = None
    alarm: str | None = None
    mode: RemediationMode = "off"
    at: datetime | None = None
    retryable: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)
    remedy: Remedy = "deploy"

    @property
    def performed(self) -> bool:
        return self.action in ("deployed", "stopped")

    @property
    def ok(self) -> bool:
        """Performed, or a dry run whose guards all passed."""
        return self.action in ("deployed", "stopped", "dry-run")

    @property
    def relevant(self) -> bool:
        """Worth telling humans about (the alarm was a remediation candidate)."""
        return self.code not in IRRELEVANT

    def to_log(self) -> dict[str, Any]:
        return {
            "event": "remediation_decision",
            "action": self.action,
            "code": self.code,
            "reason": self.reason,
            "remedy": self.remedy,
            "cluster": self.target.cluster if self.target else None,
            "service": self.target.service if self.target else None,
            "alarm": self.alarm,
            "mode": self.mode,
            "at": self.at.isoformat() if self.at else None,
            "retryable": self.retryable,
            **({"details": dict(self.details)} if self.details else {}),
        }

    @classmethod
    def from_log(cls, data: Mapping[str, Any]) -> Decision:
        """Rebuild a decision from :meth:`to_log` (a follow-up owed to Slack is stored so)."""
        cluster, service = data.get("cluster"), data.get("service")
        at = data.get("at")
        remedy = data.get("remedy")
        return cls(
            action=data.get("action", "failed"),
            code=data.get("code", "ecs-error"),
            reason=str(data.get("reason", "")),
            target=Target(cluster, service) if cluster and service else None,
            alarm=data.get("alarm"),
            mode=data.get("mode", "off"),
            at=datetime.fromisoformat(at) if isinstance(at, str) else None,
            retryable=bool(data.get("retryable", False)),
            details=dict(data.get("details") or {}),
            remedy=remedy if remedy in REMEDIES else "deploy",
        )

    def line(self) -> str:
        where = f" {self.target}" if self.target else ""
        return f"{self.action}{where}: {self.reason}"


def log_decision(decision: Decision, logger: logging.Logger = log) -> None:
    """One structured JSON log line per decision (CloudWatch Logs Insights can filter on it)."""
    level = logging.WARNING if decision.action == "failed" else logging.INFO
    logger.log(level, json.dumps(decision.to_log(), sort_keys=True, default=str))

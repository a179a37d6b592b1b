"""What each scenario expects, the timeline, and the alarm event handed to the handler. Pure."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from toolkit.sandbox.cloudwatch import Transition

Scenario = Literal["stuck", "healthy", "memory", "long-task", "partial"]
SCENARIOS: tuple[Scenario, ...] = ("stuck", "healthy", "memory", "long-task", "partial")
STUCK_ORDER = ("frozen", "alarm", "deployment", "recovered", "resolved")
PARTIAL_ORDER = ("frozen", "alarm", "task-stopped", "recovered", "resolved")
Remediation = Literal["enabled", "dry-run", "off"]
REMEDIATIONS: tuple[Remediation, ...] = ("enabled", "dry-run", "off")


def pressed_first(order: Sequence[str]) -> tuple[str, ...]:
    """``order`` with the on-call's press between the alarm and the remedy."""
    at = list(order).index("alarm") + 1
    return (*order[:at], "pressed", *order[at:])


@dataclass(frozen=True)
class Timings:
    """The sandbox's clock: CloudWatch periods divided by ``scale`` (60 s -> 3 s)."""

    scale: float = 20.0
    collect_every: float = 1.0  # seconds between collector cycles
    dead_after: float = 6.0  # [verdicts] dead_after
    stuck_after: float = 10.0  # [verdicts] stuck_after
    warmup: float = 6.0  # normal traffic before the scenario's fault
    healthy_for: float = 20.0  # how long the healthy scenario watches
    settle: float = 6.0  # after the memory alarm: no deployment may follow
    rate: float = 3.0  # tasks per second per queue
    timeout: float = 150.0
    long_task: float = 16.0  # the long-task scenario's legitimate task (> stuck_after)
    max_task_runtime: float = 90.0  # [verdicts] max_task_runtime: the app's longest task, with room


@dataclass(frozen=True)
class Event:
    t: float
    event: str
    detail: str


@dataclass
class Timeline:
    events: list[Event] = field(default_factory=list)

    def add(self, t: float, event: str, detail: str) -> Event:
        e = Event(round(t, 2), event, detail)
        self.events.append(e)
        return e

    def first(self, event: str) -> Event | None:
        return next((e for e in self.events if e.event == event), None)

    def count(self, event: str) -> int:
        return sum(1 for e in self.events if e.event == event)


def in_order(events: Sequence[Event], order: Sequence[str]) -> bool:
    """Whether the first occurrences of ``order`` appear, in that order."""
    at = []
    for name in order:
        hit = next((i for i, e in enumerate(events) if e.event == name), None)
        if hit is None:
            return False
        at.append(hit)
    return at == sorted(at)


def _ordered(timeline: Timeline, order: Sequence[str]) -> tuple[bool, str] | None:
    """None when the first occurrences of ``order`` are in that order, else the failure."""
    if in_order(timeline.events, order):
        return None
    return False, "expected " + " -> ".join(order) + ", saw " + " -> ".join(
        e.event for e in timeline.events)


def _stuck(timeline: Timeline, deployments: int, pressed: bool = False) -> tuple[bool, str]:
    if deployments != 1:
        return False, f"expected exactly one forced deployment, saw {deployments}"
    if pressed:
        return _ordered(timeline, pressed_first(STUCK_ORDER)) or (
            True, "the stuck worker was detected; the on-call pressed Redeploy now on the alert, "
            "it was redeployed and recovered")
    return _ordered(timeline, STUCK_ORDER) or (
        True, "the stuck worker was detected, redeployed and recovered")


def _partial(timeline: Timeline, deployments: int, pressed: bool = False) -> tuple[bool, str]:
    if deployments:
        return False, f"only the frozen task may be stopped, saw {deployments} deployment(s)"
    stopped = timeline.count("task-stopped")
    if stopped != 1:
        return False, f"expected exactly one task stopped, saw {stopped}"
    if pressed:
        return _ordered(timeline, pressed_first(PARTIAL_ORDER)) or (
            True, "the on-call pressed Stop stuck tasks on the alert: the frozen task alone was "
            "stopped and replaced; its sibling kept working")
    return _ordered(timeline, PARTIAL_ORDER) or (
        True, "the frozen task alone was stopped and replaced; its sibling kept working")


def _dry_run(timeline: Timeline, deployments: int) -> tuple[bool, str]:
    """REMEDIATION=dry-run: the button is pressed, says what it would do, and nothing happens."""
    stopped = timeline.count("task-stopped")
    if deployments or stopped:
        return False, (f"a dry run must change nothing, saw {deployments} deployment(s) and "
                       f"{stopped} task(s) stopped")
    return _ordered(timeline, ("frozen", "alarm", "pressed")) or (
        True, "dry run: the on-call pressed the alert's button, the handler said what it would "
        "do, and nothing changed")


def _quiet(scenario: Scenario, timeline: Timeline, deployments: int) -> tuple[bool, str]:
    """healthy and long-task: nothing may fire."""
    alarms = timeline.count("alarm")
    if scenario == "long-task":
        judged = timeline.count("judged-stuck")
        if timeline.first("busy") is None:
            return False, "the long task never showed as busy past stuck_after"
        if alarms or deployments or judged:
            return False, (f"a busy worker must raise nothing, saw {alarms} alarm(s), "
                           f"{deployments} deployment(s), {judged} stuck verdict(s)")
        return True, "a task longer than stuck_after ran to its end: busy, no alarm, no deployment"
    if alarms or deployments:
        return False, (f"expected no alarm and no deployment, saw {alarms} alarm(s) and "
                       f"{deployments} deployment(s)")
    return True, "no alarm, no deployment"


def outcome(scenario: Scenario, timeline: Timeline, deployments: int,
            remediation: str = "enabled") -> tuple[bool, str]:
    """Whether the scenario's expected outcome happened, and in words. Without automatic
    remediation the on-call's press (``pressed``) comes between the alarm and the remedy."""
    pressed = remediation != "enabled"
    if remediation == "dry-run" and scenario in ("stuck", "partial"):
        return _dry_run(timeline, deployments)
    if scenario == "stuck":
        return _stuck(timeline, deployments, pressed)
    if scenario == "partial":
        return _partial(timeline, deployments, pressed)
    if scenario in ("healthy", "long-task"):
        return _quiet(scenario, timeline, deployments)
    memory = [e for e in timeline.events if e.event == "alarm" and e.detail.endswith("MemoryHigh")]
    if not memory or timeline.first("slack") is None:
        return False, "expected the MemoryHigh alarm and its Slack alert"
    if deployments:
        return False, f"a memory alarm must not redeploy, saw {deployments} deployment(s)"
    return True, "memory alert sent, no deployment"


def eventbridge_event(change: Transition, region: str, account: str = "123456789012") -> dict[
    str, object
]:
    """The EventBridge "CloudWatch Alarm State Change" CloudWatch sends for ``change``."""
    a = change.alarm
    stamp = change.at.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    reason_data = json.dumps({"version": "1.0", "statistic": a.statistic, "period": a.period,
                              "recentDatapoints": [v for v in reversed(change.values)
                                                   if v is not None],  # newest first
                              "threshold": a.threshold})
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch", "account": account,
        "time": change.at.strftime("%Y-%m-%dT%H:%M:%SZ"), "region": region,
        "resources": [f"arn:aws:cloudwatch:{region}:{account}:alarm:{a.name}"],
        "detail": {
            "alarmName": a.name,
            "configuration": {"description": a.description, "metrics": [{
                "id": "m1", "returnData": True,
                "metricStat": {"metric": {"dimensions": dict(a.dimensions), "name": a.metric,
                                          "namespace": a.namespace},
                               "period": a.period, "stat": a.statistic}}]},
            "previousState": {"reason": "", "timestamp": stamp, "value": change.old},
            "state": {"reason": change.reason, "reasonData": reason_data, "timestamp": stamp,
                      "value": change.new},
        },
    }


class LambdaContext:
    """The part of the Lambda context the handler reads: the time left (a fresh 30 s each)."""

    function_name = "celery-ecs-sandbox-alarm-handler"
    aws_request_id = "sandbox"

    def __init__(self, budget_ms: int = 30_000) -> None:
        import time

        self._deadline = time.monotonic() + budget_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        import time

        return max(0, int((self._deadline - time.monotonic()) * 1000))

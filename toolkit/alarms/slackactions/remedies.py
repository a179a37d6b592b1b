"""What a press may do, behind every guard of the automatic path, checked here and now.

:class:`ClickRemediator` is the alarm handler's :class:`~toolkit.alarms.remediator.Remediator`
(the same ECS reads, guards, per-service lock, hourly ledger, remediated-at tag and remedy
record, in the same ``STATE_TABLE``), asked by a person instead of an alarm. The button's value
says which service; nothing in it is believed:

1. **own environment**: the value's alarm must be this ``ENVIRONMENT``'s own
   ``<environment>-<service>-<metric>``, and the ECS service must say it is this environment's:
   its ``Environment`` tag (the service template sets it), or, without that tag, the collector's
   verdict record of this environment in the state table;
2. the service exists, is ACTIVE and tagged ``celery-ecs:remediate=true``, no deployment is in
   progress, its last deployment (ours included, automatic or pressed) is older than
   ``COOLDOWN_SECONDS``; fewer than ``MAX_REMEDIATIONS_PER_HOUR`` remedies in the last hour;
3. (stop) every task ARN is a task of that cluster, of the service's account and region, and
   ``DescribeTasks`` says it belongs to ``service:<service>``; the collector's verdict record
   still names it; never more than running - 1 at once;
4. ``REMEDIATION=dry-run`` stops here and says what it would do (``off`` switches off the
   automatic path only: a person decided);
5. the per-service lock and a ledger slot, then the ECS action: a second press, a retried job or
   an alarm racing it finds the lock or the cooldown and does nothing.

No live-datapoint check: the alarm's evidence guards against forged alarms; a person pressing a
signed button is the decision (as with ``celery-ecs remediate``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from toolkit.alarms.buttons import ButtonValue
from toolkit.alarms.decision import Decision, Remedy, Target
from toolkit.alarms.ecsreads import describe_service
from toolkit.alarms.failures import Decide, aws_failure, error_code, state_failure
from toolkit.alarms.guards import ServiceSnapshot
from toolkit.alarms.mute import Mute, read_mute, write_mute
from toolkit.alarms.remediator import Remediator
from toolkit.alarms.taskstop import TaskState, check_task_arns, plan_stops, task_states
from toolkit.alarms.why import read_verdict, task_id
from toolkit.env import ENV_ENVIRONMENT, ENV_STATE_TABLE
from toolkit.errors import ToolkitError
from toolkit.metricnames import ENVIRONMENT, WORKER_STUCK, WORKERS_STUCK
from toolkit.verdictrecord import VerdictRecord, record_key

__all__ = ["ClickRemediator"]


class ClickRemediator(Remediator):
    """The remedies of the buttons (``policy.mode``: ``enabled`` or ``dry-run``)."""

    def _press(self, value: ButtonValue, now: datetime, remedy: Remedy) -> tuple[Target, Decide]:
        target = Target(value.cluster, value.service)
        return target, self._decider(target, now, value.alarm, self.policy.mode, remedy)

    def _named(self, value: ButtonValue, metrics: tuple[str, ...], decide: Decide
               ) -> Decision | None:
        env = self.policy.environment
        if not env:
            return decide("skipped", "misconfigured", (
                f"{ENV_ENVIRONMENT} is not set, so the handler cannot tell its own "
                "environment's services and acts on none"))
        expected = [f"{env}-{value.service}-{m}" for m in metrics]
        if value.alarm not in expected:
            return decide("skipped", "not-own-alarm", (
                f"the button names alarm {value.alarm}, not {' or '.join(expected)}: not an "
                f"alarm of this environment ({ENV_ENVIRONMENT}={env})"))
        return None

    def _own(self, value: ButtonValue, metric: str, target: Target, decide: Decide
             ) -> Decision | None:
        """Guard 1: the alarm's name, then the service's own word for its environment."""
        named = self._named(value, (metric,), decide)
        if named is not None:
            return named
        env = self.policy.environment
        try:
            snapshot = describe_service(self.ecs, target)
        except Exception as exc:  # noqa: BLE001 - any ECS failure becomes a decision
            if error_code(exc) == "ClusterNotFoundException":
                return decide("skipped", "service-not-found", f"cluster {target.cluster} not found")
            return aws_failure(decide, "DescribeServices", exc)
        if snapshot is None:
            return decide("skipped", "service-not-found", "service not found in the cluster")
        tag = snapshot.tag(ENVIRONMENT)
        if tag == env:
            return None
        if tag is not None:
            return decide("skipped", "not-own-alarm", (
                f"service {target} is tagged {ENVIRONMENT}={tag}, not this handler's {env}"))
        try:
            item = self.state.get_item(record_key(target.cluster, target.service))
        except ToolkitError as exc:
            return state_failure(decide, "read the verdict record", exc)
        try:
            record = VerdictRecord.from_item(item) if item else None
        except (ValueError, TypeError, AttributeError, KeyError):
            record = None
        if record is not None and record.environment == env:
            return None
        return decide("skipped", "not-own-alarm", (
            f"service {target} has no {ENVIRONMENT} tag and no verdict record of {env} in "
            f"{ENV_STATE_TABLE}: nothing says it is this environment's"))

    @staticmethod
    def _by(decision: Decision, user: str) -> Decision:
        return replace(decision, details={**decision.details, "by": user, "via": "slack"})

    # -- the buttons --

    def redeploy(self, value: ButtonValue, *, user: str, now: datetime) -> Decision:
        """"Redeploy now": a guarded forced deployment of the value's service."""
        target, decide = self._press(value, now, "deploy")
        refused = self._own(value, WORKER_STUCK, target, decide)
        if refused is not None:
            return self._by(refused, user)
        return self._by(self.remediate(target, now=now, alarm=value.alarm,
                                       mode=self.policy.mode), user)

    def stop(self, value: ButtonValue, *, user: str, now: datetime) -> Decision:
        """"Stop stuck tasks": stop the value's tasks that are this service's and still judged
        stuck (at most running - 1)."""
        target, decide = self._press(value, now, "stop-tasks")
        return self._by(self._stop_named(value, target, now, decide), user)

    def _stop_named(self, value: ButtonValue, target: Target, now: datetime,
                    decide: Decide) -> Decision:
        refused = self._own(value, WORKERS_STUCK, target, decide)
        if refused is not None:
            return refused
        tasks = tuple(dict.fromkeys(value.tasks))
        if not tasks:
            return decide("skipped", "no-stuck-tasks", "the button names no task")
        snapshot = self._service(target, now, decide)
        if isinstance(snapshot, Decision):
            return snapshot
        states = self._tasks_of(snapshot, tasks, decide)
        if isinstance(states, Decision):
            return states
        reading = read_verdict(self.state, target, self.policy.environment, now)
        if reading.kind == "unreadable":
            return decide("failed", "state-error", f"{reading.problem}: nothing stopped",
                          retryable=reading.retryable)
        if not reading.usable or reading.record is None:
            return decide("skipped", "no-record", f"{reading.problem}: nothing stopped")
        named = tuple(t for t in tasks if t in reading.record.stuck_tasks)
        if not named:
            return decide("skipped", "no-stuck-tasks", (
                f"the collector no longer judges {', '.join(task_id(t) for t in tasks[:5])} dead "
                f"or hung (verdict {reading.record.verdict}): nothing stopped"))
        plan = plan_stops(replace(reading.record, stuck_tasks=named), states, target,
                          running=snapshot.running_count, live=float(len(named)))
        if isinstance(plan, tuple):
            return decide("skipped", *plan)
        limited = self._rate(target, now, decide)
        if limited is not None:
            return limited
        if self.policy.mode == "dry-run":
            ids = ", ".join(task_id(a) for a in plan.stop)
            return decide("dry-run", "dry-run",
                          f"all guards pass: would stop {len(plan.stop)} task(s): {ids}",
                          details={"stop": list(plan.stop)})
        return self._locked(snapshot, now, decide, lambda s: self._stop_tasks(s, plan, decide))

    def _tasks_of(self, snapshot: ServiceSnapshot, tasks: tuple[str, ...], decide: Decide
                  ) -> dict[str, TaskState] | Decision:
        """Guard 3: DescribeTasks of ``tasks``, each of the service's cluster, account and
        region and of ``service:<service>`` (ECS's word, not the button's)."""
        target = snapshot.target
        foreign = check_task_arns(tasks, target, snapshot.arn)
        if foreign is not None:
            return decide("skipped", *foreign)
        try:
            states = task_states(self.ecs, target.cluster, tasks)
        except Exception as exc:  # noqa: BLE001 - any ECS failure becomes a decision
            return aws_failure(decide, "DescribeTasks", exc)
        group = f"service:{target.service}"
        for arn in tasks:
            state = states.get(arn)
            if state is not None and state.group != group:
                return decide("skipped", "foreign-task", (
                    f"task {task_id(arn)} belongs to {state.group or 'no service'}, not {group}: "
                    "nothing stopped"))
        return states

    def mute(self, value: ButtonValue, *, user: str, now: datetime,
             seconds: int) -> tuple[Mute, bool] | Decision:
        """"Mute 1 h": the mute taken (``False``) or the one already in force (``True``)."""
        _, decide = self._press(value, now, "deploy")
        named = self._named(value, (WORKER_STUCK, WORKERS_STUCK), decide)
        if named is not None:
            return self._by(named, user)
        if not self.state.durable:
            return self._by(decide("failed", "misconfigured", (
                f"a mute needs {ENV_STATE_TABLE}, the table the alarm handler reads it from")),
                user)
        current = read_mute(self.state, value.alarm, now)
        if current is not None:
            return current, True
        mute = Mute(value.alarm, user, now, now + timedelta(seconds=seconds))
        try:
            write_mute(self.state, mute)
        except ToolkitError as exc:
            return self._by(state_failure(decide, "record the mute", exc), user)
        return mute, False

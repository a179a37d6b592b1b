"""The root stack through a change set: create or update, summary, execution, streamed events.

Every function takes the CloudFormation client; ``sleep`` and ``echo`` are injected so tests run
without waiting and capture what a user sees. Expected failures raise :class:`DeployError`
(exit 1) or :class:`ConfigError` (exit 2) with one line naming the cause.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from toolkit.errors import ConfigError, ToolkitError, aws_error_code

CAPABILITIES = ("CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND")
ChangeSetType = Literal["CREATE", "UPDATE"]
Echo = Callable[[str], None]
Sleep = Callable[[float], None]

# A stack in these states cannot take a change set until a person acts.
_STUCK = {
    "ROLLBACK_COMPLETE": "its creation failed and was rolled back: delete it "
                         "(aws cloudformation delete-stack --stack-name {name}) and deploy again",
    "ROLLBACK_FAILED": "its rollback failed: fix or delete it in the console first",
    "DELETE_FAILED": "its deletion failed: finish deleting it first",
    "UPDATE_ROLLBACK_FAILED": "its update rollback failed: continue the rollback first "
                              "(aws cloudformation continue-update-rollback)",
}
_NO_CHANGES = re.compile(r"didn't contain changes|No updates are to be performed", re.I)
_CANCELLED = "Resource creation cancelled"


class DeployError(ToolkitError):
    """The stack could not be deployed (a failed resource, a failed change set, a busy stack)."""


class NoChanges(ToolkitError):
    """The change set is empty: the stack already is what the config describes."""


@dataclass(frozen=True)
class ChangeSet:
    id: str
    stack_id: str
    kind: ChangeSetType
    changes: tuple[dict[str, Any], ...] = field(default=())


def stack_status(cfn: Any, name: str) -> tuple[str, dict[str, str]] | None:
    """The stack's status and current parameters, or None when no such stack exists."""
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except Exception as exc:
        if aws_error_code(exc) == "ValidationError" and "does not exist" in str(exc):
            return None
        raise
    stack = stacks[0]
    params = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    return stack["StackStatus"], params


def change_set_kind(name: str, status: str | None) -> ChangeSetType:
    """CREATE for a new stack (or one left in review by an unexecuted change set), else UPDATE."""
    if status is None or status == "REVIEW_IN_PROGRESS":
        return "CREATE"
    if status in _STUCK:
        raise DeployError(f"stack {name} is in {status}: " + _STUCK[status].format(name=name))
    if status.endswith("_IN_PROGRESS"):
        raise DeployError(f"stack {name} is busy ({status}): wait for it to finish")
    return "UPDATE"


def stack_parameters(
    declared: Mapping[str, bool], given: Mapping[str, str], previous: Mapping[str, str] | None
) -> list[dict[str, Any]]:
    """CloudFormation ``Parameters``: given values, else the previous value on an update.

    ``declared`` maps each parameter of the template to whether it has a Default. A required
    parameter with neither a value nor a previous value is a :class:`ConfigError`.
    """
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ConfigError(f"unknown stack parameter {unknown[0]} (the root stack declares "
                          f"{', '.join(sorted(declared))})")
    out: list[dict[str, Any]] = []
    missing = []
    for key, has_default in declared.items():
        if key in given:
            out.append({"ParameterKey": key, "ParameterValue": given[key]})
        elif previous is not None and key in previous:
            out.append({"ParameterKey": key, "UsePreviousValue": True})
        elif not has_default:
            missing.append(key)
    if missing:
        raise ConfigError(
            "missing stack parameters: " + ", ".join(missing) + " (pass --parameter KEY=VALUE)"
        )
    return out


def create_change_set(
    cfn: Any, name: str, template_url: str, parameters: list[dict[str, Any]],
    kind: ChangeSetType, *, sleep: Sleep = time.sleep, timeout: float = 600.0,
) -> ChangeSet:
    """Create the change set and wait until CloudFormation has computed it."""
    change_set_name = f"celery-ecs-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    try:
        created = cfn.create_change_set(
            StackName=name, ChangeSetName=change_set_name, ChangeSetType=kind,
            TemplateURL=template_url, Parameters=parameters, Capabilities=list(CAPABILITIES),
            Description="celery-ecs deploy",
        )
    except Exception as exc:
        if aws_error_code(exc) == "ValidationError":
            raise DeployError(f"change set refused: {_message(exc)}") from None
        raise
    change_set_id, stack_id = created["Id"], created.get("StackId", name)
    try:
        return _wait_for_change_set(cfn, name, change_set_id, stack_id, kind, sleep, timeout)
    except (KeyboardInterrupt, BrokenPipeError, SystemExit):
        discard_change_set(cfn, ChangeSet(change_set_id, stack_id, kind))
        raise


def _wait_for_change_set(
    cfn: Any, name: str, change_set_id: str, stack_id: str, kind: ChangeSetType,
    sleep: Sleep, timeout: float,
) -> ChangeSet:
    waited = 0.0
    while True:
        described = cfn.describe_change_set(ChangeSetName=change_set_id, StackName=stack_id)
        status, reason = described["Status"], described.get("StatusReason", "")
        if status == "CREATE_COMPLETE":
            return ChangeSet(change_set_id, described.get("StackId", stack_id), kind,
                             tuple(_all_changes(cfn, described)))
        if status == "FAILED":
            if _NO_CHANGES.search(reason):
                delete_change_set(cfn, change_set_id, stack_id)
                raise NoChanges(f"stack {name} is up to date: the change set has no changes")
            raise DeployError(f"change set failed: {reason or 'no reason given'}")
        if waited >= timeout:
            raise DeployError(f"change set still {status} after {timeout:.0f} s")
        sleep(2.0)
        waited += 2.0


def _all_changes(cfn: Any, described: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from described.get("Changes", [])
    token = described.get("NextToken")
    while token:
        page = cfn.describe_change_set(
            ChangeSetName=described["ChangeSetId"], StackName=described["StackId"],
            NextToken=token,
        )
        yield from page.get("Changes", [])
        token = page.get("NextToken")


def delete_change_set(cfn: Any, change_set_id: str, stack_id: str) -> None:
    cfn.delete_change_set(ChangeSetName=change_set_id, StackName=stack_id)


def discard_change_set(cfn: Any, change_set: ChangeSet) -> None:
    """Best effort, for an interrupted run: delete the unexecuted change set and, for a new
    stack, the empty stack it left in REVIEW_IN_PROGRESS. Never raises."""
    try:
        delete_change_set(cfn, change_set.id, change_set.stack_id)
        if change_set.kind == "CREATE":
            cfn.delete_stack(StackName=change_set.stack_id)
    except Exception:  # noqa: BLE001 - already leaving because of another exception
        pass


def summary_lines(change_set: ChangeSet) -> list[str]:
    """One line per resource change: action, logical ID, type, and whether it is replaced."""
    lines = []
    for change in change_set.changes:
        rc = change.get("ResourceChange", {})
        replace = rc.get("Replacement")
        note = "  (replacement)" if replace == "True" else (
            "  (may be replaced)" if replace == "Conditional" else "")
        lines.append(f"  {rc.get('Action', '?'):<7} {rc.get('LogicalResourceId', '?'):<32} "
                     f"{rc.get('ResourceType', '')}{note}")
    counts: dict[str, int] = {}
    for change in change_set.changes:
        action = change.get("ResourceChange", {}).get("Action", "?")
        counts[action] = counts.get(action, 0) + 1
    total = ", ".join(f"{n} {a.lower()}" for a, n in sorted(counts.items())) or "no resource"
    return [f"change set ({change_set.kind}): {total}", *lines]


_TERMINAL_OK = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"}
_TERMINAL_BAD = {
    "CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "UPDATE_ROLLBACK_COMPLETE",
    "UPDATE_ROLLBACK_FAILED", "DELETE_COMPLETE", "DELETE_FAILED", "UPDATE_FAILED",
    "IMPORT_ROLLBACK_COMPLETE", "IMPORT_ROLLBACK_FAILED",
}


def execute_and_stream(
    cfn: Any, change_set: ChangeSet, *, echo: Echo = print, sleep: Sleep = time.sleep,
    poll: float = 5.0, timeout: float = 3 * 3600.0,
) -> str:
    """Execute the change set and print the stack's events until a terminal status.

    Returns the final status; raises :class:`DeployError` naming the first failed resource and
    its reason (looked up inside the nested stack that failed, where the real cause is).
    """
    seen = {e["EventId"] for e in _events(cfn, change_set.stack_id)}
    try:
        cfn.execute_change_set(ChangeSetName=change_set.id, StackName=change_set.stack_id)
    except Exception as exc:  # a ClientError: refused outright (moto reports resource errors here)
        code = aws_error_code(exc)
        if code is None:
            raise
        raise DeployError(f"executing the change set failed: {code}: {_message(exc)}") from None
    done: set[str] = set()
    started: set[str] = set()
    first_failure: dict[str, Any] | None = None
    waited = 0.0
    while True:
        fresh = [e for e in _events(cfn, change_set.stack_id) if e["EventId"] not in seen]
        for event in reversed(fresh):  # the API lists newest first
            seen.add(event["EventId"])
            logical, status = event["LogicalResourceId"], event.get("ResourceStatus", "")
            if event.get("PhysicalResourceId") != change_set.stack_id:
                started.add(logical)
                if status.endswith("_COMPLETE"):
                    done.add(logical)
            reason = event.get("ResourceStatusReason") or ""
            if status.endswith("_FAILED") and first_failure is None and _CANCELLED not in reason:
                first_failure = event
            echo(_event_line(event, len(done), len(started)))
            if event.get("PhysicalResourceId") == change_set.stack_id and (
                status in _TERMINAL_OK or status in _TERMINAL_BAD
            ):
                if status in _TERMINAL_OK:
                    return str(status)
                raise DeployError(_failure(cfn, first_failure, status))
        if waited >= timeout:
            raise DeployError(f"stack still in progress after {timeout:.0f} s")
        sleep(poll)
        waited += poll


def _event_line(event: dict[str, Any], done: int, started: int) -> str:
    when: Any = event.get("Timestamp")
    stamp = when.strftime("%H:%M:%S") if hasattr(when, "strftime") else str(when or "")[:8]
    reason = event.get("ResourceStatusReason") or ""
    line = (f"[{done:>3}/{started:<3}] {stamp}  {event.get('ResourceStatus', ''):<28} "
            f"{event['LogicalResourceId']:<32} {event.get('ResourceType', '')}")
    return f"{line}  {reason}" if reason else line


def _events(cfn: Any, stack: str, pages: int = 3) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StackName": stack}
    for _ in range(pages):  # newest first: a few pages cover any poll interval
        page = cfn.describe_stack_events(**kwargs)
        events.extend(page.get("StackEvents", []))
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    return events


def _failure(cfn: Any, event: dict[str, Any] | None, status: str, depth: int = 0) -> str:
    if event is None:
        return f"stack ended in {status}"
    logical = event["LogicalResourceId"]
    reason = event.get("ResourceStatusReason") or "no reason given"
    nested = event.get("ResourceType") == "AWS::CloudFormation::Stack" and event.get(
        "PhysicalResourceId") and event.get("PhysicalResourceId") != event.get("StackId")
    if nested and depth < 3:
        inner = [e for e in _events(cfn, event["PhysicalResourceId"])
                 if e.get("ResourceStatus", "").endswith("_FAILED")
                 and _CANCELLED not in (e.get("ResourceStatusReason") or "")
                 and e.get("PhysicalResourceId") != event["PhysicalResourceId"]]
        if inner:
            return f"{logical}: " + _failure(cfn, inner[-1], status, depth + 1)
    return f"{logical} ({event.get('ResourceType', '')}) failed: {reason} (stack {status})"


def _message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message", exc))
    return str(exc)

"""AWS failures during remediation, turned into decisions (and the :class:`Decide` they use).

ECS actions (``UpdateService``, ``StopTask``) raise :class:`~toolkit.errors.RemediationError` at
the adapter boundary (:func:`ecs_action`); reads (``DescribeServices``, ``GetMetricData``), the
state store and those errors become a :class:`~toolkit.alarms.decision.Decision` here, in one
place: ``AccessDenied`` is ``misconfigured`` (the role lacks the named action, a retry cannot fix
it), throttling and unreachable endpoints are retryable, anything else is final.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from toolkit.alarms.decision import Action, Decision, DecisionCode
from toolkit.alarms.state import LEDGER_CONTENTION
from toolkit.errors import ConfigError, RemediationError, aws_error_code, is_transient

__all__ = ["Decide", "aws_failure", "ecs_action", "error_code", "state_failure"]

T = TypeVar("T")

# AWS answers that a retry cannot fix: the handler's role lacks a permission.
DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"})


class Decide(Protocol):
    """Builds the :class:`Decision` of one remediation attempt (target, alarm, mode, remedy and
    time already bound)."""

    def __call__(
        self, action: Action, code: DecisionCode, reason: str, *, retryable: bool = False,
        details: Mapping[str, Any] | None = None,
    ) -> Decision: ...


def error_code(exc: BaseException) -> str:
    return aws_error_code(exc) or type(exc).__name__


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, RemediationError):
        return exc.retryable
    cause = exc.__cause__
    return is_transient(exc) or (cause is not None and is_transient(cause))


def ecs_action(call: str, action: Callable[[], T]) -> T:
    """Run one ECS action; any failure is a :class:`RemediationError` naming ``call`` with the
    AWS error code and whether a retry may succeed (the original error is its ``__cause__``)."""
    try:
        return action()
    except Exception as exc:  # noqa: BLE001 - botocore's errors, whatever their class
        code = aws_error_code(exc)
        raise RemediationError(
            f"{call} failed: {code or type(exc).__name__}", code, retryable=is_transient(exc)
        ) from exc


def aws_failure(decide: Decide, call: str, exc: Exception, *, service: str = "ecs") -> Decision:
    """A failed AWS call (``service:call``) as a decision."""
    code = error_code(exc)
    if code in DENIED:
        return decide(
            "failed", "misconfigured",
            f"the handler's IAM role may not call {service}:{call} ({code})",
        )
    kind: DecisionCode = "cloudwatch-error" if service == "cloudwatch" else "ecs-error"
    return decide("failed", kind, f"{call} failed: {code}", retryable=_transient(exc))


def state_failure(decide: Decide, what: str, exc: Exception) -> Decision:
    """A failed state-store call (lock, ledger) as a decision."""
    if isinstance(exc, ConfigError):
        return decide("failed", "misconfigured", str(exc))
    if aws_error_code(exc) == LEDGER_CONTENTION:
        return decide(
            "failed", "state-error",
            f"could not {what}: the hourly ledger is contended by other deliveries",
            retryable=True,
        )
    return decide(
        "failed", "state-error", f"could not {what}: {error_code(exc)}", retryable=_transient(exc)
    )

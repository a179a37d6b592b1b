"""Exceptions raised by the toolkit.

Every error the toolkit raises on purpose derives from :class:`ToolkitError`, so a caller (the
CLI, a Lambda handler) can catch one class, print its one-line message and exit non-zero without
a traceback. Messages never contain secrets: broker URLs are redacted before they are formatted.

    ToolkitError
    ├── ConfigError              bad settings, config file or command-line values
    ├── BrokerError              anything about reading the broker
    │   ├── UnsupportedBroker    URL scheme we have no reader for (also a ConfigError)
    │   ├── BrokerUnreachable    connection refused, DNS failure, timeout
    │   └── BrokerAuthError      wrong password / not authorised
    ├── PublishError             CloudWatch PutMetricData failed after retries
    ├── AwsError                 any other AWS API failure, wrapped at the adapter boundary
    │   └── RemediationError     ECS refused or failed a remedy (UpdateService, StopTask)
    ├── AlarmEventError          an alarm event we cannot parse (never remediated)
    ├── SlackError               Slack unreachable or refused the message after retries
    ├── LockError                task locks (toolkit.locks)
    └── CheckpointError          checkpoint store (toolkit.checkpoints)

Modules may define narrower subclasses of these next to the code that raises them.
"""

from __future__ import annotations


class ToolkitError(Exception):
    """Base class: an expected failure with a short, secret-free message."""


class ConfigError(ToolkitError):
    """Settings, config file or command-line values are wrong."""


class BrokerError(ToolkitError):
    """The broker could not be read."""


class UnsupportedBroker(BrokerError, ConfigError):
    """The broker URL has a scheme no reader handles."""


class BrokerUnreachable(BrokerError):
    """The broker did not answer (refused, unknown host, timeout)."""


class BrokerAuthError(BrokerError):
    """The broker refused our credentials."""


class PublishError(ToolkitError):
    """CloudWatch did not accept the metrics. ``sent_groups``: the sample groups (minutes of
    task counts) whose requests were accepted before the failure."""

    def __init__(self, message: str, sent_groups: frozenset[int] = frozenset()) -> None:
        super().__init__(message)
        self.sent_groups = sent_groups


class AwsError(ToolkitError):
    """An AWS API call failed; ``code`` carries the AWS error code when there is one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class RemediationError(AwsError):
    """An ECS remedy (a forced deployment, stopping a task) failed; ``retryable`` says whether a
    later attempt may succeed (throttled, unreachable, a 5xx). Raised at the ECS adapter boundary
    and turned into the remediation decision (``toolkit.alarms.failures``)."""

    def __init__(self, message: str, code: str | None = None, *, retryable: bool = False) -> None:
        super().__init__(message, code)
        self.retryable = retryable


class AlarmEventError(ToolkitError):
    """An alarm event could not be understood."""




class SlackError(ToolkitError):
    """Slack did not accept a message.

    ``retryable`` is True only for transport failures, timeouts, 429 and 5xx answers (a later
    attempt may succeed); permanent refusals (``invalid_auth``, ``channel_not_found``, webhook
    403/404, an unreadable secret) are False.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class LockError(ToolkitError):
    """A task lock operation failed."""


class CheckpointError(ToolkitError):
    """A checkpoint could not be stored or read."""


class PackagingError(ToolkitError):
    """A Lambda zip could not be built (missing source, dependency or pip failure)."""


def aws_error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (or of an :class:`AwsError`), else None."""
    if isinstance(exc, AwsError):
        return exc.code
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


#: AWS error codes that mean "try again later": throttling and the service's own failures.
TRANSIENT_AWS_CODES = frozenset({
    "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
    "ProvisionedThroughputExceededException", "InternalServiceError", "InternalFailure",
    "InternalServerError", "ServerException", "ServiceUnavailable", "ServiceUnavailableException",
    "RequestTimeout", "RequestTimeoutException",
})
#: botocore's transport failures, matched by class name so this module needs no botocore.
_TRANSIENT_CLASSES = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
})


def is_transient(exc: BaseException) -> bool:
    """Whether a later attempt of the same AWS call may succeed: unreachable, timed out,
    throttled or a 5xx. Anything else (a bad parameter, AccessDenied, a missing resource,
    missing credentials) will fail the same way again and is permanent."""
    if any(cls.__name__ in _TRANSIENT_CLASSES for cls in type(exc).__mro__):
        return True
    return aws_error_code(exc) in TRANSIENT_AWS_CODES

"""A state store that survives a misconfigured ``STATE_TABLE``.

A missing table, a role without DynamoDB permissions or a table without the ``pk`` key fail the
same way on every retry: they are configuration errors, not outages. :class:`GuardedStateStore`
wraps the durable store; on the first such error it logs one line naming ``STATE_TABLE`` and
switches, for the rest of the container's life, to an in-memory store: the alert is still posted
once per container (in-memory de-duplication), nothing asks Lambda for a retry, and remediation
refuses with a :class:`~toolkit.errors.ConfigError` that the follow-up shows ("misconfigured"),
because the hourly limit cannot be kept without the ledger. Transient errors (throttling, timeouts)
pass through unchanged: those a retry can fix.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from toolkit.alarms.state import (
    LEDGER_CONTENTION,
    REMEDIATION_WINDOW,
    MemoryStateStore,
    StateStore,
)
from toolkit.env import ENV_STATE_TABLE
from toolkit.errors import ConfigError, ToolkitError, aws_error_code, is_transient

log = logging.getLogger(__name__)


class GuardedStateStore:
    """``inner`` until it fails with a configuration error, then memory (see the module doc)."""

    def __init__(self, inner: StateStore, table: str) -> None:
        self.inner = inner
        self.table = table
        self.memory = MemoryStateStore()
        self.misconfigured: str | None = None
        self.durable: bool = inner.durable  # False once it has fallen back to memory

    def _fail(self, exc: ToolkitError) -> None:
        cause = exc.__cause__
        if (
            is_transient(exc)
            or (cause is not None and is_transient(cause))
            or aws_error_code(exc) == LEDGER_CONTENTION
        ):
            raise exc
        code = aws_error_code(exc) or type(exc).__name__
        self.durable = False
        self.misconfigured = f"{ENV_STATE_TABLE}={self.table} is unusable ({code})"
        log.error(json.dumps({
            "event": "misconfigured", "setting": ENV_STATE_TABLE, "table": self.table,
            "error": str(exc),
            "message": f"{ENV_STATE_TABLE}={self.table} cannot be used ({code}): check the table "
            "exists in this region with partition key pk (S) and that the handler's role may "
            "GetItem/PutItem/DeleteItem on it; de-duplication is per container meanwhile and "
            "remediation is off",
        }))

    def _call(self, name: str, *args: Any) -> Any:
        if self.misconfigured is None:
            try:
                return getattr(self.inner, name)(*args)
            except ToolkitError as exc:
                self._fail(exc)
        return getattr(self.memory, name)(*args)

    def _remediation(self, name: str, *args: Any) -> Any:
        if self.misconfigured is None:
            try:
                return getattr(self.inner, name)(*args)
            except ToolkitError as exc:
                self._fail(exc)
        raise ConfigError(self.misconfigured or ENV_STATE_TABLE)

    def claim(self, key: str, now: datetime, ttl: timedelta) -> bool:
        return bool(self._call("claim", key, now, ttl))

    def release(self, key: str) -> None:
        self._call("release", key)

    def get_thread(self, alarm_key: str) -> str | None:
        value = self._call("get_thread", alarm_key)
        return value if isinstance(value, str) else None

    def put_thread(self, alarm_key: str, ts: str, now: datetime, ttl: timedelta) -> None:
        self._call("put_thread", alarm_key, ts, now, ttl)

    def get_record(self, key: str) -> dict[str, Any] | None:
        value = self._call("get_record", key)
        return value if isinstance(value, dict) else None

    def put_record(self, key: str, data: Mapping[str, Any], now: datetime, ttl: timedelta) -> None:
        self._call("put_record", key, data, now, ttl)

    def get_item(self, pk: str) -> dict[str, Any] | None:
        value = self._call("get_item", pk)
        return value if isinstance(value, dict) else None

    def recent_remediations(self, now: datetime, window: timedelta = REMEDIATION_WINDOW) -> int:
        return int(self._remediation("recent_remediations", now, window))

    def reserve_remediation(
        self, target: str, now: datetime, limit: int, window: timedelta = REMEDIATION_WINDOW
    ) -> bool:
        return bool(self._remediation("reserve_remediation", target, now, limit, window))

    def release_remediation(self, target: str, now: datetime) -> None:
        self._remediation("release_remediation", target, now)

    def lock_remediation(self, target: str, now: datetime, ttl: timedelta) -> bool:
        return bool(self._remediation("lock_remediation", target, now, ttl))

    def unlock_remediation(self, target: str) -> None:
        self._remediation("unlock_remediation", target)

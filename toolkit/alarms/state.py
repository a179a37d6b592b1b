"""Alarm handler state: de-duplication claims, Slack thread timestamps and the remediation ledger.

Two backends implement the same small :class:`StateStore` protocol:

* :class:`MemoryStateStore` lives as long as the Lambda container. It is the fallback when no
  ``STATE_TABLE`` is configured: duplicates reaching the *same* warm container are caught, others
  are not (ECS-derived cooldown still prevents a second deployment; see ``toolkit.remediation``).
* :class:`DynamoStateStore` uses one DynamoDB table (partition key ``pk`` of type S, TTL attribute
  ``expires_at``). Claims are conditional puts, so exactly one of several concurrent deliveries
  wins; the remediation ledger is one item updated with optimistic locking (``version``), so the
  hourly limit holds across concurrent containers.

Items (``pk``): ``claim#<event>`` (first delivery of a state change), ``outcome#<event>`` (what the
first delivery left to do: a retryable remediation, a Slack follow-up owed), ``thread#<alarm>``
(Slack ``ts``), ``remediate#<cluster>/<service>`` (per-service remediation lock, TTL = cooldown),
``outcome#remedy#<cluster>/<service>`` (the last remedy: what was done and when, for the
escalation) and ``ledger#remediations``. ``verdict#<cluster>/<service>`` is the collector's
(:mod:`toolkit.verdictrecord`); the handler only reads it (:meth:`StateStore.get_item`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from toolkit.aws.clients import client as aws_client
from toolkit.errors import AwsError, aws_error_code

# mypy-boto3-dynamodb is not installed in every environment: type the client loosely.
DynamoDBClient = Any

__all__ = ["DynamoStateStore", "MemoryStateStore", "StateStore", "REMEDIATION_WINDOW"]

REMEDIATION_WINDOW = timedelta(hours=1)
LEDGER_KEY = "ledger#remediations"
LEDGER_CONTENTION = "LedgerContention"  # AwsError code: optimistic writes kept losing


class StateStore(Protocol):
    """Claims, threads and the remediation ledger.

    ``durable`` says whether the state outlives one Lambda container.
    """

    durable: bool

    def claim(self, key: str, now: datetime, ttl: timedelta) -> bool:
        """Record ``key``; True only for the first caller (until the TTL passes)."""

    def release(self, key: str) -> None:
        """Forget a claim (used when the work it guarded failed and must be retried)."""

    def get_thread(self, alarm_key: str) -> str | None:
        """The Slack ``ts`` of the last ALARM message for this alarm."""

    def put_thread(self, alarm_key: str, ts: str, now: datetime, ttl: timedelta) -> None: ...

    def recent_remediations(self, now: datetime, window: timedelta = REMEDIATION_WINDOW) -> int:
        """How many forced deployments were recorded in ``window`` before ``now``."""

    def reserve_remediation(
        self, target: str, now: datetime, limit: int, window: timedelta = REMEDIATION_WINDOW
    ) -> bool:
        """Atomically record a forced deployment of ``target`` if under ``limit`` are recent."""

    def release_remediation(self, target: str, now: datetime) -> None:
        """Give back the slot :meth:`reserve_remediation` took at ``now`` (nothing deployed)."""

    def lock_remediation(self, target: str, now: datetime, ttl: timedelta) -> bool:
        """Take the per-service remediation lock; True only for one caller until ``ttl`` passes."""

    def unlock_remediation(self, target: str) -> None:
        """Drop the lock early (nothing was deployed)."""

    def get_record(self, key: str) -> dict[str, Any] | None:
        """A small JSON record stored by :meth:`put_record`, or ``None``."""

    def put_record(
        self, key: str, data: Mapping[str, Any], now: datetime, ttl: timedelta
    ) -> None: ...

    def get_item(self, pk: str) -> dict[str, Any] | None:
        """The raw item ``pk`` that another part of the toolkit wrote (the collector's verdict
        record, ``verdict#<cluster>/<service>``); ``None`` when absent or without a table."""


class MemoryStateStore:
    """In-process state (one Lambda container, one CLI run, or a test)."""

    durable = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: dict[str, datetime] = {}
        self._threads: dict[str, str] = {}
        self._ledger: list[tuple[datetime, str]] = []
        self._records: dict[str, tuple[datetime, str]] = {}

    def claim(self, key: str, now: datetime, ttl: timedelta) -> bool:
        with self._lock:
            expires = self._claims.get(key)
            if expires is not None and expires > now:
                return False
            self._claims[key] = now + ttl
            if len(self._claims) > 10_000:  # bound memory in a long-lived container
                self._claims = {k: v for k, v in self._claims.items() if v > now}
            return True

    def release(self, key: str) -> None:
        with self._lock:
            self._claims.pop(key, None)

    def get_thread(self, alarm_key: str) -> str | None:
        return self._threads.get(alarm_key)

    def put_thread(self, alarm_key: str, ts: str, now: datetime, ttl: timedelta) -> None:
        self._threads[alarm_key] = ts

    def recent_remediations(self, now: datetime, window: timedelta = REMEDIATION_WINDOW) -> int:
        with self._lock:
            return sum(1 for at, _ in self._ledger if at > now - window)

    def reserve_remediation(
        self, target: str, now: datetime, limit: int, window: timedelta = REMEDIATION_WINDOW
    ) -> bool:
        with self._lock:
            self._ledger = [(at, t) for at, t in self._ledger if at > now - window]
            if len(self._ledger) >= limit:
                return False
            self._ledger.append((now, target))
            return True

    def release_remediation(self, target: str, now: datetime) -> None:
        with self._lock:
            if (now, target) in self._ledger:
                self._ledger.remove((now, target))

    def lock_remediation(self, target: str, now: datetime, ttl: timedelta) -> bool:
        return self.claim(f"remediate#{target}", now, ttl)

    def unlock_remediation(self, target: str) -> None:
        self.release(f"remediate#{target}")

    def get_record(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._records.get(key)
        if entry is None:
            return None
        data = json.loads(entry[1])
        return data if isinstance(data, dict) else None

    def put_record(self, key: str, data: Mapping[str, Any], now: datetime, ttl: timedelta) -> None:
        with self._lock:
            self._records[key] = (now + ttl, json.dumps(dict(data), default=str))
            if len(self._records) > 10_000:
                self._records = {k: v for k, v in self._records.items() if v[0] > now}

    def get_item(self, pk: str) -> dict[str, Any] | None:
        return None  # nobody else writes into a container's memory


def _epoch(when: datetime) -> int:
    return int(when.timestamp())


class DynamoStateStore:
    """State in a DynamoDB table with a string partition key ``pk`` and TTL on ``expires_at``."""

    durable = True

    def __init__(
        self,
        table: str,
        client: DynamoDBClient | None = None,
        *,
        client_factory: Callable[[], DynamoDBClient] | None = None,
    ) -> None:
        self.table = table
        self._client = client
        self._factory = client_factory

    @property
    def client(self) -> DynamoDBClient:
        if self._client is None:
            if self._factory is not None:
                self._client = self._factory()
            else:
                self._client = aws_client("dynamodb", read_timeout=5)
        return self._client

    def _wrap(self, exc: Exception, what: str) -> AwsError:
        code = aws_error_code(exc)
        reason = code or type(exc).__name__
        return AwsError(f"DynamoDB {what} on table {self.table} failed: {reason}", code)

    def _get_item(self, pk: str) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            item: dict[str, Any] | None = self.client.get_item(
                TableName=self.table, Key={"pk": {"S": pk}}, ConsistentRead=True
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise self._wrap(exc, "GetItem") from exc
        return item

    def _put_item(self, item: dict[str, Any], **condition: Any) -> bool:
        """PutItem; False when ``condition`` (a conditional write) did not hold."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_item(TableName=self.table, Item=item, **condition)
        except ClientError as exc:
            if aws_error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise self._wrap(exc, "PutItem") from exc
        except BotoCoreError as exc:
            raise self._wrap(exc, "PutItem") from exc
        return True

    def claim(self, key: str, now: datetime, ttl: timedelta) -> bool:
        return self._put_if_absent(f"claim#{key}", now, ttl)

    def _put_if_absent(self, pk: str, now: datetime, ttl: timedelta) -> bool:
        return self._put_item(
            {
                "pk": {"S": pk},
                "claimed_at": {"N": str(_epoch(now))},
                "expires_at": {"N": str(_epoch(now + ttl))},
            },
            # TTL deletion lags by up to days: an expired item counts as absent.
            ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
            ExpressionAttributeValues={":now": {"N": str(_epoch(now))}},
        )

    def release(self, key: str) -> None:
        self._delete(f"claim#{key}")

    def _delete(self, pk: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_item(TableName=self.table, Key={"pk": {"S": pk}})
        except (ClientError, BotoCoreError) as exc:
            raise self._wrap(exc, "DeleteItem") from exc

    def lock_remediation(self, target: str, now: datetime, ttl: timedelta) -> bool:
        return self._put_if_absent(f"remediate#{target}", now, ttl)

    def unlock_remediation(self, target: str) -> None:
        self._delete(f"remediate#{target}")

    def get_record(self, key: str) -> dict[str, Any] | None:
        raw = (self._get_item(f"outcome#{key}") or {}).get("data", {}).get("S")
        if not raw:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def put_record(self, key: str, data: Mapping[str, Any], now: datetime, ttl: timedelta) -> None:
        self._put_item({
            "pk": {"S": f"outcome#{key}"},
            "data": {"S": json.dumps(dict(data), default=str)},
            "expires_at": {"N": str(_epoch(now + ttl))},
        })

    def get_item(self, pk: str) -> dict[str, Any] | None:
        return self._get_item(pk)

    def get_thread(self, alarm_key: str) -> str | None:
        ts = (self._get_item(f"thread#{alarm_key}") or {}).get("ts", {}).get("S")
        return ts or None

    def put_thread(self, alarm_key: str, ts: str, now: datetime, ttl: timedelta) -> None:
        self._put_item({
            "pk": {"S": f"thread#{alarm_key}"},
            "ts": {"S": ts},
            "expires_at": {"N": str(_epoch(now + ttl))},
        })

    def _ledger(self) -> tuple[list[tuple[int, str]], int | None]:
        item = self._get_item(LEDGER_KEY)
        if not item:
            return [], None
        entries = []
        for raw in item.get("entries", {}).get("L", []):
            text: Any = raw.get("S", "")
            at, _, target = str(text).partition("|")
            if at.isdigit():
                entries.append((int(at), target))
        return entries, int(item.get("version", {}).get("N", "0"))

    def recent_remediations(self, now: datetime, window: timedelta = REMEDIATION_WINDOW) -> int:
        entries, _ = self._ledger()
        since = _epoch(now - window)
        return sum(1 for at, _ in entries if at > since)

    def reserve_remediation(
        self, target: str, now: datetime, limit: int, window: timedelta = REMEDIATION_WINDOW
    ) -> bool:
        since = _epoch(now - window)
        for _attempt in range(8):
            entries, version = self._ledger()
            recent = [(at, t) for at, t in entries if at > since]
            if len(recent) >= limit:
                return False
            recent.append((_epoch(now), target))
            if self._write_ledger(recent, version, now, window):
                return True
        # Persistent contention: neither "limit reached" (it may not be) nor a silent pass.
        raise AwsError(
            f"DynamoDB ledger on table {self.table} is contended (8 writes lost to other "
            "deliveries)",
            LEDGER_CONTENTION,
        )

    def release_remediation(self, target: str, now: datetime) -> None:
        entry = (_epoch(now), target)
        for _attempt in range(8):
            entries, version = self._ledger()
            if entry not in entries:
                return
            entries.remove(entry)
            if self._write_ledger(entries, version, now, REMEDIATION_WINDOW):
                return
        raise AwsError(f"DynamoDB ledger on table {self.table} is too contended to release a slot")

    def _write_ledger(
        self, entries: list[tuple[int, str]], version: int | None, now: datetime, window: timedelta
    ) -> bool:
        """Write the ledger if nobody else did since we read ``version``; False if they did."""
        condition: dict[str, Any]
        if version is None:
            condition = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": {"N": str(version)}},
            }
        return self._put_item(
            {
                "pk": {"S": LEDGER_KEY},
                "entries": {"L": [{"S": f"{at}|{t}"} for at, t in entries]},
                "version": {"N": str((version or 0) + 1)},
                "expires_at": {"N": str(_epoch(now + 2 * window))},
            },
            **condition,
        )

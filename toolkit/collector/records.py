"""Each cycle's verdicts, written to the state table for the alarm handler (the verdict record).

Optional: only when a state table is configured (``state_table`` in the config file, or
``STATE_TABLE``, the same table the alarm handler uses). Per cycle: ``ceil(services / 25)``
``BatchWriteItem`` calls, plus, on the first cycle of a process only, ``ceil(services / 100)``
``BatchGetItem`` calls that seed the backlog history (the last 15 values) from the records
already there, so a Lambda collector that starts cold keeps the history. The record format is
:mod:`toolkit.verdictrecord`'s. Failures are returned as one line each, never raised: the queue
and service metrics of the cycle are published whatever happens here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from toolkit.aws.clients import client as aws_client
from toolkit.aws.ecs import chunks, wrap
from toolkit.collector.verdicts import ServiceVerdict
from toolkit.verdictrecord import HISTORY, VerdictRecord, record_key

log = logging.getLogger(__name__)

WRITE_BATCH = 25  # BatchWriteItem's limit
READ_BATCH = 100  # BatchGetItem's limit
UNPROCESSED_RETRIES = 3


@dataclass
class VerdictRecords:
    table: str
    environment: str
    interval: float
    client: Any = None
    history: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    _seeded: bool = False

    def _dynamodb(self) -> Any:
        if self.client is None:
            self.client = aws_client("dynamodb", read_timeout=5)
        return self.client

    def _seed(self, keys: Sequence[tuple[str, str]]) -> tuple[int, list[str]]:
        """Read the existing records once, for their backlog history."""
        self._seeded = True
        calls, errors = 0, list[str]()
        for batch in chunks(list(keys), READ_BATCH):
            calls += 1
            request = {self.table: {"Keys": [{"pk": {"S": record_key(c, s)}} for c, s in batch],
                                    "ProjectionExpression": "pk, #d",
                                    "ExpressionAttributeNames": {"#d": "data"}}}
            try:
                reply = self._dynamodb().batch_get_item(RequestItems=request)
            except Exception as exc:  # noqa: BLE001 - ClientError, endpoint errors
                errors.append(str(wrap(exc, f"DynamoDB BatchGetItem on {self.table}")))
                continue
            for item in reply.get("Responses", {}).get(self.table, []):
                try:
                    record = VerdictRecord.from_item(item)
                except ValueError as exc:
                    log.info("ignoring an unreadable verdict record: %s", exc)
                    continue
                self.history.setdefault((record.cluster, record.service), list(record.backlog))
        return calls, errors

    def write(self, verdicts: Sequence[ServiceVerdict], now: float) -> tuple[int, list[str]]:
        """Write one record per verdict (services ECS does not have are skipped). Returns
        (AWS calls, error lines)."""
        present = [v for v in verdicts if v.exists]
        calls, errors = 0, list[str]()
        if not self._seeded and present:
            calls, errors = self._seed([(v.cluster, v.service) for v in present])
        items = []
        for v in present:
            key = (v.cluster, v.service)
            history = self.history.setdefault(key, [])
            if v.verdict != "unknown" or v.backlog:
                history.append(v.backlog)
            del history[:-HISTORY]
            record = VerdictRecord(
                environment=self.environment, cluster=v.cluster, service=v.service,
                verdict=v.verdict, at=now, interval=self.interval, reasons=v.reasons,
                stuck_tasks=v.stuck_tasks, backlog=tuple(history),
            )
            items.append({"PutRequest": {"Item": record.to_item()}})
        for batch in chunks(items, WRITE_BATCH):
            pending: list[Any] = list(batch)
            for _ in range(UNPROCESSED_RETRIES):
                calls += 1
                try:
                    reply = self._dynamodb().batch_write_item(RequestItems={self.table: pending})
                except Exception as exc:  # noqa: BLE001 - ClientError, endpoint errors
                    errors.append(str(wrap(exc, f"DynamoDB BatchWriteItem on {self.table}")))
                    pending = []
                    break
                pending = list(reply.get("UnprocessedItems", {}).get(self.table, []))
                if not pending:
                    break
            if pending:
                errors.append(f"DynamoDB BatchWriteItem on {self.table}: {len(pending)} verdict"
                              f" records left unprocessed after {UNPROCESSED_RETRIES} attempts")
        return calls, errors

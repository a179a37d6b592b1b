"""MySQL / MariaDB checkpoints through PyMySQL (``mysql://user:pass@host:3306/db``).

The upsert is one ``INSERT ... ON DUPLICATE KEY UPDATE`` statement; a conditional save changes
the row only when the new version is greater, and the affected-row count (1 inserted, 2 updated,
0 unchanged) tells which happened. Deadlocks between concurrent first inserts are retried.

Task names and keys are ``VARBINARY``: compared byte for byte, like SQLite's TEXT. (A
``utf8mb4_bin`` VARCHAR is PAD SPACE in MySQL 5.7 and MariaDB, so "k" and "k " would be the same
key.) The ``VALUES(col)`` form of the upsert is deprecated since MySQL 8.0.20, but its
replacement (``VALUES (...) AS new ... new.col``) is not understood by MariaDB (10.11 included),
so it stays.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from toolkit.errors import CheckpointError
from toolkit.tasks.checkpoints.base import (
    DEFAULT_TABLE,
    TOMBSTONE,
    CheckpointStore,
    CheckpointUnavailable,
    OnCorrupt,
    Row,
    check_table,
)
from toolkit.urls import redact_url

SCHEMA = """
CREATE TABLE IF NOT EXISTS `{t}` (
    task_name  VARBINARY(764) NOT NULL,
    task_key   VARBINARY(764) NOT NULL,
    version    BIGINT       NOT NULL,
    state      LONGTEXT     NOT NULL,
    updated_at DOUBLE       NOT NULL,
    PRIMARY KEY (task_name, task_key),
    KEY `{t}_updated_at` (updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
"""
_RETRYABLE = {1205, 1213}  # lock wait timeout, deadlock: the transaction was rolled back
_ATTEMPTS = 5
T = TypeVar("T")


class MySQLStore(CheckpointStore):
    def __init__(
        self,
        url: str,
        *,
        table: str | None = None,
        on_corrupt: OnCorrupt = "raise",
        clock: Callable[[], float] = time.time,
        connect_timeout: float = 5.0,
    ) -> None:
        super().__init__(on_corrupt=on_corrupt, clock=clock)
        self.safe_url = redact_url(url)
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        database = parts.path.lstrip("/")
        if not database:
            raise CheckpointError(f"checkpoint URL {self.safe_url} names no database")
        try:
            port = parts.port or 3306
        except ValueError:
            raise CheckpointError(f"checkpoint URL {self.safe_url} has a bad port") from None
        self.table = check_table(table or query.get("table", DEFAULT_TABLE))
        self._params: dict[str, Any] = {
            "host": parts.hostname or "127.0.0.1",
            "port": port,
            "user": unquote(parts.username or "root"),
            "password": unquote(parts.password or ""),
            "database": unquote(database),
            "charset": "utf8mb4",
            "connect_timeout": float(query.get("connect_timeout", connect_timeout)),
            "read_timeout": 30,
            "write_timeout": 30,
            "autocommit": False,
            "client_flag": 0,  # no CLIENT_FOUND_ROWS: rowcount 0 means "not changed"
        }
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = 0
        self._run(lambda cur: cur.execute(SCHEMA.format(t=self.table)))

    def _connect(self) -> Any:
        import pymysql

        if self._conn is not None and self._pid == os.getpid():
            try:
                self._conn.ping()  # the server may have dropped an idle connection
                return self._conn
            except pymysql.MySQLError:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
        try:
            conn = pymysql.connect(**self._params)
        except pymysql.MySQLError as exc:
            raise CheckpointUnavailable(
                f"cannot connect to checkpoint database {self.safe_url}: {_reason(exc)}"
            ) from None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _run(self, body: Callable[[Any], T]) -> T:
        """Run ``body(cursor)`` in one transaction; re-run it after a deadlock (so it must be
        idempotent: InnoDB rolled the failed attempt back)."""
        import pymysql

        with self._lock:
            for attempt in range(1, _ATTEMPTS + 1):
                conn = self._connect()
                try:
                    with conn.cursor() as cur:
                        result = body(cur)
                    conn.commit()
                    return result
                except pymysql.MySQLError as exc:
                    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
                    _rollback(conn)
                    if code in _RETRYABLE and attempt < _ATTEMPTS:
                        time.sleep(0.01 * attempt)
                        continue
                    unreachable = isinstance(exc, pymysql.OperationalError) and code >= 2000
                    cls = CheckpointUnavailable if unreachable else CheckpointError
                    raise cls(
                        f"checkpoint database {self.safe_url} failed: {_reason(exc)}"
                    ) from None
                except BaseException:
                    _rollback(conn)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetch(self, task: str, key: str) -> Row | None:
        def body(cur: Any) -> Any:
            cur.execute(
                f"SELECT state, version, updated_at FROM `{self.table}` "
                "WHERE task_name = %s AND task_key = %s",
                (task, key),
            )
            return cur.fetchone()

        found = self._run(body)
        return None if found is None else Row(str(found[0]), int(found[1]), float(found[2]))

    def _upsert(
        self, task: str, key: str, state: str, version: int | None, now: float
    ) -> int | None:
        t = self.table

        def bump(cur: Any) -> int | None:
            cur.execute(
                f"INSERT INTO `{t}` (task_name, task_key, version, state, updated_at) "
                "VALUES (%s, %s, 1, %s, %s) ON DUPLICATE KEY UPDATE "
                "state = VALUES(state), updated_at = VALUES(updated_at), version = version + 1",
                (task, key, state, now),
            )
            cur.execute(
                f"SELECT version FROM `{t}` WHERE task_name = %s AND task_key = %s", (task, key)
            )
            return int(cur.fetchone()[0])

        def conditional(cur: Any) -> int | None:
            # assignments run left to right: `version` must be the last one changed
            changed = cur.execute(
                f"INSERT INTO `{t}` (task_name, task_key, version, state, updated_at) "
                "VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
                "state = IF(VALUES(version) > version, VALUES(state), state), "
                "updated_at = IF(VALUES(version) > version, VALUES(updated_at), updated_at), "
                "version = IF(VALUES(version) > version, VALUES(version), version)",
                (task, key, version, state, now),
            )
            return version if changed in (1, 2) else None

        return self._run(bump if version is None else conditional)

    def _complete(self, task: str, key: str, version: int, now: float) -> int:
        t = self.table

        def body(cur: Any) -> int:
            cur.execute(
                f"INSERT INTO `{t}` (task_name, task_key, version, state, updated_at) "
                "VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
                "state = VALUES(state), updated_at = VALUES(updated_at), "
                "version = GREATEST(version, VALUES(version))",
                (task, key, version, TOMBSTONE, now),
            )
            cur.execute(
                f"SELECT version FROM `{t}` WHERE task_name = %s AND task_key = %s", (task, key)
            )
            return int(cur.fetchone()[0])

        return self._run(body)

    def _delete(self, task: str, key: str, version: int | None = None) -> bool:
        sql = f"DELETE FROM `{self.table}` WHERE task_name = %s AND task_key = %s"
        params: tuple[object, ...] = (task, key)
        if version is not None:
            sql, params = sql + " AND version = %s", (task, key, version)
        return bool(self._run(lambda cur: cur.execute(sql, params)))

    def _purge(self, before: float) -> int:
        sql = f"DELETE FROM `{self.table}` WHERE updated_at < %s"
        return int(self._run(lambda cur: cur.execute(sql, (before,))))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                with contextlib.suppress(Exception):  # already closed by the server
                    self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"MySQLStore({self.safe_url}, table={self.table!r})"


def _reason(exc: BaseException) -> str:
    """PyMySQL errors are (code, message); neither contains the password."""
    if len(exc.args) >= 2:
        return f"({exc.args[0]}) {exc.args[1]}"
    return f"{type(exc).__name__}: {exc}"


def _rollback(conn: Any) -> None:
    with contextlib.suppress(Exception):  # the connection is gone; the server rolls back
        conn.rollback()

"""SQLite checkpoints: the embedded default (``sqlite:///relative.db``, ``sqlite:////abs.db``).

One connection per process (reopened after a fork), serialised by a lock; writes run in
``BEGIN IMMEDIATE`` transactions, and the file uses WAL so readers do not block the writer.

Errors: a database that cannot be opened, is locked past the timeout, or fails with an I/O error
is :class:`CheckpointUnavailable` (try again later); anything else (a file that is not a
database or is corrupt, a missing table, a constraint) is a plain :class:`CheckpointError`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

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

SCHEMA = """
CREATE TABLE IF NOT EXISTS "{t}" (
    task_name  TEXT    NOT NULL,
    task_key   TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    state      TEXT    NOT NULL,
    updated_at REAL    NOT NULL,
    PRIMARY KEY (task_name, task_key)
);
CREATE INDEX IF NOT EXISTS "{t}_updated_at" ON "{t}" (updated_at);
"""
# primary result codes that mean "not reachable now": BUSY, LOCKED, IOERR, FULL, CANTOPEN,
# PROTOCOL (https://www.sqlite.org/rescode.html)
_UNAVAILABLE_CODES = {5, 6, 10, 13, 14, 15}


def _error(exc: sqlite3.Error, message: str) -> CheckpointError:
    code = getattr(exc, "sqlite_errorcode", None)
    unavailable = (
        code & 0xFF in _UNAVAILABLE_CODES if isinstance(code, int)
        else isinstance(exc, sqlite3.OperationalError)  # no code: trust the class
    )
    return (CheckpointUnavailable if unavailable else CheckpointError)(f"{message}: {exc}")


class SQLiteStore(CheckpointStore):
    def __init__(
        self,
        path: str,
        *,
        table: str = DEFAULT_TABLE,
        on_corrupt: OnCorrupt = "raise",
        clock: Callable[[], float] = time.time,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(on_corrupt=on_corrupt, clock=clock)
        self.path = path
        self.table = check_table(table)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        with self._tx() as conn:
            conn.executescript(SCHEMA.format(t=self.table))

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise _error(exc, f"cannot open checkpoint database sqlite:///{self.path}") from exc
        self._conn, self._pid = conn, os.getpid()
        return conn

    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connect()
            try:
                if write:
                    conn.execute("BEGIN IMMEDIATE")
                yield conn
                if write:
                    conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _error(exc, f"checkpoint database sqlite:///{self.path} failed") from exc
                raise

    def _fetch(self, task: str, key: str) -> Row | None:
        with self._tx() as conn:
            found: Any = conn.execute(
                f'SELECT state, version, updated_at FROM "{self.table}" '
                "WHERE task_name = ? AND task_key = ?",
                (task, key),
            ).fetchone()
        return None if found is None else Row(str(found[0]), int(found[1]), float(found[2]))

    def _upsert(
        self, task: str, key: str, state: str, version: int | None, now: float
    ) -> int | None:
        t = self.table
        with self._tx(write=True) as conn:
            if version is None:
                conn.execute(
                    f'INSERT INTO "{t}" (task_name, task_key, version, state, updated_at) '
                    "VALUES (?, ?, 1, ?, ?) ON CONFLICT (task_name, task_key) DO UPDATE SET "
                    f'version = "{t}".version + 1, state = excluded.state, '
                    "updated_at = excluded.updated_at",
                    (task, key, state, now),
                )
                row = conn.execute(
                    f'SELECT version FROM "{t}" WHERE task_name = ? AND task_key = ?', (task, key)
                ).fetchone()
                return int(row[0])
            cur = conn.execute(
                f'INSERT INTO "{t}" (task_name, task_key, version, state, updated_at) '
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (task_name, task_key) DO UPDATE SET "
                "version = excluded.version, state = excluded.state, "
                f'updated_at = excluded.updated_at WHERE excluded.version > "{t}".version',
                (task, key, version, state, now),
            )
            return version if cur.rowcount == 1 else None

    def _complete(self, task: str, key: str, version: int, now: float) -> int:
        t = self.table
        with self._tx(write=True) as conn:
            conn.execute(
                f'INSERT INTO "{t}" (task_name, task_key, version, state, updated_at) '
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (task_name, task_key) DO UPDATE SET "
                "state = excluded.state, updated_at = excluded.updated_at, "
                f'version = MAX("{t}".version, excluded.version)',
                (task, key, version, TOMBSTONE, now),
            )
            row = conn.execute(
                f'SELECT version FROM "{t}" WHERE task_name = ? AND task_key = ?', (task, key)
            ).fetchone()
            return int(row[0])

    def _delete(self, task: str, key: str, version: int | None = None) -> bool:
        sql = f'DELETE FROM "{self.table}" WHERE task_name = ? AND task_key = ?'
        params: tuple[object, ...] = (task, key)
        if version is not None:
            sql, params = sql + " AND version = ?", (task, key, version)
        with self._tx(write=True) as conn:
            return conn.execute(sql, params).rowcount > 0

    def _purge(self, before: float) -> int:
        with self._tx(write=True) as conn:
            cur = conn.execute(f'DELETE FROM "{self.table}" WHERE updated_at < ?', (before,))
            return int(cur.rowcount)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"SQLiteStore(sqlite:///{self.path}, table={self.table!r})"

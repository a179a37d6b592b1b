"""Checkpoints: progress per (task, key) in SQLite or MySQL/MariaDB, so a failed task resumes.

    store = open_store("mysql://app:secret@db.internal:3306/app")   # or "sqlite:///var/ckpt.db"
    store.save("reports.rebuild", "2024-06", {"position": 500}, version=500)
    store.load("reports.rebuild", "2024-06")   # {"position": 500}
    store.complete("reports.rebuild", "2024-06", version=1000)  # done: a tombstone

URL schemes: ``sqlite:///relative/path``, ``sqlite:////absolute/path``, ``sqlite:///:memory:``;
``mysql://``, ``mysql+pymysql://`` and ``mariadb://`` (PyMySQL, the ``mysql`` extra). A
``?table=NAME`` query parameter picks the table (default ``celery_checkpoints``). The schema is
in ``docs/task-safety.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from toolkit.errors import CheckpointError
from toolkit.tasks.checkpoints.base import (
    DEFAULT_TABLE,
    Checkpoint,
    CheckpointCorrupt,
    CheckpointStore,
    CheckpointUnavailable,
    OnCorrupt,
    StaleCheckpoint,
)
from toolkit.tasks.checkpoints.progress import Checkpointed, checkpointed, start_position
from toolkit.urls import redact_url

DEFAULT_URL = "sqlite:///celery-checkpoints.db"

__all__ = [
    "DEFAULT_URL",
    "Checkpoint",
    "CheckpointCorrupt",
    "CheckpointError",
    "CheckpointStore",
    "CheckpointUnavailable",
    "Checkpointed",
    "StaleCheckpoint",
    "checkpointed",
    "open_store",
    "start_position",
]

_MYSQL_SCHEMES = {"mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql"}


def open_store(
    url: str = DEFAULT_URL,
    *,
    table: str | None = None,
    on_corrupt: OnCorrupt = "raise",
    clock: Callable[[], float] = time.time,
) -> CheckpointStore:
    """Open (and create the table of) the checkpoint store at ``url``.

    ``on_corrupt="restart"`` turns an unreadable checkpoint into "no checkpoint" (logged and
    deleted) instead of :class:`CheckpointCorrupt`. Raises :class:`CheckpointUnavailable` when
    the database cannot be reached; messages never contain the password.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "sqlite" and sep:
        path, _, query = rest.removeprefix("/").partition("?")
        if not path:
            raise CheckpointError("sqlite checkpoint URL names no file: use sqlite:///path.db")
        name = table or parse_qs(query).get("table", [DEFAULT_TABLE])[-1]
        from toolkit.tasks.checkpoints.sqlite import SQLiteStore

        return SQLiteStore(path, table=name, on_corrupt=on_corrupt, clock=clock)
    if scheme in _MYSQL_SCHEMES and sep:
        try:
            import pymysql  # noqa: F401

            from toolkit.tasks.checkpoints.mysql import MySQLStore
        except ImportError:
            raise CheckpointError(
                "MySQL checkpoints need PyMySQL: pip install 'celery-ecs-toolkit[mysql]'"
            ) from None
        return MySQLStore(url, table=table, on_corrupt=on_corrupt, clock=clock)
    safe = redact_url(url) if urlsplit(url).scheme else "(not a URL)"
    raise CheckpointError(f"unsupported checkpoint URL {safe}: use sqlite:/// or mysql://")

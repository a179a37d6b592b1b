"""The checkpoint store: four primitives per backend, everything else shared.

A checkpoint is one row per (task name, key): a JSON object (the state), a version and the time
it was written. ``save`` is one atomic upsert. With ``version=N`` it is a conditional write: it
lands only if ``N`` is greater than the stored version, so a stale writer (an older run that woke
up late) cannot overwrite newer progress; it raises :class:`StaleCheckpoint` instead. Without a
version every save bumps the stored version by one (last writer wins, no increment lost, and
*no* stale-writer protection).

``complete`` ends the work of a (task, key): it leaves a *tombstone*, a row whose state is JSON
``null`` (never a valid state) and whose version is at least the final progress. ``load``/``get``
treat it as "no checkpoint", a late ``save(version=N)`` from a stale writer is refused like any
other stale save (N is not newer), and ``purge`` deletes it once it is old. ``clear`` deletes the
row outright (tombstone or not), after which a stale writer could re-create it.

    CheckpointError            (toolkit.errors)
    ├── CheckpointUnavailable  the database cannot be reached (the message hides the password)
    ├── CheckpointCorrupt      a stored state no longer deserialises; names the task and key
    └── StaleCheckpoint        save(version=N) refused: the stored version is N or newer
"""

from __future__ import annotations

import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, NamedTuple

from toolkit.errors import CheckpointError

log = logging.getLogger("toolkit.checkpoints")

DEFAULT_TABLE = "celery_checkpoints"
MAX_NAME_LENGTH = 191  # utf8mb4 keys fit the 767-byte index limit of older MySQL
MAX_VERSION = 2**63 - 1  # BIGINT / SQLite INTEGER
#: The stored state of a completed (task, key): JSON null, which ``save`` can never write.
TOMBSTONE = "null"
OnCorrupt = Literal["raise", "restart"]
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class CheckpointUnavailable(CheckpointError):
    """The checkpoint database could not be reached or opened."""


class CheckpointCorrupt(CheckpointError):
    """A stored checkpoint is not a JSON object any more."""

    def __init__(self, task: str, key: str, reason: str) -> None:
        super().__init__(f"checkpoint for task {task!r} key {key!r} is unreadable: {reason}")
        self.task = task
        self.key = key


class StaleCheckpoint(CheckpointError):
    """A conditional save lost to newer progress."""

    def __init__(
        self, task: str, key: str, version: int, stored: int | None, completed: bool = False
    ) -> None:
        what = "the work was completed at version" if completed else "the stored version"
        super().__init__(
            f"checkpoint for task {task!r} key {key!r} not saved: version {version} is not "
            f"newer than {what} {stored}"
        )
        self.task = task
        self.key = key
        self.version = version
        self.stored = stored
        self.completed = completed  # refused by a tombstone: a stale writer after completion


@dataclass(frozen=True)
class Row:
    """A row as a backend returns it (state still serialised)."""

    state: str
    version: int
    updated_at: float

    @property
    def done(self) -> bool:
        return self.state == TOMBSTONE


@dataclass(frozen=True)
class Checkpoint:
    task: str
    key: str
    state: dict[str, Any]
    version: int
    updated_at: float  # Unix time of the write


def check_table(name: str) -> str:
    if not _TABLE_RE.match(name):
        raise CheckpointError(f"invalid checkpoint table name {name!r}")
    return name


def check_version(version: object) -> int:
    """A version is a plain ``int`` from 1 to 2**63 - 1 (no bool, no float, no str)."""
    if type(version) is not int or not 1 <= version <= MAX_VERSION:
        raise CheckpointError(
            f"checkpoint version must be an integer >= 1 and < 2**63, got {version!r}"
        )
    return version


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise CheckpointError(f"checkpoint {what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_NAME_LENGTH:
        raise CheckpointError(f"checkpoint {what} is longer than {MAX_NAME_LENGTH} characters")


class Lookup(NamedTuple):
    """What one read of a (task, key) row found: a live checkpoint, or a tombstone's version."""

    checkpoint: Checkpoint | None
    completed_version: int | None


class CheckpointStore(ABC):
    """Progress per (task, key). Backends implement ``_fetch``, ``_upsert``, ``_complete``,
    ``_delete``, ``_purge`` and ``close``; they create their table when it is missing."""

    def __init__(
        self,
        *,
        on_corrupt: OnCorrupt = "raise",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if on_corrupt not in ("raise", "restart"):
            raise CheckpointError(f"on_corrupt must be 'raise' or 'restart', got {on_corrupt!r}")
        self.on_corrupt = on_corrupt
        self.clock = clock

    # --- primitives -----------------------------------------------------------------------

    @abstractmethod
    def _fetch(self, task: str, key: str) -> Row | None: ...

    @abstractmethod
    def _upsert(
        self, task: str, key: str, state: str, version: int | None, now: float
    ) -> int | None:
        """Write atomically; return the stored version, or None if ``version`` was not newer."""

    @abstractmethod
    def _complete(self, task: str, key: str, version: int, now: float) -> int:
        """Write the tombstone (state TOMBSTONE) with version max(stored, ``version``); return
        the stored version."""

    @abstractmethod
    def _delete(self, task: str, key: str, version: int | None = None) -> bool:
        """Delete the row (only if its version is ``version``, when given)."""

    @abstractmethod
    def _purge(self, before: float) -> int: ...

    @abstractmethod
    def close(self) -> None: ...

    # --- public API -----------------------------------------------------------------------

    def save(
        self, task: str, key: str, state: dict[str, Any], *, version: int | None = None
    ) -> int:
        """Store ``state``; return the stored version.

        ``version=N`` (an int, N >= 1): only if N is greater than the stored version (a
        tombstone's included), else :class:`StaleCheckpoint`. No version: the stored version
        goes up by one and the write always lands: no protection against a stale writer.
        """
        _check_name("task", task)
        _check_name("key", key)
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint state for {task!r} {key!r} must be a dict")
        if version is not None:
            check_version(version)
        try:
            text = json.dumps(state, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint state for task {task!r} key {key!r} is not JSON-serialisable: {exc}"
            ) from exc
        stored = self._upsert(task, key, text, version, self.clock())
        if stored is None:
            assert version is not None
            current = self._fetch(task, key)
            raise StaleCheckpoint(
                task, key, version,
                None if current is None else current.version,
                completed=current is not None and current.done,
            )
        return stored

    def complete(self, task: str, key: str, *, version: int | None = None) -> int:
        """Mark the work of (task, key) done: replace the checkpoint with a tombstone whose
        version is the larger of the stored one and ``version``; return it.

        Pass the final progress as ``version`` so that a stale writer that was between saves
        is refused too. A later run of the same key must save versions above the tombstone's
        (:meth:`completed` tells it; :func:`checkpointed` does this by itself).
        """
        _check_name("task", task)
        _check_name("key", key)
        return self._complete(task, key, 1 if version is None else check_version(version),
                              self.clock())

    def completed(self, task: str, key: str) -> int | None:
        """The tombstone's version if (task, key) was completed, else None."""
        _check_name("task", task)
        _check_name("key", key)
        row = self._fetch(task, key)
        return row.version if row is not None and row.done else None

    def get(self, task: str, key: str) -> Checkpoint | None:
        """The checkpoint with its version and time, or None."""
        return self.lookup(task, key).checkpoint

    def lookup(self, task: str, key: str) -> Lookup:
        """One read for both :meth:`get` and :meth:`completed`: the checkpoint and the
        tombstone's version; at most one of them is not None."""
        _check_name("task", task)
        _check_name("key", key)
        row = self._fetch(task, key)
        if row is None:
            return Lookup(None, None)
        if row.done:
            return Lookup(None, row.version)
        try:
            state = json.loads(row.state)
            if not isinstance(state, dict):
                raise ValueError(f"expected a JSON object, found {type(state).__name__}")
        except ValueError as exc:
            if self.on_corrupt == "restart":
                log.warning(
                    "checkpoint for task %r key %r is unreadable (%s); starting over",
                    task, key, exc,
                )
                self._delete(task, key, row.version)  # not a newer row written meanwhile
                return Lookup(None, None)
            raise CheckpointCorrupt(task, key, str(exc)) from exc
        return Lookup(Checkpoint(task, key, state, row.version, row.updated_at), None)

    def load(self, task: str, key: str) -> dict[str, Any] | None:
        """The saved state, or None when there is no checkpoint (or only a tombstone)."""
        checkpoint = self.get(task, key)
        return None if checkpoint is None else checkpoint.state

    def clear(self, task: str, key: str, *, version: int | None = None) -> bool:
        """Delete the row (checkpoint or tombstone); True if there was one. With ``version``,
        only if the stored version is still ``version``. Prefer :meth:`complete` when the work
        is done: after ``clear`` a stale writer's ``save(version=N)`` lands again."""
        _check_name("task", task)
        _check_name("key", key)
        return self._delete(task, key, None if version is None else check_version(version))

    def purge(self, older_than: float) -> int:
        """Delete checkpoints and tombstones not written for ``older_than`` seconds; return how
        many."""
        return self._purge(self.clock() - older_than)

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

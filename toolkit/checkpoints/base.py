"""The checkpoint store: four primitives per backend, everything else shared.

A checkpoint is one row per (task name, key): a JSON object (the state), a version and the time
it was written. ``save`` is one atomic upsert. With ``version=N`` it is a conditional write: it
lands only if ``N`` is greater than the stored version, so a stale writer (an older run that woke
up late) cannot overwrite newer progress; it raises :class:`StaleCheckpoint` instead. Without a
version every save bumps the stored version by one (last writer wins, no increment lost).

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
from typing import Any, Literal

from toolkit.errors import CheckpointError

log = logging.getLogger("toolkit.checkpoints")

DEFAULT_TABLE = "celery_checkpoints"
MAX_NAME_LENGTH = 191  # utf8mb4 keys fit the 767-byte index limit of older MySQL
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

    def __init__(self, task: str, key: str, version: int, stored: int | None) -> None:
        super().__init__(
            f"checkpoint for task {task!r} key {key!r} not saved: version {version} is not "
            f"newer than the stored version {stored}"
        )
        self.task = task
        self.key = key
        self.version = version
        self.stored = stored


@dataclass(frozen=True)
class Row:
    """A row as a backend returns it (state still serialised)."""

    state: str
    version: int
    updated_at: float


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


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise CheckpointError(f"checkpoint {what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_NAME_LENGTH:
        raise CheckpointError(f"checkpoint {what} is longer than {MAX_NAME_LENGTH} characters")


class CheckpointStore(ABC):
    """Progress per (task, key). Backends implement ``_fetch``, ``_upsert``, ``_delete``,
    ``_purge`` and ``close``; they create their table when it is missing."""

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
    def _delete(self, task: str, key: str) -> bool: ...

    @abstractmethod
    def _purge(self, before: float) -> int: ...

    @abstractmethod
    def close(self) -> None: ...

    # --- public API -----------------------------------------------------------------------

    def save(
        self, task: str, key: str, state: dict[str, Any], *, version: int | None = None
    ) -> int:
        """Store ``state``; return the stored version.

        ``version=N`` (N >= 1): only if N is greater than the stored version, else
        :class:`StaleCheckpoint`. No version: the stored version goes up by one.
        """
        _check_name("task", task)
        _check_name("key", key)
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint state for {task!r} {key!r} must be a dict")
        if version is not None and (isinstance(version, bool) or version < 1):
            raise CheckpointError(f"checkpoint version must be an integer >= 1, got {version!r}")
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
            raise StaleCheckpoint(task, key, version, None if current is None else current.version)
        return stored

    def get(self, task: str, key: str) -> Checkpoint | None:
        """The checkpoint with its version and time, or None."""
        _check_name("task", task)
        _check_name("key", key)
        row = self._fetch(task, key)
        if row is None:
            return None
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
                self._delete(task, key)
                return None
            raise CheckpointCorrupt(task, key, str(exc)) from exc
        return Checkpoint(task, key, state, row.version, row.updated_at)

    def load(self, task: str, key: str) -> dict[str, Any] | None:
        """The saved state, or None when there is no checkpoint."""
        checkpoint = self.get(task, key)
        return None if checkpoint is None else checkpoint.state

    def clear(self, task: str, key: str) -> bool:
        """Delete the checkpoint; True if there was one."""
        _check_name("task", task)
        _check_name("key", key)
        return self._delete(task, key)

    def purge(self, older_than: float) -> int:
        """Delete checkpoints not written for ``older_than`` seconds; return how many."""
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

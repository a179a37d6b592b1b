"""Resume a loop over work items where the last run stopped.

    with checkpointed(store, "reports.rebuild", "2024-06", items, every=100, seconds=30) as todo:
        for item in todo:
            handle(item)

The checkpoint holds ``{"position": n}``: the number of items fully handled (an item counts as
handled once the loop asks for the next one). On start the first ``n`` items are skipped; every
``every`` items or ``seconds`` seconds the position is saved with ``version=base + n``, so a
stale run that is behind gets :class:`StaleCheckpoint` instead of moving the checkpoint back.
When the items run out the work is marked complete (a tombstone, see
:meth:`CheckpointStore.complete`), so a stale run that saves after that is refused too. If the
body raises (or breaks), the position of the last handled item is saved on the way out, so a
retry starts with the item that failed.

``base`` is 0 for a key never completed. After a completion the next run of the same key starts
at position 0 with ``base`` = the tombstone's version, so versions only ever grow for a key and
the previous run's late saves stay refused.

Used with ``with``, the exit save happens when the ``with`` block ends, before the exception
propagates (before Celery's retry reads the checkpoint). Used as a bare ``for`` loop it still
works, but the save then happens when the iterator is finalised (CPython: usually at once; not
if something else holds a reference to it, e.g. a traceback being inspected).

Delivery is at-least-once: after a crash (SIGKILL, OOM), at most the items handled since the last
save (``every`` items or ``seconds`` seconds' worth) are handled again. The iterable must yield
the same items in the same order on every run (e.g. ``ORDER BY id``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

from toolkit.errors import CheckpointError
from toolkit.tasks.checkpoints.base import CheckpointCorrupt, CheckpointStore, log

T = TypeVar("T")


def _start(store: CheckpointStore, task: str, key: str) -> tuple[int, int]:
    """(position, version base) to resume from."""
    checkpoint, completed = store.lookup(task, key)  # one read: not get() then completed()
    if checkpoint is None:
        return 0, completed or 0
    position = checkpoint.state.get("position")
    if isinstance(position, int) and not isinstance(position, bool) and position >= 0:
        return position, max(0, checkpoint.version - position)
    reason = f"'position' must be a non-negative integer, found {position!r}"
    if store.on_corrupt == "restart":
        log.warning("checkpoint for task %r key %r: %s; starting over", task, key, reason)
        store.clear(task, key, version=checkpoint.version)  # not a newer one written meanwhile
        return 0, checkpoint.version
    raise CheckpointCorrupt(task, key, reason)


def start_position(store: CheckpointStore, task: str, key: str) -> int:
    """The saved position (0 without a checkpoint); a malformed one is :class:`CheckpointCorrupt`
    unless the store was opened with ``on_corrupt="restart"``."""
    return _start(store, task, key)[0]


class Checkpointed(Iterator[T], Generic[T]):
    """What :func:`checkpointed` returns: an iterator, and a context manager whose exit saves
    the position deterministically when the block raised or left the loop early."""

    def __init__(self, gen: Generator[T, None, None]) -> None:
        self._gen = gen

    def __iter__(self) -> Checkpointed[T]:
        return self

    def __next__(self) -> T:
        return next(self._gen)

    def close(self) -> None:
        """Stop here: save the position of the last handled item (if not saved yet)."""
        self._gen.close()

    def __enter__(self) -> Checkpointed[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()  # a no-op once the items ran out (the generator has finished)


def checkpointed(
    store: CheckpointStore,
    task: str,
    key: str,
    items: Iterable[T],
    *,
    every: int = 100,
    seconds: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> Checkpointed[T]:
    """Yield ``items`` after the saved position, checkpointing as described above."""
    if every < 1:
        raise CheckpointError("every must be at least 1 item")
    return Checkpointed(_run(store, task, key, items, every, seconds, clock))


def _run(
    store: CheckpointStore,
    task: str,
    key: str,
    items: Iterable[T],
    every: int,
    seconds: float,
    clock: Callable[[], float],
) -> Generator[T, None, None]:
    position, base = _start(store, task, key)
    saved = position
    saved_at = clock()
    for item in itertools.islice(items, position, None):
        try:
            yield item
        except GeneratorExit:  # the loop body raised or broke out: keep what was done
            if position > saved:
                try:
                    store.save(task, key, {"position": position}, version=base + position)
                except CheckpointError as exc:
                    log.warning("checkpoint for %r %r not saved on exit: %s", task, key, exc)
            raise
        position += 1
        if position - saved >= every or clock() - saved_at >= seconds:
            store.save(task, key, {"position": position}, version=base + position)
            saved, saved_at = position, clock()
    store.complete(task, key, version=max(1, base + position))

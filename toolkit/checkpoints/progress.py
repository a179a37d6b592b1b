"""Resume a loop over work items where the last run stopped.

    for item in checkpointed(store, "reports.rebuild", "2024-06", items, every=100, seconds=30):
        handle(item)

The checkpoint holds ``{"position": n}``: the number of items fully handled (an item counts as
handled once the loop asks for the next one). On start the first ``n`` items are skipped; every
``every`` items or ``seconds`` seconds the position is saved with ``version=n``, so a stale run
that is behind gets :class:`StaleCheckpoint` instead of moving the checkpoint back; when the
items run out the checkpoint is cleared. If the loop body raises (or breaks), the position of
the last handled item is saved on the way out, so a retry starts with the item that failed.

Delivery is at-least-once: after a crash (SIGKILL, OOM), at most the items handled since the last
save (``every`` items or ``seconds`` seconds' worth) are handled again. The iterable must yield
the same items in the same order on every run (e.g. ``ORDER BY id``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from toolkit.checkpoints.base import CheckpointCorrupt, CheckpointStore, log
from toolkit.errors import CheckpointError

T = TypeVar("T")


def start_position(store: CheckpointStore, task: str, key: str) -> int:
    """The saved position (0 without a checkpoint); a malformed one is :class:`CheckpointCorrupt`
    unless the store was opened with ``on_corrupt="restart"``."""
    state = store.load(task, key)
    if state is None:
        return 0
    position = state.get("position")
    if isinstance(position, int) and not isinstance(position, bool) and position >= 0:
        return position
    reason = f"'position' must be a non-negative integer, found {position!r}"
    if store.on_corrupt == "restart":
        log.warning("checkpoint for task %r key %r: %s; starting over", task, key, reason)
        store.clear(task, key)
        return 0
    raise CheckpointCorrupt(task, key, reason)


def checkpointed(
    store: CheckpointStore,
    task: str,
    key: str,
    items: Iterable[T],
    *,
    every: int = 100,
    seconds: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """Yield ``items`` after the saved position, checkpointing as described above."""
    if every < 1:
        raise CheckpointError("every must be at least 1 item")
    position = saved = start_position(store, task, key)
    saved_at = clock()
    for item in itertools.islice(items, position, None):
        try:
            yield item
        except GeneratorExit:  # the loop body raised or broke out: keep what was done
            if position > saved:
                try:
                    store.save(task, key, {"position": position}, version=position)
                except CheckpointError as exc:
                    log.warning("checkpoint for %r %r not saved on exit: %s", task, key, exc)
            raise
        position += 1
        if position - saved >= every or clock() - saved_at >= seconds:
            store.save(task, key, {"position": position}, version=position)
            saved, saved_at = position, clock()
    store.clear(task, key)

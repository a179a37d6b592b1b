"""Per-task counts in the worker: counted in shared memory by the pool processes, flushed to
Redis by the worker's main process with its heartbeat.

**Counting** (:class:`TaskTable`, on every task, in the process that ran it): a prefork child
cannot write its parent's memory, so the table is shared memory created in the main process
before the pool forks. Each pool process writes only its own slot (its pool index, which
billiard gives a dead child's replacement; slot 0 is the main process: solo and threads pools,
and the failures only the main process sees), so no lock is shared between processes: a child
killed at any moment blocks nobody, and what it counted stays in the table, where its
replacement continues. A slot holds :data:`NAMES_PER_SLOT` task names (more names in one
process are counted as ``other``), each with its succeeded / failed / retried counts and the
runtime buckets of :mod:`toolkit.taskcounts.model`.

**Flushing** (:class:`TaskFlusher`, at each beat, main process only): the table's growth since
the last acknowledged flush, summed per task name over the slots, is one
:func:`~toolkit.taskcounts.store.flush_counts` call: one round trip, nothing when nothing ran.
A flush keeps its sequence number and its increments until Redis acknowledges it, so a lost
reply is sent again as the same flush, which the script applies once. A worker restart starts
a new table and a new incarnation: nothing of the old one is counted again, and at most the
last beat's counts of a worker killed with SIGKILL are lost (a warm shutdown flushes last).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import uuid
import zlib
from array import array
from typing import Any

from toolkit.taskcounts.model import (
    BUCKETS,
    MICROS,
    OTHER,
    Outcome,
    bucket_of,
    task_dimension,
)
from toolkit.taskcounts.store import flush_counts

logger = logging.getLogger("toolkit.heartbeat")

#: pool processes counted in a slot of their own (more share slots, wrapped)
MAX_POOL_SLOTS = 64
#: pools whose tasks run in the worker's main process (one slot is enough)
IN_PROCESS_POOLS = frozenset({"celery.concurrency.solo", "celery.concurrency.thread",
                              "celery.concurrency.eventlet", "celery.concurrency.gevent"})
#: distinct task names one pool process counts by name (the rest: "other")
NAMES_PER_SLOT = 64
NAME_BYTES = 255  # task_dimension() names are at most 255 ASCII characters
#: per name: succeeded, failed, retried, then (runs, summed seconds) per runtime bucket
FIELDS = 3 + 2 * BUCKETS
_OUTCOME_AT: dict[Outcome, int] = {"succeeded": 0, "failed": 1, "retried": 2}
_KIND_AT = ("s", "f", "r")
_DOUBLE = array("d").itemsize
_ZEROS = bytes(FIELDS * _DOUBLE)
_unpack = struct.Struct("d").unpack_from


def table_slots(pool_module: str, processes: int) -> int:
    """Slots of the table: the main process, plus one per pool process of a pool that forks
    them (prefork: ``processes``, the concurrency or the autoscaler's maximum)."""
    if pool_module in IN_PROCESS_POOLS:
        return 1
    return 1 + min(max(processes, 1), MAX_POOL_SLOTS)


def task_name(task: Any) -> str:
    name = getattr(task, "name", None)
    return name if isinstance(name, str) else "(unnamed)"


def _name_tag(raw: bytes) -> int:
    """A name's length (low 8 bits) with 16 bits of its CRC-32 above them."""
    return len(raw) | (zlib.crc32(raw) & 0xFFFF) << 8


class TaskTable:
    """Task counts per pool slot in shared memory; one writing process per slot, no lock
    between processes (threads of one process share a process-local lock)."""

    def __init__(self, slots: int, names: int = NAMES_PER_SLOT) -> None:
        import ctypes
        import multiprocessing

        self.slots = max(int(slots), 1)
        self.names = max(int(names), 2)
        entries = self.slots * self.names
        self._values: Any = multiprocessing.RawArray(ctypes.c_double, entries * FIELDS)
        self._name_bytes: Any = multiprocessing.RawArray(ctypes.c_char, entries * NAME_BYTES)
        self._name_len: Any = multiprocessing.RawArray(ctypes.c_int, entries)
        self._used: Any = multiprocessing.RawArray(ctypes.c_int, self.slots)
        self._view = memoryview(self._values).cast("B")
        self._index: dict[tuple[int, str], int] = {}
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._index = {}  # rebuilt from the shared names: a replacement child continues

    def slot_for(self, pool_index: int | None) -> int:
        """Slot 0 for the worker's own process, else 1 + the pool index (wrapped)."""
        if pool_index is None or self.slots == 1:
            return 0
        return 1 + int(pool_index) % (self.slots - 1)

    def record(self, slot: int, name: str, outcome: Outcome, runtime: float | None) -> None:
        """Count one finished task (``runtime`` in seconds, None when not measured)."""
        with self._lock:
            entry = self._index.get((slot, name))
            if entry is None:
                entry = self._entry(slot, name)
            at = entry * FIELDS
            values = self._values
            values[at + _OUTCOME_AT[outcome]] += 1.0
            if runtime is not None:
                bucket = at + 3 + 2 * bucket_of(runtime)
                values[bucket] += 1.0
                values[bucket + 1] += max(runtime, 0.0)

    def _entry(self, slot: int, name: str) -> int:
        """The entry of ``name`` in ``slot``: found among the names the slot already has (a
        predecessor's), else added; past the slot's capacity, the ``other`` entry."""
        label = task_dimension(name)
        first = slot * self.names
        used = int(self._used[slot])
        for entry in range(first, first + used):
            if self.name_at(entry) == label:
                self._index[(slot, name)] = entry
                return entry
        if used >= self.names - 1 and label != OTHER:
            entry = self._entry(slot, OTHER)
            self._index[(slot, name)] = entry
            return entry
        entry = first + used
        raw = label.encode("ascii")[:NAME_BYTES]
        at = entry * NAME_BYTES
        self._name_bytes[at:at + len(raw)] = raw
        self._name_len[entry] = _name_tag(raw)  # the name is complete before it is counted
        self._used[slot] = used + 1
        self._index[(slot, name)] = entry
        return entry

    def name_at(self, entry: int) -> str | None:
        """The entry's task name; None while another process's write of it is not fully
        visible here (its length carries a checksum: CPUs such as ARM may show the length
        before the bytes)."""
        tag = int(self._name_len[entry])
        at = entry * NAME_BYTES
        raw = bytes(self._name_bytes[at:at + (tag & 0xFF)])
        return raw.decode("ascii") if tag and _name_tag(raw) == tag else None

    def entries(self) -> list[int]:
        """Every entry in use, slot by slot."""
        out: list[int] = []
        for slot in range(self.slots):
            first = slot * self.names
            out.extend(range(first, first + min(self._used[slot], self.names)))
        return out

    def raw(self, entry: int) -> bytes:
        """The entry's counts as bytes (cheap to compare with the last flushed copy)."""
        at = entry * FIELDS * _DOUBLE
        return bytes(self._view[at:at + FIELDS * _DOUBLE])


#: one failure reported twice for one task id within this many seconds is counted once
SAME_FAILURE = 30.0
#: Celery's task states (celery.states) at task_postrun -> what is counted
_STATE_OUTCOME: dict[str, Outcome] = {"SUCCESS": "succeeded", "FAILURE": "failed",
                                      "RETRY": "retried"}


class TaskCounter:
    """The per-task hooks: the start of a run (``task_prerun``), its end with Celery's state
    (``task_postrun``: SUCCESS, FAILURE or RETRY, with the runtime measured in the process
    that ran it), and ``task_failure`` raised where the task did not run (the main process of
    a prefork worker: hard time limit, a child lost), counted failed without a runtime.
    Ignored and rejected runs are not counted (a reject without requeue is a failure: Celery
    reports it so)."""

    def __init__(self, table: TaskTable, main_pid: int | None = None) -> None:
        self.table = table
        self.main_pid = os.getpid() if main_pid is None else main_pid
        # (task id, thread) -> start: a retry can start, with the same id, in another thread
        # of the threads pool before the run that asked for it has ended
        self._starts: dict[tuple[str, int], float] = {}
        self._slot: tuple[int, int] = (-1, 0)  # (pid, slot) of this process
        self._failed: dict[str, float] = {}  # task id -> when its failure was counted here

    def slot(self) -> int:
        pid = os.getpid()
        if self._slot[0] != pid:
            index = None
            if pid != self.main_pid:
                from billiard.process import current_process

                index = getattr(current_process(), "index", None)
            self._slot = (pid, self.table.slot_for(index))
        return self._slot[1]

    def started(self, task_id: str) -> None:
        self._starts[(task_id, threading.get_ident())] = time.perf_counter()

    def finished(self, task_id: str, name: str, state: str) -> None:
        start = self._starts.pop((task_id, threading.get_ident()), None)
        outcome = _STATE_OUTCOME.get(state)
        if outcome is not None:
            runtime = None if start is None else time.perf_counter() - start
            self.table.record(self.slot(), name, outcome, runtime)

    def failed_elsewhere(self, task_id: str, name: str) -> None:
        """``task_failure``: counted here only when the task did not run in this process
        (a run here is counted by :meth:`finished`), and once per task id within
        :data:`SAME_FAILURE` seconds: Celery reports a hard time limit twice (the timeout,
        then the pool process it killed)."""
        if (task_id, threading.get_ident()) in self._starts:
            return
        now = time.monotonic()
        if now - self._failed.get(task_id, -SAME_FAILURE) < SAME_FAILURE:
            return
        self._failed[task_id] = now
        if len(self._failed) > 1024:
            self._failed = {k: t for k, t in self._failed.items() if now - t < SAME_FAILURE}
        self.table.record(self.slot(), name, "failed", None)


class TaskFlusher:
    """Turns the table's growth into one idempotent flush per beat (main process only)."""

    def __init__(self, table: TaskTable, node: str = "") -> None:
        self.table = table
        self.incarnation = f"{node or 'worker'}:{uuid.uuid4().hex[:12]}"
        self.seq = 0
        self._acked: dict[int, bytes] = {}
        # (seq, increments, the entries' raw counts they bring Redis to)
        self._inflight: tuple[int, list[tuple[str, str]], dict[int, bytes]] | None = None
        self._warned = False

    def pending(self) -> tuple[int, list[tuple[str, str]]] | None:
        """The flush to send now (the unacknowledged one first), or None: nothing new."""
        if self._inflight is None:
            increments, target = self._growth()
            if not increments:
                return None
            self.seq += 1
            self._inflight = (self.seq, increments, target)
        seq, increments, _ = self._inflight
        return seq, increments

    def acknowledged(self) -> None:
        if self._inflight is not None:
            self._acked.update(self._inflight[2])
            self._inflight = None

    def flush(self, client: Any, prefix: str) -> bool:
        """Send what is pending; True when something was sent and acknowledged. Redis errors
        propagate (the caller backs off); the flush is then sent again, unchanged."""
        todo = self.pending()
        if todo is None:
            return False
        seq, increments = todo
        flush_counts(client, prefix, self.incarnation, seq, increments)
        self.acknowledged()
        return True

    def _growth(self) -> tuple[list[tuple[str, str]], dict[int, bytes]]:
        """Increments per (field, name) since the acknowledged counts, and the entries' raw
        counts they bring Redis to. Only changed 8-byte fields are decoded (found by XOR of
        the raw bytes), so a beat costs little more than the fields that moved."""
        totals: dict[str, dict[int, float]] = {}
        target: dict[int, bytes] = {}
        table = self.table
        word = (1 << 64) - 1
        for entry in table.entries():
            now = table.raw(entry)
            before = self._acked.get(entry, _ZEROS)
            name = table.name_at(entry)
            if now == before or name is None:  # a name not yet visible: at the next beat
                continue
            target[entry] = now
            sums = totals.setdefault(name, {})
            changed = int.from_bytes(now, "little") ^ int.from_bytes(before, "little")
            while changed:
                field = ((changed & -changed).bit_length() - 1) >> 6
                changed &= ~(word << (field << 6))
                grown = _unpack(now, field * _DOUBLE)[0] - _unpack(before, field * _DOUBLE)[0]
                sums[field] = sums.get(field, 0.0) + grown
        increments: list[tuple[str, str]] = []
        for name, sums in sorted(totals.items()):
            for field, value in sorted(sums.items()):
                if field < 3:
                    kind, number = _KIND_AT[field], round(value)
                elif field % 2 == 1:  # 3 + 2b: runs in bucket b
                    kind, number = f"c{(field - 3) // 2}", round(value)
                else:  # 4 + 2b: their seconds, sent as microseconds
                    kind, number = f"t{(field - 4) // 2}", round(value * MICROS)
                if number:
                    increments.append((f"{kind}:{name}", str(number)))
        return increments, target

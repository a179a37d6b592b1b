"""What waits in a queue, by task name: the model, the tally and the two renderings of
``celery-ecs inspect-queue`` (the broker readers are ``brokers/peek_redis.py`` and
``brokers/peek_rabbitmq.py``).

A message is read for three things: its task name (Celery's protocol 2 ``task`` header, or the
body's ``task`` in protocol 1), whether it carries an ETA (an ``eta`` or a ``countdown``, which
Celery turns into an ``eta``), and its publish stamp (:mod:`toolkit.stamp`) for the oldest age.
A message without a task name (not JSON, no headers, another producer's) is ``unparsed``:
counted, never a crash.

JSON (``--json``)::

    {"queue": "emails", "total": 12345, "sampled": 10000, "unparsed": 0,
     "tasks": [{"task": "app.send", "count": 9000, "eta": 12, "oldest_age": 312.5}, ...]}

``tasks`` is sorted by count, largest first; ``oldest_age`` is in seconds, null when no message
of that task carries the stamp; ``sampled`` is how many messages were read (at most
``--limit``, the oldest first).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from toolkit.stamp import HEADER


@dataclass(frozen=True)
class TaskGroup:
    task: str
    count: int
    eta: int = 0
    oldest_stamp: float | None = None  # the earliest publish stamp (unix seconds)

    def oldest_age(self, now: float) -> float | None:
        return None if self.oldest_stamp is None else round(max(0.0, now - self.oldest_stamp), 3)


@dataclass(frozen=True)
class QueueComposition:
    queue: str
    total: int  # waiting now, every priority level
    sampled: int  # messages read
    tasks: tuple[TaskGroup, ...] = ()  # the largest first
    unparsed: int = 0
    notes: tuple[str, ...] = ()  # what the reader wants said (e.g. messages marked redelivered)

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "queue": self.queue, "total": self.total, "sampled": self.sampled,
            "unparsed": self.unparsed,
            "tasks": [{"task": g.task, "count": g.count, "eta": g.eta,
                       "oldest_age": g.oldest_age(now)} for g in self.tasks],
        }


@dataclass
class Tally:
    """Counts per task name as messages (or a script's per-batch tallies) come in."""

    groups: dict[str, list[Any]] = field(default_factory=dict)  # name -> [count, eta, oldest]
    unparsed: int = 0
    sampled: int = 0

    def add(self, task: str, count: int = 1, eta: int = 0, stamp: float | None = None) -> None:
        group = self.groups.setdefault(task, [0, 0, None])
        group[0] += count
        group[1] += eta
        if stamp is not None and (group[2] is None or stamp < group[2]):
            group[2] = stamp

    def add_message(self, raw: bytes | str | Mapping[str, Any]) -> None:
        self.sampled += 1
        parsed = parse_message(raw)
        if parsed is None:
            self.unparsed += 1
        else:
            task, eta, stamp = parsed
            self.add(task, 1, 1 if eta else 0, stamp)

    def composition(self, queue: str, total: int, notes: tuple[str, ...] = ()
                    ) -> QueueComposition:
        groups = tuple(TaskGroup(name, int(c), int(e), s)
                       for name, (c, e, s) in self.groups.items())
        ordered = tuple(sorted(groups, key=lambda g: (-g.count, g.task)))
        return QueueComposition(queue, total, self.sampled, ordered, self.unparsed, notes)


def parse_message(raw: bytes | str | Mapping[str, Any]) -> tuple[str, bool, float | None] | None:
    """(task name, has an ETA, publish stamp) of a kombu message envelope (Redis) or of an
    AMQP message's ``{"headers": ..., "body": ...}``; None when it names no task."""
    message: Any = raw
    if isinstance(raw, bytes | str):
        try:
            message = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None
    if not isinstance(message, dict):
        return None
    headers = message.get("headers")
    headers = headers if isinstance(headers, dict) else {}
    task = headers.get("task")
    eta: Any = headers.get("eta")
    if not isinstance(task, str):  # protocol 1: the task is in the body
        body = _body(message)
        if not isinstance(body, dict) or not isinstance(body.get("task"), str):
            return None
        task, eta = body["task"], body.get("eta") or body.get("countdown")
    stamp = headers.get(HEADER)
    return task, eta not in (None, ""), float(stamp) if isinstance(stamp, int | float) else None


def _body(message: Mapping[str, Any]) -> Any:
    body = message.get("body")
    if isinstance(body, dict):
        return body
    if not isinstance(body, str):
        return None
    try:
        text = base64.b64decode(body, validate=True) if message.get("properties", {}).get(
            "body_encoding") == "base64" else body.encode()
        return json.loads(text)
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None


def age_text(age: float | None) -> str:
    """``42s``, ``14m``, ``2.5h`` (``-`` when unknown): an age as the CLI tables show it."""
    if age is None:
        return "-"
    if age < 120:
        return f"{age:.0f}s"
    if age < 7200:
        return f"{age / 60:.0f}m"
    return f"{age / 3600:.1f}h"


def _printable(name: str) -> str:
    return name if name.isprintable() else name.encode("unicode_escape").decode("ascii")


def render_table(comp: QueueComposition, now: float) -> str:
    """The table: the biggest task names first, then the unparsed messages."""
    head = f"queue {_printable(comp.queue)}: {comp.total:,} waiting"
    if comp.total:
        head += (f", {comp.sampled:,} read (all)" if comp.sampled >= comp.total
                 else f", {comp.sampled:,} read (the oldest first; counts are of those)")
    rows = [("TASK", "COUNT", "ETA", "OLDEST")]
    rows += [(_printable(g.task), f"{g.count:,}", f"{g.eta:,}", age_text(g.oldest_age(now)))
             for g in comp.tasks]
    if comp.unparsed:
        rows.append(("(unparsed: no task name)", f"{comp.unparsed:,}", "-", "-"))
    lines = [head]
    if len(rows) > 1:
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines += ["  ".join([r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in (1, 2, 3)])
                  for r in rows]
    lines += list(comp.notes)
    return "\n".join(line.rstrip() for line in lines)

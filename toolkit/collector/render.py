"""A cycle's result as the table ``celery-ecs collect`` prints, or as JSON (``--json``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from toolkit.collector.composition import age_text
from toolkit.collector.cycle import CycleResult
from toolkit.collector.health import Health
from toolkit.collector.publisher import dimension_value
from toolkit.collector.tasks import finished_by_task
from toolkit.collector.verdicts import ServiceVerdict
from toolkit.config import Settings


def render_table(result: CycleResult, settings: Settings, *, dry_run: bool = False) -> str:
    rows = [("QUEUE", "LENGTH", "AGE", "CONSUMERS", "STATUS")]
    for q in result.queues:
        status = q.state if not q.reasons or q.state == "missing" else f"{q.state}: " + "; ".join(
            q.reasons)
        rows.append((_printable(q.queue), str(q.length), age_text(q.age),
                     "-" if q.consumers is None else str(q.consumers), status))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(r[i].ljust(widths[i]) if i == 0 else r[i].rjust(widths[i])
                       for i in range(4)) + "  " + r[4] for r in rows]
    lines = [line.rstrip() for line in lines]
    if result.ok and not result.queues:
        lines.append("(no queues found: the broker is empty and none are configured)")
    elif result.ok and all(q.state == "missing" for q in result.queues):
        lines.append("(no queues found: none of the queues read exist on the broker)")
    if result.services:
        lines.extend(["", *service_rows(result.services)])
    if result.health is not None and (summary := health_line(result.health)):
        lines.append(summary)
    footer = [f"environment {settings.environment}"]
    if result.unacked is not None:
        footer.append(f"unacked {result.unacked}")
    footer.append(f"{len(result.samples)} metrics")
    if result.tasks is not None:
        footer.append(_tasks_summary(result))
    if dry_run:
        footer.append(f"dry run: nothing published to {settings.namespace}")
    elif result.published is not None:
        footer.append(f"published to {settings.namespace} in {result.published.calls} call(s)")
    footer.append(f"{result.duration * 1000:.0f} ms")
    lines.append(" | ".join(footer))
    return "\n".join(lines)


def health_line(health: Health) -> str:
    """``broker 3 MiB of 4 MiB (76%), evicted 0 | beat ticked 2s ago``: what was read."""
    parts = []
    s = health.stats
    if s is not None and s.used_memory is not None:
        used = f"broker {s.used_memory / 1048576:.1f} MiB"
        if s.max_memory and s.utilization is not None:
            used += f" of {s.max_memory / 1048576:.0f} MiB ({s.utilization:.0f}%)"
        else:
            used += " (no memory limit)"
        if health.evicted is not None:
            used += f", evicted {health.evicted}"
        parts.append(used)
    if s is not None and s.alarms:
        parts.append("alarms: " + ", ".join(s.alarms))
    if health.beat_age is not None:
        parts.append(f"beat ticked {age_text(health.beat_age)} ago")
    return " | ".join(parts)
def _tasks_summary(result: CycleResult) -> str:
    claim = result.tasks
    assert claim is not None
    if claim.state == "busy":
        return "tasks: another collector holds them"
    done = finished_by_task(claim)
    total = sum(t.finished for t in done.values())
    minutes = len(claim.minutes)
    return (f"tasks: {total} finished, {len(done)} name(s), {minutes} minute(s) "
            + ("claimed" if claim.state == "claimed" else "seen, not claimed"))


def _tasks_json(result: CycleResult) -> dict[str, Any] | None:
    claim = result.tasks
    if claim is None:
        return None
    return {
        "state": claim.state, "minutes": [m.minute for m in claim.minutes],
        "by_task": {name: {"succeeded": t.succeeded, "failed": t.failed, "retried": t.retried,
                           "runs": t.runs}
                    for name, t in sorted(finished_by_task(claim).items())},
    }


def service_rows(verdicts: Sequence[ServiceVerdict], width: int = 100) -> list[str]:
    """One line per service: where, verdict, and its first reason (cut to fit ``width``)."""
    rows = [("SERVICE", "VERDICT", "WHY")]
    for v in verdicts:
        rows.append((_printable(f"{v.cluster}/{v.service}"), v.verdict,
                     _printable(v.reasons[0]) if v.reasons else ""))
    w0, w1 = (max(len(r[i]) for r in rows) for i in range(2))
    out = []
    for where, verdict, why in rows:
        room = max(width - w0 - w1 - 4, 20)
        cut = why if len(why) <= room else why[: room - 3] + "..."
        out.append(f"{where.ljust(w0)}  {verdict.ljust(w1)}  {cut}".rstrip())
    return out


def render_json(result: CycleResult, settings: Settings) -> str:
    doc: dict[str, Any] = {
        "environment": settings.environment,
        "namespace": settings.namespace,
        "ok": result.ok,
        "errors": list(result.errors),
        "unacked": result.unacked,
        "queues": [
            {"queue": q.queue, "length": q.length, "age": q.age, "consumers": q.consumers,
             "status": q.state, "reasons": list(q.reasons)}
            for q in result.queues
        ],
        "metrics": [
            # dimension values exactly as PutMetricData sends them (escaped)
            {"name": s.name, "value": s.value, "unit": s.unit,
             "dimensions": {k: dimension_value(v) for k, v in s.dimensions},
             **({"values": list(s.values), "counts": list(s.counts)} if s.values else {}),
             **({"timestamp": s.timestamp.isoformat()} if s.timestamp else {})}
            for s in result.samples
        ],
        "services": [v.to_dict() for v in result.services],
        "tasks": _tasks_json(result),
        "published_calls": result.published.calls if result.published else 0,
        "duration_ms": round(result.duration * 1000, 1),
    }
    return json.dumps(doc, ensure_ascii=True)


def _printable(name: str) -> str:
    return name if name.isprintable() else name.encode("unicode_escape").decode("ascii")


def render_verdicts(verdicts: Sequence[ServiceVerdict], environment: str) -> str:
    """``celery-ecs check``: one line per service, its reasons indented below it."""
    rows = [("CLUSTER", "SERVICE", "VERDICT", "BACKLOG", "ALIVE", "RUNNING", "MEMORY")]
    for v in verdicts:
        rows.append((v.cluster, v.service, v.verdict, str(v.backlog),
                     "-" if v.workers_alive is None else str(v.workers_alive),
                     "-" if v.running is None else f"{v.running}/{v.desired}",
                     "-" if v.memory_utilization is None else f"{v.memory_utilization:g}%"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines: list[str] = []
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            continue
        v = verdicts[i - 1]
        lines.extend(f"    - {_printable(r)}" for r in v.reasons)
        if v.stuck_tasks:
            lines.append("    stuck tasks: " + ", ".join(v.stuck_tasks))
    healthy = sum(1 for v in verdicts if v.verdict == "healthy")
    lines.append(f"environment {environment} | {healthy} of {len(verdicts)} services healthy")
    return "\n".join(lines)


def verdicts_json(verdicts: Sequence[ServiceVerdict], environment: str) -> str:
    return json.dumps(
        {"environment": environment, "services": [v.to_dict() for v in verdicts]},
        ensure_ascii=True,
    )

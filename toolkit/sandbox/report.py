"""The sandbox's report: one self-contained HTML file (inline SVG and CSS, nothing fetched) with
the queue lengths over time, the scenario's markers, the Slack messages and a summary."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from toolkit.sandbox.scenario import Event, Timeline

W, H, LEFT, RIGHT, TOP, BOTTOM = 1100, 400, 56, 24, 78, 56
LINE_COLOURS = ("#2563eb", "#ea580c", "#16a34a", "#9333ea")
MARKERS = {"frozen": "#a16207", "memory": "#a16207", "long-task": "#a16207",
           "alarm": "#dc2626", "pressed": "#7c3aed", "deployment": "#1d4ed8",
           "task-stopped": "#1d4ed8",
           "busy": "#15803d", "recovered": "#15803d", "resolved": "#15803d"}


def durations(timeline: Timeline) -> dict[str, float]:
    """Seconds from the fault to detection, deployment, recovery; from start to resolved."""
    out: dict[str, float] = {}
    fault = timeline.first("frozen") or timeline.first("memory")
    resolved = next((e for e in timeline.events if e.event == "resolved"), None)
    if fault is not None:
        for name in ("alarm", "pressed", "deployment", "task-stopped", "recovered", "drained"):
            e = timeline.first(name)
            if e is not None and e.t >= fault.t:
                out[f"freeze_to_{name}"] = round(e.t - fault.t, 1)
    if resolved is not None:
        out["start_to_resolved"] = resolved.t
    return out


def summary(scenario: str, ok: bool, result: str, timeline: Timeline, deployments: int) -> str:
    d = durations(timeline)
    if scenario == "stuck" and "freeze_to_alarm" in d:
        parts = [f"The worker of worker-emails was frozen with SIGSTOP; the collector's verdict "
                 f"and the WorkerStuck alarm detected it {d['freeze_to_alarm']:g} s later"]
        if "freeze_to_pressed" in d:
            parts.append(f"the on-call pressed the alert's button {d['freeze_to_pressed']:g} s "
                         "after the freeze (REMEDIATION was not enabled)")
        if "freeze_to_deployment" in d:
            who = "the Slack actions handler" if "freeze_to_pressed" in d else "the alarm handler"
            parts.append(f"{who} forced a new deployment "
                         f"{d['freeze_to_deployment']:g} s after the freeze (target < 45 s)")
        if "freeze_to_recovered" in d:
            parts.append(f"the replacement worker was live {d['freeze_to_recovered']:g} s after "
                         "it")
        if "freeze_to_drained" in d:
            parts.append(f"the backlog had drained at {d['freeze_to_drained']:g} s")
        if "start_to_resolved" in d:
            parts.append(f"and Slack showed \"resolved\" {d['start_to_resolved']:.1f} s after the "
                         "start (target < 90 s)")
        text = "; ".join(parts) + "."
    elif scenario == "memory":
        text = (f"ECS reported MemoryUtilization above memory_high for worker-emails; the "
                f"MemoryHigh alarm fired {d.get('freeze_to_alarm', float('nan')):g} s later and "
                f"Slack got the memory alert, with {deployments} forced deployment(s).")
    elif scenario == "partial" and "freeze_to_alarm" in d:
        text = (f"One of the two workers of worker-emails was frozen; the verdict turned degraded "
                f"and the WorkersStuck alarm fired {d['freeze_to_alarm']:g} s later; "
                + (f"the handler stopped only that task {d['freeze_to_task-stopped']:g} s after "
                   "the freeze; " if "freeze_to_task-stopped" in d else "")
                + f"{deployments} forced deployment(s).")
    elif scenario == "long-task":
        busy = timeline.first("busy")
        text = ("One task of worker-emails (-c 1) ran longer than stuck_after while work queued "
                "behind it; the verdict " + ("saw it busy, not hung, and " if busy else "")
                + f"nothing was redeployed ({deployments} forced deployment(s)).")
    else:
        text = "Normal traffic only."
    return f"{'OK' if ok else 'FAILED'}: {result}. {text}"


def _svg(lengths: Sequence[tuple[float, dict[str, int]]], events: Sequence[Event]) -> str:
    queues = sorted({q for _, ls in lengths for q in ls})
    t_max = max([1.0] + [t for t, _ in lengths] + [e.t for e in events])
    y_max = max([5] + [n for _, ls in lengths for n in ls.values()])
    y_max = int(y_max * 1.15) + 1

    def x(t: float) -> float:
        return LEFT + (W - LEFT - RIGHT) * t / t_max

    def y(n: float) -> float:
        return H - BOTTOM - (H - TOP - BOTTOM) * n / y_max

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
             f'height="{H}" role="img" aria-label="queue length over time">',
             f'<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>']
    for k in range(5):
        n = y_max * k / 4
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(n):.1f}" y2="{y(n):.1f}" '
                     f'stroke="#e5e7eb"/><text x="{LEFT - 8}" y="{y(n) + 4:.1f}" '
                     f'text-anchor="end" class="axis">{n:.0f}</text>')
    step = 10 if t_max > 40 else 5
    for s in range(0, int(t_max) + 1, step):
        parts.append(f'<text x="{x(s):.1f}" y="{H - BOTTOM + 18}" text-anchor="middle" '
                     f'class="axis">{s}s</text>')
    rows: list[float] = []  # x of the last label on each row, so close markers do not overlap
    for e in events:
        if e.event not in MARKERS:
            continue
        colour, at = MARKERS[e.event], x(e.t)
        row = next((i for i, last in enumerate(rows) if at - last > 110), min(len(rows), 3))
        if row < len(rows):
            rows[row] = at
        else:
            rows.append(at)
        anchor, dx = ("end", -4) if at > W - RIGHT - 110 else ("start", 4)
        parts.append(f'<g class="marker {e.event}"><line x1="{at:.1f}" x2="{at:.1f}" '
                     f'y1="{TOP - 4 - 16 * row}" y2="{H - BOTTOM}" stroke="{colour}" '
                     f'stroke-width="2" stroke-dasharray="5 4"/><text x="{at + dx:.1f}" '
                     f'y="{TOP - 8 - 16 * row}" fill="{colour}" text-anchor="{anchor}" '
                     f'class="label" stroke="#fff" stroke-width="4" paint-order="stroke">'
                     f'{e.event} {e.t:.0f}s</text>'
                     f'<title>{html.escape(e.detail)}</title></g>')
    for i, q in enumerate(queues):
        points = " ".join(f"{x(t):.1f},{y(ls.get(q, 0)):.1f}" for t, ls in lengths)
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        parts.append(f'<polyline class="queue" data-queue="{html.escape(q)}" fill="none" '
                     f'stroke="{colour}" stroke-width="2.5" points="{points}"/>')
        parts.append(f'<text x="{W - RIGHT - 300 + 150 * i}" y="{H - 8}" fill="{colour}" '
                     f'class="legend">&#9632; queue {html.escape(q)}</text>')
    parts.append(f'<text x="{LEFT}" y="{H - 6}" class="axis">seconds since start; '
                 'QueueLength read by the collector each cycle</text></svg>')
    return "".join(parts)


CSS = """body{font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;
max-width:1140px;color:#111827;padding:0 12px}h1{font-size:22px;margin:0 0 4px}
.ok{color:#15803d}.failed{color:#b91c1c}.summary{background:#f3f4f6;padding:12px 16px;
border-radius:6px}.axis{font-size:12px;fill:#6b7280}.label{font-size:12px;font-weight:600}
.legend{font-size:13px;font-weight:600}table{border-collapse:collapse;width:100%}
td{border-top:1px solid #e5e7eb;padding:4px 8px;vertical-align:top}
pre.slack{background:#fff;border-left:4px solid #4a154b;padding:8px 12px;white-space:pre-wrap;
margin:8px 0;box-shadow:0 1px 2px #0002}"""


def render_report(run: Any, summary_text: str) -> str:
    tl: Timeline = run.timeline
    status = "ok" if run.ok else "failed"
    rows = "".join(f"<tr><td>{e.t:.1f}s</td><td>{html.escape(e.event)}</td>"
                   f"<td>{html.escape(e.detail)}</td></tr>"
                   for e in tl.events if e.event != "slack")
    slack = "".join(f'<pre class="slack"><b>{t:.1f}s</b>'
                    f'{" (thread reply)" if p.thread_ts else ""}\n{html.escape(p.plain)}</pre>'
                    for t, p in run.slack)
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>celery-ecs sandbox: {run.scenario}</title><style>{CSS}</style></head><body>"
            f"<h1>celery-ecs sandbox: <span class=\"{status}\">{run.scenario} scenario, "
            f"{status.upper()}</span></h1><p>broker: {html.escape(run.broker_label)}; "
            f"forced deployments: {run.deployments}</p>"
            f"<p class=\"summary\">{html.escape(summary_text)}</p>"
            f"<h2>Queue length</h2>{_svg(run.lengths, tl.events)}"
            f"<h2>Slack (#sandbox-alerts)</h2>{slack or '<p>no message</p>'}"
            f"<h2>Timeline</h2><table>{rows}</table>"
            f"<h2>Alarm handler and collector log</h2><pre>"
            f"{html.escape(chr(10).join(run.logs[-200:]))}</pre></body></html>")

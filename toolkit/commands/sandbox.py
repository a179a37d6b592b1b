"""``celery-ecs sandbox``: the whole loop on this machine, with no AWS account and no Slack.

Freeze, alarm, Slack, forced deployment, recovery (``--scenario stuck``, the default); a memory
alert that must not redeploy (``memory``); quiet traffic that must raise nothing (``healthy``);
a legitimate task longer than stuck_after that must raise nothing either (``long-task``).
``--remediation off`` (or ``dry-run``) leaves the remedy to the on-call: the sandbox presses
the alert's button, a signed request to the real Slack actions handler.
The logic lives in :mod:`toolkit.sandbox`; this module parses arguments and sets the exit code.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from toolkit.sandbox.scenario import REMEDIATIONS, SCENARIOS


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", choices=SCENARIOS, default="stuck")
    parser.add_argument("--remediation", choices=REMEDIATIONS, default="enabled",
                        help="the handler's REMEDIATION (default enabled); off or dry-run: the "
                        "on-call presses the alert's button instead")
    parser.add_argument("--json", metavar="PATH", help="write the outcome and timeline as JSON")
    parser.add_argument("--report", metavar="PATH", default="sandbox-report.html",
                        help="the HTML report (default: sandbox-report.html)")
    parser.add_argument("--broker", metavar="URL",
                        help="use this Redis (keys prefixed with a unique 'sandbox-...:' and "
                             "removed afterwards) instead of a local redis-server or fakeredis")
    parser.add_argument("--warmup", type=float, default=None, metavar="S",
                        help="seconds of normal traffic before the fault (default 6)")
    parser.add_argument("--healthy-for", type=float, default=None, metavar="S",
                        help="seconds the healthy scenario watches (default 20)")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from toolkit.sandbox.play import play
    from toolkit.sandbox.report import durations, render_report, summary
    from toolkit.sandbox.scenario import Timings
    from toolkit.sandbox.view import View

    timings = Timings()
    if args.warmup is not None:
        timings = replace(timings, warmup=args.warmup)
    if args.healthy_for is not None:
        timings = replace(timings, healthy_for=args.healthy_for)
    view = View(sys.stdout, sys.stdout.isatty())
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        result = play(args.scenario, broker=args.broker, timings=timings, view=view, stop=stop,
                      remediation=args.remediation)
    finally:
        signal.signal(signal.SIGINT, previous)
        view.close()
    report = Path(args.report).resolve()
    text = summary(args.scenario, result.ok, result.result, result.timeline, result.deployments)
    report.write_text(render_report(result, text), encoding="utf-8")
    print(f"\n{text}")
    for key, value in durations(result.timeline).items():
        print(f"  {key.replace('_', ' '):<24}{value:>6.1f} s")
    print(f"report: {report}")
    if args.json:
        doc: dict[str, Any] = {
            "scenario": args.scenario, "ok": result.ok, "deployments": result.deployments,
            "report": str(report),
            "timeline": [{"t": e.t, "event": e.event, "detail": e.detail}
                         for e in result.timeline.events],
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if stop.is_set():
        return 130
    return 0 if result.ok else 1

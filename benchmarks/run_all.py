#!/usr/bin/env python3
"""Every benchmark, then one summary table: ``python3 scripts/dev.py bench``.

Runs the scripts of benchmarks/ one after another, each in a process of its own: those named in
:data:`PLAN` with their arguments, then any other script found there (a benchmark added later)
with none. ``collect_peers`` runs in ``.venv-bench`` (Flower is installed there only, made on
first use); the others in the interpreter running this (the dev ``.venv``), because Flower's
``celery flower`` plug-in would slow down the ``celery inspect ping`` the probe benchmark times.
Each benchmark's full report goes to ``build/bench/NAME.log``; its headline figures come back
through :func:`summary.record` (``CELERY_ECS_BENCH_SUMMARY``) and make up the table, one row per
figure: what is measured, the figure (median and min-max), the baseline or peer measured in the
same run, the ratio, the target and whether it held. A script that records nothing gets one row
with its exit code; a script that fails gets a FAILED row and the run goes on.

This takes several minutes (Redis fills of 10,000 queues, real workers, probe processes) and is
not part of the test suite. ``--only NAME ...`` runs some; ``--quick`` fewer repetitions (a
smoke run: its figures are not the ones to quote).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import benchvenv  # noqa: E402
from summary import ENV  # noqa: E402

OWN_DB = "redis://127.0.0.1:6379/13"  # workers and locks: no broadcast cross-talk with tests
QUEUE_DB = "redis://127.0.0.1:6379/1"  # queue fills, under unique key prefixes

# (log name, script, arguments, --quick's extra arguments (argparse: the last one wins), runs in
# .venv-bench)
PLAN: list[tuple[str, str, list[str], list[str], bool]] = [
    ("collect", "collect.py", ["--runs", "15", "--redis", QUEUE_DB], ["--runs", "3"], False),
    ("collect-0.5ms", "collect.py", ["--runs", "9", "--rtt-ms", "0.5", "--redis", QUEUE_DB],
     ["--runs", "3"], False),
    ("collect_peers", "collect_peers.py", ["--rounds", "15", "--redis", QUEUE_DB],
     ["--rounds", "3", "--queues", "1000"], True),
    ("healthcheck", "healthcheck.py", ["--runs", "10", "--broker", OWN_DB], ["--runs", "2"],
     False),
    ("check", "check.py", ["--runs", "5"], ["--runs", "2"], False),
    ("handler", "handler.py", [], ["--runs", "3", "--events", "500"], False),
    ("heartbeat", "heartbeat.py", ["--broker", OWN_DB], ["--tasks", "300", "--rounds", "2"],
     False),
    ("locks", "locks.py", ["--redis", OWN_DB], ["--iterations", "200"], False),
    ("tasks", "tasks.py", ["--broker", OWN_DB], ["--tasks", "300", "--rounds", "2",
                                                 "--messages", "20000"], False),
]
HELPERS = {"bench_app.py", "benchvenv.py", "keys.py", "latency_proxy.py", "run_all.py",
           "summary.py"}
COLUMNS = ("benchmark", "measured", "figure", "peer", "ratio", "target", "held")
HEADINGS = ("benchmark", "what is measured", "figure", "baseline / peer (same run)", "ratio",
            "target", "held")


def plan(only: set[str], quick: bool) -> list[tuple[str, str, list[str], bool]]:
    steps = [(name, script, args + quick_args if quick else args, bench)
             for name, script, args, quick_args, bench in PLAN]
    known = {script for _, script, _, _ in steps}
    for path in sorted(HERE.glob("*.py")):  # benchmarks added after this list was written
        if path.name not in known | HELPERS and not path.name.startswith("_"):
            steps.append((path.stem, path.name, [], False))
    return [s for s in steps if not only or s[0] in only or s[0].split("-")[0] in only]


def run(name: str, script: str, args: list[str], bench: bool, logs: Path,
        rows_file: Path) -> tuple[int, float, list[dict[str, str]]]:
    py = str(benchvenv.ensure()) if bench else sys.executable
    log = logs / f"{name}.log"
    rows_file.write_text("")
    env = {**os.environ, ENV: str(rows_file), "PYTHONUNBUFFERED": "1"}
    print(f"[bench] {name}: {script} {' '.join(args)}".rstrip(), flush=True)
    started = time.monotonic()
    with log.open("w") as out:
        rc = subprocess.run([py, str(HERE / script), *args], cwd=ROOT, env=env, stdout=out,
                            stderr=subprocess.STDOUT).returncode
    took = time.monotonic() - started
    rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
    print(f"[bench] {name}: exit {rc}, {took:.0f} s, {len(rows)} figures, log {log}", flush=True)
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        print("\n".join(f"    {line}" for line in tail), flush=True)
        rows.append({"benchmark": name, "measured": f"FAILED: exit {rc} (see {log.name})",
                     "held": "no"})
    elif not rows:
        rows.append({"benchmark": name, "measured": f"ran, exit 0, no summary figures "
                     f"(report in {log.name})"})
    return rc, took, rows


def table(rows: list[dict[str, str]]) -> str:
    lines = ["| " + " | ".join(HEADINGS) + " |", "|" + "---|" * len(HEADINGS)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")).replace("|", "/") for c in COLUMNS)
                     + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=[], help="log names, e.g. collect_peers check")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    args = ap.parse_args()
    logs = ROOT / "build" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    all_rows: list[dict[str, str]] = []
    failed = []
    fd, name = tempfile.mkstemp(prefix="celery-ecs-bench-", suffix=".jsonl")
    os.close(fd)
    rows_file = Path(name)
    try:
        for step in plan(set(args.only), args.quick):
            rc, _, rows = run(*step, logs=logs, rows_file=rows_file)
            all_rows += rows
            if rc != 0:
                failed.append(step[0])
    finally:
        rows_file.unlink(missing_ok=True)
    total = time.monotonic() - started
    print(f"\n## Benchmarks, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}{', QUICK run' if args.quick else ''}\n")
    print(table(all_rows))
    held = [r for r in all_rows if r.get("held") in {"yes", "no"}]
    missed = [r for r in held if r["held"] == "no"]
    print(f"\n{len(held) - len(missed)} of {len(held)} targets held"
          + ("; not held:" if missed else "."))
    for row in missed:
        print(f"  - {row['benchmark']}: {row['measured']}: {row.get('ratio') or row['figure']} "
              f"(target {row.get('target', '')})")
    print(f"Took {total / 60:.1f} min; full reports in {logs}.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

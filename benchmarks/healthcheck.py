"""Benchmark the container probes: wall time and peak RSS per probe run.

    .venv/bin/python benchmarks/healthcheck.py [--runs 10] [--broker redis://127.0.0.1:6379/2]

Starts one real prefork worker (``benchmarks/bench_app.py``, heartbeat bootstep installed), then
runs each probe ``--runs`` times, round-robin in the same run so load drifts hit all alike:

  (a)  celery -A benchmarks.bench_app inspect ping          what users run today (broadcast)
  (a') celery -A benchmarks.bench_app inspect ping -d NODE  the same, aimed at this node
  (b)  celery-ecs healthcheck ping --node NODE              no app import, returns on the reply
  (c)  celery-ecs healthcheck heartbeat                     file age, stdlib only
  (c') python -m toolkit.healthcheck heartbeat              the same without the console script

Wall time is measured around each process; peak RSS is the child's ``ru_maxrss`` from
``os.wait4`` (the largest resident set of that probe process, in MiB).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of one probe process."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024.0, proc.returncode


def start_worker(node: str, queue: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(Path(env["CELERY_ECS_HEARTBEAT_FILE"]).with_suffix(".log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "celery"), "-A", "benchmarks.bench_app", "worker", "-P", "prefork", "-c", "1",
         "-n", node, "-Q", queue, "--without-mingle", "--without-gossip", "-l", "warning"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    ready = Path(env["CELERY_ECS_READY_FILE"])
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker did not start; see {log.name}")
        time.sleep(0.1)
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/2")
    args = parser.parse_args()

    token = uuid.uuid4().hex[:8]
    node, queue = f"bench-{token}@127.0.0.1", f"bench-{token}"
    tmp = Path(tempfile.mkdtemp(prefix="celery-ecs-bench-"))
    env = {
        **os.environ,
        "BENCH_BROKER": args.broker,
        "CELERY_ECS_HEARTBEAT_FILE": str(tmp / "heartbeat"),
        "CELERY_ECS_READY_FILE": str(tmp / "ready"),
        "PYTHONWARNINGS": "ignore",
    }
    celery, cli = str(BIN / "celery"), str(BIN / "celery-ecs")
    probes = {
        "(a)  celery inspect ping": [celery, "-A", "benchmarks.bench_app", "inspect", "ping"],
        "(a') celery inspect ping -d": [
            celery, "-A", "benchmarks.bench_app", "inspect", "ping", "-d", node,
        ],
        "(b)  celery-ecs ping": [
            cli, "healthcheck", "ping", "--broker", args.broker, "--node", node,
        ],
        "(c)  celery-ecs heartbeat": [cli, "healthcheck", "heartbeat"],
        "(c') python -m heartbeat": [sys.executable, "-m", "toolkit.healthcheck", "heartbeat"],
    }
    worker = start_worker(node, queue, env)
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in probes}
    try:
        for argv in probes.values():  # warm the page cache once, not measured
            run_once(argv, env)
        for _ in range(args.runs):
            for name, argv in probes.items():
                results[name].append(run_once(argv, env))
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        if args.broker.startswith("redis"):  # drop the kombu bindings of the one-off queue
            import redis

            client = redis.Redis.from_url(args.broker)
            keys = list(client.scan_iter(match=f"*{token}*"))
            if keys:
                client.delete(*keys)
            client.close()

    base = statistics.median(w for w, _, _ in results["(a)  celery inspect ping"])
    print(f"{args.runs} runs each, broker {args.broker}, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs\n")
    print("| probe | median wall (ms) | min-max wall (ms) | peak RSS (MiB) | speed-up vs (a) "
          "| exit codes |")
    print("|---|---:|---:|---:|---:|---|")
    for name, rows in results.items():
        walls = [w for w, _, _ in rows]
        med = statistics.median(walls)
        rss = max(r for _, r, _ in rows)
        codes = ",".join(sorted({str(c) for _, _, c in rows}))
        print(f"| {name.strip()} | {med * 1000:.0f} | {min(walls) * 1000:.0f}-"
              f"{max(walls) * 1000:.0f} | {rss:.1f} | {base / med:.1f}x | {codes} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the container probes: wall time and peak RSS per probe run.

    .venv/bin/python benchmarks/healthcheck.py [--runs 10] [--broker redis://127.0.0.1:6379/13]

Starts one real prefork worker and one ``celery beat`` (``benchmarks/bench_app.py``, heartbeat
bootstep and beat heartbeat installed), then runs each probe ``--runs`` times, round-robin in the
same run so load drifts hit all alike:

  (a)  celery -A benchmarks.bench_app inspect ping          what users run today (broadcast)
  (a') celery -A benchmarks.bench_app inspect ping -d NODE  the same, aimed at this node
  (b)  celery-ecs healthcheck ping --node NODE              no app import, returns on the reply
  (b') celery-ecs healthcheck ping ... --heartbeat-file P   the combined mode (worker answers)
  (c)  celery-ecs healthcheck heartbeat                     file age, stdlib only
  (c') python -m toolkit.healthcheck heartbeat              the same without the console script
  (d)  celery-ecs healthcheck beat                          beat's last tick (JSON file), stdlib
  (d') python -m toolkit.healthcheck beat                   the same without the console script

Wall time is measured around each process; peak RSS is the probe's ``ru_maxrss`` as GNU
``/usr/bin/time -f %M`` reports it (the largest resident set of that probe process, in MiB).
Through ``time``, not this process's own ``os.wait4``: Linux counts the resident set a child
had before its ``exec`` (a copy of its parent's) into its ``ru_maxrss``, so a child of this
benchmark would never show less than the benchmark's own RSS. Without ``/usr/bin/time`` the
benchmark falls back to ``os.wait4`` and says so. Every probe must exit 0
against the healthy worker: a non-zero exit means the numbers measure a failure path, so the
benchmark stops with that probe's output instead of printing a table.

The broker defaults to db 13, a db of the benchmarks' own: the broadcast of (a) reaches every
worker of its db, and the test suite runs workers in db 2. Keys are removed after.
"""

from __future__ import annotations

import argparse
import contextlib
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
sys.path.insert(0, str(REPO / "benchmarks"))

from keys import drop_new, shared_keys  # noqa: E402
from summary import record, spread  # noqa: E402

PEER = "(a)  celery inspect ping"


class ProbeFailed(Exception):
    pass


TIME = Path("/usr/bin/time")


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of one probe process; raises :class:`ProbeFailed`
    (with its output) when it exits non-zero."""
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as rss:
        cmd = [str(TIME), "-f", "%M", "-o", rss.name, *argv] if TIME.exists() else argv
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0)
            text = out.read().decode(errors="replace")[-2000:]
            raise ProbeFailed(f"{' '.join(argv)} exited {proc.returncode}:\n{text}")
        kib = float(rss.read().split()[-1]) if TIME.exists() else usage.ru_maxrss
    return wall, kib / 1024.0, proc.returncode


def start_worker(node: str, queue: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log_path = Path(env["CELERY_ECS_HEARTBEAT_FILE"]).with_suffix(".log")
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [str(BIN / "celery"), "-A", "benchmarks.bench_app", "worker", "-P", "prefork", "-c",
             "1", "-n", node, "-Q", queue, "--without-mingle", "--without-gossip",
             "-l", "warning"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    ready = Path(env["CELERY_ECS_READY_FILE"])
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise SystemExit(f"worker did not start; see {log_path}")
        time.sleep(0.1)
    return proc


def start_beat(env: dict[str, str], tmp: Path) -> subprocess.Popen[bytes]:
    log_path = tmp / "beat.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "celery"), "-A", "benchmarks.bench_app", "beat", "--max-interval", "1",
             "-s", str(tmp / "beat-schedule"), "-l", "warning"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    beat_file = Path(env["CELERY_ECS_BEAT_FILE"])
    deadline = time.monotonic() + 60
    while not beat_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise SystemExit(f"beat did not tick; see {log_path}")
        time.sleep(0.1)
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    if not args.broker.startswith("redis://127.0.0.1"):
        raise SystemExit("the benchmark runs against Redis on 127.0.0.1 only")

    token = uuid.uuid4().hex[:8]
    node, queue = f"bench-{token}@127.0.0.1", f"bench-{token}"
    tmp = Path(tempfile.mkdtemp(prefix="celery-ecs-bench-"))
    env = {
        **os.environ,
        "BENCH_BROKER": args.broker,
        "CELERY_ECS_HEARTBEAT_FILE": str(tmp / "heartbeat"),
        "CELERY_ECS_READY_FILE": str(tmp / "ready"),
        "CELERY_ECS_BEAT_FILE": str(tmp / "beat"),
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
        "(b') celery-ecs ping --heartbeat-file": [
            cli, "healthcheck", "ping", "--broker", args.broker, "--node", node,
            "--heartbeat-file", env["CELERY_ECS_HEARTBEAT_FILE"],
        ],
        "(c)  celery-ecs heartbeat": [cli, "healthcheck", "heartbeat"],
        "(c') python -m heartbeat": [sys.executable, "-m", "toolkit.healthcheck", "heartbeat"],
        "(d)  celery-ecs beat": [cli, "healthcheck", "beat"],
        "(d') python -m beat": [sys.executable, "-m", "toolkit.healthcheck", "beat"],
    }
    import redis

    before = shared_keys(redis.Redis.from_url(args.broker))
    worker = start_worker(node, queue, env)
    beat = start_beat(env, tmp)
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in probes}
    try:
        for argv in probes.values():  # warm the page cache once, not measured
            run_once(argv, env)
        for _ in range(args.runs):
            for name, argv in probes.items():
                results[name].append(run_once(argv, env))
    except ProbeFailed as exc:
        print(f"benchmark aborted, a probe failed against the healthy worker: {exc}",
              file=sys.stderr)
        return 1
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        os.killpg(beat.pid, signal.SIGTERM)
        worker.wait(30)
        beat.wait(30)
        if args.broker.startswith("redis"):  # drop the kombu bindings of the one-off queue
            client = redis.Redis.from_url(args.broker)
            keys = list(client.scan_iter(match=f"*{token}*"))
            if keys:
                client.delete(*keys)
            import socket

            from toolkit.beatregistry import beat_index_key, beat_key

            instance = f"{socket.gethostname()}:{beat.pid}"  # this run's beat registry entry
            client.delete(beat_key(instance))
            client.zrem(beat_index_key(), instance)
            drop_new(client, before)  # the registry marker, kombu's binding deadlines
            client.close()

    peer = [w for w, _, _ in results[PEER]]
    base = statistics.median(peer)
    print(f"{args.runs} runs each, broker {args.broker}, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs; peak RSS "
          + ("from /usr/bin/time" if TIME.exists() else "from os.wait4 (/usr/bin/time missing: "
             "floored at this benchmark's own RSS)") + "\n")
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
        if name != PEER:
            peer_rss = max(r for _, r, _ in results[PEER])
            record("healthcheck vs inspect ping", f"probe {name.strip()}, wall ms (peak RSS)",
                   f"{spread(walls, 1000, 0)} ms ({rss:.0f} MiB)",
                   f"celery inspect ping: {spread(peer, 1000, 0)} ms ({peer_rss:.0f} MiB)",
                   f"{base / med:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

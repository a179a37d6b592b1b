"""Real Celery workers as subprocesses, for the heartbeat and health-check tests.

Each worker runs ``celery -A tests.hc_app worker`` in its own process group with its own node
name, queue, heartbeat files and log file; :class:`WorkerPool` kills every group it started
(SIGCONT first, in case a test froze one) so no worker outlives its test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.registry import WorkerHeartbeat, read_registry

REPO = Path(__file__).resolve().parent.parent
CELERY = str(Path(sys.executable).with_name("celery"))
CLI = str(Path(sys.executable).with_name("celery-ecs"))
REDIS_BROKER = "redis://127.0.0.1:6379/2"  # db 2 belongs to the heartbeat / health-check tests


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    node: str
    queue: str
    broker: str
    heartbeat_file: Path
    ready_file: Path
    log_file: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for the bootstep's ready file (written from the worker's loop once consuming)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.node} exited early:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        tail = self.log()[-3000:]
        raise AssertionError(f"worker {self.node} not ready after {timeout} s:\n{tail}")

    def stopped(self) -> bool:
        """Whether the main process is stopped (SIGSTOP): state ``T`` in /proc."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] in {"T", "t"}

    def block_loop(self) -> None:
        """SIGUSR2: tests/hc_app.py blocks the main thread for $HC_BLOCK_SECONDS (not stopped)."""
        os.kill(self.proc.pid, signal.SIGUSR2)

    def freeze(self) -> None:
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def terminate(self, timeout: float = 20.0) -> int:
        """Warm shutdown (SIGTERM to the main process), as ECS does on a task stop."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None or _group_alive(self.proc.pid):
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True


@dataclass
class WorkerPool:
    """Starts workers under ``tmp``; :meth:`close` kills them all (use it as a finalizer)."""

    tmp: Path
    token: str
    workers: list[Worker] = field(default_factory=list)

    def start(
        self,
        *,
        broker: str = REDIS_BROKER,
        pool: str = "prefork",
        concurrency: int = 1,
        name: str = "w",
        interval: float = 0.5,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
        app: str = "tests.hc_app",
        queue: str | None = None,
    ) -> Worker:
        index = len(self.workers)
        node = f"hc-{name}-{self.token}-{index}@127.0.0.1"
        queue = queue or f"hc-{self.token}-{index}"
        hb = self.tmp / f"{name}-{index}.heartbeat"
        ready = self.tmp / f"{name}-{index}.ready"
        log_file = self.tmp / f"{name}-{index}.log"
        child_env = {
            **os.environ,
            "HC_BROKER": broker,
            "CELERY_ECS_HEARTBEAT_FILE": str(hb),
            "CELERY_ECS_READY_FILE": str(ready),
            "CELERY_ECS_HEARTBEAT_INTERVAL": str(interval),
            "PYTHONUNBUFFERED": "1",
            "PYTHONWARNINGS": "ignore",
        }
        child_env.pop("ECS_CONTAINER_METADATA_URI_V4", None)
        child_env.update(env or {})
        with log_file.open("wb") as out:
            proc = subprocess.Popen(
                [
                    CELERY, "-A", app, "worker", "-P", pool, "-c", str(concurrency),
                    "-n", node, "-Q", queue, "--without-mingle", "--without-gossip", "-l", "info",
                ],
                cwd=REPO,
                env=child_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(proc, node, queue, broker, hb, ready, log_file)
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        if any(w.broker == REDIS_BROKER for w in self.workers):
            _forget_redis_keys(self.token, [w.node for w in self.workers])


def _forget_redis_keys(token: str, nodes: list[str]) -> None:
    """Drop what killed workers leave in db 2: kombu bindings, queues, registry entries."""
    import redis

    client = redis.Redis.from_url(REDIS_BROKER)
    try:
        keys = list(client.scan_iter(match=f"*{token}*", count=1000))
        if keys:
            client.delete(*keys)
        client.zrem("celery-ecs:heartbeats", *nodes)
    finally:
        client.close()


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 30.0) -> tuple[
    int, str, str, float
]:
    """Run ``celery-ecs ARGS`` as ECS would; return (exit code, stdout, stderr, seconds)."""
    started = time.monotonic()
    done = subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def registry_entry(node: str, prefix: str = "") -> WorkerHeartbeat | None:
    """This node's live registry entry in db 2, or None."""
    import redis

    client = redis.Redis.from_url(REDIS_BROKER)
    try:
        return {b.node: b for b in read_registry(client, prefix)}.get(node)
    finally:
        client.close()


def wait_idle(worker: Worker, timeout: float = 40.0) -> None:
    """Wait until the worker's registry entry says no task is running (shared workers carry
    tasks over from earlier tests)."""
    def idle() -> bool:
        entry = registry_entry(worker.node)
        return entry is not None and entry.active == 0

    assert wait_for(idle, timeout=timeout, interval=0.2), worker.log()[-2000:]


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def send_task(
    broker: str, queue: str, name: str, *args: object, keyprefix: str = "", **options: object
) -> None:
    """Publish one task with a bare app (the tests' producer side); ``options`` go to
    ``send_task`` (e.g. ``time_limit``)."""
    from celery import Celery

    producer = Celery("hc-producer", broker=broker)
    if keyprefix:
        producer.conf.broker_transport_options = {"global_keyprefix": keyprefix}
    try:
        producer.send_task(name, args=list(args), queue=queue, **options)
    finally:
        producer.close()

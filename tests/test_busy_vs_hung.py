"""Busy or hung, against real workers: prefork, solo and threads, Celery's default prefetch.

Each test runs one production situation on every pool at once (one ECS service per pool in a
moto server; the workers learn their service and task ARN from an ECS task metadata endpoint
served here), waits past the thresholds, and asks ``celery-ecs check --json`` as an operator
would. Thresholds are short (dead_after 3 s, stuck_after 2 s, heartbeat every 0.5 s) so that
"35 s after sending" takes a few seconds; each test says what the seconds stand for.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.conftest import free_port
from tests.helpers_workers import REDIS_BROKER, Worker, WorkerPool, registry_entry, wait_for
from toolkit import cli

pytestmark = [pytest.mark.e2e, pytest.mark.redis]
ACCOUNT = "123456789012"
POOLS = ("prefork", "solo", "threads")
APP = "tests.verdict_app"


def task_arn(task: str) -> str:
    return f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task/prod/{task}"


class Metadata(BaseHTTPRequestHandler):
    """ECS task metadata v4 for ``/<service>/<task>``: the container, and ``/task`` the task."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parts = self.path.strip("/").split("/")
        service, task = parts[0], parts[1]
        if len(parts) == 2:
            body: dict[str, Any] = {"Name": "worker", "Labels": {
                "com.amazonaws.ecs.task-arn": task_arn(task), "com.amazonaws.ecs.cluster": "prod"}}
        else:
            body = {"TaskARN": task_arn(task), "Cluster": "prod", "ServiceName": service}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Stage:
    """A moto ECS cluster, a metadata endpoint, real workers, and `celery-ecs check`."""

    tmp: Path
    token: str
    metadata: str
    pool: WorkerPool
    services: dict[str, str] = field(default_factory=dict)  # service -> queue
    ecs: Any = None

    def service(self, name: str) -> str:
        service = f"{name}-{self.token}"
        self.ecs.create_service(cluster="prod", serviceName=service, taskDefinition="w",
                                desiredCount=1)
        self.services[service] = f"vq-{name}-{self.token}"
        return service

    def worker(self, service: str, task: str, pool: str, wait: bool = False) -> Worker:
        return self.pool.start(
            name=task, pool=pool, concurrency=1, app=APP, queue=self.services[service],
            env={"ECS_CONTAINER_METADATA_URI_V4": f"{self.metadata}/{service}/{task}-{self.token}"},
            wait=wait,
        )

    def arn(self, task: str) -> str:
        return task_arn(f"{task}-{self.token}")

    def check(self, **verdicts: float) -> dict[str, dict[str, Any]]:
        conf = self.tmp / "celery-ecs.toml"
        conf.write_text(
            f'environment = "bvh-{self.token}"\n[broker]\nurl = "{REDIS_BROKER}"\n[verdicts]\n'
            + "".join(f"{k} = {v}\n" for k, v in verdicts.items())
            + "".join(f'[[services]]\ncluster = "prod"\nservice = "{s}"\nqueues = ["{q}"]\n'
                      for s, q in self.services.items()))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            cli.main(["check", "--config", str(conf), "--json"])
        return {s["service"]: s for s in json.loads(out.getvalue())["services"]}

    def send(self, service: str, name: str, count: int = 1, **options: Any) -> None:
        from celery import Celery

        producer = Celery("bvh-producer", broker=REDIS_BROKER)
        try:
            for _ in range(count):
                producer.send_task(name, queue=self.services[service], **options)
        finally:
            producer.close()


@pytest.fixture
def stage(tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stage]:
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "1")  # read by the in-process server
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ecs = boto3.client("ecs", region_name="eu-west-1")
    ecs.create_cluster(clusterName="prod")
    ecs.register_task_definition(family="w", containerDefinitions=[
        {"name": "worker", "image": "w", "memory": 256, "essential": True}])
    pool = WorkerPool(tmp_path, unique)
    st = Stage(tmp_path, unique, f"http://127.0.0.1:{server.server_address[1]}", pool, ecs=ecs)
    try:
        yield st
    finally:
        pool.close()
        server.shutdown()
        server.server_close()
        moto.stop()


def ready(*workers: Worker) -> None:
    """Consuming, and its first beat is in the registry: a worker freezing before its first
    beat would be absent from the verdict (ECS's running count speaks for it), not "dead"."""
    for w in workers:
        w.wait_ready()
    for w in workers:
        until(lambda w=w: registry_entry(w.node) is not None, f"{w.node} never beat")


def until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    assert wait_for(predicate, timeout=timeout, interval=0.1), what


def entry_says(worker: Worker, test: Callable[[Any], bool]) -> bool:
    entry = registry_entry(worker.node)
    return entry is not None and test(entry)


def states(doc: dict[str, Any]) -> list[str]:
    return [w["state"] for w in doc["workers"]]


def test_one_long_legitimate_task_with_work_queued_is_busy_not_stuck(stage: Stage) -> None:
    """Production: a -c 1 worker runs one 2-minute export (max_task_runtime 150 s: the app's
    longest task) while 10 quick tasks queue behind it, long past stuck_after. A forced
    deployment would kill the export and the next one: it must not be stuck."""
    workers = {p: stage.worker(stage.service(f"busy-{p}"), f"busy-{p}", p) for p in POOLS}
    ready(*workers.values())
    for p in POOLS:
        stage.send(f"busy-{p}-{stage.token}", "vt.sleep", args=[120])
        stage.send(f"busy-{p}-{stage.token}", "vt.quick", 10)
    for w in workers.values():
        until(lambda w=w: entry_says(w, lambda e: e.active == 1), f"{w.node} never ran the task")
    time.sleep(3.5)  # past stuck_after (2 s): "35 s after sending"
    docs = stage.check(dead_after=3, stuck_after=2, max_task_runtime=150)
    for p in POOLS:
        doc = docs[f"busy-{p}-{stage.token}"]
        assert doc["verdict"] in ("healthy", "behind"), (p, doc["reasons"])
        assert doc["stuck_tasks"] == [] and states(doc) == ["busy"], (p, doc)


def test_rate_limited_tasks_are_paced_by_design_not_stuck(stage: Stage) -> None:
    """Production: 12 tasks with rate_limit="1/m": the worker starts one a minute and holds the
    next ones in its token bucket. Nothing started for longer than stuck_after is by design."""
    workers = {p: stage.worker(stage.service(f"rate-{p}"), f"rate-{p}", p) for p in POOLS}
    ready(*workers.values())
    for p in POOLS:
        stage.send(f"rate-{p}-{stage.token}", "vt.limited", 12)
    for w in workers.values():
        until(lambda w=w: entry_says(w, lambda e: e.started == 1 and (e.held or 0) > 0),
              f"{w.node} did not hold rate-limited tasks")
    time.sleep(3.5)
    docs = stage.check(dead_after=3, stuck_after=2, max_task_runtime=150)
    for p in POOLS:
        doc = docs[f"rate-{p}-{stage.token}"]
        assert doc["verdict"] in ("healthy", "behind"), (p, doc["reasons"])
        assert doc["stuck_tasks"] == [] and states(doc) == ["waiting"], (p, doc)
        assert doc["held"] >= 1 and doc["backlog"] + doc["held"] == 11, (p, doc)


def test_a_hung_task_that_prefetched_the_backlog_is_stuck_and_named(stage: Stage) -> None:
    """Production: one task hangs on a network call without a timeout and the worker has
    already taken the 4 quick tasks behind it (Celery's default prefetch): the ready list is
    empty. The app's tasks take milliseconds (max_task_runtime 2 s stands for "minutes")."""
    workers = {p: stage.worker(stage.service(f"hang-{p}"), f"hang-{p}", p) for p in POOLS}
    ready(*workers.values())
    for p in POOLS:
        stage.send(f"hang-{p}-{stage.token}", "vt.hang")
        stage.send(f"hang-{p}-{stage.token}", "vt.quick", 4)
    for w in workers.values():
        until(lambda w=w: entry_says(w, lambda e: e.active == 1), f"{w.node} never hung")
    time.sleep(3.0)  # past max_task_runtime
    docs = stage.check(dead_after=3, stuck_after=2, max_task_runtime=2)
    for p in POOLS:
        doc = docs[f"hang-{p}-{stage.token}"]
        assert doc["verdict"] == "stuck", (p, doc["reasons"])
        assert doc["stuck_tasks"] == [stage.arn(f"hang-{p}")], (p, doc)
        assert states(doc) == ["hung-task"] and "vt.hang[" in doc["workers"][0]["why"], doc
        assert doc["backlog"] + doc["held"] == 4, (p, doc)
    prefork = docs[f"hang-prefork-{stage.token}"]
    assert (prefork["backlog"], prefork["held"]) == (0, 4)  # the prefetch took them all


def test_a_consumer_cancelled_before_its_first_task_is_stuck(stage: Stage) -> None:
    """Production: the worker stops consuming (here `control.cancel_consumer`, as after a lost
    broker connection that never comes back) before its first task; 5 tasks wait. It beats and
    answers ping, but started nothing since it came up."""
    from celery import Celery

    workers = {p: stage.worker(stage.service(f"cancel-{p}"), f"cancel-{p}", p) for p in POOLS}
    ready(*workers.values())
    control = Celery("bvh-control", broker=REDIS_BROKER)
    try:
        for p, w in workers.items():
            control.control.cancel_consumer(stage.services[f"cancel-{p}-{stage.token}"],
                                            destination=[w.node], reply=True, timeout=5)
    finally:
        control.close()
    for w in workers.values():
        until(lambda w=w: entry_says(w, lambda e: e.queues == ()), f"{w.node} still consumes")
    for p in POOLS:
        stage.send(f"cancel-{p}-{stage.token}", "vt.quick", 5)
    for w in workers.values():  # its beats show it up and quiet for longer than stuck_after
        until(lambda w=w: entry_says(w, lambda e: e.updated - (e.booted or e.updated) > 3.0),
              "boot time")
    docs = stage.check(dead_after=3, stuck_after=2, max_task_runtime=150)
    for p in POOLS:
        doc = docs[f"cancel-{p}-{stage.token}"]
        assert doc["verdict"] == "stuck", (p, doc["reasons"])
        assert states(doc) == ["hung-consumer"] and "since it came up" in doc["workers"][0]["why"]
        assert doc["stuck_tasks"] == [stage.arn(f"cancel-{p}")] and doc["backlog"] == 5


def test_one_frozen_worker_beside_a_draining_one_is_degraded_naming_only_it(
    stage: Stage
) -> None:
    """Production: two tasks of one service; one freezes (SIGSTOP: a kernel stall, a debugger),
    the other keeps draining the queue. Only the frozen task is named; nothing is redeployed."""
    pairs = {}
    for p in POOLS:
        svc = stage.service(f"pair-{p}")
        pairs[p] = (stage.worker(svc, f"frozen-{p}", p), stage.worker(svc, f"draining-{p}", p))
    ready(*(w for pair in pairs.values() for w in pair))
    for frozen, _ in pairs.values():
        frozen.freeze()
    deadline = time.monotonic() + 4.0  # past dead_after (3 s), with tasks arriving meanwhile
    while time.monotonic() < deadline:
        for p in POOLS:
            stage.send(f"pair-{p}-{stage.token}", "vt.quick", 2)
        time.sleep(0.5)
    docs = stage.check(dead_after=3, stuck_after=2, max_task_runtime=150)
    for p in POOLS:
        doc = docs[f"pair-{p}-{stage.token}"]
        assert doc["verdict"] == "degraded", (p, doc["reasons"])
        assert doc["stuck_tasks"] == [stage.arn(f"frozen-{p}")], (p, doc)
        by = {w["task_arn"]: w["state"] for w in doc["workers"]}
        assert by[stage.arn(f"frozen-{p}")] == "dead", doc
        assert by[stage.arn(f"draining-{p}")] != "dead", doc

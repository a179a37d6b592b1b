"""The sandbox playing ECS: services in moto, a task metadata endpoint, worker processes as tasks.

Each worker process stands for one task of one ECS service, a task moto knows (``RunTask`` with
``group`` = ``service:NAME``, so ``DescribeTasks`` and ``StopTask`` work on it): the worker learns
its task ARN, cluster and service from :class:`TaskMetadata` (``$ECS_CONTAINER_METADATA_URI_V4``,
as on ECS), so the collector's verdicts map its heartbeat to the service. Then the sandbox does
what ECS would: when a service gets a new deployment (``DescribeServices`` shows a new deployment
id), :meth:`LocalEcs.replace_if_deployed` stops its tasks (SIGKILL: a frozen process ignores
SIGTERM) and starts new ones; when someone stops one task (``StopTask``, the alarm handler's
remedy for a degraded service), :meth:`LocalEcs.replace_stopped` replaces that one only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from toolkit.env import (
    ENV_BROKER_URL_FALLBACK,
    ENV_ECS_METADATA_URI,
    ENV_HEARTBEAT_FILE,
    ENV_HEARTBEAT_INTERVAL,
    ENV_READY_FILE,
    ENV_SANDBOX_KEYPREFIX,
)
from toolkit.sandbox.jsonhttp import JsonHandler, loopback_server

ACCOUNT = "123456789012"  # moto's default account


class TaskMetadata:
    """ECS task metadata v4 on 127.0.0.1: ``/<task id>`` and ``/<task id>/task``."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.tasks: dict[str, tuple[str, str]] = {}  # task id -> (cluster, service)
        meta = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = self.path.strip("/").split("/")
                cluster, service = meta.tasks.get(parts[0], ("", ""))
                arn = meta.task_arn(cluster, parts[0])
                body: dict[str, Any] = (
                    {"Name": "worker", "Labels": {"com.amazonaws.ecs.task-arn": arn,
                                                  "com.amazonaws.ecs.cluster": cluster}}
                    if len(parts) == 1 else
                    {"TaskARN": arn, "Cluster": cluster, "ServiceName": service})
                self.send_json(body, 200 if cluster else 404)

        self._httpd = loopback_server(Handler)
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()

    def task_arn(self, cluster: str, task_id: str) -> str:
        return f"arn:aws:ecs:{self.region}:{ACCOUNT}:task/{cluster}/{task_id}"

    def uri(self, task_id: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{task_id}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@dataclass
class Task:
    service: str
    task_id: str
    queue: str
    proc: subprocess.Popen[bytes]
    ready_file: Path
    log_file: Path
    arn: str = ""

    def ready(self) -> bool:
        return self.ready_file.exists()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def freeze(self) -> None:
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def kill(self) -> None:
        # SIGKILL alone, as ECS does after its stop timeout: a stopped (frozen) process dies of
        # it too, and never runs again (a SIGCONT first would let it beat once more)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


class LocalEcs:
    """Creates the cluster and the services in moto, runs one worker process per service."""

    def __init__(self, ecs: Any, cluster: str, services: dict[str, str], *, broker: str,
                 keyprefix: str, tmp: Path, region: str,
                 desired: dict[str, int] | None = None) -> None:
        self.ecs = ecs
        self.cluster = cluster
        self.services = services  # service -> queue
        self.desired = {s: (desired or {}).get(s, 1) for s in services}
        self.broker, self.keyprefix, self.tmp = broker, keyprefix, tmp
        self.metadata = TaskMetadata(region)
        self.tasks: dict[str, list[Task]] = {s: [] for s in services}
        self.retired: list[Task] = []
        self.deployment_ids: dict[str, str] = {}

    def all_tasks(self) -> list[Task]:
        return [t for tasks in self.tasks.values() for t in tasks]

    def create(self, remediate: bool = True) -> None:
        _tasks_stay_running()
        self.ecs.create_cluster(clusterName=self.cluster)
        self.ecs.register_task_definition(family="sandbox-worker", containerDefinitions=[
            {"name": "worker", "image": "celery-worker:sandbox", "memory": 512,
             "essential": True}])
        for service in self.services:
            # moto reports this many tasks running (rollout completed) for the new service
            os.environ["MOTO_ECS_SERVICE_RUNNING"] = str(self.desired[service])
            self.ecs.create_service(
                cluster=self.cluster, serviceName=service, taskDefinition="sandbox-worker",
                desiredCount=self.desired[service], launchType="FARGATE",
                tags=[{"key": "celery-ecs:remediate", "value": str(remediate).lower()}])
        _age_deployments(self.cluster, list(self.services), self.ecs.meta.region_name)
        self.deployment_ids = self._deployments()

    def _deployments(self) -> dict[str, str]:
        got = self.ecs.describe_services(cluster=self.cluster, services=list(self.services))
        return {s["serviceName"]: next((d["id"] for d in s["deployments"]
                                        if d["status"] == "PRIMARY"), "")
                for s in got["services"]}

    def start_task(self, service: str) -> Task:
        (run,) = self.ecs.run_task(
            cluster=self.cluster, taskDefinition="sandbox-worker", launchType="FARGATE",
            group=f"service:{service}", count=1, networkConfiguration={
                "awsvpcConfiguration": {"subnets": ["subnet-sandbox"]}})["tasks"]
        task_id = str(run["taskArn"]).rsplit("/", 1)[-1]
        self.metadata.tasks[task_id] = (self.cluster, service)
        ready = self.tmp / f"{task_id}.ready"
        log_file = self.tmp / f"{task_id}.log"
        env = {**os.environ, ENV_BROKER_URL_FALLBACK: self.broker,
               ENV_SANDBOX_KEYPREFIX: self.keyprefix,
               ENV_ECS_METADATA_URI: self.metadata.uri(task_id),
               ENV_HEARTBEAT_FILE: str(self.tmp / f"{task_id}.heartbeat"),
               ENV_READY_FILE: str(ready), ENV_HEARTBEAT_INTERVAL: "0.5",
               "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}
        with log_file.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "toolkit.sandbox.app", "worker",
                 "-P", "prefork", "-c", "1", "-n", f"{service}-{task_id[:8]}@sandbox",
                 "-Q", self.services[service], "--without-mingle", "--without-gossip",
                 "-l", "warning"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent)
        task = Task(service, task_id, self.services[service], proc, ready, log_file,
                    str(run["taskArn"]))
        self.tasks[service].append(task)
        return task

    def start_all(self) -> None:
        for service, count in self.desired.items():
            for _ in range(count):
                self.start_task(service)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(t.ready() for t in self.all_tasks()):
            dead = [t for t in self.all_tasks() if not t.alive()]
            if dead or time.monotonic() > deadline:
                task = (dead or self.all_tasks())[0]
                tail = task.log_file.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"worker of {task.service} did not start:\n{tail}")
            time.sleep(0.1)

    def replace_if_deployed(self) -> list[str]:
        """Services with a new deployment since the last call; their task is replaced."""
        now = self._deployments()
        changed = [s for s, d in now.items() if d and d != self.deployment_ids.get(s)]
        self.deployment_ids = now
        for service in changed:
            for old in self.tasks[service]:
                self._retire(old, "replaced by a new deployment")
            self.tasks[service] = []
            for _ in range(self.desired[service]):
                self.start_task(service)
        return changed

    def replace_stopped(self) -> list[Task]:
        """Tasks someone stopped (``StopTask``) since the last call: each one's process is
        killed and one new task replaces it, as the ECS service scheduler does."""
        running = {t.arn: t for t in self.all_tasks()}
        if not running:
            return []
        stopped = [t for t in self.ecs.describe_tasks(cluster=self.cluster,
                                                      tasks=list(running))["tasks"]
                   if t.get("desiredStatus") == "STOPPED" or t.get("lastStatus") == "STOPPED"]
        out = []
        for info in stopped:
            task = running[str(info["taskArn"])]
            self.tasks[task.service].remove(task)
            self._retire(task, None)
            self.start_task(task.service)
            out.append(task)
        return out

    def _retire(self, task: Task, reason: str | None) -> None:
        task.kill()
        self.retired.append(task)
        if reason is not None:
            with contextlib.suppress(Exception):  # already stopped: fine
                self.ecs.stop_task(cluster=self.cluster, task=task.arn, reason=reason)

    def close(self) -> None:
        for task in [*self.all_tasks(), *self.retired]:
            task.kill()
        self.metadata.close()


def _die_with_parent() -> None:
    """In the worker, before exec: Linux sends it SIGKILL when the sandbox dies, even by SIGKILL,
    so no worker outlives the sandbox and keeps writing to the broker."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _tasks_stay_running() -> None:
    """moto advances a task's status on every DescribeTasks (RUNNING, DEACTIVATING, ...): keep
    the sandbox's tasks RUNNING until someone stops them, as on ECS."""
    from moto.moto_api import state_manager

    state_manager.set_transition(model_name="ecs::task",
                                 transition={"progression": "manual", "times": 10**9})


def _age_deployments(cluster: str, services: list[str], region: str) -> None:
    """Back-date the services' first deployment by an hour, as if deployed before the sandbox
    began (moto stamps it now, and the handler's cooldown guard would refuse to act)."""
    from moto.ecs.models import ecs_backends

    backend = ecs_backends[ACCOUNT][region]
    when = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
    for service in services:
        for deployment in backend.services[f"{cluster}:{service}"].deployments:
            deployment["createdAt"] = deployment["updatedAt"] = when

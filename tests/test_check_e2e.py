"""End to end: two real Celery workers with toolkit.install(app), each the only worker of one
ECS service (created in a moto server; the workers learn their service from an ECS task metadata
endpoint served here). One is frozen with SIGSTOP: `celery-ecs check` says stuck for it and
healthy for its sibling, and `celery-ecs collect` publishes WorkerStuck 1 and 0."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from moto.server import ThreadedMotoServer

from tests.conftest import free_port
from tests.helpers_workers import REDIS_BROKER, WorkerPool, run_cli, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.redis]
ACCOUNT = "123456789012"


def task_arn(name: str) -> str:
    return f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task/prod/{name}"


class Metadata(BaseHTTPRequestHandler):
    """ECS task metadata v4: /NAME is the container, /NAME/task the task (service svc-NAME)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parts = self.path.strip("/").split("/")
        name = parts[0]
        if len(parts) == 1:
            body = {"Name": "worker", "Labels": {"com.amazonaws.ecs.task-arn": task_arn(name),
                                                 "com.amazonaws.ecs.cluster": "prod"}}
        else:
            body = {"TaskARN": task_arn(name), "Cluster": "prod", "ServiceName": f"svc-{name}"}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def metadata() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def moto_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "1")  # read by the in-process server
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    yield url
    server.stop()


def test_frozen_worker_is_stuck_and_its_sibling_healthy(
    tmp_path: Path, unique: str, metadata: str, moto_url: str
) -> None:
    ecs = boto3.client("ecs", region_name="eu-west-1")
    ecs.create_cluster(clusterName="prod")
    ecs.register_task_definition(family="w", containerDefinitions=[
        {"name": "worker", "image": "w", "memory": 256, "essential": True}])
    names = [f"a{unique}", f"b{unique}"]
    for name in names:
        ecs.create_service(cluster="prod", serviceName=f"svc-{name}", taskDefinition="w",
                           desiredCount=1)
    pool = WorkerPool(tmp_path, unique)
    try:
        frozen, sibling = (
            pool.start(name=n, env={"ECS_CONTAINER_METADATA_URI_V4": f"{metadata}/{n}"})
            for n in names
        )
        conf = tmp_path / "celery-ecs.toml"
        conf.write_text(
            f'environment = "e2e-{unique}"\n[broker]\nurl = "{REDIS_BROKER}"\n'
            "[verdicts]\ndead_after = 3\n"
            + "".join(f'[[services]]\ncluster = "prod"\nservice = "svc-{n}"\n'
                      f'queues = ["{w.queue}"]\n' for n, w in zip(names, (frozen, sibling),
                                                                     strict=True))
        )
        code, out, err, _ = run_cli("check", "--config", str(conf), "--json")
        doc = json.loads(out)
        assert [s["verdict"] for s in doc["services"]] == ["healthy", "healthy"], (out, err)
        assert [s["workers_alive"] for s in doc["services"]] == [1, 1] and code == 0

        frozen.freeze()
        client = redis.Redis.from_url(REDIS_BROKER)
        # the frozen worker's pending BRPOP still takes one message into its socket: 3 -> 2
        client.lpush(frozen.queue, *[b'{"body": "waiting"}'] * 3)
        client.close()
        time.sleep(3.5)  # > dead_after

        def judged() -> dict[str, Any]:
            _, text, _, _ = run_cli("check", "--config", str(conf), "--json")
            return {s["service"]: s for s in json.loads(text)["services"]}

        assert wait_for(lambda: judged()[f"svc-{names[0]}"]["verdict"] == "stuck", timeout=20), \
            judged()
        code, out, err, _ = run_cli("check", "--config", str(conf), "--json")
        by = {s["service"]: s for s in json.loads(out)["services"]}
        stuck, healthy = by[f"svc-{names[0]}"], by[f"svc-{names[1]}"]
        assert code == 1
        assert stuck["verdict"] == "stuck" and stuck["stuck_tasks"] == [task_arn(names[0])]
        assert stuck["backlog"] in (2, 3) and stuck["workers_alive"] == 0
        assert stuck["reasons"][0].startswith("no worker makes progress (1 of 1 dead or hung)")
        assert "no heartbeat for" in stuck["reasons"][1]
        assert healthy["verdict"] == "healthy" and healthy["workers_alive"] == 1

        code, out, err, _ = run_cli("collect", "--config", str(conf), "--once")
        assert code == 0, err
        cw = boto3.client("cloudwatch", region_name="eu-west-1")
        now = datetime.now(UTC)
        got = {}
        for name in names:
            reply = cw.get_metric_statistics(
                Namespace="Celery", MetricName="WorkerStuck",
                Dimensions=[{"Name": "Environment", "Value": f"e2e-{unique}"},
                            {"Name": "ClusterName", "Value": "prod"},
                            {"Name": "ServiceName", "Value": f"svc-{name}"}],
                StartTime=now - timedelta(minutes=5), EndTime=now + timedelta(minutes=1),
                Period=60, Statistics=["Maximum"])
            got[name] = [p["Maximum"] for p in reply["Datapoints"]]
        assert got == {names[0]: [1.0], names[1]: [0.0]}
    finally:
        pool.close()

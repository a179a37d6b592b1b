"""`celery-ecs collect` end to end: a real subprocess, real Redis, CloudWatch on a loopback moto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
import redis
from celery import Celery
from moto.server import ThreadedMotoServer

import toolkit
from tests.conftest import free_port

CLI = str(Path(sys.executable).parent / "celery-ecs")
REDIS_URL = "redis://127.0.0.1:6379/1"
pytestmark = [pytest.mark.e2e, pytest.mark.redis]


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def prefix(unique: str) -> Iterator[str]:
    p = f"cli{unique}:"
    yield p
    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=f"{p}*"))
    if keys:
        r.delete(*keys)


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout)


def publish(prefix: str, counts: dict[str, int]) -> None:
    app = Celery("producer", broker=REDIS_URL, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix}
    toolkit.install(app)
    for queue, n in counts.items():
        for i in range(n):
            app.send_task("jobs.work", args=[i], queue=queue, priority=i % 10)


def read_back(endpoint: str, environment: str, metric: str, dims: dict[str, str]) -> list[float]:
    cw = boto3.client("cloudwatch", region_name="eu-west-1", endpoint_url=endpoint)
    now = datetime.now(UTC)
    stats = cw.get_metric_statistics(
        Namespace="Celery", MetricName=metric,
        Dimensions=[{"Name": "Environment", "Value": environment}]
        + [{"Name": k, "Value": v} for k, v in dims.items()],
        StartTime=now - timedelta(minutes=10), EndTime=now + timedelta(minutes=10),
        Period=60, Statistics=["Maximum"],
    )
    return [p["Maximum"] for p in stats["Datapoints"]]


def test_collect_once_publishes_and_reads_back(
    moto_endpoint: str, prefix: str, unique: str, tmp_path: Path
) -> None:
    publish(prefix, {"emails": 25, "images": 3})
    config = tmp_path / "celery-ecs.toml"
    config.write_text(
        f'environment = "e2e-{unique}"\n[broker]\nurl = "{REDIS_URL}"\n'
        f'global_keyprefix = "{prefix}"\n[thresholds]\nmax_length = 10\n'
    )
    proc = cli("collect", "--once", "--config", str(config),
               env={"AWS_ENDPOINT_URL": moto_endpoint})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    emails = next(line for line in lines if line.startswith("emails"))
    assert emails.split()[1] == "25" and "critical: length 25 > 10" in emails
    assert next(line for line in lines if line.startswith("images")).split()[-1] == "ok"
    assert "published to Celery in 1 call(s)" in proc.stdout
    env = f"e2e-{unique}"
    assert read_back(moto_endpoint, env, "QueueLength", {"Queue": "emails"}) == [25.0]
    assert read_back(moto_endpoint, env, "QueueLength", {"Queue": "images"}) == [3.0]
    ages = read_back(moto_endpoint, env, "QueueAge", {"Queue": "emails"})
    assert len(ages) == 1 and 0 <= ages[0] < 60
    assert read_back(moto_endpoint, env, "CollectorHeartbeat", {}) == [1.0]


def test_json_output_and_dry_run(prefix: str, tmp_path: Path) -> None:
    publish(prefix, {"q1": 4})
    config = tmp_path / "c.toml"
    config.write_text(f'[broker]\nglobal_keyprefix = "{prefix}"\n')
    proc = cli("collect", "--config", str(config), "--broker", REDIS_URL, "--environment", "j",
               "--queue", "q1", "--queue", "q-empty", "--dry-run", "--json",
               env={"AWS_ENDPOINT_URL": "http://127.0.0.1:1"})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [(q["queue"], q["length"]) for q in doc["queues"]] == [("q1", 4), ("q-empty", 0)]
    assert doc["unacked"] == 0 and doc["ok"] is True
    assert doc["published_calls"] == 0  # dry run: nothing sent (the endpoint is dead anyway)
    names = {m["name"] for m in doc["metrics"]}
    assert {"QueueLength", "QueueAge", "UnackedMessages", "CollectorHeartbeat"} <= names


def test_queue_age_can_be_switched_off(prefix: str, tmp_path: Path) -> None:
    publish(prefix, {"q1": 2})
    on = tmp_path / "on.toml"
    on.write_text(f'[broker]\nglobal_keyprefix = "{prefix}"\n')
    off = tmp_path / "off.toml"
    off.write_text(f'[broker]\nglobal_keyprefix = "{prefix}"\nqueue_age = false\n')
    common = ["--broker", REDIS_URL, "--environment", "j", "--queue", "q1", "--dry-run", "--json"]
    runs = {
        "default": cli("collect", "--config", str(on), *common),
        "flag": cli("collect", "--config", str(on), "--no-queue-age", *common),
        "file": cli("collect", "--config", str(off), *common),
    }
    ages = {}
    for name, proc in runs.items():
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["queues"][0]["length"] == 2
        ages[name] = "QueueAge" in {m["name"] for m in doc["metrics"]}
    assert ages == {"default": True, "flag": False, "file": False}


def test_loop_survives_a_dead_broker_and_exits_on_sigterm(moto_endpoint: str, unique: str) -> None:
    env_name = f"loop-{unique}"
    proc = subprocess.Popen(
        [CLI, "collect", "--broker", "redis://:topsecret@127.0.0.1:1/0", "--environment",
         env_name, "--queue", "q", "--interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "AWS_ENDPOINT_URL": moto_endpoint},
    )
    time.sleep(3.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    errors = [line for line in err.splitlines() if "cannot reach Redis" in line]
    assert len(errors) >= 2  # one per cycle, and the loop carried on after the first
    assert "Traceback" not in err and "topsecret" not in err + out
    # each failed cycle published CollectorErrors, and no heartbeat
    assert read_back(moto_endpoint, env_name, "CollectorErrors", {}) != []
    assert read_back(moto_endpoint, env_name, "CollectorHeartbeat", {}) == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--broker", "redis://:pw-123@127.0.0.1:1/0"], 1, "cannot reach Redis at redis://:***@"),
        (["--broker", "kafka://:pw-123@h/"], 2, "unsupported broker URL scheme kafka://"),
        (["--broker", "redis://127.0.0.1:6379/1", "--queue", "bad\x01name"], 2,
         "invalid queue name"),
        (["--broker", "redis://127.0.0.1:6379/1", "--interval", "-1"], 2, "--interval"),
        (["--broker", "redis://127.0.0.1:6379/1", "--interval", "nan"], 2, "--interval"),
        (["--broker", "redis://127.0.0.1:6379/1", "--interval", "inf"], 2, "--interval"),
        (["--broker", "redis://127.0.0.1:6379/1", "--interval", "0.001"], 2, "at least 1"),
        (["--broker", "amqp://guest:pw-123@[::1"], 2, "malformed broker URL"),
        (["--broker", "redis://127.0.0.1:1/0?password=pw-123"], 1, "password=***"),
        (["--broker", "redis://:pw-123@h:port/0"], 2, "malformed broker URL redis://:***@h"),
        (["--broker", "redis://:pw-123/rest@h:6379/0"], 2, "the port is not a number"),
        (["--broker", "redis://:pw-123?x@h:6379/0"], 2, "malformed broker URL"),
        (["--broker", "redis://:pw-123#x@h:6379/0"], 2, "malformed broker URL"),
        (["--broker", "redis://:pw-123@h:6379/zero"], 2, "the Redis database must be a number"),
    ],
)
def test_bad_input_one_line_and_exit_code(args: list[str], code: int, message: str) -> None:
    proc = cli("collect", "--environment", "bad", "--dry-run", *args,
               env={"CELERY_ECS_CONFIG": ""})
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in proc.stderr and "pw-123" not in proc.stderr + proc.stdout


def test_wrong_password(unique: str) -> None:
    import redis as redis_client

    admin = redis_client.Redis.from_url(REDIS_URL)
    user = f"cli-{unique}"
    admin.execute_command("ACL", "SETUSER", user, "on", ">the-right-one", "~*", "+@all")
    try:
        proc = cli("collect", "--broker", f"redis://{user}:not-it-{unique}@127.0.0.1:6379/1",
                   "--environment", "e", "--queue", "q", "--dry-run")
    finally:
        admin.execute_command("ACL", "DELUSER", user)
    assert proc.returncode == 1
    assert f"celery-ecs collect: error: Redis at redis://{user}:***@127.0.0.1:6379/1 refused " \
        "our credentials" in proc.stderr
    assert f"not-it-{unique}" not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


def test_an_empty_broker_is_an_error_for_once(tmp_path: Path, unique: str) -> None:
    config = tmp_path / "empty.toml"
    config.write_text(f'[broker]\nglobal_keyprefix = "nothing-here-{unique}:"\n')
    proc = cli("collect", "--config", str(config), "--broker", "redis://:pw-9@127.0.0.1:6379/1",
               "--environment", "e", "--dry-run")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert "no queues found on redis://:***@127.0.0.1:6379/1" in proc.stderr


def test_malformed_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("environment = [unclosed\n")
    proc = cli("collect", "--config", str(bad), "--dry-run")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "is not valid TOML" in proc.stderr


def test_top_level_help_and_unknown_command() -> None:
    lines = cli("--help").stdout.splitlines()
    collect = next(line for line in lines if line.strip().startswith("collect "))
    assert "not yet available" not in collect
    check = next(line for line in lines if line.strip().startswith("check "))
    assert "not yet available" not in check
    proc = cli("frobnicate")
    assert proc.returncode == 2 and "unknown command 'frobnicate'" in proc.stderr


def test_queue_consumers_count_live_workers(tmp_path: Path, unique: str) -> None:
    """A real worker with the heartbeat bootstep is counted as its queue's consumer."""
    from tests.helpers_workers import REDIS_BROKER, WorkerPool

    pool = WorkerPool(tmp_path, unique)
    try:
        worker = pool.start(name="consumer")
        proc = cli("collect", "--broker", REDIS_BROKER, "--environment", "c", "--queue",
                   worker.queue, "--queue", f"nobody-{unique}", "--dry-run", "--json",
                   env={"CELERY_ECS_CONFIG": ""})
    finally:
        pool.close()
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [(q["queue"], q["consumers"]) for q in doc["queues"]] == [
        (worker.queue, 1), (f"nobody-{unique}", 0)
    ]
    consumers = [m for m in doc["metrics"] if m["name"] == "QueueConsumers"]
    assert {m["dimensions"]["Queue"]: m["value"] for m in consumers} == {
        worker.queue: 1, f"nobody-{unique}": 0
    }

"""The container probe: heartbeat mode (file age) and ping mode, against real Celery workers.

Workers are real ``celery worker`` subprocesses on the real Redis (db 2) and RabbitMQ; every
probe runs as ECS runs it, as the ``celery-ecs`` console script in a fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import RABBITMQ_URL, free_port, port_open
from tests.helpers_workers import REDIS_BROKER, Worker, WorkerPool, run_cli, send_task, wait_for
from toolkit import config, healthcheck
from toolkit.heartbeat import read_registry

# --- heartbeat mode: pure file checks --------------------------------------------------------


def test_constants_mirror_toolkit_config() -> None:
    assert healthcheck.ENV_HEARTBEAT_FILE == config.ENV_HEARTBEAT_FILE
    assert config.HeartbeatSettings().file == healthcheck.DEFAULT_HEARTBEAT_FILE
    assert healthcheck.ENV_BROKER_URL == config.ENV_BROKER_URL
    assert healthcheck.ENV_BROKER_URL_FALLBACK == config.ENV_BROKER_URL_FALLBACK


def test_heartbeat_absent_file_is_unhealthy(tmp_path: Path) -> None:
    result = healthcheck.check_heartbeat(str(tmp_path / "missing"), 30)
    assert (result.status, result.exit_code) == ("unhealthy", 1)
    assert "no heartbeat file" in result.message


def test_heartbeat_fresh_stale_and_future(tmp_path: Path) -> None:
    path = tmp_path / "hb"
    path.touch()
    now = time.time()
    os.utime(path, (now - 5, now - 5))
    fresh = healthcheck.check_heartbeat(str(path), 30, now=now)
    assert fresh.exit_code == 0 and fresh.message == "heartbeat is 5.0 s old (max 30 s)"

    stale = healthcheck.check_heartbeat(str(path), 4, now=now)
    assert stale.exit_code == 1 and "5.0 s old (max 4 s)" in stale.message

    os.utime(path, (now + 3600, now + 3600))  # clock stepped back: must not be "eternal"
    future = healthcheck.check_heartbeat(str(path), 30, now=now)
    assert future.exit_code == 1 and "3600.0 s in the future" in future.message

    os.utime(path, (now + 0.5, now + 0.5))  # within the tolerance for timestamp granularity
    assert healthcheck.check_heartbeat(str(path), 30, now=now).exit_code == 0


def test_heartbeat_bad_max_age_is_misconfigured(tmp_path: Path) -> None:
    assert healthcheck.check_heartbeat(str(tmp_path), 0).exit_code == 2
    assert healthcheck.check_heartbeat(str(tmp_path), float("nan")).exit_code == 2


def test_heartbeat_cli_exit_codes_and_env_default(tmp_path: Path) -> None:
    path = tmp_path / "hb"
    rc, out, _, _ = run_cli("healthcheck", "heartbeat", "--file", str(path))
    assert rc == 1 and out.startswith("unhealthy: no heartbeat file")
    path.touch()
    rc, out, _, _ = run_cli("healthcheck", "heartbeat", env={config.ENV_HEARTBEAT_FILE: str(path)})
    assert rc == 0 and out.startswith("healthy: heartbeat is 0.")
    assert out.count("\n") == 1  # one short line
    old = time.time() - 100
    os.utime(path, (old, old))
    rc, out, _, _ = run_cli("healthcheck", "heartbeat", "--file", str(path), "--max-age", "60")
    assert rc == 1 and "old (max 60 s)" in out
    rc, _, err, _ = run_cli("healthcheck", "heartbeat", "--max-age", "-1")
    assert rc == 2 and "must be greater than 0" in err


@pytest.mark.parametrize(
    "code",
    [
        "from toolkit.cli import main; rc = main(['healthcheck', 'heartbeat', '--file', PATH])",
        "from toolkit.healthcheck import main; rc = main(['heartbeat', '--file', PATH])",
    ],
    ids=["celery-ecs", "healthcheck-main"],
)
def test_heartbeat_mode_imports_nothing_heavy(tmp_path: Path, code: str) -> None:
    path = tmp_path / "hb"
    path.touch()
    code = code.replace("PATH", repr(str(path))) + (
        "\nimport sys\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'celery', 'kombu', 'boto3', 'botocore', 'redis', 'billiard', 'amqp'} "
        "or m in {'toolkit.config', 'toolkit.heartbeat', 'tomllib', 'dataclasses'})\n"
        "print(rc, heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "0 []"


# --- ping mode without a worker ----------------------------------------------------------------


@pytest.mark.redis
def test_ping_mode_imports_kombu_but_not_celery(unique: str) -> None:
    code = (
        "import sys\n"
        "from toolkit.cli import main\n"
        f"rc = main(['healthcheck', 'ping', '--broker', {REDIS_BROKER!r}, "
        f"'--node', 'nobody-{unique}@x', '--timeout', '0.5'])\n"
        "print(rc, 'kombu' in sys.modules, sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'celery', 'boto3', 'botocore'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "1 True []"


def test_ping_without_broker_url_is_misconfigured() -> None:
    env = {config.ENV_BROKER_URL: "", config.ENV_BROKER_URL_FALLBACK: ""}
    rc, out, _, _ = run_cli("healthcheck", "ping", "--node", "celery@x", env=env)
    assert rc == 2
    assert out == "misconfigured: no broker URL: pass --broker or set CELERY_ECS_BROKER_URL\n"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:notaport/2", "malformed broker URL"),
        ("127.0.0.1:6379", "malformed broker URL"),
        ("ftp://127.0.0.1/", "unsupported broker URL scheme 'ftp'"),
        ("redis:///2", "malformed broker URL: no host"),
    ],
)
def test_ping_malformed_url_is_misconfigured(url: str, expected: str) -> None:
    result = healthcheck.ping(url, "celery@x", 1)
    assert result.exit_code == 2 and expected in result.message


def test_ping_node_name_must_have_host() -> None:
    result = healthcheck.ping(REDIS_BROKER, "justaname", 1)
    assert result.exit_code == 2 and "NAME@HOST" in result.message


def test_ping_broker_down_is_unhealthy_fast_and_never_prints_the_password() -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/2"
    rc, out, err, took = run_cli("healthcheck", "ping", "--broker", url, "--node", "celery@x")
    assert rc == 1
    assert out.startswith("unhealthy: broker unreachable at redis://:***@127.0.0.1:")
    assert "s3cret-pw" not in out + err
    assert took < 3.0  # refused connection: one attempt, no retry loop


def test_ping_wrong_rabbitmq_password_is_misconfigured() -> None:
    url = "amqp://guest:not-the-password@127.0.0.1:5672//"
    rc, out, err, _ = run_cli("healthcheck", "ping", "--broker", url, "--node", "celery@x")
    assert rc == 2
    assert out == "misconfigured: broker refused credentials at amqp://guest:***@127.0.0.1:5672//\n"
    assert "not-the-password" not in out + err


def test_ping_unknown_node_is_unhealthy_with_clear_message(unique: str) -> None:
    node = f"nobody-{unique}@nowhere"
    rc, out, _, took = run_cli(
        "healthcheck", "ping", "--broker", REDIS_BROKER, "--node", node, "--timeout", "1"
    )
    assert rc == 1
    assert out.startswith(f"unhealthy: no reply from {node} within 1 s")
    assert "--node" in out
    assert took < 4.0


def test_ping_node_defaults_to_celery_at_hostname() -> None:
    assert healthcheck.default_node({"HOSTNAME": "ip-10-0-1-5.ec2.internal"}) == (
        "celery@ip-10-0-1-5.ec2.internal"
    )


# --- real workers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Worker]]:
    """A prefork and a solo worker on Redis, concurrency 1, started together."""
    pool = WorkerPool(tmp_path_factory.mktemp("hc-workers"), os.urandom(4).hex())
    try:
        started = {
            "prefork": pool.start(pool="prefork", name="prefork", wait=False),
            "solo": pool.start(pool="solo", name="solo", wait=False),
        }
        for worker in started.values():
            worker.wait_ready()
        yield started
    finally:
        pool.close()


def _ping(worker: Worker, timeout: float = 2.0) -> tuple[int, str, float]:
    rc, out, _, took = run_cli(
        "healthcheck", "ping", "--broker", worker.broker, "--node", worker.node,
        "--timeout", str(timeout),
    )
    return rc, out, took


def _heartbeat(worker: Worker, max_age: float = 2.0) -> tuple[int, str]:
    rc, out, _, _ = run_cli(
        "healthcheck", "heartbeat", "--file", str(worker.heartbeat_file), "--max-age", str(max_age)
    )
    return rc, out


def _wait_task_running(worker: Worker) -> None:
    client = redis.Redis.from_url(REDIS_BROKER)
    try:
        assert wait_for(
            lambda: any(b.node == worker.node and b.active >= 1 for b in read_registry(client)),
            timeout=15,
        ), worker.log()[-2000:]
    finally:
        client.close()


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["prefork", "solo"])
def test_healthy_worker_answers_both_modes(workers: dict[str, Worker], kind: str) -> None:
    worker = workers[kind]
    rc, out, took = _ping(worker, timeout=10)
    assert rc == 0, out
    assert out.startswith(f"healthy: {worker.node} answered ping in ")
    assert took < 5.0  # returned on the reply, not after the 10 s timeout
    rc, out = _heartbeat(worker)
    assert rc == 0 and out.startswith("healthy: heartbeat is "), out


@pytest.mark.redis
def test_busy_prefork_worker_is_not_a_false_kill(workers: dict[str, Worker]) -> None:
    worker = workers["prefork"]
    send_task(worker.broker, worker.queue, "hc.sleep", 6)
    _wait_task_running(worker)  # the only pool process is busy for 6 s
    rc, out, _ = _ping(worker)
    assert rc == 0, out  # the main process answers the control channel
    time.sleep(2.5)  # longer than --max-age: the loop must have kept beating
    assert _heartbeat(worker)[0] == 0


@pytest.mark.redis
def test_busy_solo_worker_fails_ping_but_keeps_heartbeat(workers: dict[str, Worker]) -> None:
    """The documented solo-pool behaviour: the task runs in the loop, so ping cannot answer;
    the heartbeat keeps beating from a helper thread while the task runs."""
    worker = workers["solo"]
    send_task(worker.broker, worker.queue, "hc.sleep", 10)
    _wait_task_running(worker)
    rc, out, _ = _ping(worker, timeout=1.5)
    assert rc == 1 and "no reply" in out
    time.sleep(2.5)
    rc, out = _heartbeat(worker)
    assert rc == 0, out
    _wait_task_running(worker)  # still inside the task: the helper thread did that beat


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["prefork", "solo"])
def test_frozen_worker_is_unhealthy_then_recovers(workers: dict[str, Worker], kind: str) -> None:
    worker = workers[kind]
    assert wait_for(lambda: _heartbeat(worker)[0] == 0, timeout=15)  # a busy test may precede
    worker.freeze()
    try:
        rc, out, took = _ping(worker, timeout=2)
        assert rc == 1 and f"no reply from {worker.node} within 2 s" in out
        assert took < 5.0
        time.sleep(max(0.0, 2.5 - took))
        rc, out = _heartbeat(worker)
        assert rc == 1 and "old (max 2 s)" in out
    finally:
        worker.thaw()
    assert wait_for(lambda: _heartbeat(worker)[0] == 0, timeout=10)


@pytest.mark.rabbitmq
def test_rabbitmq_worker_healthy_unknown_and_frozen(tmp_path: Path, unique: str) -> None:
    pool = WorkerPool(tmp_path, unique)
    try:
        worker = pool.start(broker=RABBITMQ_URL, name="rabbit")
        rc, out, took = _ping(worker, timeout=10)
        assert rc == 0 and out.startswith(f"healthy: {worker.node} answered"), out
        assert took < 5.0
        assert _heartbeat(worker)[0] == 0

        rc, out, _, _ = run_cli(
            "healthcheck", "ping", "--broker", RABBITMQ_URL, "--node",
            f"other-{unique}@127.0.0.1", "--timeout", "1",
        )
        assert rc == 1 and f"no reply from other-{unique}@127.0.0.1" in out

        worker.freeze()
        try:
            rc, out, _ = _ping(worker, timeout=2)
            assert rc == 1 and "no reply" in out
        finally:
            worker.thaw()
        rc, out, _ = _ping(worker, timeout=10)
        assert rc == 0, out
    finally:
        pool.close()


def _redis_server(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_for(lambda: port_open("127.0.0.1", port), timeout=5)
    return proc


@pytest.mark.redis
def test_broker_outage_documented_outcome(tmp_path: Path, unique: str) -> None:
    """Broker down: ping says "broker unreachable" (1) at once, the heartbeat goes stale (1)
    because the worker's loop stops while it reconnects, and both recover with the broker."""
    port = free_port()
    server = _redis_server(port)
    pool = WorkerPool(tmp_path, unique)
    try:
        worker = pool.start(broker=f"redis://127.0.0.1:{port}/0", name="outage")
        assert _ping(worker)[0] == 0
        server.terminate()
        server.wait(10)
        rc, out, took = _ping(worker)
        assert rc == 1 and out.startswith(f"unhealthy: broker unreachable at redis://127.0.0.1:{port}")
        assert took < 3.0
        assert wait_for(lambda: _heartbeat(worker)[0] == 1, timeout=10)
        assert worker.proc.poll() is None  # the worker itself keeps retrying

        server = _redis_server(port)
        assert wait_for(lambda: _heartbeat(worker)[0] == 0, timeout=20), worker.log()[-2000:]
        assert _ping(worker)[0] == 0
    finally:
        pool.close()
        server.kill()
        server.wait(10)

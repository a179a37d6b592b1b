"""The container probe: heartbeat mode (file age) and ping mode, against real Celery workers.

Workers are real ``celery worker`` subprocesses on the real Redis (db 2) and RabbitMQ; every
probe runs as ECS runs it, as the ``celery-ecs`` console script in a fresh process.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RABBITMQ_URL, free_port, port_open
from tests.helpers_workers import (
    REDIS_BROKER,
    REPO,
    Worker,
    WorkerPool,
    registry_entry,
    run_cli,
    send_task,
    wait_for,
    wait_idle,
)
from toolkit import env
from toolkit.worker import healthcheck

# --- heartbeat mode: pure file checks --------------------------------------------------------


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
    # mtime granularity and float rounding may make it 4.9 or 5.1: the format is the point
    assert fresh.exit_code == 0 and re.fullmatch(r"heartbeat is \d+\.\d s old \(max 30 s\)",
                                                 fresh.message), fresh.message

    stale = healthcheck.check_heartbeat(str(path), 4, now=now)
    assert stale.exit_code == 1 and re.search(r"\d+\.\d s old \(max 4 s\)", stale.message)

    os.utime(path, (now + 3600, now + 3600))  # clock stepped back: must not be "eternal"
    future = healthcheck.check_heartbeat(str(path), 30, now=now)
    assert future.exit_code == 1 and "3600.0 s in the future" in future.message

    os.utime(path, (now + 0.5, now + 0.5))  # within the tolerance for timestamp granularity
    assert healthcheck.check_heartbeat(str(path), 30, now=now).exit_code == 0


def test_heartbeat_bad_max_age_is_misconfigured(tmp_path: Path) -> None:
    assert healthcheck.check_heartbeat(str(tmp_path), 0).exit_code == 2
    assert healthcheck.check_heartbeat(str(tmp_path), float("nan")).exit_code == 2


def test_heartbeat_path_that_is_not_a_regular_file_is_misconfigured(tmp_path: Path) -> None:
    """`--file /tmp` used to count as healthy: a directory's mtime changes whenever anything
    in it does, so it proves nothing about the worker."""
    result = healthcheck.check_heartbeat(str(tmp_path), 30)
    assert (result.exit_code, result.message) == (
        2, f"heartbeat path {tmp_path} is not a regular file"
    )
    rc, out, _, _ = run_cli("healthcheck", "heartbeat", "--file", "/tmp")
    assert (rc, out) == (2, "misconfigured: heartbeat path /tmp is not a regular file\n")


def test_heartbeat_cli_exit_codes_and_env_default(tmp_path: Path) -> None:
    path = tmp_path / "hb"
    rc, out, _, _ = run_cli("healthcheck", "heartbeat", "--file", str(path))
    assert rc == 1 and out.startswith("unhealthy: no heartbeat file")
    path.touch()
    rc, out, _, _ = run_cli("healthcheck", "heartbeat", env={env.ENV_HEARTBEAT_FILE: str(path)})
    assert rc == 0 and out.startswith("healthy: heartbeat is 0.")
    assert out.count("\n") == 1  # one short line
    old = time.time() - 100
    os.utime(path, (old, old))
    rc, out, _, _ = run_cli("healthcheck", "heartbeat", "--file", str(path), "--max-age", "60")
    assert rc == 1 and "old (max 60 s)" in out
    rc, out, err, _ = run_cli("healthcheck", "heartbeat", "--max-age", "-1")
    assert rc == 2 and "must be greater than 0" in err
    assert out == "misconfigured: argument --max-age: must be greater than 0, got '-1'\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "misconfigured: the following arguments are required: MODE\n"),
        (("heartbeat", "--bogus"), "misconfigured: unrecognized arguments: --bogus\n"),
        (("ping", "--timeout", "x"), "misconfigured: argument --timeout: expected a number of "
                                     "seconds, got 'x'\n"),
        (("nomode",), None),
    ],
)
def test_argument_errors_print_one_line_on_stdout(args: tuple[str, ...], expected: str) -> None:
    rc, out, err, _ = run_cli("healthcheck", *args)
    assert rc == 2 and "usage:" in err
    assert out.count("\n") == 1 and out.startswith("misconfigured: ")
    if expected is not None:
        assert out == expected


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
    blank = {env.ENV_BROKER_URL: "", env.ENV_BROKER_URL_FALLBACK: ""}
    rc, out, _, _ = run_cli("healthcheck", "ping", "--node", "celery@x", env=blank)
    assert rc == 2
    assert out == "misconfigured: no broker URL: pass --broker or set CELERY_ECS_BROKER_URL\n"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:notaport/2", "malformed broker URL"),
        ("127.0.0.1:6379", "malformed broker URL"),
        ("ftp://127.0.0.1/", "unsupported broker URL scheme 'ftp'"),
        ("redis:///2", "malformed broker URL redis:///2: no host"),
        # sentinel:// needs a master name the probe cannot be given: refused up front
        ("sentinel://127.0.0.1:26379", "unsupported broker URL scheme 'sentinel'"),
        ("redis://127.0.0.1:6379;redis://127.0.0.1:6380/0", "a ';' failover list"),
        # a value kombu/redis-py reject while connecting (ValueError): misconfigured, not down
        ("redis://127.0.0.1:6379/notadb", "cannot use broker URL redis://127.0.0.1:6379/notadb"),
    ],
)
def test_ping_malformed_url_is_misconfigured(url: str, expected: str) -> None:
    result = healthcheck.ping(url, "celery@x", 1)
    assert result.exit_code == 2 and expected in result.message, result


# Unencoded '/', '?', '#' or '@' in a password: urlsplit's error quotes the text it choked on
# ("Port could not be cast to integer value as 'Secr3tPart'"), i.e. part of the password.
@pytest.mark.parametrize("sep", ["/", "?", "#", "@"])
@pytest.mark.parametrize("user", ["", "guest"])
def test_ping_never_prints_any_part_of_an_unencoded_password(sep: str, user: str) -> None:
    head, tail = "Secr3tPart", "9tailPiece"
    for url in (
        f"redis://{user}:{head}{sep}{tail}@127.0.0.1:6379/0",
        f"redis://{user}:4321{sep}{tail}@127.0.0.1:6379/0",  # 4321 parses as a port
        f"amqp://{user}:{head}{sep}{tail}@127.0.0.1:5672//",
    ):
        result = healthcheck.ping(url, "celery@x", 0.5)
        # with '@' the URL parses (the last '@' ends the password): whatever the broker then
        # says, the password is not printed
        assert result.exit_code == 2 or sep == "@", (url, result)
        for piece in (head, tail, "4321"):
            assert piece not in result.message, (url, result)
    rc, out, err, _ = run_cli(
        "healthcheck", "ping", "--broker", f"redis://{user}:{head}{sep}{tail}@127.0.0.1:6379/0",
        "--node", "celery@x", "--timeout", "0.5",
    )
    assert out.count("\n") == 1 and (rc == 2 or sep == "@"), out
    assert head not in out + err and tail not in out + err


def test_ping_node_name_must_have_host() -> None:
    result = healthcheck.ping(REDIS_BROKER, "justaname", 1)
    assert result.exit_code == 2 and "NAME@HOST" in result.message


def test_ping_broker_down_is_unhealthy_fast_and_never_prints_the_password() -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/2"
    rc, out, err, took = run_cli("healthcheck", "ping", "--broker", url, "--node", "celery@x")
    assert rc == 1
    assert out.startswith("unhealthy: broker unreachable at redis://:***@127.0.0.1:")
    assert "s3cret-pw" not in out + err
    assert took < 8.0  # refused connection: one attempt, no retry loop (generous for slow CI)


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
    assert took < 8.0


def test_ping_node_defaults_to_celery_at_gethostname_like_celery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery.utils.nodenames import default_nodename

    # Celery names the node after socket.gethostname(), whatever $HOSTNAME says
    assert healthcheck.default_node({"HOSTNAME": "something-else"}) == (
        f"celery@{socket.gethostname()}"
    )
    assert healthcheck.default_node({}) == default_nodename(None)
    monkeypatch.setattr(socket, "gethostname", lambda: "")
    assert healthcheck.default_node({"HOSTNAME": "ip-10-0-1-5.ec2.internal"}) == (
        "celery@ip-10-0-1-5.ec2.internal"
    )


@pytest.mark.redis
def test_combined_mode_without_a_worker(tmp_path: Path, unique: str) -> None:
    """ping --heartbeat-file: no reply + fresh file -> 0, no reply + stale/absent file -> 1,
    a misconfigured ping is not hidden by a fresh file -> 2."""
    path = tmp_path / "hb"
    node = f"nobody-{unique}@x"
    args = ("healthcheck", "ping", "--broker", REDIS_BROKER, "--node", node, "--timeout", "0.5",
            "--heartbeat-file", str(path), "--max-age", "5")
    rc, out, _, _ = run_cli(*args)
    assert rc == 1 and out.startswith(f"unhealthy: no reply from {node}")
    assert "no heartbeat file" in out and out.count("\n") == 1
    path.touch()
    rc, out, _, _ = run_cli(*args)
    assert rc == 0 and out.startswith("healthy: no ping reply, but heartbeat is "), out
    old = time.time() - 60
    os.utime(path, (old, old))
    assert run_cli(*args)[0] == 1
    path.touch()
    result = healthcheck.ping_or_heartbeat("ftp://127.0.0.1/", node, 0.5, str(path), 5)
    assert result.exit_code == 2
    assert healthcheck.ping_or_heartbeat(REDIS_BROKER, node, 0.5, str(tmp_path), 5).exit_code == 2


_ECS_LIMITS = {
    "interval": (5, 300), "timeout": (2, 60), "retries": (1, 10), "startPeriod": (0, 300)
}


def test_docs_ecs_health_check_snippets_are_within_ecs_limits() -> None:
    text = (REPO / "docs" / "healthcheck.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    snippets = []
    for block in blocks:
        if '"healthCheck"' not in block:
            continue
        data = json.loads("{" + block.strip() + "}")
        snippets.append(data["healthCheck"])
    assert len(snippets) >= 2  # heartbeat mode and the combined ping mode
    for check in snippets:
        cmd = check["command"]
        assert cmd[0] == "CMD" and cmd[1:3] == ["celery-ecs", "healthcheck"], cmd
        for key, (low, high) in _ECS_LIMITS.items():
            assert isinstance(check[key], int) and low <= check[key] <= high, (key, check)
        # the probe's own budget must fit inside the ECS timeout
        if "--timeout" in cmd:
            assert float(cmd[cmd.index("--timeout") + 1]) + 0.5 <= check["timeout"]
        if "--max-age" in cmd:  # several beats (default interval 5 s) per --max-age
            assert float(cmd[cmd.index("--max-age") + 1]) >= 3 * 5


# --- real workers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Worker]]:
    """A prefork and a solo worker on Redis, concurrency 1, started together. Shared by the
    module's tests: each test waits for its worker to be idle first (see :func:`_idle`)."""
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


def _idle(worker: Worker) -> Worker:
    """The shared worker, once no task from an earlier test is running and it beats again."""
    wait_idle(worker)
    assert wait_for(lambda: _heartbeat(worker)[0] == 0, timeout=15), worker.log()[-2000:]
    return worker


def _ping(worker: Worker, timeout: float = 2.0, *extra: str) -> tuple[int, str, float]:
    rc, out, _, took = run_cli(
        "healthcheck", "ping", "--broker", worker.broker, "--node", worker.node,
        "--timeout", str(timeout), *extra,
    )
    return rc, out, took


def _heartbeat(worker: Worker, max_age: float = 2.0) -> tuple[int, str]:
    rc, out, _, _ = run_cli(
        "healthcheck", "heartbeat", "--file", str(worker.heartbeat_file), "--max-age", str(max_age)
    )
    return rc, out


def _wait_task_running(worker: Worker, timeout: float = 15.0) -> None:
    assert wait_for(
        lambda: (b := registry_entry(worker.node)) is not None and b.active >= 1,
        timeout=timeout,
    ), worker.log()[-2000:]


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["prefork", "solo"])
def test_healthy_worker_answers_both_modes(workers: dict[str, Worker], kind: str) -> None:
    worker = _idle(workers[kind])
    rc, out, took = _ping(worker, timeout=10)
    assert rc == 0, out
    assert out.startswith(f"healthy: {worker.node} answered ping in ")
    assert took < 8.0  # returned on the reply, not after the 10 s timeout
    rc, out = _heartbeat(worker)
    assert rc == 0 and out.startswith("healthy: heartbeat is "), out


@pytest.mark.redis
def test_busy_prefork_worker_is_not_a_false_kill(workers: dict[str, Worker]) -> None:
    worker = _idle(workers["prefork"])
    send_task(worker.broker, worker.queue, "hc.sleep", 6)
    _wait_task_running(worker)  # the only pool process is busy for 6 s
    rc, out, _ = _ping(worker)
    assert rc == 0, out  # the main process answers the control channel
    # The loop keeps beating while the only child is busy: the file's mtime moves on, and the
    # registry entry written by those beats still says the task is running.
    first = worker.heartbeat_file.stat().st_mtime
    time.sleep(2.0)
    assert worker.heartbeat_file.stat().st_mtime >= first + 1.0
    entry = registry_entry(worker.node)
    assert entry is not None and entry.active == 1 and entry.updated >= first + 1.0
    assert _heartbeat(worker)[0] == 0


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["prefork", "solo"])
def test_frozen_worker_is_unhealthy_then_recovers(workers: dict[str, Worker], kind: str) -> None:
    worker = _idle(workers[kind])
    worker.freeze()
    try:
        rc, out, took = _ping(worker, timeout=2)
        assert rc == 1 and f"no reply from {worker.node} within 2 s" in out
        assert took < 8.0
        time.sleep(max(0.0, 2.5 - took))
        rc, out = _heartbeat(worker)
        assert rc == 1 and "old (max 2 s)" in out
    finally:
        worker.thaw()
    assert wait_for(lambda: _heartbeat(worker)[0] == 0, timeout=15)


@pytest.mark.redis
def test_beats_come_from_the_event_loop_not_a_thread(workers: dict[str, Worker]) -> None:
    """SIGUSR2 makes tests/hc_app.py block the main thread (the event loop) for 4 s while the
    process is neither stopped nor busy with a task: the heartbeat must go stale, because a
    timer thread or helper thread that kept beating would hide a blocked loop."""
    both = [_idle(workers["prefork"]), _idle(workers["solo"])]
    blocked_at = time.monotonic()
    for worker in both:
        worker.block_loop()
    for worker in both:
        assert wait_for(lambda w=worker: _heartbeat(w, max_age=1.5)[0] == 1, timeout=3.5), (
            worker.node, _heartbeat(worker, max_age=1.5)
        )
        assert worker.proc.poll() is None and not worker.stopped()
    for worker in both:  # a new beat (younger than the stale age seen above) once unblocked
        assert wait_for(lambda w=worker: _heartbeat(w, max_age=1.0)[0] == 0, timeout=15)
        assert time.monotonic() - blocked_at > 3.0  # not before the 4 s block ended


@pytest.fixture
def solo_pair(tmp_path: Path, unique: str) -> Iterator[tuple[Worker, Worker]]:
    """Two fresh solo workers (their long tasks must not hold up the shared ones): one with the
    default busy cap, one with CELERY_ECS_HEARTBEAT_MAX_BUSY=2."""
    pool = WorkerPool(tmp_path, unique)
    try:
        default = pool.start(pool="solo", name="solo-long", wait=False)
        capped = pool.start(pool="solo", name="solo-cap", wait=False,
                            env={"CELERY_ECS_HEARTBEAT_MAX_BUSY": "2"})
        default.wait_ready()
        capped.wait_ready()
        yield default, capped
    finally:
        pool.close()


@pytest.mark.redis
def test_busy_solo_worker_ping_heartbeat_combined_and_busy_cap(
    solo_pair: tuple[Worker, Worker],
) -> None:
    """Solo pool, long task: plain ping gets no reply (the task runs in the loop); the
    heartbeat stays fresh from the helper thread, so heartbeat mode and the combined mode
    (ping --heartbeat-file) say healthy. With a 2 s busy cap the same task goes stale while
    the process is alive: a hung task is not healthy forever."""
    worker, capped = solo_pair
    send_task(worker.broker, worker.queue, "hc.sleep", 30)
    send_task(capped.broker, capped.queue, "hc.sleep", 10)
    _wait_task_running(worker)
    _wait_task_running(capped)
    started = time.monotonic()
    rc, out, _ = _ping(worker, timeout=1.5)
    assert rc == 1 and "no reply" in out
    rc, out, _ = _ping(worker, 1.5, "--heartbeat-file", str(worker.heartbeat_file),
                       "--max-age", "2")
    assert rc == 0 and out.startswith("healthy: no ping reply, but heartbeat is "), out

    # the capped worker: stale after its 2 s cap plus --max-age, alive and not stopped
    assert wait_for(lambda: _heartbeat(capped, max_age=1.5)[0] == 1, timeout=8), capped.log()
    assert capped.proc.poll() is None and not capped.stopped()
    entry = registry_entry(capped.node)
    assert entry is None or entry.active == 1  # still inside the task (or its entry expired)
    assert capped.log().count("celery-ecs heartbeat: solo pool:") == 1  # the startup warning

    time.sleep(max(0.0, 2.5 - (time.monotonic() - started)))
    rc, out = _heartbeat(worker)  # > --max-age into the task: the helper thread beat
    assert rc == 0, out
    _wait_task_running(worker, timeout=1)  # and the 30 s task is still running


@pytest.mark.rabbitmq
def test_rabbitmq_worker_healthy_unknown_and_frozen(tmp_path: Path, unique: str) -> None:
    pool = WorkerPool(tmp_path, unique)
    try:
        worker = pool.start(broker=RABBITMQ_URL, name="rabbit")
        rc, out, took = _ping(worker, timeout=10)
        assert rc == 0 and out.startswith(f"healthy: {worker.node} answered"), out
        assert took < 8.0
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
        assert took < 8.0
        assert wait_for(lambda: _heartbeat(worker)[0] == 1, timeout=10)
        assert worker.proc.poll() is None  # the worker itself keeps retrying

        server = _redis_server(port)
        # the worker's reconnect backoff grows (up to ~30 s between attempts on a loaded box)
        assert wait_for(lambda: _heartbeat(worker)[0] == 0, timeout=45), worker.log()[-2000:]
        assert _ping(worker)[0] == 0
    finally:
        pool.close()
        server.kill()
        server.wait(10)

"""celery beat's heartbeat and ``celery-ecs healthcheck beat``.

The probe's rules on files it is handed; the beater on fakeredis; then real ``celery beat``
processes (``tests/beat_app.py``) on the real Redis (db 2, a key prefix of their own): frozen and
thawed with SIGSTOP/SIGCONT, blocked in their main thread (a heartbeat from a side thread would
keep beating), and with custom schedulers (their own ``tick``, and the mixin without
``toolkit.install``). Every probe runs as ECS runs it: the console script in a fresh process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from tests.helpers_workers import CELERY, REDIS_BROKER, REPO, run_cli, wait_for
from toolkit.beatregistry import (
    BeatTick,
    beat_index_key,
    beat_key,
    read_ticks,
)
from toolkit.env import ENV_BEAT_FILE, default_beat_file
from toolkit.worker.beatbeat import BeatBeater, attach
from toolkit.worker.beatcheck import check_beat

# --- the probe on files ------------------------------------------------------------------------


def write_tick(path: Path, at: float, interval: float = 5.0) -> None:
    path.write_text(json.dumps({"instance": "h:1", "at": at, "interval": interval}))


def test_fresh_stale_and_future_ticks_with_a_given_max_age(tmp_path: Path) -> None:
    path, now = tmp_path / "beat", 1_000_000.0
    write_tick(path, now - 4)
    assert check_beat(str(path), 5, now=now).status == "healthy"
    result = check_beat(str(path), 3, now=now)
    assert (result.status, result.exit_code) == ("unhealthy", 1)
    assert result.message == "last beat tick 4.0 s ago (max 3 s)"
    write_tick(path, now + 10)
    assert "in the future" in check_beat(str(path), 30, now=now).message
    assert check_beat(str(path), 30, now=now).status == "unhealthy"


def test_default_limit_is_three_announced_intervals_at_least_thirty_seconds(
    tmp_path: Path,
) -> None:
    path, now = tmp_path / "beat", 1_000_000.0
    write_tick(path, now - 59, interval=20)  # limit 60 s
    assert check_beat(str(path), now=now).status == "healthy"
    write_tick(path, now - 61, interval=20)
    assert check_beat(str(path), now=now).message == (
        "last beat tick 61.0 s ago (max 60 s: 3 x its 20 s interval, at least 30 s)")
    write_tick(path, now - 29, interval=1)  # 3 s would kill a healthy beat: 30 s floor
    assert check_beat(str(path), now=now).status == "healthy"
    write_tick(path, now - 31, interval=1)
    assert check_beat(str(path), now=now).status == "unhealthy"


@pytest.mark.parametrize("content", [
    b"not json at all", b"\xff\xfe", b"[1, 2]", b'{"interval": 5}', b'{"at": "soon"}',
    b'{"at": 1e999, "interval": 1}', b'{"at": true, "interval": 1}', b"", b"x" * 70000,
])
def test_a_file_that_is_not_a_beat_heartbeat_is_stale_not_a_crash(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "beat"
    path.write_bytes(content)
    result = check_beat(str(path), 30)
    assert result.status == "unhealthy" and result.exit_code == 1
    assert result.message.endswith(": treated as stale"), result.message


def test_absent_file_directory_and_bad_max_age(tmp_path: Path) -> None:
    absent = check_beat(str(tmp_path / "none"))
    assert absent.status == "unhealthy" and "no beat file at" in absent.message
    assert check_beat(str(tmp_path)).status == "misconfigured"
    write_tick(tmp_path / "beat", time.time())
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        assert check_beat(str(tmp_path / "beat"), bad).status == "misconfigured"


def test_default_path_is_the_variable_else_the_temp_folder() -> None:
    assert default_beat_file({ENV_BEAT_FILE: "/x/b"}) == "/x/b"
    assert default_beat_file({"TMPDIR": "/scratch"}) == "/scratch/celery-ecs-beat"
    assert default_beat_file({}) == "/tmp/celery-ecs-beat"


@pytest.mark.parametrize("value,expected", [
    ("x", "misconfigured: argument --max-age: expected a number of seconds, got 'x'\n"),
    ("0", "misconfigured: argument --max-age: must be greater than 0, got '0'\n"),
    ("-3", "misconfigured: argument --max-age: must be greater than 0, got '-3'\n"),
    ("nan", "misconfigured: argument --max-age: must be greater than 0, got 'nan'\n"),
    ("inf", "misconfigured: argument --max-age: must be a finite number of seconds, got 'inf'\n"),
    ("", "misconfigured: argument --max-age: expected a number of seconds, got ''\n"),
])
def test_malformed_max_age_exits_2_with_one_line(
    tmp_path: Path, value: str, expected: str
) -> None:
    write_tick(tmp_path / "beat", time.time())
    rc, out, err, _ = run_cli("healthcheck", "beat", "--file", str(tmp_path / "beat"),
                              "--max-age", value)
    assert (rc, out) == (2, expected)
    assert "usage:" in err


def test_cli_exit_codes_and_the_env_default(tmp_path: Path) -> None:
    path = tmp_path / "beat"
    env = {ENV_BEAT_FILE: str(path)}
    assert run_cli("healthcheck", "beat", env=env)[0] == 1  # no file yet
    write_tick(path, time.time())
    rc, out, _, _ = run_cli("healthcheck", "beat", env=env)
    assert rc == 0 and out.startswith("healthy: last beat tick "), out
    path.write_text("{broken")
    assert run_cli("healthcheck", "beat", env=env)[:2] == (
        1, f"unhealthy: beat file {path} is not a beat heartbeat (not JSON): treated as stale\n")


@pytest.mark.parametrize("code", [
    "from toolkit.cli import main; rc = main(['healthcheck', 'beat', '--file', PATH])",
    "from toolkit.healthcheck import main; rc = main(['beat', '--file', PATH])",
], ids=["celery-ecs", "healthcheck-main"])
def test_beat_mode_imports_nothing_heavy(tmp_path: Path, code: str) -> None:
    path = tmp_path / "beat"
    write_tick(path, time.time())
    code = code.replace("PATH", repr(str(path))) + (
        "\nimport sys\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'celery', 'kombu', 'boto3', 'botocore', 'redis', 'billiard', 'amqp'} "
        "or m in {'toolkit.config', 'toolkit.heartbeat', 'toolkit.beatregistry', 'tomllib', "
        "'dataclasses', 'tempfile'})\n"
        "print(rc, heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip().splitlines()[-1] == "0 []"


# --- the beater ----------------------------------------------------------------------------------


class FakeScheduler:
    max_interval = 300.0

    def __init__(self, sleeps: list[float]) -> None:
        self.sleeps = sleeps
        self.calls = 0

    def tick(self) -> float:
        self.calls += 1
        return self.sleeps.pop(0)


def test_every_tick_writes_the_file_and_the_registry_on_the_brokers_clock(
    tmp_path: Path,
) -> None:
    client = fakeredis.FakeRedis()
    beater = BeatBeater(file=str(tmp_path / "beat"), registry=client, prefix="p:",
                        instance="host:7", clock=lambda: 1000.0)  # a host clock far behind
    scheduler = FakeScheduler([2.5, 300.0])
    assert attach(scheduler, beater) is True
    assert attach(scheduler, beater) is False  # never wrapped twice
    assert scheduler.tick() == 2.5
    written = json.loads((tmp_path / "beat").read_text())
    assert (written["at"], written["interval"], written["max_interval"], written["scheduler"],
            written["instance"]) == (1000.0, 2.5, 300.0, "FakeScheduler", "host:7")
    ticks, now = read_ticks(client, "p:")
    assert [t.instance for t in ticks] == ["host:7"]
    assert ticks[0].beat_at is not None and abs(ticks[0].beat_at - now) < 5  # Redis TIME
    assert scheduler.tick() == 300.0 and beater.ticks == 2 and scheduler.calls == 2
    assert json.loads((tmp_path / "beat").read_text())["interval"] == 300.0


def test_an_unwritable_file_or_a_dead_registry_never_stops_the_tick(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Dead:
        def eval(self, *a: Any) -> Any:
            raise redis.ConnectionError("Connection refused")

    beater = BeatBeater(file=str(tmp_path / "missing-dir" / "beat"), registry=Dead())  # type: ignore[arg-type]
    scheduler = FakeScheduler([1.0, 1.0, 1.0])
    attach(scheduler, beater)
    for _ in range(3):
        assert scheduler.tick() == 1.0
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot write" in m for m in messages) == 1
    assert sum("registry write failed" in m for m in messages) == 1


def test_a_tick_that_raises_writes_no_beat(tmp_path: Path) -> None:
    class Broken:
        def tick(self) -> float:
            raise RuntimeError("schedule store locked")

    beater = BeatBeater(file=str(tmp_path / "beat"))
    scheduler = Broken()
    attach(scheduler, beater)
    with pytest.raises(RuntimeError):
        scheduler.tick()
    assert not (tmp_path / "beat").exists() and beater.ticks == 0


def test_registry_entries_that_are_not_ticks_are_skipped() -> None:
    client = fakeredis.FakeRedis()
    now = time.time()
    client.set(beat_key("bad"), "{not json")
    client.set(beat_key("nan"), json.dumps({"instance": "nan", "at": "x", "interval": 1}))
    client.set(beat_key("ok"), BeatTick("ok", now - 100, 5.0).to_json())
    client.zadd(beat_index_key(), {"bad": now, "nan": now, "ok": now - 100})
    ticks, _ = read_ticks(client)
    assert [t.instance for t in ticks] == ["ok"]


# --- real celery beat processes -----------------------------------------------------------------


@dataclass
class Beat:
    proc: subprocess.Popen[bytes]
    file: Path
    log_file: Path
    prefix: str

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def tick(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.file.read_text())
            return data
        except (FileNotFoundError, ValueError):
            return None

    def probe(self, max_age: float) -> tuple[int, str]:
        rc, out, _, _ = run_cli("healthcheck", "beat", "--file", str(self.file),
                                "--max-age", str(max_age))
        return rc, out

    def score(self) -> float | None:
        client = redis.Redis.from_url(REDIS_BROKER)
        try:
            value = client.zscore(beat_index_key(self.prefix), f"{_host()}:{self.proc.pid}")
            return None if value is None else float(value)
        finally:
            client.close()


def _host() -> str:
    import socket

    return socket.gethostname()


@contextlib.contextmanager
def running_beat(tmp_path: Path, *extra: str, install: bool = True) -> Iterator[Beat]:
    token = uuid.uuid4().hex[:8]
    prefix = f"beat-{token}:"
    beat_file, log_file = tmp_path / f"beat-{token}", tmp_path / f"beat-{token}.log"
    env = {**os.environ, "HC_BROKER": REDIS_BROKER, "HC_KEYPREFIX": prefix,
           "HC_QUEUE": f"beat-{token}", ENV_BEAT_FILE: str(beat_file),
           "BEAT_INSTALL": "1" if install else "0", "HC_BLOCK_SECONDS": "3",
           "PYTHONWARNINGS": "ignore"}
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [CELERY, "-A", "tests.beat_app", "beat", "--max-interval", "1",
             "-s", str(tmp_path / f"schedule-{token}"), "-l", "info", *extra],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    beat = Beat(proc, beat_file, log_file, prefix)
    try:
        assert wait_for(lambda: beat.tick() is not None or proc.poll() is not None, 30)
        assert proc.poll() is None, beat.log()[-3000:]
        yield beat
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        client = redis.Redis.from_url(REDIS_BROKER)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def _advances(beat: Beat, timeout: float = 10.0) -> bool:
    first = (beat.tick() or {}).get("at")
    return wait_for(lambda: (beat.tick() or {}).get("at") != first, timeout)


@pytest.mark.redis
def test_default_scheduler_frozen_and_thawed_against_the_probe(tmp_path: Path) -> None:
    with running_beat(tmp_path) as beat:
        assert _advances(beat), beat.log()[-2000:]
        tick = beat.tick()
        assert tick is not None and tick["scheduler"] == "PersistentScheduler"
        assert 0 <= tick["interval"] <= 1 and tick["max_interval"] == 1
        assert beat.probe(2)[0] == 0
        assert beat.score() is not None, "no beat registry entry"

        os.kill(beat.proc.pid, signal.SIGSTOP)
        frozen_at = beat.score()
        assert wait_for(lambda: beat.probe(1.5)[0] == 1, 15)
        rc, out = beat.probe(1.5)
        assert rc == 1 and out.startswith("unhealthy: last beat tick "), out
        assert beat.score() == frozen_at  # the registry stopped too

        os.kill(beat.proc.pid, signal.SIGCONT)
        assert wait_for(lambda: beat.probe(1.5)[0] == 0, 15), beat.log()[-2000:]
        after = beat.score()
        assert after is not None and frozen_at is not None and after > frozen_at


@pytest.mark.redis
def test_the_tick_beats_not_a_side_thread(tmp_path: Path) -> None:
    """SIGUSR2 blocks beat's main thread for 3 s between ticks while the process runs on."""
    with running_beat(tmp_path) as beat:
        assert _advances(beat) and beat.probe(1.5)[0] == 0
        os.kill(beat.proc.pid, signal.SIGUSR2)
        assert wait_for(lambda: beat.probe(1.5)[0] == 1, 10), "beats went on while blocked"
        assert beat.proc.poll() is None
        assert wait_for(lambda: beat.probe(1.5)[0] == 0, 10), beat.log()[-2000:]


@pytest.mark.redis
@pytest.mark.parametrize("scheduler,install", [
    ("tests.beat_app:MemoryScheduler", True),
    ("tests.beat_app:MixinScheduler", False),
    ("tests.beat_app:MixinScheduler", True),  # install and the mixin: one beat per tick
], ids=["custom-install", "mixin-alone", "mixin-and-install"])
def test_custom_schedulers_beat_at_every_tick(
    tmp_path: Path, scheduler: str, install: bool
) -> None:
    with running_beat(tmp_path, "-S", scheduler, install=install) as beat:
        assert _advances(beat), beat.log()[-2000:]
        tick = beat.tick()
        assert tick is not None and tick["scheduler"] == scheduler.rsplit(":", 1)[1]
        assert tick["pid"] == beat.proc.pid
        assert beat.probe(2)[0] == 0
        assert beat.score() is not None
        assert "could not attach" not in beat.log()
        # the mixin beats by itself: install does not wrap its tick a second time
        wrapped = "beats at every tick" in beat.log()
        assert wrapped is (install and "Mixin" not in scheduler), beat.log()[-2000:]

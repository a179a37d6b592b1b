"""`celery-ecs sandbox`, the README's main command, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

CLI = str(Path(sys.executable).parent / "celery-ecs")
pytestmark = pytest.mark.e2e


def run_sandbox(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run([CLI, "sandbox", "--cycles", "2", "--interval", "0.1", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_embedded_sandbox_shows_the_stuck_queue() -> None:
    proc = run_sandbox()
    assert proc.returncode == 0, proc.stderr
    assert "embedded Redis on redis://127.0.0.1:" in proc.stdout
    assert "emails      250" in proc.stdout and "critical: length 250 > 100" in proc.stdout
    # the drained queue moved between cycle 1 and 2, and CloudWatch (moto) has both datapoints
    assert "default      40" in proc.stdout and "default      25" in proc.stdout
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("QueueLength")
                and "default" in x)
    assert "min    25.0" in line and "max    40.0" in line and "datapoints 2" in line
    assert "werkzeug" not in proc.stderr


@pytest.mark.redis
def test_sandbox_on_a_real_redis_cleans_up() -> None:
    url = "redis://127.0.0.1:6379/3"
    proc = run_sandbox("--broker", url)
    assert proc.returncode == 0, proc.stderr
    assert "emails      250" in proc.stdout
    assert list(redis.Redis.from_url(url).scan_iter(match="sandbox:*")) == []

"""`celery-ecs sandbox`, the README's main command, as a user runs it: every scenario end to end
(real worker processes, moto, the real alarm handler, the local Slack), on the real Redis and,
for the stuck scenario, on the fakeredis fallback a bare machine gets.

Cost on 2 cores: ~35 s per stuck run (two: fakeredis, and real Redis pressed by hand), ~30 s
memory, ~20 s healthy, ~30 s long-task, ~30 s partial; spread over the xdist workers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

CLI = str(Path(sys.executable).parent / "celery-ecs")
REAL_REDIS = "redis://127.0.0.1:6379/3"
#: db 11 belongs to the remediation-off run alone, so that it can check the sandbox leaves nothing
#: behind while other sandbox tests run beside it (pytest-xdist) in db 3
OWN_REDIS = "redis://127.0.0.1:6379/11"
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def run_sandbox(tmp_path: Path, *args: str, bare: bool = False) -> tuple[
    subprocess.CompletedProcess[str], dict[str, Any], str
]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if bare:  # no redis-server on the PATH: the fakeredis fallback
        env["PATH"] = str(Path(sys.executable).parent)
    out, report = tmp_path / "sandbox.json", tmp_path / "report.html"
    proc = subprocess.run([CLI, "sandbox", "--json", str(out), "--report", str(report), *args],
                          capture_output=True, text=True, timeout=200, env=env, cwd=tmp_path)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text()), report.read_text()


def events(doc: dict[str, Any]) -> list[str]:
    return [e["event"] for e in doc["timeline"]]


def assert_stuck_story(proc: subprocess.CompletedProcess[str], doc: dict[str, Any],
                       report: str) -> None:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert set(doc) == {"scenario", "ok", "deployments", "report", "timeline"}
    assert doc["scenario"] == "stuck" and doc["ok"] is True and doc["deployments"] == 1
    names = events(doc)
    order = [names.index(e) for e in ("frozen", "alarm", "deployment", "recovered", "resolved")]
    assert order == sorted(order), names
    first = {e["event"]: e for e in reversed(doc["timeline"])}
    assert first["alarm"]["detail"] == "sandbox-worker-emails-WorkerStuck"
    assert first["resolved"]["detail"] == "sandbox-worker-emails-WorkerStuck"
    assert all(isinstance(e["t"], float | int) for e in doc["timeline"])
    # the screen told the story, and said what stands in for CloudWatch
    assert "local stand-in" in proc.stdout and "ALARM: sandbox-worker-emails-WorkerStuck" in \
        proc.stdout and "Resolved: sandbox-worker-emails-WorkerStuck" in proc.stdout
    assert "Forced a new deployment of `sandbox-cluster/worker-emails`" in proc.stdout
    assert re.search(r"freeze to deployment\s+\d+\.\d s", proc.stdout)
    # the report: inline SVG, one deployment marker per deployment, the Slack messages
    assert doc["report"].endswith("report.html")
    svg = report.split("<svg", 1)[1].split("</svg>")[0]
    assert "href" not in svg and "src=" not in report  # nothing fetched
    assert report.count('class="marker deployment"') == doc["deployments"] == 1
    assert report.count('class="marker alarm"') >= 1
    assert "ALARM: sandbox-worker-emails-WorkerStuck" in report
    assert "Resolved: sandbox-worker-emails-WorkerStuck" in report
    assert 'data-queue="emails"' in report and 'data-queue="reports"' in report
    assert "<script" not in report and "<link" not in report


def test_stuck_scenario_on_the_fakeredis_fallback(tmp_path: Path) -> None:
    """The README's demo on a bare machine: the whole stuck story, automatic remediation on.
    (The same story on a real Redis is the remediation-off run below, pressed by hand.)"""
    proc, doc, report = run_sandbox(tmp_path, bare=True)
    assert "embedded fakeredis" in proc.stdout
    assert_stuck_story(proc, doc, report)


@pytest.mark.redis
def test_memory_alarm_alerts_without_deployment(tmp_path: Path) -> None:
    proc, doc, report = run_sandbox(tmp_path, "--scenario", "memory", "--broker", REAL_REDIS)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert doc["ok"] is True and doc["deployments"] == 0
    names = events(doc)
    assert "deployment" not in names and names.index("memory") < names.index("alarm")
    alarms = [e["detail"] for e in doc["timeline"] if e["event"] == "alarm"]
    assert alarms == ["sandbox-worker-emails-MemoryHigh"]
    assert "ALARM: sandbox-worker-emails-MemoryHigh" in report
    assert report.count('class="marker deployment"') == 0


@pytest.mark.redis
def test_healthy_traffic_raises_nothing(tmp_path: Path) -> None:
    proc, doc, report = run_sandbox(tmp_path, "--scenario", "healthy", "--broker", REAL_REDIS,
                                    "--warmup", "3", "--healthy-for", "10")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert doc["ok"] is True and doc["deployments"] == 0
    assert not {"alarm", "deployment", "slack", "frozen"} & set(events(doc))
    assert "<svg" in report and "no message" in report


@pytest.mark.redis
def test_a_long_legitimate_task_raises_nothing(tmp_path: Path) -> None:
    """A -c 1 worker runs one task longer than stuck_after while work queues behind it: the
    verdict sees a busy worker, no alarm fires, nothing is redeployed."""
    proc, doc, report = run_sandbox(tmp_path, "--scenario", "long-task", "--broker", REAL_REDIS,
                                    "--warmup", "3")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert doc["scenario"] == "long-task" and doc["ok"] is True and doc["deployments"] == 0
    names = events(doc)
    assert names.index("long-task") < names.index("busy"), names
    assert not {"alarm", "deployment", "judged-stuck", "frozen"} & set(names)
    busy = next(e for e in doc["timeline"] if e["event"] == "busy")
    assert "worker busy, not stuck" in busy["detail"]


@pytest.mark.redis
def test_one_frozen_task_of_two_is_stopped_alone(tmp_path: Path) -> None:
    """worker-emails runs two tasks; one freezes. The verdict turns degraded, the WorkersStuck
    alarm fires, the real handler stops exactly that task (moto StopTask), the sandbox plays ECS
    replacing it, the service recovers, and nothing is redeployed."""
    proc, doc, report = run_sandbox(tmp_path, "--scenario", "partial", "--broker", REAL_REDIS,
                                    "--warmup", "3")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert doc["scenario"] == "partial" and doc["ok"] is True and doc["deployments"] == 0
    names = events(doc)
    order = [names.index(e) for e in ("frozen", "alarm", "task-stopped", "recovered",
                                      "resolved")]
    assert order == sorted(order), names
    first = {e["event"]: e for e in reversed(doc["timeline"])}
    assert first["alarm"]["detail"] == "sandbox-worker-emails-WorkersStuck"
    assert names.count("task-stopped") == 1 and "deployment" not in names
    assert "Stopped 1 stuck task(s) of `sandbox-cluster/worker-emails`" in proc.stdout


@pytest.mark.redis
def test_with_remediation_off_the_on_call_presses_redeploy_now(tmp_path: Path) -> None:
    """Issue 24: REMEDIATION=off, the handler only alerts; the alert carries "Redeploy now"; the
    sandbox's on-call presses it (a signed request to the real Slack actions handler, acknowledged
    first); the guards pass, one deployment, the service recovers, the thread says who did it.
    On a real Redis given with --broker, which the run leaves as it found it."""
    proc, doc, report = run_sandbox(tmp_path, "--remediation", "off", "--broker", OWN_REDIS)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert doc["scenario"] == "stuck" and doc["ok"] is True and doc["deployments"] == 1
    names = events(doc)
    order = [names.index(e) for e in ("frozen", "alarm", "pressed", "deployment", "recovered",
                                      "resolved")]
    assert order == sorted(order), names
    assert names.count("pressed") == 1
    pressed = next(e for e in doc["timeline"] if e["event"] == "pressed")
    assert '"Redeploy now"' in pressed["detail"] and "answered 200 in" in pressed["detail"]
    answered = re.search(r"answered 200 in (\d+) ms", pressed["detail"])
    assert answered is not None and float(answered.group(1)) < 3000  # Slack's limit
    assert "[Redeploy now] | [Mute 1 h]" in proc.stdout
    assert "automatic remediation is off (REMEDIATION=off)" in proc.stdout
    assert "Redeployed by <@U0SANDBOX> at " in proc.stdout
    assert 'class="marker pressed"' in report
    assert report.count('class="marker deployment"') == 1
    assert "broker      --broker" in proc.stdout
    assert list(redis.Redis.from_url(OWN_REDIS).scan_iter(match="sandbox-*")) == []

"""Issue 20, stop only the stuck tasks, and the alert says why: a WorkersStuck alarm (verdict
``degraded``) stops exactly the task ARNs in the collector's verdict record, re-checked against
the live metric, under the same opt-in, cooldown, hourly cap, dry-run and ledger as a forced
deployment; never more than running - 1 at once, never a task of another cluster or service. A
verdict record that is missing, stale or malformed: the alert says so, nothing is stopped."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest

from tests.alarm_lambda import Context, ecs_service, handler_module
from tests.aws_ecs import (
    REGION,
    CountingEcs,
    Recording,
    make_service,
    publish,
    put_verdict,
    start_tasks,
    task_status,
    tasks_stay_running,
)
from tests.conftest import EVENTS_DIR
from tests.slack_server import SlackServer
from tests.test_remediation import create_state_table
from toolkit.alarms.decision import Target
from toolkit.alarms.taskstop import STOP_REASON, StopPlan, TaskState, check_task_arns, plan_stops
from toolkit.verdictrecord import VerdictRecord, record_key, sparkline

CLUSTER, SERVICE = "prod-cluster", "worker-emails"
TOKEN = "xoxb-7777-TASKSTOP-SECRET"
ROUTES = ["sns", "eventbridge", "lambda"]


def workers_stuck(route: str = "sns", *, service: str = SERVICE) -> dict[str, Any]:
    """The WorkersStuck alarm of ``service`` (``prod-<service>-WorkersStuck``, Maximum, 60 s, 3 of
    3, >= 1), from the WorkerStuck fixture of ``route``."""
    text = (EVENTS_DIR / f"{route}_worker_stuck_alarm.json").read_text()
    text = text.replace("WorkerStuck", "WorkersStuck").replace("worker-emails", service)
    event: dict[str, Any] = json.loads(text)
    return event


@pytest.fixture
def server() -> Iterator[SlackServer]:
    srv = SlackServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, unique: str) -> Iterator[Any]:
    """A service of 3 running tasks, opted in, a state table; nothing stuck yet."""
    with ecs_service(monkeypatch, CLUSTER, SERVICE, stuck=None, running=3) as ecs, \
            tasks_stay_running():
        create_state_table(unique)
        monkeypatch.setenv("STATE_TABLE", unique)
        yield ecs


@pytest.fixture
def tasks(aws: Any) -> list[str]:
    return start_tasks(aws, CLUSTER, SERVICE, 3)


@pytest.fixture
def lam(monkeypatch: pytest.MonkeyPatch, server: SlackServer, aws: Any) -> Iterator[ModuleType]:
    table = os.environ["STATE_TABLE"]  # handler_module clears it: set it again
    with handler_module(monkeypatch, server.api_url, TOKEN) as module:
        monkeypatch.setenv("STATE_TABLE", table)
        yield module


def stuck_now(count: int, service: str = SERVICE) -> None:
    publish(CLUSTER, service, [count] * 4, metric="WorkersStuck")


def run(lam: ModuleType, aws: Any, event: dict[str, Any]) -> tuple[dict[str, Any], Recording]:
    ecs = Recording(aws)
    lam.responder().remediator._ecs = ecs
    return lam.handler(event, Context())["alarms"][0], ecs


def stopped(aws: Any, tasks: list[str]) -> list[str]:
    status = task_status(aws, CLUSTER, tasks)
    return [t for t in tasks if status[t] == "STOPPED"]


def bodies(server: SlackServer) -> list[str]:
    return [json.dumps(r.json, ensure_ascii=False) for r in server.messages()]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("count", [1, 2], ids=["one-of-three", "two-of-three"])
def test_workers_stuck_stops_exactly_the_recorded_tasks(
    lam: ModuleType, server: SlackServer, aws: Any, tasks: list[str], unique: str,
    route: str, count: int,
) -> None:
    named = tasks[:count]
    put_verdict(unique, CLUSTER, SERVICE, stuck_tasks=named,
                reasons=[f"task {t[-6:]} hung: no task started for 412 s" for t in named])
    stuck_now(count)
    outcome, ecs = run(lam, aws, workers_stuck(route))
    assert outcome["remediation"] == "stopped"
    assert stopped(aws, tasks) == named  # exactly those, the others still run
    stops = [k for c, k in zip(ecs.calls, ecs.kwargs, strict=True) if c == "stop_task"]
    assert [(k["cluster"], k["task"], k["reason"]) for k in stops] == [
        (CLUSTER, t, STOP_REASON) for t in named]
    assert "update_service" not in ecs.calls
    alert, note = bodies(server)
    for arn in named:
        assert arn.rsplit("/", 1)[-1] in alert and arn.rsplit("/", 1)[-1] in note
    assert "`degraded`" in alert and "no task started for 412 s" in alert
    assert "▁" in alert and "█" in alert  # the backlog sparkline
    assert f"Stopped {count} stuck task(s) of `{CLUSTER}/{SERVICE}`" in note


def test_never_more_than_running_minus_one_at_once(
    lam: ModuleType, server: SlackServer, aws: Any, tasks: list[str], unique: str
) -> None:
    put_verdict(unique, CLUSTER, SERVICE, stuck_tasks=tasks)  # all three named
    stuck_now(3)
    outcome, _ = run(lam, aws, workers_stuck())
    assert stopped(aws, tasks) == tasks[:2]  # 3 running: at most 2
    _, note = bodies(server)
    assert "Held back for now" in note and tasks[2].rsplit("/", 1)[-1] in note


def test_the_live_metric_caps_what_is_stopped(
    lam: ModuleType, server: SlackServer, aws: Any, tasks: list[str], unique: str
) -> None:
    """The record names two, the live WorkersStuck says one is stuck now: one is stopped."""
    put_verdict(unique, CLUSTER, SERVICE, stuck_tasks=tasks[:2])
    stuck_now(1)
    run(lam, aws, workers_stuck())
    assert stopped(aws, tasks) == tasks[:1]


def test_live_metric_at_zero_stops_nothing(
    lam: ModuleType, server: SlackServer, aws: Any, tasks: list[str], unique: str
) -> None:
    put_verdict(unique, CLUSTER, SERVICE, stuck_tasks=tasks[:1])
    stuck_now(0)
    outcome, ecs = run(lam, aws, workers_stuck())
    assert stopped(aws, tasks) == [] and ecs.calls == []


@pytest.mark.parametrize(
    ("arn", "says"),
    [
        (f"arn:aws:ecs:{REGION}:123456789012:task/other-cluster/0123abcd", "of cluster other"),
        (f"arn:aws:ecs:{REGION}:999999999999:task/{CLUSTER}/0123abcd", "not the service's"),
        (f"arn:aws:ecs:{REGION}:123456789012:task/0123abcd", "not an ECS task ARN"),
        ("0123abcd", "not an ECS task ARN"),
    ],
    ids=["other-cluster", "other-account", "old-format", "not-an-arn"],
)
def test_a_task_of_another_cluster_is_refused(
    lam: ModuleType, server: SlackServer, aws: Any, tasks: list[str], unique: str,
    arn: str, says: str,
) -> None:
    put_verdict(unique, CLUSTER, SERVICE, stuck_tasks=[tasks[0], arn])
    stuck_now(2)
    outcome, ecs = run(lam, aws, workers_stuck())
    assert outcome["remediation"] == "skipped" and says in outcome["reason"]
    assert stopped(aws, tasks) == [] and "stop_task" not in ecs.calls
    assert "nothing stopped" in bodies(server)[1]


def test_a_task_of_another_service_is_refused(
    lam: ModuleType, server: SlackServer, aws: Any, tasks: list[str], unique: str
) -> None:
    make_service(aws, CLUSTER, "worker-other", stuck=None)
    (other,) = start_tasks(aws, CLUSTER, "worker-other", 1)
    put_verdict(unique, CLUSTER, SERVICE, stuck_tasks=[tasks[0], other])
    stuck_now(2)
    outcome, _ = run(lam, aws, workers_stuck())
    assert "belongs to service:worker-other" in outcome["reason"]
    assert stopped(aws, tasks + [other]) == []


BAD_RECORDS = {
    "missing": (None, "no verdict record for prod-cluster/worker-emails"),
    "stale": ("stale", "more than 3 collector cycles of 60 s"),
    "not-json": ({"S": "{not json"}, "malformed (verdict record is not JSON"),
    "wrong-version": ({"S": json.dumps({"version": 99})}, "malformed (verdict record: "),
    "other-environment": ("prod-eu", "of environment prod-eu, not prod"),
}


@pytest.mark.parametrize("bad", sorted(BAD_RECORDS))
def test_a_missing_stale_or_malformed_record_stops_nothing_and_the_alert_says_so(
    lam: ModuleType, server: SlackServer, aws: Any, tasks: list[str], unique: str, bad: str
) -> None:
    data, says = BAD_RECORDS[bad]
    if data == "stale":
        put_verdict(unique, CLUSTER, SERVICE, stuck_tasks=tasks[:1], age=181)
    elif data == "prod-eu":
        put_verdict(unique, CLUSTER, SERVICE, stuck_tasks=tasks[:1], environment="prod-eu")
    elif data is not None:
        boto3.client("dynamodb", region_name=REGION).put_item(TableName=unique, Item={
            "pk": {"S": record_key(CLUSTER, SERVICE)}, "data": data})
    stuck_now(1)
    outcome, ecs = run(lam, aws, workers_stuck())
    assert outcome["remediation"] == "skipped" and "nothing stopped" in outcome["reason"]
    assert stopped(aws, tasks) == [] and "stop_task" not in ecs.calls
    alert, note = bodies(server)
    assert "*Why:* unknown" in alert and says in alert
    assert says in note and "Not stopping tasks of" in note


def test_without_a_state_table_there_is_no_record_and_nothing_is_stopped(
    lam: ModuleType, server: SlackServer, aws: Any, tasks: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STATE_TABLE")
    lam._responder = None
    stuck_now(1)
    outcome, _ = run(lam, aws, workers_stuck())
    assert "STATE_TABLE is not set" in outcome["reason"] and stopped(aws, tasks) == []
    assert "STATE_TABLE is not set" in bodies(server)[0]


def test_a_stuck_verdict_is_the_deployments_not_a_stop(
    lam: ModuleType, server: SlackServer, aws: Any, tasks: list[str], unique: str
) -> None:
    put_verdict(unique, CLUSTER, SERVICE, verdict="stuck", stuck_tasks=tasks)
    stuck_now(3)
    outcome, _ = run(lam, aws, workers_stuck())
    assert "forced deployment is the remedy" in outcome["reason"] and stopped(aws, tasks) == []


@pytest.mark.parametrize("setting", ["dry-run", "not-opted-in"])
def test_dry_run_and_opt_in_hold_for_stops(
    lam: ModuleType, server: SlackServer, aws: Any, tasks: list[str], unique: str,
    monkeypatch: pytest.MonkeyPatch, setting: str,
) -> None:
    if setting == "dry-run":
        monkeypatch.setenv("REMEDIATION", "dry-run")
        lam._responder = None
    else:
        arn = aws.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0][
            "serviceArn"]
        aws.tag_resource(resourceArn=arn, tags=[{"key": "celery-ecs:remediate", "value": "no"}])
    put_verdict(unique, CLUSTER, SERVICE, stuck_tasks=tasks[:1])
    stuck_now(1)
    outcome, ecs = run(lam, aws, workers_stuck())
    assert stopped(aws, tasks) == [] and "stop_task" not in ecs.calls
    note = bodies(server)[1]
    if setting == "dry-run":
        assert f"Dry run: would stop `{tasks[0].rsplit('/', 1)[-1]}`" in note
    else:
        assert "celery-ecs:remediate=true" in note


def test_stops_share_the_hourly_cap_and_the_cooldown_with_deployments(
    lam: ModuleType, server: SlackServer, aws: Any, tasks: list[str], unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAX_REMEDIATIONS_PER_HOUR", "1")
    lam._responder = None
    make_service(aws, CLUSTER, "worker-reports")  # stuck (WorkerStuck 1), opted in
    put_verdict(unique, CLUSTER, SERVICE, stuck_tasks=tasks[:1])
    stuck_now(1)
    first, _ = run(lam, aws, workers_stuck())
    assert first["remediation"] == "stopped"
    counting = CountingEcs(aws)
    lam.responder().remediator._ecs = counting
    text = (EVENTS_DIR / "sns_worker_stuck_alarm.json").read_text().replace(
        "worker-emails", "worker-reports")
    other = lam.handler(json.loads(text), Context())["alarms"][0]
    assert other["remediation"] == "skipped" and "limit is 1" in other["reason"]
    assert counting.updates == []
    # The same service again, a later state change within the cooldown: the escalation.
    again = workers_stuck()
    message = json.loads(again["Records"][0]["Sns"]["Message"])
    message["StateChangeTime"] = "2999-01-01T00:00:00.000+0000"
    again["Records"][0]["Sns"]["Message"] = json.dumps(message)
    outcome, ecs = run(lam, aws, again)
    assert outcome["remediation"] == "skipped" and "stop_task" not in ecs.calls
    assert stopped(aws, tasks) == tasks[:1]
    assert "Still stuck after stopping its stuck tasks" in bodies(server)[-1]


def test_the_worker_stuck_alert_says_why_in_one_line(
    lam: ModuleType, server: SlackServer, aws: Any, tasks: list[str], unique: str
) -> None:
    record = put_verdict(unique, CLUSTER, SERVICE, verdict="stuck", stuck_tasks=tasks,
                         reasons=["3 of 3 tasks hung", "backlog 350 for 6 min"])
    publish(CLUSTER, SERVICE, [1] * 4)
    text = (EVENTS_DIR / "sns_worker_stuck_alarm.json").read_text()
    lam.handler(json.loads(text), Context())
    blocks = server.messages()[0].json["attachments"][0]["blocks"]
    (why,) = [b["text"]["text"] for b in blocks if b.get("text", {}).get("text", "").startswith(
        "*Why*")]
    assert "\n" not in why and len(why) <= 600
    assert "`stuck`, 3 of 3 tasks hung; backlog 350 for 6 min" in why
    assert f"backlog {sparkline(record.backlog)} 3 → 350 (15 cycles)" in why
    assert all(t.rsplit("/", 1)[-1] in why for t in tasks)


# --- pure ------------------------------------------------------------------------------------

TARGET = Target("c", "w")
ARN = "arn:aws:ecs:eu-west-1:123456789012:task/c/{}"
SERVICE_ARN = "arn:aws:ecs:eu-west-1:123456789012:service/c/w"


def record(*tasks: str, verdict: str = "degraded") -> VerdictRecord:
    return VerdictRecord("prod", "c", "w", verdict, at=0.0, interval=60.0,
                         stuck_tasks=tuple(ARN.format(t) for t in tasks))


def states(**status: str) -> dict[str, TaskState]:
    return {ARN.format(t): TaskState(ARN.format(t), "service:w", s, "RUNNING")
            for t, s in status.items()}


def test_check_task_arns() -> None:
    assert check_task_arns([ARN.format("a")], TARGET, SERVICE_ARN) is None
    refused = check_task_arns([ARN.format("a").replace("/c/", "/d/")], TARGET, SERVICE_ARN)
    assert refused is not None and refused[0] == "foreign-task"
    other_region = ARN.format("a").replace("eu-west-1", "us-east-1")
    assert check_task_arns([other_region], TARGET, SERVICE_ARN) is not None
    assert check_task_arns([other_region], TARGET, None) is None  # no service ARN to compare


@pytest.mark.parametrize(
    ("rec", "tasks", "running", "live", "expect"),
    [
        (record("a"), states(a="RUNNING", b="RUNNING"), 2, 1.0, StopPlan(stop=(ARN.format("a"),))),
        (record("a", "b"), states(a="RUNNING", b="RUNNING"), 2, 2.0,
         StopPlan(stop=(ARN.format("a"),), held_back=(ARN.format("b"),))),
        (record("a", "b"), states(a="STOPPED", b="RUNNING"), 3, 2.0,
         StopPlan(stop=(ARN.format("b"),), gone=(ARN.format("a"),))),
        (record("a"), states(a="RUNNING"), 1, 1.0, "too-few-running"),
        (record("a"), states(a="STOPPED"), 3, 1.0, "no-stuck-tasks"),
        (record(), states(), 3, 1.0, "no-stuck-tasks"),
        (record("a", verdict="healthy"), states(a="RUNNING"), 3, 1.0, "no-stuck-tasks"),
        (record("a"), {ARN.format("a"): TaskState(ARN.format("a"), "service:x", "RUNNING",
                                                  "RUNNING")}, 3, 1.0, "foreign-task"),
        (record("a"), states(a="RUNNING"), 3, 0.5, "no-stuck-tasks"),
    ],
)
def test_plan_stops(rec: VerdictRecord, tasks: dict[str, TaskState], running: int, live: float,
                    expect: StopPlan | str) -> None:
    plan = plan_stops(rec, tasks, TARGET, running=running, live=live)
    if isinstance(expect, str):
        assert isinstance(plan, tuple) and plan[0] == expect and plan[1]
    else:
        assert plan == expect


def test_the_why_line_escapes_what_the_table_holds() -> None:
    from datetime import UTC, datetime

    from toolkit.alarms.why import VerdictReading, why_line

    rec = VerdictRecord("prod", "c", "w", "degraded<!channel>", at=0.0, interval=60.0,
                        reasons=("<!here> <@U0123> <https://evil|x> &",),
                        stuck_tasks=(ARN.format("<!subteam^S1>"),), backlog=(1, 2))
    line = why_line(VerdictReading(TARGET, "ok", record=rec), datetime.fromtimestamp(30, UTC))
    for bad in ("<!", "<@", "<http"):
        assert bad not in line
    assert "&lt;!here&gt;" in line and "&amp;" in line

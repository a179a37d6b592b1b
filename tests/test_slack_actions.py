"""Issue 24, Slack buttons: the on-call fixes a stuck worker from the alert, and nobody else can.

The real Slack actions Lambda (lambdas/slack_actions/handler.py) on moto (ECS, DynamoDB state
table shared with the alarm handler, Secrets Manager holding the signing secret and bot token)
and the local Slack (tests/slack_server.py), with requests signed as Slack signs them. Every
refusal of the issue is a case here: unsigned, wrongly signed, replayed after 5 minutes, a user
not allowed, a service not opted in or of another environment, a task of another service, a
double press, a press in the cooldown of an automatic redeploy, dry-run, a mute and the alarm
after it; base64 and plain bodies.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest

from tests.alarm_lambda import Context, ecs_service, handler_module
from tests.aws_ecs import (
    REGION,
    deployment_ids,
    make_service,
    put_verdict,
    start_tasks,
    task_status,
    tasks_stay_running,
)
from tests.conftest import load_event
from tests.slack_clicks import (
    ALERT_TS,
    ONCALL,
    SIGNING_SECRET,
    actions_module,
    press,
    press_event,
    replies,
    slack_secret,
)
from tests.slack_server import SlackServer
from tests.test_remediation import create_state_table
from toolkit.alarms.buttons import ACTION_MUTE, ACTION_REDEPLOY, ACTION_STOP_TASKS, ButtonValue
from toolkit.alarms.slackactions import SlackActionsSettings, build_slack_actions

CLUSTER, SERVICE = "prod-cluster", "worker-emails"
REDEPLOY = ButtonValue("prod-worker-emails-WorkerStuck", CLUSTER, SERVICE)
MUTE = REDEPLOY
HANDLER_TOKEN = "xoxb-3333-HANDLER-SECRET"


@pytest.fixture
def server() -> Iterator[SlackServer]:
    srv = SlackServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, unique: str) -> Iterator[Any]:
    """worker-emails in prod-cluster: opted in, tagged Environment=prod, deployed an hour ago,
    WorkerStuck 1 now; the state table; the Slack secret."""
    with ecs_service(monkeypatch, CLUSTER, SERVICE) as ecs:
        arn = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0][
            "serviceArn"]
        ecs.tag_resource(resourceArn=arn, tags=[{"key": "Environment", "value": "prod"}])
        create_state_table(unique)
        monkeypatch.setenv("STATE_TABLE", unique)
        monkeypatch.setenv("TEST_SLACK_SECRET_ARN", slack_secret(f"prod/slack-{unique}"))
        yield ecs


@pytest.fixture
def actions(monkeypatch: pytest.MonkeyPatch, server: SlackServer, aws: Any,
            unique: str) -> Iterator[ModuleType]:
    with actions_module(monkeypatch, server, table=unique,
                        secret_arn=os.environ["TEST_SLACK_SECRET_ARN"]) as module:
        yield module


def refused(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records
            if '"slack_request_refused"' in r.getMessage()]


# ---- the press that works ----


def test_the_alert_carries_the_buttons_and_redeploy_now_redeploys_once(
    monkeypatch: pytest.MonkeyPatch, server: SlackServer, aws: Any, unique: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """REMEDIATION=off: the alarm handler only alerts, with its buttons; the on-call presses
    "Redeploy now" (the real button, as posted); one deployment; the thread says who, when."""
    caplog.set_level(logging.INFO)
    before = deployment_ids(aws, CLUSTER, SERVICE)
    with handler_module(monkeypatch, server.api_url, HANDLER_TOKEN) as lam:
        monkeypatch.setenv("REMEDIATION", "off")
        monkeypatch.setenv("STATE_TABLE", unique)
        result = lam.handler(load_event("sns_worker_stuck_alarm"), Context())
    assert result["alarms"][0]["remediation"] == "skipped"
    assert deployment_ids(aws, CLUSTER, SERVICE) == before
    alert = server.messages()[0].json
    blocks = alert["attachments"][0]["blocks"]
    (actions_block,) = [b for b in blocks if b.get("block_id") == "celery-ecs-actions"]
    labels = [e["text"]["text"] for e in actions_block["elements"]]
    assert labels == ["Redeploy now", "Mute 1 h"]
    redeploy = actions_block["elements"][0]
    assert redeploy["action_id"] == ACTION_REDEPLOY and redeploy["style"] == "danger"
    assert "confirm" in redeploy and ButtonValue.decode(redeploy["value"]) == REDEPLOY

    with actions_module(monkeypatch, server, table=unique,
                        secret_arn=os.environ["TEST_SLACK_SECRET_ARN"]) as module:
        started = time.perf_counter()
        answer = module.handler(press_event(server, ACTION_REDEPLOY, redeploy), None)
        acknowledged = time.perf_counter() - started
        assert module.app().deferrer.join(20.0)
    assert answer["statusCode"] == 200 and acknowledged < 3.0
    after = deployment_ids(aws, CLUSTER, SERVICE)
    assert len(after) == 1 and after != before  # exactly one new deployment, PRIMARY
    (reply,) = replies(server)
    now = datetime.now(UTC)
    assert f"Redeployed by <@{ONCALL}> at " in reply and " UTC: forced a new deployment" in reply
    assert any(f"at {t:%H:%M} UTC" in reply for t in (now, now - timedelta(minutes=1)))
    # the audit trail: one acknowledged and one done line, with who and what
    audit = [json.loads(r.getMessage()) for r in caplog.records
             if '"event": "slack_action"' in r.getMessage()]
    assert [(a["phase"], a["user"], a.get("service")) for a in audit] == [
        ("acknowledged", ONCALL, SERVICE), ("done", ONCALL, SERVICE)]
    assert audit[1]["code"] == "deployed"
    # the remediated-at tag: the cooldown the alarm handler sees too
    tags = aws.describe_services(cluster=CLUSTER, services=[SERVICE], include=["TAGS"])[
        "services"][0]["tags"]
    assert any(t["key"] == "celery-ecs:remediated-at" for t in tags)


@pytest.mark.parametrize("encode", [True, False], ids=["base64", "plain"])
def test_base64_and_plain_bodies_are_both_verified(
    actions: ModuleType, server: SlackServer, aws: Any, encode: bool
) -> None:
    before = deployment_ids(aws, CLUSTER, SERVICE)
    assert press(actions, press_event(server, ACTION_REDEPLOY, REDEPLOY, encode=encode))[
        "statusCode"] == 200
    assert deployment_ids(aws, CLUSTER, SERVICE) != before
    assert len(replies(server)) == 1


def test_the_signing_secret_may_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, server: SlackServer, aws: Any, unique: str
) -> None:
    other = "0cc175b9c0f1b6a831c399e269772661"
    with actions_module(monkeypatch, server, table=unique,
                        secret_arn=os.environ["TEST_SLACK_SECRET_ARN"],
                        SLACK_SIGNING_SECRET=other) as module:
        assert press(module, press_event(server, ACTION_REDEPLOY, REDEPLOY,
                                         secret=SIGNING_SECRET))["statusCode"] == 401
        assert press(module, press_event(server, ACTION_REDEPLOY, REDEPLOY,
                                         secret=other))["statusCode"] == 200


# ---- refused at the door: 401, nothing done, nothing of the body logged ----

MARKER = "body-marker-7c4f"  # in every refused body: it must not reach a log line


@pytest.mark.parametrize("case", ["unsigned", "wrongly signed", "replayed after 5 min",
                                  "signed for another body", "not base64"])
def test_unsigned_wrongly_signed_and_replayed_requests_get_401_and_do_nothing(
    actions: ModuleType, server: SlackServer, aws: Any, case: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="toolkit")  # everything the toolkit logs
    value = ButtonValue(f"prod-worker-emails-WorkerStuck{MARKER}"[:31], CLUSTER, SERVICE)
    element = {"type": "button", "action_id": ACTION_REDEPLOY, "value": REDEPLOY.encode(),
               "text": {"type": "plain_text", "text": MARKER}}
    event = press_event(server, ACTION_REDEPLOY, element)
    stamp = int(event["headers"]["x-slack-request-timestamp"])
    if case == "unsigned":
        event = press_event(server, ACTION_REDEPLOY, element, secret=None)
    elif case == "wrongly signed":
        event = press_event(server, ACTION_REDEPLOY, element, secret="not-the-signing-secret")
    elif case == "replayed after 5 min":  # signed correctly, 5 min 1 s ago
        event = press_event(server, ACTION_REDEPLOY, element, timestamp=stamp - 301)
    elif case == "signed for another body":  # a valid signature of a harmless press, reused
        other = press_event(server, ACTION_MUTE, value, timestamp=stamp)
        event["headers"]["x-slack-signature"] = other["headers"]["x-slack-signature"]
    else:
        event["body"] = "%%%" + event["body"]
    before = deployment_ids(aws, CLUSTER, SERVICE)
    answer = press(actions, event)
    assert answer["statusCode"] == 401
    assert deployment_ids(aws, CLUSTER, SERVICE) == before
    assert server.requests == []  # no reply, no ephemeral
    table = os.environ["STATE_TABLE"]
    assert boto3.client("dynamodb", region_name=REGION).scan(TableName=table)["Items"] == []
    why = {"unsigned": "unsigned", "wrongly signed": "bad-signature",
           "replayed after 5 min": "stale", "signed for another body": "bad-signature",
           "not base64": "bad-signature"}[case]
    assert [r["why"] for r in refused(caplog)] == [why]
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("toolkit"))
    assert "slack_request_refused" in ours
    assert MARKER not in ours and SIGNING_SECRET not in ours and "payload" not in ours


def test_a_request_from_the_future_is_refused_too(
    actions: ModuleType, server: SlackServer
) -> None:
    event = press_event(server, ACTION_REDEPLOY, REDEPLOY, timestamp=int(time.time()) + 400)
    assert press(actions, event)["statusCode"] == 401


def test_an_unsigned_request_costs_no_secret_read(
    actions: ModuleType, server: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    app = actions.app()
    monkeypatch.setattr(app, "_signing_secret", lambda: reads.append("read") or SIGNING_SECRET)
    assert press(actions, press_event(server, ACTION_REDEPLOY, REDEPLOY, secret=None))[
        "statusCode"] == 401
    assert reads == []


# ---- who may press ----


@pytest.mark.parametrize("allowed", [ONCALL, ""], ids=["someone else", "nobody configured"])
def test_a_user_not_allowed_gets_an_ephemeral_refusal_and_nothing_happens(
    monkeypatch: pytest.MonkeyPatch, server: SlackServer, aws: Any, unique: str, allowed: str
) -> None:
    before = deployment_ids(aws, CLUSTER, SERVICE)
    with actions_module(monkeypatch, server, table=unique,
                        secret_arn=os.environ["TEST_SLACK_SECRET_ARN"],
                        SLACK_ALLOWED_USERS=allowed) as module:
        answer = press(module, press_event(server, ACTION_REDEPLOY, REDEPLOY, user="U0INTRUDER"))
    assert answer["statusCode"] == 200
    assert deployment_ids(aws, CLUSTER, SERVICE) == before
    (ephemeral,) = server.messages()
    assert ephemeral.path == "/actions/T0SANDBOX/1/SECRETresponse"
    assert ephemeral.json["response_type"] == "ephemeral"
    assert ephemeral.json["replace_original"] is False
    assert "you may not use these buttons" in ephemeral.json["text"]
    assert "<@U0INTRUDER>" in ephemeral.json["text"]
    assert replies(server) == []


# ---- every guard of the automatic path, re-checked ----


def _reply(actions: ModuleType, server: SlackServer, action: str, value: ButtonValue) -> str:
    assert press(actions, press_event(server, action, value))["statusCode"] == 200
    (reply,) = replies(server)
    return reply


def test_a_service_not_opted_in_is_not_redeployed(
    actions: ModuleType, server: SlackServer, aws: Any
) -> None:
    arn = aws.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]["serviceArn"]
    aws.tag_resource(resourceArn=arn, tags=[{"key": "celery-ecs:remediate", "value": "false"}])
    before = deployment_ids(aws, CLUSTER, SERVICE)
    reply = _reply(actions, server, ACTION_REDEPLOY, REDEPLOY)
    assert "Not redeploying `prod-cluster/worker-emails`" in reply
    assert "service has no celery-ecs:remediate=true tag" in reply
    assert "slack action: not-opted-in" in reply
    assert deployment_ids(aws, CLUSTER, SERVICE) == before


@pytest.mark.parametrize("case", ["tagged staging", "alarm of staging", "no tag, no record",
                                  "no tag, record of staging", "no tag, record of prod"])
def test_a_service_of_another_environment_is_not_redeployed(
    actions: ModuleType, server: SlackServer, aws: Any, case: str
) -> None:
    arn = aws.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]["serviceArn"]
    value = REDEPLOY
    if case == "tagged staging":
        aws.tag_resource(resourceArn=arn, tags=[{"key": "Environment", "value": "staging"}])
    elif case == "alarm of staging":
        value = ButtonValue("staging-worker-emails-WorkerStuck", CLUSTER, SERVICE)
    else:
        aws.untag_resource(resourceArn=arn, tagKeys=["Environment"])
        if "record" in case and "no record" not in case:
            put_verdict(os.environ["STATE_TABLE"], CLUSTER, SERVICE, verdict="stuck",
                        environment=case.rsplit(" ", 1)[-1])
    before = deployment_ids(aws, CLUSTER, SERVICE)
    reply = _reply(actions, server, ACTION_REDEPLOY, value)
    if case == "no tag, record of prod":  # the collector of this environment watches it
        assert "Redeployed by" in reply
        assert deployment_ids(aws, CLUSTER, SERVICE) != before
        return
    assert "slack action: not-own-alarm" in reply, reply
    assert deployment_ids(aws, CLUSTER, SERVICE) == before
    expected = {"tagged staging": "is tagged Environment=staging, not this handler's prod",
                "alarm of staging": "not an alarm of this environment (ENVIRONMENT=prod)",
                "no tag, no record": "has no Environment tag and no verdict record of prod",
                "no tag, record of staging": "has no Environment tag and no verdict record"}
    assert expected[case] in reply


def test_a_double_press_redeploys_once(
    actions: ModuleType, server: SlackServer, aws: Any
) -> None:
    """Two presses at once (two requests, two jobs racing): one deployment; the other press is
    told why not. Then the same request delivered again: done once, no third reply."""
    before = deployment_ids(aws, CLUSTER, SERVICE)
    first = press_event(server, ACTION_REDEPLOY, REDEPLOY, action_ts="1700000100.000001")
    second = press_event(server, ACTION_REDEPLOY, REDEPLOY, action_ts="1700000100.500002")
    barrier = threading.Barrier(2)
    # two Lambda containers: nothing shared but the state table and ECS
    containers = [actions.app(), build_slack_actions(SlackActionsSettings.from_env())]

    def go(app: Any, event: dict[str, Any]) -> None:
        barrier.wait()
        app.handle(event, None)

    threads = [threading.Thread(target=go, args=pair) for pair in zip(containers, (first, second),
                                                                     strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(app.deferrer.join(20.0) for app in containers)
    after = deployment_ids(aws, CLUSTER, SERVICE)
    assert after != before and len(after) == 1
    got = replies(server)
    assert sum("Redeployed by" in r for r in got) == 1, got
    assert sum("Not redeploying" in r for r in got) == 1, got
    assert any("cooldown" in r for r in got), got
    # the very same request again (a retry, a replay inside the 5 minutes): nothing more
    assert press(actions, first)["statusCode"] == 200
    assert len(replies(server)) == 2 and deployment_ids(aws, CLUSTER, SERVICE) == after


def test_a_press_in_the_cooldown_of_an_automatic_redeploy_does_nothing(
    monkeypatch: pytest.MonkeyPatch, server: SlackServer, aws: Any, unique: str
) -> None:
    """The alarm handler (REMEDIATION=enabled) redeploys on its own; a press right after finds
    the shared cooldown and says so."""
    with handler_module(monkeypatch, server.api_url, HANDLER_TOKEN) as lam:
        monkeypatch.setenv("STATE_TABLE", unique)
        result = lam.handler(load_event("sns_worker_stuck_alarm"), Context())
    assert result["alarms"][0]["remediation"] == "deployed"
    deployed = deployment_ids(aws, CLUSTER, SERVICE)
    with actions_module(monkeypatch, server, table=unique,
                        secret_arn=os.environ["TEST_SLACK_SECRET_ARN"]) as module:
        reply = _reply(module, server, ACTION_REDEPLOY, REDEPLOY)
    assert deployment_ids(aws, CLUSTER, SERVICE) == deployed
    assert "Not redeploying `prod-cluster/worker-emails`" in reply
    assert "slack action: cooldown" in reply or "slack action: deployment-in-progress" in reply
    assert "cooldown is 15 min" in reply or "in progress" in reply


def test_the_hourly_cap_is_the_shared_ledger(
    monkeypatch: pytest.MonkeyPatch, server: SlackServer, aws: Any, unique: str
) -> None:
    with actions_module(monkeypatch, server, table=unique,
                        secret_arn=os.environ["TEST_SLACK_SECRET_ARN"],
                        MAX_REMEDIATIONS_PER_HOUR="1") as module:
        ledger_at = int(datetime.now(UTC).timestamp()) - 60  # an automatic remedy a minute ago
        boto3.client("dynamodb", region_name=REGION).put_item(TableName=unique, Item={
            "pk": {"S": "ledger#remediations"}, "version": {"N": "1"},
            "entries": {"L": [{"S": f"{ledger_at}|prod-cluster/worker-other"}]},
            "expires_at": {"N": str(ledger_at + 7200)}})
        before = deployment_ids(aws, CLUSTER, SERVICE)
        reply = _reply(module, server, ACTION_REDEPLOY, REDEPLOY)
    assert "slack action: rate-limit" in reply and "limit is 1" in reply
    assert deployment_ids(aws, CLUSTER, SERVICE) == before


def test_dry_run_says_what_it_would_do(
    monkeypatch: pytest.MonkeyPatch, server: SlackServer, aws: Any, unique: str
) -> None:
    before = deployment_ids(aws, CLUSTER, SERVICE)
    with actions_module(monkeypatch, server, table=unique,
                        secret_arn=os.environ["TEST_SLACK_SECRET_ARN"],
                        REMEDIATION="dry-run") as module:
        reply = _reply(module, server, ACTION_REDEPLOY, REDEPLOY)
    assert f"Dry run, pressed by <@{ONCALL}>" in reply
    assert "would force a new deployment of `prod-cluster/worker-emails`" in reply
    assert "REMEDIATION=dry-run, so nothing was done" in reply
    assert deployment_ids(aws, CLUSTER, SERVICE) == before


def test_a_press_without_the_state_table_is_refused(
    monkeypatch: pytest.MonkeyPatch, server: SlackServer, aws: Any, unique: str
) -> None:
    before = deployment_ids(aws, CLUSTER, SERVICE)
    with actions_module(monkeypatch, server, table="",
                        secret_arn=os.environ["TEST_SLACK_SECRET_ARN"]) as module:
        reply = _reply(module, server, ACTION_REDEPLOY, REDEPLOY)
    assert "STATE_TABLE is not set" in reply and deployment_ids(aws, CLUSTER, SERVICE) == before


def test_an_unreadable_button_value_is_refused(actions: ModuleType, server: SlackServer) -> None:
    raw = {"type": "button", "action_id": ACTION_REDEPLOY, "value": '{"v":1,"a":"<!channel>"}',
           "text": {"type": "plain_text", "text": "Redeploy now"}}
    assert press(actions, press_event(server, ACTION_REDEPLOY, raw))["statusCode"] == 200
    (reply,) = replies(server)
    assert "the button could not be read" in reply and "<!channel>" not in reply


def test_another_apps_interaction_is_acknowledged_and_ignored(
    actions: ModuleType, server: SlackServer
) -> None:
    other = {"type": "button", "action_id": "someone-elses-button", "value": "x"}
    assert press(actions, press_event(server, "x", other))["statusCode"] == 200
    assert server.requests == []


# ---- Stop stuck tasks ----


@pytest.fixture
def three_tasks(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """worker-emails with three running tasks; the verdict record names the first as hung."""
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "3")
    aws.update_service(cluster=CLUSTER, service=SERVICE, desiredCount=3)
    from tests.aws_ecs import age_deployments

    age_deployments(CLUSTER, SERVICE, 3600)
    with tasks_stay_running():
        arns = start_tasks(aws, CLUSTER, SERVICE, 3)
        put_verdict(os.environ["STATE_TABLE"], CLUSTER, SERVICE, stuck_tasks=arns[:1])
        yield arns


def _stop(arns: list[str]) -> ButtonValue:
    return ButtonValue("prod-worker-emails-WorkersStuck", CLUSTER, SERVICE, tuple(arns))


def test_stop_stuck_tasks_stops_exactly_the_recorded_task(
    actions: ModuleType, server: SlackServer, aws: Any, three_tasks: list[str]
) -> None:
    reply = _reply(actions, server, ACTION_STOP_TASKS, _stop(three_tasks[:1]))
    assert f"Stuck tasks stopped by <@{ONCALL}>" in reply, reply
    status = task_status(aws, CLUSTER, three_tasks)
    assert [status[a] for a in three_tasks] == ["STOPPED", "RUNNING", "RUNNING"]


def test_a_task_the_collector_no_longer_judges_stuck_is_not_stopped(
    actions: ModuleType, server: SlackServer, aws: Any, three_tasks: list[str]
) -> None:
    reply = _reply(actions, server, ACTION_STOP_TASKS, _stop(three_tasks[1:2]))
    assert "slack action: no-stuck-tasks" in reply and "no longer judges" in reply
    assert set(task_status(aws, CLUSTER, three_tasks).values()) == {"RUNNING"}


@pytest.mark.parametrize("where", ["another service", "another cluster"])
def test_a_task_arn_of_another_service_is_refused_and_nothing_stopped(
    actions: ModuleType, server: SlackServer, aws: Any, three_tasks: list[str], where: str
) -> None:
    if where == "another service":
        make_service(aws, CLUSTER, "worker-reports", stuck=None)
        foreign = start_tasks(aws, CLUSTER, "worker-reports", 1)[0]
        expected = "belongs to service:worker-reports, not service:worker-emails"
    else:
        foreign = three_tasks[0].replace("/prod-cluster/", "/staging-cluster/")
        expected = "of cluster staging-cluster, not prod-cluster"
    reply = _reply(actions, server, ACTION_STOP_TASKS, _stop([three_tasks[0], foreign]))
    assert "slack action: foreign-task" in reply and expected in reply, reply
    status = task_status(aws, CLUSTER, three_tasks)
    assert set(status.values()) == {"RUNNING"}  # not even the genuinely stuck one


# ---- Mute 1 h ----


def test_mute_then_a_new_alarm_within_the_hour_stays_silent(
    monkeypatch: pytest.MonkeyPatch, server: SlackServer, aws: Any, unique: str
) -> None:
    with actions_module(monkeypatch, server, table=unique,
                        secret_arn=os.environ["TEST_SLACK_SECRET_ARN"]) as module:
        reply = _reply(module, server, ACTION_MUTE, MUTE)
        until = datetime.now(UTC) + timedelta(hours=1)
        assert f"Muted by <@{ONCALL}>" in reply and "for 1 h: until" in reply
        assert "neither posts nor remediates `prod-worker-emails-WorkerStuck`" in reply
        assert any(f"until {t:%H:%M} UTC" in reply for t in (until, until - timedelta(minutes=1)))
        # pressed again: the mute in force is not extended
        assert press(module, press_event(server, ACTION_MUTE, MUTE))["statusCode"] == 200
        assert "Already muted by" in replies(server)[1]
    before = deployment_ids(aws, CLUSTER, SERVICE)
    server.requests.clear()
    event = load_event("sns_worker_stuck_alarm")
    message = json.loads(event["Records"][0]["Sns"]["Message"])
    message["StateChangeTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    event["Records"][0]["Sns"]["Message"] = json.dumps(message)
    with handler_module(monkeypatch, server.api_url, HANDLER_TOKEN) as lam:
        monkeypatch.setenv("STATE_TABLE", unique)
        result = lam.handler(event, Context())  # REMEDIATION=enabled: it would redeploy
        (outcome,) = result["alarms"]
        assert outcome["ignored"].startswith(f"muted by {ONCALL} until ")
        assert server.requests == [] and deployment_ids(aws, CLUSTER, SERVICE) == before
        # an hour and a minute later the same alarm posts and remediates again
        later = datetime.now(UTC) + timedelta(minutes=61)
        lam._responder = None
        responder = lam.responder()
        responder.clock = responder.remediator.clock = lambda: later
        result = lam.handler(event, Context())
    assert result["alarms"][0]["remediation"] == "deployed" and result["alarms"][0]["posted"]


def test_a_mute_of_another_environments_alarm_is_refused(
    actions: ModuleType, server: SlackServer
) -> None:
    value = ButtonValue("staging-worker-emails-WorkerStuck", CLUSTER, SERVICE)
    reply = _reply(actions, server, ACTION_MUTE, value)
    assert "Not acting on Mute 1 h" in reply and "not an alarm of this environment" in reply
    table = os.environ["STATE_TABLE"]
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=table)["Items"]
    assert not [i for i in items if "mute#" in i["pk"]["S"]]


def test_the_thread_reply_goes_under_the_alert(actions: ModuleType, server: SlackServer) -> None:
    _reply(actions, server, ACTION_MUTE, MUTE)
    (post,) = [r for r in server.messages() if r.path.startswith("/api/chat.postMessage")]
    assert post.json["thread_ts"] == ALERT_TS and post.json["channel"] == "C0ALERTS"
    assert post.headers["Authorization"] == "Bearer xoxb-2222-ACTIONS-SECRET"

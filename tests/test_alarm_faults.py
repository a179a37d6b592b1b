"""The alarm path under faults (issue 9): Slack 500 / 429 / hang, ECS throttled / denied / gone,
a missing state table, an invocation killed mid-way. Each case drives Lambda's async retry
behaviour (after a raise the event comes again, at most twice) against moto (ECS, DynamoDB) and the
local Slack server, and asserts what the runbook promises: the ALARM alert reaches Slack exactly
once, at most one deployment happens, and the follow-up says what happened.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.alarm_lambda import Context, ecs_service, handler_module, invoke_like_lambda
from tests.aws_ecs import REGION, CountingEcs
from tests.conftest import load_event
from tests.slack_server import SlackServer
from tests.test_remediation import create_state_table
from toolkit.alarms.budget import Deadline
from toolkit.alarms.factory import build_responder
from toolkit.alarms.responder import AlarmHandlingFailed
from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.alarms.state import MemoryStateStore

CLUSTER, SERVICE = "prod-cluster", "worker-emails"
TOKEN = "xoxb-2222-FAULTS-SECRET"


class Killed(BaseException):  # noqa: N818 - the runtime killing the invocation, not an error
    """The Lambda runtime stopping an invocation (timeout, OOM): nothing after it runs."""


@pytest.fixture
def server() -> Iterator[SlackServer]:
    srv = SlackServer(retry_after=1, hang_seconds=6).start()
    yield srv
    srv.stop()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with ecs_service(monkeypatch, CLUSTER, SERVICE) as ecs:
        yield ecs


@pytest.fixture
def lam(monkeypatch: pytest.MonkeyPatch, server: SlackServer, aws: Any) -> Iterator[ModuleType]:
    with handler_module(monkeypatch, server.api_url, TOKEN) as module:
        yield module


def alerts(server: SlackServer) -> list[str]:
    return [r.json["text"] for r in server.messages() if r.json.get("text", "").startswith("ALARM")]


def follow_ups(server: SlackServer) -> list[str]:
    return [r.json["text"] for r in server.messages() if not r.json["text"].startswith("ALARM")]


def deployments(ecs: Any) -> int:
    svc = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
    return len(svc["deployments"])


# --- Slack faults x deployment x STATE_TABLE ----------------------------------------------------

SLACK_FAULTS = {
    # fault: (script for the first attempt, Retry-After, remaining ms per attempt)
    "500": (("500", "500", "500"), 1, (120_000,)),
    "429-long-retry-after": (("429",), 600, (120_000,)),
    "hang": (("hang",), 1, (6_000, 120_000)),
}


@pytest.mark.parametrize("table", [False, True], ids=["memory", "state-table"])
@pytest.mark.parametrize("mode", ["enabled", "off"], ids=["deploys", "no-deploy"])
@pytest.mark.parametrize("fault", sorted(SLACK_FAULTS))
def test_slack_fault_matrix(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch,
    unique: str, fault: str, mode: str, table: bool,
) -> None:
    script, retry_after, contexts = SLACK_FAULTS[fault]
    monkeypatch.setenv("REMEDIATION", mode)
    if table:
        create_state_table(unique)
        monkeypatch.setenv("STATE_TABLE", unique)
    server.retry_after = retry_after
    server.script(*script)
    counting = CountingEcs(aws)
    before = deployments(aws)
    result, attempts = invoke_like_lambda(
        lam, load_event("sns_worker_stuck_alarm"), counting, contexts=contexts,
        new_container_each_time=table,  # with a table, a retry may land anywhere
    )
    assert result is not None and attempts == 2  # the first attempt raised, the retry finished
    assert len(alerts(server)) == 1, server.requests
    assert len(counting.updates) == (1 if mode == "enabled" else 0)
    assert deployments(aws) - before <= 1
    (note,) = follow_ups(server)
    if mode == "enabled":
        assert "Forced a new deployment of prod-cluster/worker-emails" in note
    else:
        assert "automatic remediation is off" in note
    # The follow-up is threaded under the one alert.
    alert_ts = next(r for r in server.messages() if r.json["text"].startswith("ALARM"))
    assert server.messages()[-1].json.get("thread_ts") == "1700000001.000100", alert_ts
    # A further duplicate (SNS delivers at least once) posts nothing more.
    lam.handler(load_event("sns_worker_stuck_alarm"), Context())
    assert len(server.messages()) == 2


def test_long_retry_after_is_not_waited_past_the_deadline(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retry-After: 30 with 20 s left: no sleep, one request, the alert stays owed (before: 61 s
    for one post, past the Lambda timeout)."""
    monkeypatch.setenv("REMEDIATION", "off")
    server.retry_after = 30
    server.script("429", "429")
    with pytest.raises(AlarmHandlingFailed, match="deadline"):
        lam.handler(load_event("sns_worker_stuck_alarm"), Context(20_000))
    assert [r.answered for r in server.requests] == ["429"]


def test_deadline_starts_no_remediation_without_time_and_the_retry_deploys(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    """Under 2 s left after the 3 s margin (4.5 s): no remediation is started (a floor for a few
    AWS calls, not the old 20 s reservation); the alert goes, the retry deploys."""
    counting = CountingEcs(aws)
    lam.responder().remediator._ecs = counting
    with pytest.raises(AlarmHandlingFailed, match="remediation"):
        lam.handler(load_event("sns_worker_stuck_alarm"), Context(4_500))
    assert counting.updates == [] and len(alerts(server)) == 1
    result = lam.handler(load_event("sns_worker_stuck_alarm"), Context(120_000))
    assert result["alarms"][0]["remediation"] == "deployed" and result["alarms"][0]["duplicate"]
    assert len(counting.updates) == 1 and len(alerts(server)) == 1


# --- ECS faults ---------------------------------------------------------------------------------


class FaultyEcs(CountingEcs):
    def __init__(self, client: Any, *, describe: list[str] = (), update: list[str] = ()) -> None:  # type: ignore[assignment]
        super().__init__(client)
        self.describe_faults = list(describe)
        self.update_faults = list(update)

    def describe_services(self, **kwargs: Any) -> Any:
        if self.describe_faults:
            code = self.describe_faults.pop(0)
            raise ClientError({"Error": {"Code": code, "Message": "x"}}, "DescribeServices")
        return self._client.describe_services(**kwargs)

    def update_service(self, **kwargs: Any) -> Any:
        if self.update_faults:
            self.updates.append((kwargs["cluster"], kwargs["service"]))
            code = self.update_faults.pop(0)
            raise ClientError({"Error": {"Code": code, "Message": "x"}}, "UpdateService")
        return super().update_service(**kwargs)


@pytest.mark.parametrize("table", [False, True], ids=["memory", "state-table"])
def test_ecs_throttled_then_deploys_on_the_retry(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch,
    unique: str, table: bool,
) -> None:
    if table:
        create_state_table(unique)
        monkeypatch.setenv("STATE_TABLE", unique)
    ecs = FaultyEcs(aws, describe=["ThrottlingException"])
    result, attempts = invoke_like_lambda(
        lam, load_event("sns_worker_stuck_alarm"), ecs, new_container_each_time=table
    )
    assert result is not None and attempts == 2
    assert len(alerts(server)) == 1
    assert len([u for u in ecs.updates]) == 1
    pending, done = follow_ups(server)
    # The runbook: "Could not redeploy ... yet" while a retry is pending, not "redeploy by hand".
    assert "yet: DescribeServices failed: ThrottlingException" in pending
    assert "Forced a new deployment" in done


def test_ecs_throttled_on_every_attempt_ends_with_redeploy_by_hand(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    ecs = FaultyEcs(aws, describe=["ThrottlingException"] * 3)
    result, attempts = invoke_like_lambda(lam, load_event("sns_worker_stuck_alarm"), ecs)
    assert result is not None and attempts == 3  # the third attempt is final: acknowledged
    assert len(alerts(server)) == 1 and ecs.updates == []
    pending, final = follow_ups(server)
    assert "yet" in pending and "after 3 attempts" in final
    final_body = json.dumps(server.messages()[-1].json)
    assert "Redeploy by hand" in final_body


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("AccessDeniedException", "misconfigured: the handler's IAM role may not call "
         "ecs:UpdateService (AccessDeniedException)"),
        ("ServiceNotFoundException", "Could not redeploy"),
    ],
)
def test_ecs_permanent_faults_are_acknowledged_once(
    lam: ModuleType, server: SlackServer, aws: Any, fault: str, says: str
) -> None:
    ecs = FaultyEcs(aws, update=[fault])
    result, attempts = invoke_like_lambda(lam, load_event("sns_worker_stuck_alarm"), ecs)
    assert result is not None and attempts == 1  # no retry storm
    assert len(alerts(server)) == 1 and len(ecs.updates) == 1
    (note,) = follow_ups(server)
    assert says in note


def test_service_gone_is_a_skip_not_a_retry(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    aws.delete_service(cluster=CLUSTER, service=SERVICE, force=True)
    ecs = CountingEcs(aws)
    result, attempts = invoke_like_lambda(lam, load_event("sns_worker_stuck_alarm"), ecs)
    assert result is not None and attempts == 1
    assert result["alarms"][0]["remediation"] == "skipped"
    assert len(alerts(server)) == 1 and ecs.updates == []
    (note,) = follow_ups(server)
    assert "Not redeploying" in note and "service status is" in note


# --- configuration errors -------------------------------------------------------------------------


def test_missing_state_table_is_permanent_one_error_line_alert_once(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("STATE_TABLE", "no-such-table")
    ecs = CountingEcs(aws)
    event = load_event("sns_worker_stuck_alarm")
    result, attempts = invoke_like_lambda(lam, event, ecs)
    assert result is not None and attempts == 1  # before: raised, 3 alerts
    lam.handler(event, Context())  # an SNS duplicate reaching the same container
    assert len(alerts(server)) == 1 and ecs.updates == []
    (note,) = follow_ups(server)
    assert "misconfigured" in note and "STATE_TABLE=no-such-table" in note
    assert "Could not redeploy" not in note
    errors = [m for m in (r.getMessage() for r in caplog.records)
              if '"event": "misconfigured"' in m]
    assert len(errors) == 1 and "ResourceNotFoundException" in errors[0]


def test_wrong_secret_arn_is_permanent_and_names_the_setting(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    monkeypatch.setenv("SLACK_SECRET_ARN",
                       f"arn:aws:secretsmanager:{REGION}:123456789012:secret:nope-AbCdEf")
    result, attempts = invoke_like_lambda(lam, load_event("sns_worker_stuck_alarm"),
                                          CountingEcs(aws))
    assert result is not None and attempts == 1
    assert "SLACK_SECRET_ARN: cannot read the Slack secret: ResourceNotFoundException" in (
        caplog.text
    )


# --- an invocation killed mid-way -------------------------------------------------------------


class KilledAfterDeploy(CountingEcs):
    def update_service(self, **kwargs: Any) -> Any:
        super().update_service(**kwargs)
        raise Killed()


def test_invocation_killed_after_deploying_its_retry_finishes_without_redeploying(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch,
    unique: str,
) -> None:
    create_state_table(unique)
    monkeypatch.setenv("STATE_TABLE", unique)
    event = load_event("sns_worker_stuck_alarm")
    killer = KilledAfterDeploy(aws)
    lam.responder().remediator._ecs = killer
    with pytest.raises(Killed):
        lam.handler(event, Context(120_000))
    # The remediation runs first: killed right after UpdateService, before the alert.
    assert len(alerts(server)) == 0 and len(killer.updates) == 1
    # Another delivery while the lease is held (an SNS duplicate, or a retry while a dead
    # invocation's lease runs on): nothing posted, and raised while something is owed.
    lam._responder = None
    lam.responder().remediator._ecs = killer
    with pytest.raises(AlarmHandlingFailed, match="in_progress owed"):
        lam.handler(event, Context())
    assert len(server.messages()) == 0
    # Lambda's retry, in a new container, after the lease lapsed (the timeout + 20 s).
    lam._responder = None
    later = datetime.now(UTC) + timedelta(minutes=3)
    responder = lam.responder()
    responder.clock = responder.remediator.clock = lambda: later
    responder.remediator._ecs = killer
    result = lam.handler(event, Context())
    assert len(killer.updates) == 1  # the guards kept a second deployment impossible
    assert len(alerts(server)) == 1  # the alert the killed attempt still owed
    (note,) = follow_ups(server)
    assert "interrupted" in note and "not acting again" in note
    assert result["alarms"][0]["posted"] and not result["alarms"][0]["duplicate"]


def test_invocation_killed_before_the_alert_its_retry_posts_it(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch,
    unique: str,
) -> None:
    create_state_table(unique)
    monkeypatch.setenv("STATE_TABLE", unique)
    event = load_event("sns_worker_stuck_alarm")

    class Dying:
        threads = True

        def post(self, *_: Any, **__: Any) -> str:
            raise Killed()

    lam.responder()._sender = Dying()
    counting = CountingEcs(aws)
    lam.responder().remediator._ecs = counting
    with pytest.raises(Killed):
        lam.handler(event, Context(60_000))
    assert len(counting.updates) == 1  # the remediation ran before the alert
    lam._responder = None
    later = datetime.now(UTC) + timedelta(minutes=2)
    responder = lam.responder()
    responder.clock = responder.remediator.clock = lambda: later
    responder.remediator._ecs = counting
    result = lam.handler(event, Context())
    assert result["alarms"][0]["posted"] and len(alerts(server)) == 1
    assert len(counting.updates) == 1  # recorded done: not again
    (note,) = follow_ups(server)
    assert "Forced a new deployment" in note


# --- plain-text fallback ---------------------------------------------------------------------


@pytest.mark.parametrize("route", ["bot", "webhook"])
def test_long_non_ascii_name_falls_back_to_plain_text(
    lam: ModuleType, server: SlackServer, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    monkeypatch.setenv("REMEDIATION", "off")
    if route == "webhook":
        monkeypatch.delenv("SLACK_BOT_TOKEN")
        monkeypatch.setenv("SLACK_WEBHOOK_URL", server.webhook_url)
    server.script("invalid_blocks")  # Slack refuses the blocks (as for a URL over 3,000)
    event = load_event("sns_worker_stuck_alarm")
    result = lam.handler(event, Context())
    assert result["alarms"][0]["posted"]
    refused, plain = server.requests[:2]
    assert refused.answered == "invalid_blocks" and "attachments" in refused.json
    assert "attachments" not in plain.json and "blocks" not in plain.json
    assert plain.json["text"].startswith("ALARM: ") and "stopped making progress" in (
        plain.json["text"]
    )


def test_console_url_over_slacks_limit_is_never_sent(
    lam: ModuleType, server: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMEDIATION", "off")
    event = load_event("sns_worker_stuck_alarm")
    message = json.loads(event["Records"][0]["Sns"]["Message"])
    # 223 characters, ~2,500 once encoded x 1.5 (named for its service: this environment's own)
    message["AlarmName"] = "prod-worker-emails-" + "Очередь-застряла-" * 12
    event["Records"][0]["Sns"]["Message"] = json.dumps(message)
    lam.handler(event, Context())
    assert [r.answered for r in server.requests] == ["ok", "ok"]
    urls = [e["url"] for b in server.requests[0].json["attachments"][0]["blocks"]
            if b["type"] == "actions" for e in b["elements"]]
    assert urls and all(len(u) <= 3000 for u in urls)


# --- hypothesis: nothing from the alarm pings or links --------------------------------------

INJECTIONS = ["<!channel>", "<!here>", "<!subteam^S0ONCALL>", "<@U0123>",
              "<https://evil.example|Open alarm>", "<http://x>", "&", ">"]
hostile = st.lists(
    st.one_of(st.sampled_from(INJECTIONS), st.text(max_size=20)), max_size=6
).map("".join)


class Capture:
    threads = True

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def post(self, message: Any, *, thread_ts: str | None = None, broadcast: bool = False) -> str:
        self.bodies.append(json.dumps(message.payload(), ensure_ascii=False))
        self.bodies.append(json.dumps(message.fallback_payload(), ensure_ascii=False))
        return f"{len(self.bodies)}.0"


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(name=hostile, description=hostile, reason=hostile, service=hostile, cluster=hostile,
       rule=hostile, composite=st.booleans())
def test_no_alarm_text_survives_unescaped(
    name: str, description: str, reason: str, service: str, cluster: str, rule: str,
    composite: bool,
) -> None:
    event = load_event("sns_worker_stuck_alarm")
    message = json.loads(event["Records"][0]["Sns"]["Message"])
    message.update(AlarmName=name or "x", AlarmDescription=description,
                   NewStateReason=reason + " was greater than the threshold (1.0)")
    for dim in message["Trigger"]["Dimensions"]:
        dim["value"] = {"ClusterName": cluster, "ServiceName": service}.get(
            dim["name"], dim["value"]
        ) or "x"
    if composite:
        del message["Trigger"]
        message["AlarmRule"] = rule
    event["Records"][0]["Sns"]["Message"] = json.dumps(message)

    capture = Capture()

    class Ecs:  # the service is gone: a follow-up quoting the alarm's dimensions is posted
        def describe_services(self, **_: Any) -> Any:
            return {"services": []}

    responder = build_responder(
        AlarmHandlerSettings(remediation="enabled"), ecs=Ecs(), sender=capture
    )
    responder.state = responder.remediator.state = MemoryStateStore()
    responder.deadline = Deadline()
    responder.handle(event)
    assert capture.bodies
    for body in capture.bodies:
        for bad in ("<!", "<@", "<http"):
            assert bad not in body, body


# --- the lease when an invocation dies early ----------------------------------------------------


@pytest.mark.parametrize("death", ["killed", "crashed"])
def test_retry_arriving_while_a_dead_invocations_lease_is_held_is_not_acknowledged(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch,
    unique: str, death: str,
) -> None:
    """An invocation that dies early (OOM: ``killed``; an unexpected exception: ``crashed``) with
    most of its 120 s left. Lambda's first retry comes about a minute later: it must not be
    acknowledged as a duplicate (Lambda would never retry again and the alert would be lost)."""
    create_state_table(unique)
    monkeypatch.setenv("STATE_TABLE", unique)
    event = load_event("sns_worker_stuck_alarm")
    boom: BaseException = Killed() if death == "killed" else RuntimeError("bug in a parser")

    class Dying:
        threads = True

        def post(self, *_: Any, **__: Any) -> str:
            raise boom

    lam.responder()._sender = Dying()
    counting = CountingEcs(aws)
    lam.responder().remediator._ecs = counting
    with pytest.raises(type(boom)):
        lam.handler(event, Context(120_000))
    start = datetime.now(UTC)
    outcomes = []
    for minutes in (1, 3):  # Lambda's two retries, in new containers
        lam._responder = None
        responder = lam.responder()
        later = start + timedelta(minutes=minutes, seconds=5)
        responder.clock = responder.remediator.clock = lambda later=later: later
        responder.remediator._ecs = counting
        try:
            outcomes.append(lam.handler(event, Context()))
        except AlarmHandlingFailed:
            outcomes.append(None)
        if outcomes[-1] is not None:
            break
    assert len(alerts(server)) == 1, outcomes
    # Deployed once, by the first invocation (the remediation runs before the alert).
    assert len(counting.updates) == 1

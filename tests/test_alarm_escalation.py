"""Issue 20, case 5: still stuck after a forced deployment is no longer silent. The alarm goes OK
while the new tasks start, the new tasks hang again, the alarm comes back within the cooldown:
":warning: Still stuck after a forced deployment", with what was done and when, the configured
on-call mentioned, and no further automatic action until the cooldown ends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest

from tests.alarm_lambda import Context, ecs_service, handler_module
from tests.aws_ecs import CountingEcs
from tests.conftest import load_event
from tests.slack_server import SlackServer
from tests.test_remediation import create_state_table
from toolkit.alarms.escalation import still_stuck
from toolkit.alarms.settings import AlarmHandlerSettings, slack_mentions

CLUSTER, SERVICE = "prod-cluster", "worker-emails"
TOKEN = "xoxb-6666-ESCALATION-SECRET"
ONCALL = "<!subteam^S0ONCALL|@oncall>"


@pytest.fixture
def server() -> Iterator[SlackServer]:
    srv = SlackServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with ecs_service(monkeypatch, CLUSTER, SERVICE) as ecs:
        yield ecs


@pytest.fixture
def lam(monkeypatch: pytest.MonkeyPatch, server: SlackServer, aws: Any) -> Iterator[ModuleType]:
    monkeypatch.setenv("SLACK_ESCALATION_MENTION", ONCALL)
    monkeypatch.setenv("COOLDOWN_SECONDS", "900")
    with handler_module(monkeypatch, server.api_url, TOKEN) as module:
        yield module


def at(fixture: str, when: datetime) -> dict[str, Any]:
    """The fixture (SNS, EventBridge or Lambda action) as a state change at ``when``."""
    event = load_event(fixture)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"
    if "Records" in event:
        message = json.loads(event["Records"][0]["Sns"]["Message"])
        message["StateChangeTime"] = stamp
        event["Records"][0]["Sns"]["Message"] = json.dumps(message)
    else:
        (event.get("detail") or event["alarmData"])["state"]["timestamp"] = stamp
    return event


def texts(server: SlackServer) -> list[str]:
    return [r.json.get("text", "") for r in server.messages()]


def container(lam: ModuleType, ecs: Any, new: bool, clock: datetime | None = None) -> None:
    if new:
        lam._responder = None
    responder = lam.responder()
    responder.remediator._ecs = ecs
    if clock is not None:
        responder.clock = responder.remediator.clock = lambda: clock


@pytest.mark.parametrize("route", ["sns", "eventbridge", "lambda"])
@pytest.mark.parametrize("table", [False, True], ids=["memory", "state-table"])
def test_still_stuck_after_a_forced_deployment_escalates_and_does_not_redeploy(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch,
    unique: str, table: bool, route: str,
) -> None:
    if table:
        create_state_table(unique)
        monkeypatch.setenv("STATE_TABLE", unique)
    counting = CountingEcs(aws)
    start = datetime.now(UTC)
    # 1. WorkerStuck: the forced deployment.
    container(lam, counting, new=True)
    stuck = f"{route}_worker_stuck_alarm"
    first = lam.handler(at(stuck, start - timedelta(seconds=5)), Context())
    assert first["alarms"][0]["remediation"] == "deployed" and len(counting.updates) == 1
    # 2. OK while the new tasks start; 3. they hang again: ALARM within the cooldown.
    container(lam, counting, new=table)
    lam.handler(at("sns_worker_stuck_ok", datetime.now(UTC)), Context())
    container(lam, counting, new=table)
    again = lam.handler(at(stuck, datetime.now(UTC) + timedelta(seconds=2)), Context())
    assert again["alarms"][0]["remediation"] == "skipped"
    assert len(counting.updates) == 1  # no further automatic action
    alert, done, resolved, alert2, escalation = server.messages()
    assert [alert.json["text"][:6], resolved.json["text"][:9], alert2.json["text"][:6]] == [
        "ALARM:", "Resolved:", "ALARM:"]
    text = escalation.json["text"]
    assert text.startswith(f"{ONCALL} :warning: Still stuck after a forced deployment")
    body = json.dumps(escalation.json)
    assert "The handler forced a new deployment (`ecs-svc/" in body
    # The deployment happened within a second or two of ``start`` (either side of a minute).
    moments = [start + timedelta(seconds=s) for s in (0, 2)]
    assert any(f"at {m:%H:%M} UTC for `prod-worker-emails-WorkerStuck`" in body for m in moments)
    assert any(f"No further automatic action until {m + timedelta(seconds=900):%H:%M} UTC"
               in body for m in moments)
    assert "remediation: still-stuck" in body
    # Under the returning alarm's alert: the 4th message Slack kept (ts ...04).
    assert escalation.json["thread_ts"] == "1700000004.000100"
    assert escalation.json["reply_broadcast"] is True  # shown in the channel too
    assert "attachments" not in escalation.json  # top-level blocks: the mention notifies


def test_after_the_cooldown_the_next_alarm_deploys_again(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    counting = CountingEcs(aws)
    start = datetime.now(UTC)
    container(lam, counting, new=True)
    lam.handler(at("sns_worker_stuck_alarm", start - timedelta(seconds=5)), Context())
    later = start + timedelta(seconds=901)
    container(lam, counting, new=False, clock=later)
    result = lam.handler(at("sns_worker_stuck_alarm", later), Context())
    assert result["alarms"][0]["remediation"] == "deployed" and len(counting.updates) == 2
    assert not any("Still stuck" in t for t in texts(server))


def test_a_new_container_without_state_table_escalates_from_the_service_tag(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    counting = CountingEcs(aws)
    container(lam, counting, new=True)
    lam.handler(at("sns_worker_stuck_alarm", datetime.now(UTC) - timedelta(seconds=5)),
                Context())
    container(lam, counting, new=True)  # no remedy record here, only the remediated-at tag
    lam.handler(at("sns_worker_stuck_alarm", datetime.now(UTC) + timedelta(seconds=2)),
                Context())
    assert len(counting.updates) == 1
    (escalation,) = [t for t in texts(server) if "Still stuck" in t]
    assert "acted (forced a deployment or stopped tasks)" in json.dumps(server.messages()[-1].json)
    assert escalation.startswith(ONCALL)


def test_a_late_copy_of_the_state_change_that_was_remedied_is_no_escalation(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    """The same state change through the other route, reaching a container that never saw it:
    the remedy answered it already; plain cooldown, nobody paged."""
    counting = CountingEcs(aws)
    event = at("sns_worker_stuck_alarm", datetime.now(UTC) - timedelta(seconds=5))
    container(lam, counting, new=True)
    lam.handler(event, Context())
    container(lam, counting, new=True)
    result = lam.handler(event, Context())
    assert len(counting.updates) == 1
    assert result["alarms"][0]["remediation"] == "skipped"
    assert not any("Still stuck" in t for t in texts(server))
    assert "last deployment was" in texts(server)[-1] or "lock" in texts(server)[-1]


# --- pure --------------------------------------------------------------------------------------

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("alarm_at", "now", "escalates"),
    [
        (T0 + timedelta(minutes=5), T0 + timedelta(minutes=5), True),
        (T0 - timedelta(seconds=1), T0 + timedelta(minutes=5), False),  # the remedied one
        (T0 + timedelta(milliseconds=400), T0 + timedelta(seconds=1), False),  # tag rounding
        (T0 + timedelta(minutes=16), T0 + timedelta(minutes=16), False),  # cooldown over
        (None, T0 + timedelta(minutes=5), False),
    ],
)
def test_still_stuck_from_the_tag(alarm_at: datetime | None, now: datetime,
                                  escalates: bool) -> None:
    assert (still_stuck(alarm_at, T0, None, 900, now) is not None) is escalates


def test_still_stuck_from_the_record_says_what_was_done() -> None:
    record = {"alarm_at": (T0 - timedelta(seconds=3)).isoformat(), "at": T0.isoformat(),
              "action": "stopped", "tasks": ["arn:aws:ecs:eu-west-1:1:task/c/abc"],
              "alarm": "prod-w-WorkersStuck"}
    found = still_stuck(T0 + timedelta(minutes=4), None, record, 900, T0 + timedelta(minutes=4))
    assert found is not None
    reason, details = found
    assert reason.startswith("still stuck 4 min after the handler stopped 1 stuck task(s) at 12:00")
    assert "until 12:15 UTC" in reason and details["last_tasks"] == record["tasks"]
    assert still_stuck(T0 - timedelta(seconds=3), None, record, 900, T0) is None


@pytest.mark.parametrize(
    ("raw", "mention", "refused"),
    [
        ("<!subteam^S0ONCALL|@oncall>", "<!subteam^S0ONCALL|@oncall>", ()),
        ("S0ONCALL, U0ALICE @here", "<!subteam^S0ONCALL> <@U0ALICE> <!here>", ()),
        ("@oncall-team <!channel>", "<!channel>", ("@oncall-team",)),
        ("<https://evil|x>", None, ("<https://evil|x>",)),
        ("", None, ()),
    ],
)
def test_escalation_mention_setting(raw: str, mention: str | None,
                                    refused: tuple[str, ...]) -> None:
    assert slack_mentions(raw) == (mention, refused)
    settings = AlarmHandlerSettings.from_env({"SLACK_ESCALATION_MENTION": raw})
    assert settings.escalation_mention == mention

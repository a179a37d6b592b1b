"""Issue 20, cases 3 and 4: the remedy first in the time budget, and a POST that may have landed
is not sent again. The handler module on a local Slack, moto ECS, a counting-down Lambda context
and Lambda's async retries (the event again after a raise, at most twice)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.alarm_lambda import Context, ecs_service, handler_module, invoke_like_lambda
from tests.aws_ecs import CountingEcs
from tests.conftest import load_event
from tests.slack_server import SlackServer
from tests.test_remediation import create_state_table
from toolkit.alarms.budget import Deadline
from toolkit.alarms.messages import SlackMessage
from toolkit.alarms.responder import AlarmHandlingFailed
from toolkit.alarms.senders import BotSender, SlackMaybePosted

CLUSTER, SERVICE = "prod-cluster", "worker-emails"
TOKEN = "xoxb-5555-BUDGET-SECRET"


@pytest.fixture
def server() -> Iterator[SlackServer]:
    srv = SlackServer(retry_after=1, hang_seconds=8, slow_seconds=3.5).start()
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


def webhook(monkeypatch: pytest.MonkeyPatch, server: SlackServer) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", server.webhook_url)


def shown(server: SlackServer, text: str) -> list[Any]:
    """What Slack shows (accepted posts, answered or not) whose text holds ``text``."""
    return [r for r in server.messages() if text in r.json.get("text", "")]


def alert_posts(server: SlackServer) -> list[Any]:
    return [r for r in server.posts() if r.json.get("text", "").startswith("ALARM")]


# --- case 3: a hanging Slack no longer starves the remedy ------------------------------------


@pytest.mark.parametrize("route", ["sns", "eventbridge", "lambda"])
@pytest.mark.parametrize("table", [False, True], ids=["memory", "state-table"])
def test_8_seconds_and_a_hanging_slack_deploy_once_and_the_alert_comes_later(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch,
    unique: str, table: bool, route: str,
) -> None:
    """Before: 3 attempts, "not started: too little time left", 0 deployments (the alert went
    first and the remedy needed 20 s). Now the remedy runs first; the alert's POST hangs (sent:
    maybe posted), looking it up hangs too; the retry looks again, finds nothing, posts it."""
    if table:
        create_state_table(unique)
        monkeypatch.setenv("STATE_TABLE", unique)
    server.script("hang", "hang")  # the first attempt's alert POST and its lookup
    counting = CountingEcs(aws)
    result, attempts = invoke_like_lambda(
        lam, load_event(f"{route}_worker_stuck_alarm"), counting, contexts=(8_000,),
        new_container_each_time=table,
    )
    # 2 attempts; 3 when a loaded machine makes the second one run out of its 8 s as well
    assert result is not None and attempts in (2, 3)
    assert len(counting.updates) == 1  # exactly one deployment, in the first attempt
    posts = [r.answered for r in alert_posts(server)]
    assert posts[0] == "hang" and posts[-1] == "ok" and posts.count("ok") == 1
    assert len(shown(server, "ALARM")) == 1
    (note,) = shown(server, "Forced a new deployment")
    assert note.json["thread_ts"] == "1700000001.000100"  # under the one alert
    lookups = [r.answered for r in server.lookups()]
    assert lookups[0] == "hang" and lookups[-1] == "ok"


def test_8_seconds_and_a_hanging_webhook_deploy_once_and_do_not_resend(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook that takes the POST and never answers: the remedy is done first; the alert may
    have landed, and a webhook cannot be asked, so it is not sent again (one POST, no retry)."""
    webhook(monkeypatch, server)
    server.script("hang")
    counting = CountingEcs(aws)
    result, attempts = invoke_like_lambda(
        lam, load_event("sns_worker_stuck_alarm"), counting, contexts=(8_000,)
    )
    assert result is not None and attempts == 1 and len(counting.updates) == 1
    assert [r.answered for r in alert_posts(server)] == ["hang"]
    assert "may have accepted it" in (result["alarms"][0]["slack_error"] or "")


def test_slack_calls_get_only_what_is_left(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """6 s left (3 s usable): the remedy, then one alert POST capped to what is left; the handler
    returns before the invocation would time out."""
    import time

    webhook(monkeypatch, server)
    server.script("hang", "hang", "hang")
    counting = CountingEcs(aws)
    lam.responder().remediator._ecs = counting
    started = time.monotonic()
    with pytest.raises(AlarmHandlingFailed, match="follow_up owed"):
        lam.handler(load_event("sns_worker_stuck_alarm"), Context(6_000))
    assert time.monotonic() - started < 6.0  # within the invocation, margin included
    assert len(counting.updates) == 1
    assert [r.answered for r in server.posts()] == ["hang"]  # the alert: maybe posted, once


# --- case 4: a slow Slack no longer duplicates the alert ------------------------------------


def test_slow_webhook_gets_one_post_per_message(
    lam: ModuleType, server: SlackServer, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook answering after 3.5 s (past the 3 s timeout), every time. Before: 9 POSTs of the
    alert (3 per attempt, 3 attempts). Now: the alert once, the follow-up once, no retry."""
    webhook(monkeypatch, server)
    server.script(*["slow"] * 10)
    counting = CountingEcs(aws)
    result, attempts = invoke_like_lambda(lam, load_event("sns_worker_stuck_alarm"), counting)
    assert result is not None and attempts == 1 and len(counting.updates) == 1
    assert len(alert_posts(server)) == 1
    assert len(server.posts()) == 2  # the alert and its follow-up
    assert len(shown(server, "ALARM")) == 1 and len(shown(server, "Forced")) == 1


@pytest.mark.parametrize("mode", ["slow", "landed-hang"])
def test_bot_post_whose_answer_is_lost_is_found_not_sent_again(
    lam: ModuleType, server: SlackServer, aws: Any, mode: str
) -> None:
    """chat.postMessage accepted, its answer late or lost: conversations.history finds it by its
    metadata, its ts threads the follow-up; nothing is posted twice."""
    server.script(mode, "ok", mode, "ok")  # alert, its lookup, follow-up, its lookup
    counting = CountingEcs(aws)
    result, attempts = invoke_like_lambda(lam, load_event("sns_worker_stuck_alarm"), counting)
    assert result is not None and attempts == 1 and len(counting.updates) == 1
    assert [r.answered for r in server.posts()] == [mode, mode]
    (alert,) = shown(server, "ALARM")
    (note,) = shown(server, "Forced")
    lookups = server.lookups()
    assert [r.path for r in lookups] == ["/api/conversations.history",
                                         "/api/conversations.replies"]
    assert lookups[1].body["ts"] == note.json["thread_ts"]  # under the alert that was found
    assert alert.json["metadata"]["event_type"] == "celery_ecs_message"
    assert alert.json["metadata"]["event_payload"]["key"] != note.json["metadata"][
        "event_payload"]["key"]
    assert result["alarms"][0]["posted"]


def test_bot_post_that_did_not_land_is_posted_again_after_the_lookup(
    lam: ModuleType, server: SlackServer, aws: Any
) -> None:
    server.script("hang")  # not kept: Slack never saw it
    result = lam.handler(load_event("sns_worker_stuck_alarm"), Context())
    assert result["alarms"][0]["posted"]
    assert [r.answered for r in alert_posts(server)] == ["hang", "ok"]
    assert len(shown(server, "ALARM")) == 1


def test_lookup_refused_is_not_sent_again(
    server: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Without channels:history the bot cannot look: maybe posted, never sent twice."""
    server.script("landed-hang", "api:missing_scope")
    sender = BotSender(TOKEN, "C0ALERTS", base_url=server.api_url, timeout=1,
                       deadline=Deadline())
    message = SlackMessage(text="ALARM: x", blocks=(), key="k1")
    with pytest.raises(SlackMaybePosted, match="missing_scope") as info:
        sender.post(message)
    assert info.value.retryable is False
    assert len(server.posts()) == 1 and TOKEN not in caplog.text


def test_find_reads_the_metadata_of_the_channel_and_of_a_thread(server: SlackServer) -> None:
    sender = BotSender(TOKEN, "C0ALERTS", base_url=server.api_url, deadline=Deadline())
    ts = sender.post(SlackMessage(text="a", blocks=(), key="alert-key"))
    reply = sender.post(SlackMessage(text="b", blocks=(), key="reply-key"), thread_ts=ts)
    assert sender.find("alert-key") == ts and sender.find("nope") is None
    assert sender.find("reply-key", ts) == reply and sender.find("reply-key") is None
    body = json.dumps([r.body for r in server.lookups()])
    assert '"include_all_metadata": "1"' in body

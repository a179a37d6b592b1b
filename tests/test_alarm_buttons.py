"""The buttons and the pure parts of a press: which alert gets which button, the value's shape,
the signature check, the press read from Slack's payload, the allowed users, the replies."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.conftest import load_event
from toolkit.alarms.buttons import (
    ACTION_MUTE,
    ACTION_REDEPLOY,
    ACTION_STOP_TASKS,
    MAX_VALUE,
    ButtonValue,
    alert_buttons,
)
from toolkit.alarms.decision import Decision, Target
from toolkit.alarms.factory import build_responder
from toolkit.alarms.guards import RemediationPolicy
from toolkit.alarms.messages import alarm_message
from toolkit.alarms.mute import Mute
from toolkit.alarms.parsing import parse_event
from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.alarms.slackactions.click import Click, parse_click
from toolkit.alarms.slackactions.deferral import is_job, job_event
from toolkit.alarms.slackactions.replies import decision_reply, mute_reply, not_allowed
from toolkit.alarms.slackactions.reply import slack_response_url
from toolkit.alarms.slackactions.request import HttpRequest, check_signature
from toolkit.alarms.slackactions.settings import SlackActionsSettings, click_mode, parse_users
from toolkit.sandbox.press import block_actions, function_url_event

POLICY = RemediationPolicy(environment="prod")
ARN = "arn:aws:ecs:eu-west-1:123456789012:task/prod-cluster/{}"
NOW = datetime(2024, 1, 1, 10, 42, 5, tzinfo=UTC)


def alarm(name: str, **replace: str) -> Any:
    text = json.dumps(load_event(name))
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_event(json.loads(text))[0]


def elements(blocks: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [e for b in blocks for e in b["elements"]]


# ---- which alert gets which button ----


def test_worker_stuck_gets_redeploy_and_mute() -> None:
    buttons = elements(alert_buttons(alarm("sns_worker_stuck_alarm"), POLICY))
    assert [(b["action_id"], b["text"]["text"]) for b in buttons] == [
        (ACTION_REDEPLOY, "Redeploy now"), (ACTION_MUTE, "Mute 1 h")]
    assert ButtonValue.decode(buttons[0]["value"]) == ButtonValue(
        "prod-worker-emails-WorkerStuck", "prod-cluster", "worker-emails")
    confirm = buttons[0]["confirm"]
    assert confirm["confirm"]["text"] == "Redeploy" and confirm["deny"]["text"] == "Cancel"
    assert "confirm" not in buttons[1]  # muting is harmless: no dialog


def test_workers_stuck_gets_stop_with_the_recorded_tasks() -> None:
    stuck = alarm("sns_worker_stuck_alarm", WorkerStuck="WorkersStuck")
    tasks = (ARN.format("a1"), ARN.format("b2"))
    buttons = elements(alert_buttons(stuck, POLICY, tasks))
    assert [b["action_id"] for b in buttons] == [ACTION_STOP_TASKS, ACTION_MUTE]
    assert ButtonValue.decode(buttons[0]["value"]).tasks == tasks
    assert "Stops the 2 task(s)" in buttons[0]["confirm"]["text"]["text"]
    # no record, no task named: only the mute
    assert [b["action_id"] for b in elements(alert_buttons(stuck, POLICY))] == [ACTION_MUTE]


@pytest.mark.parametrize("fixture,replace,environment", [
    ("sns_worker_stuck_ok", {}, "prod"),  # resolved
    ("sns_set_alarm_state", {}, "prod"),  # a test never gets a button
    ("sns_metric_math_alarm", {}, "prod"),  # not a remediating metric
    ("sns_worker_stuck_alarm", {}, "staging"),  # another environment's alarm
    ("sns_worker_stuck_alarm", {}, ""),  # no ENVIRONMENT: nothing is own
    ("sns_worker_stuck_alarm", {"prod-worker-emails-WorkerStuck": "prod-custom-name"}, "prod"),
])
def test_no_button_where_no_remedy_could_apply(fixture: str, replace: dict[str, str],
                                               environment: str) -> None:
    policy = RemediationPolicy(environment=environment)
    assert alert_buttons(alarm(fixture, **replace), policy) == ()


@pytest.mark.parametrize("threads,expected", [(True, ["Redeploy now", "Mute 1 h"]),
                                              (False, [])], ids=["bot token", "webhook"])
def test_only_bot_token_alerts_carry_buttons(threads: bool, expected: list[str]) -> None:
    class Capture:
        def __init__(self) -> None:
            self.threads = threads
            self.sent: list[Any] = []

        def post(self, message: Any, *, thread_ts: str | None = None,
                 broadcast: bool = False) -> str:
            self.sent.append(message)
            return "1.1"

    capture = Capture()
    responder = build_responder(AlarmHandlerSettings(environment="prod"), sender=capture)
    responder.handle(load_event("sns_worker_stuck_alarm"))
    blocks = capture.sent[0].blocks
    labels = [e["text"]["text"] for b in blocks if b.get("block_id") == "celery-ecs-actions"
              for e in b["elements"]]
    assert labels == expected


def test_the_buttons_read_in_the_plain_rendering() -> None:
    event = alarm("sns_worker_stuck_alarm")
    message = alarm_message(event, environment="prod", actions=alert_buttons(event, POLICY))
    assert "  [Open alarm](https://" in message.plain()
    assert "  [Redeploy now] | [Mute 1 h]" in message.plain()


# ---- the value: a hint, read back as untrusted ----


def test_value_round_trip_and_limit() -> None:
    many = tuple(ARN.format(f"{i:032x}") for i in range(40))
    value = ButtonValue("prod-w-WorkersStuck", "prod-cluster", "w", many)
    text = value.encode()
    assert len(text) <= MAX_VALUE
    back = ButtonValue.decode(text)
    assert back.tasks == many[: len(back.tasks)] and 10 <= len(back.tasks) < 40


@pytest.mark.parametrize("raw", [
    None, 7, "", "not json", "[]", '{"v":2,"a":"x","c":"c","s":"s"}',
    '{"v":1,"a":"","c":"c","s":"s"}', '{"v":1,"a":"x","c":"c"}',
    '{"v":1,"a":"x","c":"c","s":"s","t":"arn"}', '{"v":1,"a":"x\\n","c":"c","s":"s"}',
    '{"v":1,"a":"x","c":"c","s":"s","t":[1]}', "x" * 2001,
])
def test_anything_but_the_toolkits_value_is_refused(raw: object) -> None:
    with pytest.raises(ValueError):
        ButtonValue.decode(raw)


# ---- the request and its signature ----

SECRET = "e4da3b7fbbce2345d7772b0674a318d5"


def _request(encode: bool = True, **kw: Any) -> HttpRequest:
    button = {"action_id": ACTION_REDEPLOY, "value": "v"}
    payload = block_actions(button, user="U0ONCALL", channel="C0A", message_ts="1.000100",
                            response_url="https://hooks.slack.com/actions/T/1/x")
    request = HttpRequest.from_event(function_url_event(payload, SECRET, encode=encode, **kw))
    assert request is not None
    return request


@pytest.mark.parametrize("encode", [True, False])
def test_a_fresh_signed_request_passes(encode: bool) -> None:
    request = _request(encode)
    now = float(request.headers["x-slack-request-timestamp"])
    assert request.body.startswith(b"payload=")
    assert check_signature(request, lambda: SECRET, now) is None
    assert check_signature(request, lambda: SECRET, now + 300) is None
    assert check_signature(request, lambda: SECRET, now + 301) == "stale"
    assert check_signature(request, lambda: SECRET, now - 301) == "stale"
    assert check_signature(request, lambda: "another-secret", now) == "bad-signature"
    assert check_signature(request, lambda: None, now) == "no-secret"


def test_other_events_are_not_requests() -> None:
    assert HttpRequest.from_event(load_event("sns_worker_stuck_alarm")) is None
    assert HttpRequest.from_event(job_event("act", {"user": "U1"})) is None
    assert is_job(job_event("act", {"user": "U1"}))
    # a function URL request can never pass for a job, whatever its body says
    forged = function_url_event(json.dumps(job_event("act", {"user": "U1"})), None)
    assert not is_job(forged) and HttpRequest.from_event(forged) is not None


def test_a_get_and_an_oversized_body_are_refused_before_any_secret_read() -> None:
    reads: list[int] = []

    def secret() -> str:
        reads.append(1)
        return SECRET

    event = function_url_event("payload=%7B%7D", SECRET)
    event["requestContext"]["http"]["method"] = "GET"
    get = HttpRequest.from_event(event)
    assert get is not None and check_signature(get, secret, 0) == "not-post"
    big = HttpRequest("POST", {"x-slack-signature": "v0=1", "x-slack-request-timestamp": "1"},
                      b"x" * 70_000)
    assert check_signature(big, secret, 1) == "too-large" and reads == []


# ---- the press ----


def _body(payload: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def test_a_press_is_read_from_the_payload() -> None:
    value = ButtonValue("prod-w-WorkerStuck", "prod-cluster", "w")
    payload = block_actions({"action_id": ACTION_REDEPLOY, "value": value.encode()},
                            user="U0ONCALL", channel="C0ALERTS", message_ts="1700000001.000100",
                            response_url="https://hooks.slack.com/actions/T/1/x",
                            action_ts="1700000002.123456")
    click = parse_click(_body(payload))
    assert isinstance(click, Click)
    assert (click.action, click.user, click.channel, click.message_ts, click.value) == (
        ACTION_REDEPLOY, "U0ONCALL", "C0ALERTS", "1700000001.000100", value)
    assert Click.from_job(click.to_job()) == click
    again = parse_click(_body(payload))
    assert isinstance(again, Click) and again.key == click.key  # the same press, twice
    payload["actions"][0]["action_ts"] = "1700000003.000001"
    other = parse_click(_body(payload))
    assert isinstance(other, Click) and other.key != click.key  # a second press


@pytest.mark.parametrize("change,why", [
    (lambda p: p.update(type="view_submission"), "not block_actions"),
    (lambda p: p["actions"][0].update(action_id="other"), "no celery-ecs button"),
    (lambda p: p["user"].update(id="<!channel>"), "no Slack user ID"),
    (lambda p: p["actions"][0].pop("action_ts"), "no action_ts"),
])
def test_payloads_the_handler_does_not_take(change: Any, why: str) -> None:
    payload = block_actions({"action_id": ACTION_MUTE, "value": "v"}, user="U0ONCALL",
                            channel="C0A", message_ts="1.1", response_url="https://x")
    change(payload)
    result = parse_click(_body(payload))
    assert isinstance(result, str) and why in result
    assert isinstance(parse_click(b"not a form"), str)


def test_an_unreadable_value_still_makes_a_press_that_is_answered() -> None:
    payload = block_actions({"action_id": ACTION_MUTE, "value": "{bad"}, user="U0ONCALL",
                            channel="C0A", message_ts="1.1", response_url="https://x")
    click = parse_click(_body(payload))
    assert isinstance(click, Click) and click.value is None and click.value_error


# ---- who may press, what a press does under REMEDIATION ----


def test_allowed_users_are_user_ids_only(caplog: pytest.LogCaptureFixture) -> None:
    assert parse_users("U0AAA, W0BBB  U0CCC") == (frozenset({"U0AAA", "W0BBB", "U0CCC"}), ())
    assert parse_users("") == (frozenset(), ())
    assert parse_users("@alice,U0AAA,bob") == (frozenset({"U0AAA"}), ("@alice", "bob"))
    settings = SlackActionsSettings.from_env({"SLACK_ALLOWED_USERS": "@alice"})
    assert settings.allowed_users == frozenset() and "@alice" in caplog.text
    assert SlackActionsSettings.from_env({}).allowed_users == frozenset()  # empty: nobody
    assert "SECRETsign" not in repr(SlackActionsSettings.from_env(
        {"SLACK_SIGNING_SECRET": "SECRETsign"}))


@pytest.mark.parametrize("mode,press", [("off", "enabled"), ("enabled", "enabled"),
                                        ("dry-run", "dry-run")])
def test_remediation_off_is_the_automatic_switch_only(mode: Any, press: str) -> None:
    assert click_mode(mode) == press


def test_replies_go_only_to_slack() -> None:
    assert slack_response_url("https://hooks.slack.com/actions/T/1/x", None)
    assert not slack_response_url("https://evil.example/hooks.slack.com/", None)
    assert not slack_response_url("http://127.0.0.1:9/actions", None)
    assert slack_response_url("http://127.0.0.1:9/actions", "http://127.0.0.1:9/api/")
    assert not slack_response_url("http://127.0.0.1:8/actions", "http://127.0.0.1:9/api/")
    assert not slack_response_url(None, None)


# ---- the replies ----


def test_the_replies_say_who_when_and_what() -> None:
    target = Target("prod-cluster", "worker-emails")
    deployed = Decision("deployed", "deployed", "x", target, mode="enabled")
    assert decision_reply(deployed, "U0ONCALL", NOW).text.startswith(
        ":recycle: Redeployed by <@U0ONCALL> at 10:42 UTC: forced a new deployment of "
        "prod-cluster/worker-emails.")
    refused = Decision("skipped", "cooldown", "last deployment was 2 min ago, cooldown is 15 min",
                       target, mode="enabled")
    plain = decision_reply(refused, "U0ONCALL", NOW).plain()
    assert ("Not redeploying `prod-cluster/worker-emails` (pressed by <@U0ONCALL> at 10:42 UTC): "
            "last deployment was 2 min ago, cooldown is 15 min.") in plain
    hostile = Decision("skipped", "not-own-alarm", "<!channel> <https://x|y>", target)
    assert "<!channel>" not in json.dumps(decision_reply(hostile, "<!here>", NOW).payload())
    mute = Mute("prod-worker-emails-WorkerStuck", "U0ONCALL", NOW, NOW + timedelta(hours=1))
    assert mute_reply(mute, "U0ONCALL", NOW, already=False).text.startswith(
        ":mute: Muted by <@U0ONCALL> at 10:42 UTC for 1 h: until 11:42 UTC the handler neither "
        "posts nor remediates prod-worker-emails-WorkerStuck.")
    refusal = not_allowed("U0OTHER")
    assert refusal["response_type"] == "ephemeral" and refusal["replace_original"] is False


def test_docs_show_the_buttons_and_the_replies() -> None:
    from pathlib import Path

    docs = (Path(__file__).parent.parent / "docs" / "alerts.md").read_text()
    event = alarm("sns_worker_stuck_alarm")
    alert = alarm_message(event, grafana_url="https://grafana.example.com/d/celery-ecs",
                          environment="prod", actions=alert_buttons(event, POLICY))
    assert alert.plain() in docs, "docs/alerts.md is stale for the alert with its buttons"
    target = Target("prod-cluster", "worker-emails")
    for decision in (Decision("deployed", "deployed", "x", target, mode="enabled"),
                     Decision("skipped", "cooldown", "last deployment was 2 min ago, cooldown is "
                              "15 min", target, mode="enabled")):
        assert decision_reply(decision, "U0ONCALL", NOW).plain() in docs
    mute = Mute("prod-worker-emails-WorkerStuck", "U0ONCALL", NOW, NOW + timedelta(hours=1))
    assert mute_reply(mute, "U0ONCALL", NOW, already=False).plain() in docs


def test_the_base64_body_is_the_signed_bytes() -> None:
    event = function_url_event("payload=%7B%22a%22%3A1%7D", SECRET)
    request = HttpRequest.from_event(event)
    assert request is not None
    assert base64.b64decode(event["body"]) == request.body == b"payload=%7B%22a%22%3A1%7D"

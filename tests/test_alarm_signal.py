"""Issue 9, points 5 and 6: act only on the toolkit's own signal; the smaller parsing and message
fixes (console hosts per partition, EventBridge inside SNS, suppressed actions, two-service
headlines, ledger contention, the throttled follow-up)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.conftest import load_event
from tests.test_remediation import create_state_table
from toolkit.alarms.events import AlarmEvent, MetricRef
from toolkit.alarms.guards import Decision, RemediationPolicy, Target, target_from_alarm
from toolkit.alarms.messages import alarm_message
from toolkit.alarms.notes import decision_message
from toolkit.alarms.parsing import parse_event
from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.alarms.state import DynamoStateStore
from toolkit.errors import AwsError

POLICY = RemediationPolicy(mode="enabled", environment="prod")


def sns(**changes: Any) -> dict[str, Any]:
    event = load_event("sns_worker_stuck_alarm")
    message = json.loads(event["Records"][0]["Sns"]["Message"])
    trigger = changes.pop("Trigger", {})
    message.update(changes)
    message["Trigger"].update(trigger)
    event["Records"][0]["Sns"]["Message"] = json.dumps(message)
    return event


def decide(event: dict[str, Any], policy: RemediationPolicy = POLICY) -> Target | Decision:
    (alarm,) = parse_event(event)
    return target_from_alarm(alarm, policy)


def test_own_signal_is_acted_on() -> None:
    assert decide(sns()) == Target("prod-cluster", "worker-emails")
    for name in ("eventbridge_worker_stuck_alarm", "lambda_worker_stuck_alarm"):
        assert decide(load_event(name)) == Target("prod-cluster", "worker-emails")


@pytest.mark.parametrize(
    ("event", "code", "says"),
    [
        (sns(Trigger={"Namespace": "OtherTeam"}), "foreign-namespace",
         "namespace OtherTeam, not the configured Celery"),
        (sns(NewStateReason="Threshold Crossed: no datapoints were received for 3 periods and 3 "
             "missing datapoints were treated as [Breaching]."), "missing-data",
         "missing data treated as breaching"),
        (sns(Trigger={"ComparisonOperator": "LessThanLowerOrGreaterThanUpperThreshold"},
             NewStateReason="Thresholds Crossed: 1 datapoint [0.0 (01/01/24 11:59:00)] was less "
             "than the lower thresholds [0.2]."), "not-above-threshold",
         "LessThanLowerOrGreaterThanUpperThreshold"),
        (sns(Trigger={"ComparisonOperator": "LessThanThreshold"}), "not-above-threshold",
         "not above a threshold"),
    ],
    ids=["other-namespace", "missing-data-breaching", "anomaly-below-band", "less-than"],
)
def test_anything_else_is_refused_with_a_reason(
    event: dict[str, Any], code: str, says: str
) -> None:
    decision = decide(event)
    assert isinstance(decision, Decision) and decision.code == code and says in decision.reason
    assert decision.relevant  # the follow-up says why it was not acted on


def test_eventbridge_anomaly_band_below_is_refused_from_the_reason() -> None:
    event = load_event("eventbridge_worker_stuck_alarm")
    event["detail"]["state"]["reason"] = (
        "Thresholds Crossed: 1 datapoint [0.0 (01/01/24 11:59:00)] was less than the lower "
        "thresholds [0.5] or greater than the upper thresholds [0.9]."
    )
    decision = decide(event)
    assert isinstance(decision, Decision) and decision.code == "not-above-threshold"


def test_configured_namespace_is_used() -> None:
    settings = AlarmHandlerSettings.from_env(
        {"CELERY_ECS_NAMESPACE": "Celery/Staging", "ENVIRONMENT": "prod"}
    )
    policy = RemediationPolicy.from_settings(settings)
    assert policy.namespace == "Celery/Staging"
    assert decide(sns(Trigger={"Namespace": "Celery/Staging"}), policy) == Target(
        "prod-cluster", "worker-emails"
    )
    refused = decide(sns(), policy)
    assert isinstance(refused, Decision) and refused.code == "foreign-namespace"


# --- point 6 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arn_region", "host"),
    [
        ("arn:aws:cloudwatch:eu-west-1", "https://eu-west-1.console.aws.amazon.com/"),
        ("arn:aws-cn:cloudwatch:cn-north-1", "https://console.amazonaws.cn/"),
        ("arn:aws-us-gov:cloudwatch:us-gov-west-1", "https://console.amazonaws-us-gov.com/"),
    ],
)
def test_console_host_per_partition(arn_region: str, host: str) -> None:
    region = arn_region.split(":")[3]
    alarm = AlarmEvent(source="sns", kind="metric", name="a b", state="ALARM",
                       arn=f"{arn_region}:123456789012:alarm:a b", region=region)
    assert alarm.console_url is not None and alarm.console_url.startswith(host)
    assert f"region={region}#alarmsV2:alarm/a%20b" in alarm.console_url


def test_console_url_over_the_limit_links_the_alarm_list() -> None:
    alarm = AlarmEvent(source="sns", kind="metric", name="Ж" * 600, state="ALARM",
                       region="eu-west-1")
    assert alarm.console_url is not None and alarm.console_url.endswith("#alarmsV2:")


def test_eventbridge_event_wrapped_in_sns_is_parsed() -> None:
    inner = load_event("eventbridge_worker_stuck_alarm")
    event = {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": json.dumps(inner)}}]}
    (alarm,) = parse_event(event)
    assert alarm.source == "eventbridge" and alarm.service == "worker-emails"


def test_actions_suppressed_by_is_read() -> None:
    event = load_event("eventbridge_composite_alarm")
    event["detail"]["state"]["actionsSuppressedBy"] = "WaitPeriod"
    (alarm,) = parse_event(event)
    assert alarm.actions_suppressed_by == "WaitPeriod"


def test_metric_math_over_two_services_headlines_both() -> None:
    def ref(service: str) -> MetricRef:
        return MetricRef("Celery", "WorkerStuck", (("ClusterName", "c"), ("ServiceName", service)))

    alarm = AlarmEvent(source="eventbridge", kind="math", name="m", state="ALARM",
                       metric=ref("svc-a"), inputs=(ref("svc-a"), ref("svc-b")))
    message = alarm_message(alarm)
    assert "2 services: `svc-a` in `c`, `svc-b` in `c`" in message.plain()
    assert "service `svc-a` in cluster" not in message.plain()


def test_ledger_contention_is_an_error_not_the_hourly_limit(monkeypatch: pytest.MonkeyPatch,
                                                            unique: str) -> None:
    with mock_aws():
        create_state_table(unique)
        store = DynamoStateStore(unique, boto3.client("dynamodb", region_name="eu-west-1"))
        monkeypatch.setattr(store, "_write_ledger", lambda *a, **k: False)  # always lost
        with pytest.raises(AwsError) as info:
            store.reserve_remediation("c/s", datetime.now(UTC), limit=3)
        assert info.value.code == "LedgerContention"


def test_throttled_follow_up_says_a_retry_is_pending() -> None:
    pending = Decision("failed", "ecs-error", "DescribeServices failed: ThrottlingException",
                       target=Target("c", "s"), retryable=True)
    text = json.dumps(decision_message(pending).payload())
    assert "will try again" in text and "Redeploy by hand" not in text
    final = Decision("failed", "ecs-error", "UpdateService failed: InvalidParameter",
                     target=Target("c", "s"))
    assert "Redeploy by hand" in json.dumps(decision_message(final).payload())


def test_every_decision_code_has_a_runbook_row() -> None:
    """The log line's ``code`` (and the follow-up's context line) leads an operator to a row of
    the runbook's code table saying what to do."""
    from pathlib import Path
    from typing import get_args

    from toolkit.alarms.guards import DecisionCode

    runbook = (Path(__file__).resolve().parent.parent / "docs" / "runbook.md").read_text()
    rows = {line.split("|")[1].strip() for line in runbook.splitlines()
            if line.startswith("| `") and line.count("|") >= 4}
    missing = [c for c in get_args(DecisionCode) if f"`{c}`" not in rows]
    assert not missing, f"add a row to docs/runbook.md's decision-code table: {missing}"

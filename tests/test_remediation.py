"""Guarded forced deployments against ECS under moto: every guard, duplicates, storms, the CLI."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from moto import mock_aws

from tests.aws_ecs import (
    REGION,
    CountingEcs,
    add_second_deployment,
    deployment_ids,
    make_service,
    publish_stuck,
)
from toolkit.alarms.events import AlarmEvent, MetricRef
from toolkit.alarms.guards import (
    REMEDIATED_AT_TAG,
    Decision,
    DeploymentInfo,
    RemediationPolicy,
    ServiceSnapshot,
    Target,
    check_rate,
    check_service,
    log_decision,
    target_from_alarm,
)
from toolkit.alarms.remediator import Remediator
from toolkit.alarms.settings import AlarmHandlerSettings
from toolkit.alarms.state import DynamoStateStore, MemoryStateStore
from toolkit.cli import main

CLUSTER = "prod-cluster"
ENABLED = RemediationPolicy(
    mode="enabled", cooldown_seconds=900, max_per_hour=3, environment="prod"
)


def stuck(
    service: str = "worker-emails",
    cluster: str = CLUSTER,
    *,
    state: str = "ALARM",
    metric: str = "WorkerStuck",
    minute: int = 0,
    dims: tuple[tuple[str, str], ...] | None = None,
) -> AlarmEvent:
    dimensions = dims if dims is not None else (
        ("ClusterName", cluster), ("Environment", "prod"), ("ServiceName", service)
    )
    return AlarmEvent(
        source="sns",
        kind="metric",
        name=f"prod-{service}-{metric}",
        state=state,  # type: ignore[arg-type]
        previous_state="OK",
        # Issue 9: only an "above the threshold" comparison is the toolkit's own signal.
        reason="Threshold Crossed: 1 datapoint [1.0 (01/01/24 12:00:00)] was greater than or "
        "equal to the threshold (1.0).",
        comparison="GreaterThanOrEqualToThreshold",
        timestamp=datetime(2024, 1, 1, 12, minute, tzinfo=UTC),
        arn=f"arn:aws:cloudwatch:{REGION}:123456789012:alarm:prod-{service}-{metric}",
        region=REGION,
        account="123456789012",
        metric=MetricRef("Celery", metric, tuple(sorted(dimensions))),
        threshold=1.0,
        datapoints=(1.0,),
    )


class LiveStub:
    """GetMetricData answered without AWS (for tests outside moto): ``values``, newest first."""

    def __init__(self, *values: float) -> None:
        self.values = values or (1.0, 1.0, 1.0)
        self.queries: list[Any] = []

    def read(self, query: Any) -> tuple[float, ...]:
        self.queries.append(query)
        return self.values


@pytest.fixture
def ecs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "1")  # rollouts COMPLETED, not IN_PROGRESS
    with mock_aws():
        yield boto3.client("ecs", region_name=REGION)


def create_state_table(name: str) -> Any:
    ddb = boto3.client("dynamodb", region_name=REGION)
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return ddb


def now(after: float = 3600.0) -> datetime:
    """The decision time: ``after`` seconds past the services' deployments (moto stamps them with
    the real clock when they are created), an hour by default so no cooldown applies."""
    return datetime.now(UTC) + timedelta(seconds=after)


# --- pure guards --------------------------------------------------------------------------------


def snapshot(**kw: Any) -> ServiceSnapshot:
    created = kw.pop("created", datetime(2024, 1, 1, 11, 0, tzinfo=UTC))
    base: dict[str, Any] = {
        "target": Target(CLUSTER, "w"),
        "tags": (("celery-ecs:remediate", "true"),),
        "deployments": (DeploymentInfo("d1", "PRIMARY", "COMPLETED", created),),
    }
    base.update(kw)
    return ServiceSnapshot(**base)


NOON = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("snap", "code"),
    [
        (snapshot(), None),
        (snapshot(status="DRAINING"), "service-not-found"),
        (snapshot(tags=()), "not-opted-in"),
        (snapshot(tags=(("celery-ecs:remediate", "false"),)), "not-opted-in"),
        (snapshot(tags=(("celery-ecs:remediate", "TRUE "),)), None),
        (
            snapshot(deployments=(DeploymentInfo("d1", "PRIMARY", "IN_PROGRESS", None),)),
            "deployment-in-progress",
        ),
        (
            snapshot(
                deployments=(
                    DeploymentInfo("d2", "PRIMARY", None, None),
                    DeploymentInfo("d1", "ACTIVE", None, None),
                )
            ),
            "deployment-in-progress",
        ),
        (snapshot(created=NOON - timedelta(seconds=899)), "cooldown"),
        (snapshot(created=NOON - timedelta(seconds=900)), None),
        (
            snapshot(
                tags=(
                    ("celery-ecs:remediate", "true"),
                    (REMEDIATED_AT_TAG, str(int(NOON.timestamp()) - 60)),
                )
            ),
            "cooldown",
        ),
        # A hand-edited remediated-at tag is ignored, not a crash.
        (snapshot(tags=(("celery-ecs:remediate", "true"), (REMEDIATED_AT_TAG, "9" * 20))), None),
        (snapshot(tags=(("celery-ecs:remediate", "true"), (REMEDIATED_AT_TAG, "²"))), None),
    ],
)
def test_check_service_guards(snap: ServiceSnapshot, code: str | None) -> None:
    result = check_service(snap, ENABLED, NOON)
    assert (result[0] if result else None) == code
    if result:
        assert result[1]  # a reason in words


def test_check_rate() -> None:
    assert check_rate(2, ENABLED) is None
    refused = check_rate(3, ENABLED)
    assert refused is not None and refused[0] == "rate-limit" and "limit is 3" in refused[1]


@pytest.mark.parametrize(
    ("alarm", "code"),
    [
        (stuck(state="OK"), "not-alarm"),
        (stuck(state="INSUFFICIENT_DATA"), "not-alarm"),
        (stuck(metric="QueueLength"), "not-remediating-metric"),
        (stuck(dims=(("ClusterName", CLUSTER),)), "no-target"),
        (stuck(dims=(("ServiceName", "w"),)), "no-target"),
    ],
)
def test_alarm_guards(alarm: AlarmEvent, code: str) -> None:
    decision = target_from_alarm(alarm, ENABLED)
    assert isinstance(decision, Decision)
    assert decision.code == code and decision.action == "skipped"


def math(*inputs: MetricRef, name: str = "m") -> AlarmEvent:
    return AlarmEvent(
        source="eventbridge", kind="math", name=name, state="ALARM", metric=inputs[0],
        inputs=inputs,
        reason="Threshold Crossed: 1 datapoint [1.0 (01/01/24 12:00:00)] was greater than the "
        "threshold (0.0).",
    )


def stuck_ref(service: str, cluster: str = CLUSTER, metric: str = "WorkerStuck") -> MetricRef:
    return MetricRef("Celery", metric, (
        ("ClusterName", cluster), ("Environment", "prod"), ("ServiceName", service)
    ))


def test_metric_math_over_two_services_names_no_target() -> None:
    """MAX([stuck_a, stuck_b]) cannot say which service is stuck: no deployment."""
    decision = target_from_alarm(math(stuck_ref("svc-a"), stuck_ref("svc-b")), ENABLED)
    assert isinstance(decision, Decision) and decision.code == "no-target"
    assert "more than one service" in decision.reason and "svc-b" in decision.reason


def test_metric_math_needs_a_remediating_input() -> None:
    # Both inputs name the same service, but neither is WorkerStuck.
    alarm = math(stuck_ref("svc-a", metric="RunningTaskCount"), stuck_ref("svc-a", metric="Q"))
    decision = target_from_alarm(alarm, ENABLED)
    assert isinstance(decision, Decision) and decision.code == "not-remediating-metric"
    # The picked (display) metric is not WorkerStuck, but an input is, and one service is named.
    queue = MetricRef("Celery", "QueueLength", (("Queue", "emails"),))
    alarm = math(stuck_ref("svc-a", metric="RunningTaskCount"), queue, stuck_ref("svc-a"),
                 name="prod-svc-a-WorkerStuck")
    assert target_from_alarm(alarm, ENABLED) == Target(CLUSTER, "svc-a")
    # The same alarm not named as the toolkit names it is not acted on.
    decision = target_from_alarm(replace(alarm, name="prod-svc-a-custom"), ENABLED)
    assert isinstance(decision, Decision) and decision.code == "not-own-alarm"
    # A service named by one input and a different cluster by another: refused.
    alarm = math(stuck_ref("svc-a"), stuck_ref("svc-a", cluster="other"))
    decision = target_from_alarm(alarm, ENABLED)
    assert isinstance(decision, Decision) and decision.code == "no-target"


def test_metric_math_over_two_services_deploys_nothing(ecs: Any) -> None:
    for name in ("svc-a", "svc-b"):
        make_service(ecs, CLUSTER, name, deployed_ago=None)
    counting = CountingEcs(ecs)
    decision = Remediator(ENABLED, counting).remediate_alarm(
        math(stuck_ref("svc-a"), stuck_ref("svc-b")), now()
    )
    assert decision.code == "no-target" and counting.updates == []


def test_composite_alarm_is_never_a_target() -> None:
    alarm = AlarmEvent(source="eventbridge", kind="composite", name="c", state="ALARM")
    decision = target_from_alarm(alarm, ENABLED)
    assert isinstance(decision, Decision) and decision.code == "not-remediating-metric"


def test_remediating_metrics_are_configurable() -> None:
    policy = RemediationPolicy(
        mode="enabled", remediating_metrics=("WorkersAlive",), environment="prod"
    )
    target = target_from_alarm(stuck(metric="WorkersAlive"), policy)
    assert target == Target(CLUSTER, "worker-emails")
    assert isinstance(target_from_alarm(stuck(), policy), Decision)


# --- against ECS (moto) ---------------------------------------------------------------------------


def test_all_guards_pass_forces_a_deployment(ecs: Any) -> None:
    make_service(ecs, CLUSTER, "worker-emails", deployed_ago=None)
    before = deployment_ids(ecs, CLUSTER, "worker-emails")
    decision = Remediator(ENABLED, ecs).remediate_alarm(stuck(), now())
    assert decision.action == "deployed" and decision.performed, decision
    after = deployment_ids(ecs, CLUSTER, "worker-emails")
    assert after != before
    svc = ecs.describe_services(cluster=CLUSTER, services=["worker-emails"])["services"][0]
    tags = ecs.list_tags_for_resource(resourceArn=svc["serviceArn"])["tags"]
    assert any(t["key"] == REMEDIATED_AT_TAG for t in tags)


def test_dry_run_reports_and_changes_nothing(ecs: Any) -> None:
    make_service(ecs, CLUSTER, "worker-emails", deployed_ago=None)
    before = deployment_ids(ecs, CLUSTER, "worker-emails")
    dry = RemediationPolicy(mode="dry-run", environment="prod")
    decision = Remediator(dry, ecs).remediate_alarm(stuck(), now())
    assert decision.action == "dry-run" and decision.ok and not decision.performed
    assert "would force" in decision.reason
    assert deployment_ids(ecs, CLUSTER, "worker-emails") == before


def test_remediation_off_makes_no_ecs_call() -> None:
    class NoEcs:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"ECS called: {name}")

    off = RemediationPolicy(mode="off", environment="prod")
    decision = Remediator(off, NoEcs()).remediate_alarm(stuck(), NOON)
    assert decision.code == "remediation-off" and decision.action == "skipped"


@pytest.mark.parametrize("opted_in", [None, False])
def test_service_not_opted_in(ecs: Any, opted_in: bool | None) -> None:
    make_service(ecs, CLUSTER, "worker-emails", opted_in=opted_in, deployed_ago=None)
    decision = Remediator(ENABLED, ecs).remediate_alarm(stuck(), now())
    assert decision.code == "not-opted-in"


def test_missing_service_and_missing_cluster(ecs: Any) -> None:
    make_service(ecs, CLUSTER, "other", deployed_ago=None)
    publish_stuck(CLUSTER, "worker-emails")  # the metric says stuck: the service is gone
    publish_stuck("nope", "worker-emails")
    assert Remediator(ENABLED, ecs).remediate_alarm(stuck(), now()).code == "service-not-found"
    decision = Remediator(ENABLED, ecs).remediate_alarm(stuck(cluster="nope"), now())
    assert decision.code == "service-not-found" and "nope" in decision.reason


def test_deployment_in_progress(ecs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "0")  # rollout IN_PROGRESS
    make_service(ecs, CLUSTER, "worker-emails", deployed_ago=None)
    assert Remediator(ENABLED, ecs).remediate_alarm(stuck(), now()).code == "deployment-in-progress"


def test_two_live_deployments_count_as_in_progress(ecs: Any) -> None:
    make_service(ecs, CLUSTER, "worker-emails", deployed_ago=None)
    add_second_deployment(CLUSTER, "worker-emails")
    assert Remediator(ENABLED, ecs).remediate_alarm(stuck(), now()).code == "deployment-in-progress"


def test_cooldown_after_a_recent_deployment(ecs: Any) -> None:
    make_service(ecs, CLUSTER, "worker-emails", deployed_ago=None)
    decision = Remediator(ENABLED, ecs).remediate_alarm(stuck(), now(after=120))
    assert decision.code == "cooldown" and "2 min ago" in decision.reason
    assert Remediator(ENABLED, ecs).remediate_alarm(stuck(), now(after=901)).code == "deployed"


def test_hourly_limit_without_state_counts_tagged_services(ecs: Any) -> None:
    for name in ("a", "b", "c"):
        make_service(ecs, CLUSTER, name, deployed_ago=None)
    policy = RemediationPolicy(mode="enabled", max_per_hour=2, environment="prod")
    # Each call uses a fresh in-memory store: a new Lambda container that remembers nothing.
    assert Remediator(policy, ecs).remediate_alarm(stuck("a"), now()).code == "deployed"
    assert Remediator(policy, ecs).remediate_alarm(stuck("b"), now()).code == "deployed"
    decision = Remediator(policy, ecs).remediate_alarm(stuck("c"), now())
    assert decision.code == "rate-limit" and "2 forced deployments" in decision.reason
    # An hour later the window has passed.
    later = Remediator(policy, ecs).remediate_alarm(stuck("c"), now() + timedelta(minutes=61))
    assert later.code == "deployed"


def test_hourly_limit_with_state_table(ecs: Any, unique: str) -> None:
    create_state_table(unique)
    for name in ("a", "b"):
        make_service(ecs, CLUSTER, name, deployed_ago=None)
    make_service(ecs, "other-cluster", "c", deployed_ago=None)
    policy = RemediationPolicy(mode="enabled", max_per_hour=2, environment="prod")

    def remediator() -> Remediator:
        return Remediator(policy, ecs, state=DynamoStateStore(unique, boto3.client("dynamodb")))

    assert remediator().remediate_alarm(stuck("a"), now()).code == "deployed"
    assert remediator().remediate_alarm(stuck("b"), now()).code == "deployed"
    # The table's ledger spans clusters.
    assert remediator().remediate_alarm(stuck("c", "other-cluster"), now()).code == "rate-limit"


def test_ecs_unreachable_is_a_retryable_failure() -> None:
    class DownEcs:
        def describe_services(self, **_: Any) -> Any:
            raise EndpointConnectionError(endpoint_url="https://ecs.eu-west-1.amazonaws.com")

    decision = Remediator(ENABLED, DownEcs(), metrics=LiveStub()).remediate_alarm(stuck(), NOON)
    assert decision.action == "failed" and decision.code == "ecs-error" and decision.retryable
    assert "EndpointConnectionError" in decision.reason


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (EndpointConnectionError(endpoint_url="https://ecs"), True),
        (ReadTimeoutError(endpoint_url="https://ecs"), True),
        (ConnectionClosedError(endpoint_url="https://ecs"), True),
        (ClientError({"Error": {"Code": "ThrottlingException"}}, "DescribeServices"), True),
        (NoCredentialsError(), False),  # a BotoCoreError, but a retry would fail the same way
        (ClientError({"Error": {"Code": "AccessDeniedException"}}, "DescribeServices"), False),
    ],
)
def test_only_transient_ecs_errors_are_retryable(error: Exception, retryable: bool) -> None:
    class FailingEcs:
        def describe_services(self, **_: Any) -> Any:
            raise error

    decision = Remediator(ENABLED, FailingEcs(), metrics=LiveStub()).remediate_alarm(
        stuck(), NOON
    )
    assert decision.action == "failed" and decision.retryable is retryable


class RefusingEcs(CountingEcs):
    def update_service(self, **kwargs: Any) -> Any:
        self.updates.append((kwargs["cluster"], kwargs["service"]))
        raise ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "UpdateService"
        )


@pytest.mark.parametrize("durable", [False, True])
def test_failed_update_service_gives_back_the_hourly_slot_and_the_lock(
    ecs: Any, unique: str, durable: bool
) -> None:
    make_service(ecs, CLUSTER, "worker-emails", deployed_ago=None)
    state: Any = MemoryStateStore()
    if durable:
        create_state_table(unique)
        state = DynamoStateStore(unique, boto3.client("dynamodb"))
    policy = RemediationPolicy(mode="enabled", max_per_hour=1, environment="prod")
    when = now()
    failed = Remediator(policy, RefusingEcs(ecs), state=state).remediate_alarm(stuck(), when)
    # issue 9: AccessDenied is a misconfiguration (the follow-up names the IAM action)
    assert failed.action == "failed" and failed.code == "misconfigured"
    assert state.recent_remediations(when + timedelta(seconds=1)) == 0
    # The slot and the lock are free again: with ECS fixed, the next delivery deploys.
    worked = Remediator(policy, ecs, state=state).remediate_alarm(stuck(), when)
    assert worked.code == "deployed", worked
    assert state.recent_remediations(when + timedelta(seconds=1)) == 1


def test_update_service_refused_is_reported_with_its_code(ecs: Any) -> None:
    make_service(ecs, CLUSTER, "worker-emails", deployed_ago=None)

    class Refusing(CountingEcs):
        def update_service(self, **kwargs: Any) -> Any:
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "UpdateService"
            )

    decision = Remediator(ENABLED, Refusing(ecs)).remediate_alarm(stuck(), now())
    assert decision.action == "failed" and "AccessDeniedException" in decision.reason
    assert not decision.retryable


def test_decision_is_one_json_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="toolkit.alarms")
    off = RemediationPolicy(mode="off", environment="prod")
    decision = Remediator(off).remediate_alarm(stuck(), NOON)
    log_decision(decision)
    (record,) = [r for r in caplog.records if "remediation_decision" in r.getMessage()]
    data = json.loads(record.getMessage())
    assert data["code"] == "remediation-off" and data["cluster"] == CLUSTER
    assert data["service"] == "worker-emails" and data["at"].startswith("2024-01-01T12:00")


# --- duplicates and storms ------------------------------------------------------------------------


def test_same_event_five_times_deploys_once_even_without_state(ecs: Any) -> None:
    make_service(ecs, CLUSTER, "worker-emails", deployed_ago=None)
    counting = CountingEcs(ecs)
    alarm = stuck()
    # Five deliveries, each landing in a different container (fresh memory each time).
    decisions = [Remediator(ENABLED, counting).remediate_alarm(alarm, now()) for _ in range(5)]
    assert [d.action for d in decisions].count("deployed") == 1
    assert len(counting.updates) == 1
    assert {d.code for d in decisions[1:]} == {"cooldown"}


def test_storm_of_200_alarms_across_20_services(ecs: Any, unique: str) -> None:
    create_state_table(unique)
    services = [f"worker-{i:02d}" for i in range(20)]
    for name in services:
        make_service(ecs, CLUSTER, name, deployed_ago=None)
    counting = CountingEcs(ecs)
    alarms = [stuck(name, minute=i % 10) for name in services for i in range(10)]
    random.Random(4).shuffle(alarms)
    # Four warm containers share the state table and take alarms round robin.
    remediators = [
        Remediator(ENABLED, counting, state=DynamoStateStore(unique, boto3.client("dynamodb")))
        for _ in range(4)
    ]
    started = time.perf_counter()
    decisions = [remediators[i % 4].remediate_alarm(a, now()) for i, a in enumerate(alarms)]
    elapsed = time.perf_counter() - started
    deployed = [d for d in decisions if d.performed]
    assert len(counting.updates) == len(deployed) <= ENABLED.max_per_hour
    assert len(deployed) == ENABLED.max_per_hour  # the limit is reached, not undershot
    codes = {d.code for d in decisions if not d.performed}
    # still-stuck: a later state change of a service already deployed (the escalation).
    assert codes <= {"rate-limit", "cooldown", "still-stuck"}
    done = {str(d.target) for d in deployed}
    assert all(str(d.target) in done for d in decisions if d.code == "still-stuck")
    print(f"storm: 200 alarms / 20 services -> {len(deployed)} deployments in {elapsed:.2f}s")


def test_storm_without_state_table(ecs: Any) -> None:
    services = [f"worker-{i:02d}" for i in range(20)]
    for name in services:
        make_service(ecs, CLUSTER, name, deployed_ago=None)
    counting = CountingEcs(ecs)
    alarms = [stuck(name, minute=i % 10) for name in services for i in range(10)]
    random.Random(5).shuffle(alarms)
    remediators = [Remediator(ENABLED, counting, state=MemoryStateStore()) for _ in range(4)]
    for i, alarm in enumerate(alarms):
        remediators[i % 4].remediate_alarm(alarm, now())
    # One cluster, alarms handled one after another: the remediated-at tags make the limit exact
    # even across containers. (Containers racing each other can overshoot: exact needs a table.)
    assert len(counting.updates) == ENABLED.max_per_hour
    assert len(set(counting.updates)) == len(counting.updates)  # never the same service twice


class SerialisedDynamo:
    """DynamoDB applies a conditional write atomically; moto, called from two threads, does not
    promise that. Serialise calls to the (shared) table, as the real service does."""

    _lock = threading.Lock()

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            with self._lock:
                return method(**kwargs)

        return call


class RacingEcs(CountingEcs):
    """Both callers read the service before either deploys: the window the lock must close."""

    def __init__(self, client: Any, barrier: threading.Barrier, timeout: float = 5.0) -> None:
        super().__init__(client)
        self._barrier = barrier
        self._timeout = timeout

    def describe_services(self, **kwargs: Any) -> Any:
        result = self._client.describe_services(**kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):  # the other caller never came
            self._barrier.wait(timeout=self._timeout)
        return result


@pytest.mark.parametrize("durable", [False, True])
def test_two_alarms_racing_for_one_service_deploy_once(
    ecs: Any, unique: str, durable: bool
) -> None:
    """Two different alarms (so different de-duplication keys) about the same service, handled
    at the same moment by two containers sharing the table (or two threads of one container
    sharing memory): both pass every ECS guard, the per-service lock lets one deploy."""
    make_service(ecs, CLUSTER, "worker-emails", deployed_ago=None)
    racing = RacingEcs(ecs, threading.Barrier(2))
    shared: Any = MemoryStateStore()
    if durable:
        create_state_table(unique)
        shared = None
    alarms = [stuck(minute=0), stuck(minute=1)]
    decisions: list[Decision] = []

    def container(alarm: AlarmEvent) -> None:
        state = shared or DynamoStateStore(unique, SerialisedDynamo(boto3.client("dynamodb")))
        decisions.append(Remediator(ENABLED, racing, state=state).remediate_alarm(alarm, now()))

    threads = [threading.Thread(target=container, args=(a,)) for a in alarms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(racing.updates) == 1
    assert sorted(d.code for d in decisions) == ["cooldown", "deployed"]
    (refused,) = [d for d in decisions if d.code == "cooldown"]
    assert "remediation lock" in refused.reason


# --- settings ----------------------------------------------------------------------------------


def test_cooldown_below_a_minute_is_clamped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    assert AlarmHandlerSettings.from_env({"COOLDOWN_SECONDS": "5"}).cooldown_seconds == 60
    assert "COOLDOWN_SECONDS=5 is below the minimum of 60 s: using 60" in caplog.text
    caplog.clear()
    assert AlarmHandlerSettings.from_env({"COOLDOWN_SECONDS": "60"}).cooldown_seconds == 60
    assert AlarmHandlerSettings.from_env({}).cooldown_seconds == 900
    assert caplog.text == ""


# --- the CLI -----------------------------------------------------------------------------------


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["remediate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_remediate(ecs: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    make_service(ecs, CLUSTER, "worker-emails")
    make_service(ecs, CLUSTER, "not-mine", opted_in=False)
    monkeypatch.setenv("REMEDIATION", "enabled")
    code, out, _ = cli(["--cluster", CLUSTER, "--service", "worker-emails", "--dry-run"], capsys)
    assert code == 0 and out.startswith("dry-run prod-cluster/worker-emails:")
    code, out, _ = cli(["--cluster", CLUSTER, "--service", "worker-emails"], capsys)
    assert code == 0 and out.startswith("deployed prod-cluster/worker-emails:")
    code, out, _ = cli(["--cluster", CLUSTER, "--service", "worker-emails"], capsys)
    assert code == 1 and "cooldown" in out
    code, out, _ = cli(["--cluster", CLUSTER, "--service", "not-mine"], capsys)
    assert code == 1 and "celery-ecs:remediate=true" in out


def test_cli_remediation_off_and_misconfiguration(
    ecs: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    make_service(ecs, CLUSTER, "worker-emails")
    monkeypatch.delenv("REMEDIATION", raising=False)
    code, out, _ = cli(["--cluster", CLUSTER, "--service", "worker-emails"], capsys)
    assert code == 1 and "REMEDIATION=off" in out
    # --dry-run works whatever REMEDIATION says.
    code, out, _ = cli(["--cluster", CLUSTER, "--service", "worker-emails", "--dry-run"], capsys)
    assert code == 0
    monkeypatch.setenv("REMEDIATION", "sometimes")
    code, _, err = cli(["--cluster", CLUSTER, "--service", "worker-emails"], capsys)
    assert code == 2 and "REMEDIATION" in err
    monkeypatch.setenv("REMEDIATION", "enabled")
    code, _, _ = cli(["--cluster", CLUSTER], capsys)
    assert code == 2

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import pytest

from toolkit.collector.verdicts import (
    CLUSTER_RESERVATION_FULL,
    VERDICTS,
    EcsView,
    ServiceObservation,
    ServiceVerdict,
    UtilizationView,
    Verdict,
    VerdictThresholds,
    WorkerProgress,
    judge,
)

NOW = 1_700_000_000.0
DEFAULTS = VerdictThresholds()
ARN = "arn:aws:ecs:eu-west-1:123456789012:task/prod/"


def worker(
    node: str = "celery@a",
    beat: float = 5.0,
    start: float | None = 10.0,
    active: int = 1,
    arn: str | None = ARN + "aaa",
) -> WorkerProgress:
    """A worker whose last beat was ``beat`` seconds before NOW and last task start ``start``."""
    return WorkerProgress(
        node=node,
        last_beat=NOW - beat,
        started=0 if start is None else 42,
        last_task_started=None if start is None else NOW - start,
        active=active,
        task_arn=arn,
    )


def ecs(
    running: int = 2, desired: int = 2, pending: int = 0, deploying: bool = False
) -> EcsView:
    return EcsView(True, running, desired, pending, deploying, "EC2")


def util(
    memory: float | None = 40.0,
    window_min: float | None = 35.0,
    cluster_memory: float | None = 60.0,
    cluster_cpu: float | None = 50.0,
) -> UtilizationView:
    return UtilizationView(memory, 20.0, window_min, cluster_memory, cluster_cpu)


def obs(**changes: Any) -> ServiceObservation:
    base = ServiceObservation(
        cluster="prod",
        service="worker-default",
        backlog=5,
        missing_queues=(),
        workers=(worker(),),
        ecs=ecs(),
        utilization=util(),
    )
    return dataclasses.replace(base, **changes)


DEAD_PAIR = (worker("celery@a", beat=134.0), worker("celery@b", beat=200.0, arn=ARN + "bbb"))
HUNG = (worker(beat=5.0, start=412.0),)

CASES = [
    # id, observation, thresholds, verdict, fragments that must appear in the reasons
    ("healthy", obs(), DEFAULTS, "healthy", [
        "backlog 5 messages (min_backlog 1)",
        "1 of 1 known workers alive, newest beat 5 s ago (dead after 90 s), newest task start"
        " 10 s ago (stuck after 300 s), 1 tasks active",
        "ECS running 2, desired 2, pending 0",
        "memory 40%, window minimum 35% (high 90%), CPU 20%",
    ]),
    ("healthy-draining", obs(backlog=5, previous_backlog=9), DEFAULTS, "healthy",
     ["backlog 5 messages, 9 last cycle"]),
    ("idle-no-backlog-nothing-started-for-an-hour",
     obs(backlog=0, workers=(worker(start=3600.0, active=0),)), DEFAULTS, "healthy",
     ["backlog 0 is below min_backlog 1, so this does not make it stuck",
      "none has started a task for 3600 s"]),
    ("idle-no-backlog-never-started", obs(backlog=0, workers=(worker(start=None),)),
     DEFAULTS, "healthy", ["no live worker has started a task since it came up"]),
    ("dead-but-no-backlog", obs(backlog=0, workers=DEAD_PAIR), DEFAULTS, "healthy",
     ["backlog 0 is below min_backlog 1, so this does not make it stuck: no heartbeat"]),
    ("hung-below-raised-min-backlog", obs(backlog=5, workers=HUNG),
     VerdictThresholds(min_backlog=10), "healthy", ["backlog 5 is below min_backlog 10"]),
    ("running-below-desired-none-pending", obs(ecs=ecs(running=1, desired=3)), DEFAULTS,
     "healthy", ["ECS running 1, desired 3, pending 0"]),
    ("steady-backlog-is-not-growth", obs(backlog=5, previous_backlog=5), DEFAULTS, "healthy",
     ["backlog 5 messages, 5 last cycle"]),
    ("behind-growing", obs(backlog=12, previous_backlog=8), DEFAULTS, "behind",
     ["backlog grew from 8 to 12 while workers make progress"]),
    ("behind-priority-9-only-backlog-counts", obs(backlog=7, previous_backlog=0), DEFAULTS,
     "behind", ["backlog grew from 0 to 7", "backlog 7 messages"]),
    ("behind-zero-running-desired-zero",
     obs(workers=(), ecs=ecs(running=0, desired=0), utilization=util(None, None)), DEFAULTS,
     "behind", ["backlog 5 with no task running (desired 0)",
                "no memory datapoints (none are sent while no task runs)",
                "no worker heartbeats in the registry"]),
    ("scaled-to-zero-no-backlog", obs(backlog=0, workers=(), ecs=ecs(running=0, desired=0)),
     DEFAULTS, "healthy", ["backlog 0 messages"]),
    ("dead-workers-zero-running-desired-zero",
     obs(workers=DEAD_PAIR, ecs=ecs(running=0, desired=0)), DEFAULTS, "behind",
     ["no ECS task is running, so this does not make it stuck"]),
    ("live-workers-never-started-with-backlog", obs(workers=(worker(start=None),)),
     DEFAULTS, "behind", ["backlog 5 but none of its 1 live workers has started a task"]),
    ("stuck-dead", obs(workers=DEAD_PAIR), DEFAULTS, "stuck",
     ["no heartbeat from any of its 2 workers for 134 s (dead after 90 s)",
      "0 of 2 known workers alive"]),
    ("stuck-hung-beats-but-starts-nothing", obs(workers=HUNG), DEFAULTS, "stuck",
     ["its 1 live workers beat but none has started a task for 412 s (stuck after 300 s)"]),
    ("stuck-hung-one-never-started",
     obs(workers=(worker(start=412.0), worker("celery@b", start=None, arn=ARN + "bbb"))),
     DEFAULTS, "stuck", ["none has started a task for 412 s", "1 of them started none"]),
    ("one-dead-one-live-progressing",
     obs(workers=(worker("celery@a", beat=500.0), worker("celery@b", arn=ARN + "bbb"))),
     DEFAULTS, "healthy", ["1 of 2 known workers alive"]),
    ("one-dead-one-hung",
     obs(workers=(worker("celery@a", beat=500.0), worker("celery@b", start=999.0))),
     DEFAULTS, "stuck", ["its 1 live workers beat but none has started a task for 999 s"]),
    ("stuck-beats-memory-pressure", obs(workers=HUNG, utilization=util(130.0, 120.0)),
     DEFAULTS, "stuck", ["none has started a task for 412 s", "memory 130%"]),
    ("stuck-beats-no-capacity",
     obs(workers=DEAD_PAIR, ecs=ecs(running=1, desired=3, pending=2)), DEFAULTS, "stuck",
     ["ECS running 1, desired 3, pending 2"]),
    ("deploying-with-dead-workers",
     obs(workers=DEAD_PAIR, ecs=ecs(running=1, desired=2, pending=1, deploying=True)),
     DEFAULTS, "deploying",
     ["deployment in progress: not judged stuck until it completes",
      "no heartbeat from any of its 2 workers for 134 s (dead after 90 s), expected while"]),
    ("deploying-new-service-no-heartbeats",
     obs(workers=(), ecs=ecs(running=0, desired=2, pending=2, deploying=True)), DEFAULTS,
     "deploying", ["deployment in progress"]),
    ("no-capacity-pending", obs(ecs=ecs(running=1, desired=3, pending=2)), DEFAULTS,
     "no-capacity", ["running 1 of desired 3 with 2 pending: ECS cannot place or keep"]),
    ("no-capacity-nothing-running",
     obs(workers=(), ecs=ecs(running=0, desired=2, pending=0), utilization=None), DEFAULTS,
     "no-capacity", ["running 0 of desired 2 with 0 pending",
                     "memory and CPU utilization not read"]),
    ("no-capacity-dead-workers-nothing-running",
     obs(workers=DEAD_PAIR, ecs=ecs(running=0, desired=2)), DEFAULTS, "no-capacity",
     ["running 0 of desired 2", "no ECS task is running, so this does not make it stuck"]),
    ("no-capacity-cluster-memory", obs(utilization=util(cluster_memory=96.5)), DEFAULTS,
     "no-capacity", ["cluster memory reservation 96.5% (full at 95%)"]),
    ("no-capacity-cluster-cpu-exactly-full", obs(utilization=util(cluster_cpu=95.0)),
     DEFAULTS, "no-capacity", ["cluster CPU reservation 95% (full at 95%)"]),
    ("cluster-cpu-just-below-full", obs(utilization=util(cluster_cpu=94.9)), DEFAULTS,
     "healthy", []),
    ("no-capacity-beats-memory-pressure",
     obs(ecs=ecs(running=1, desired=3, pending=2), utilization=util(99.0, 95.0)), DEFAULTS,
     "no-capacity", ["running 1 of desired 3"]),
    ("memory-pressure-over-100", obs(utilization=util(118.0, 112.0)), DEFAULTS,
     "memory-pressure", ["memory at or over 90% for the whole window (minimum 112%)",
                         "memory 118%, window minimum 112% (high 90%)"]),
    ("memory-pressure-window-exactly-high", obs(utilization=util(93.0, 90.0)), DEFAULTS,
     "memory-pressure", ["(minimum 90%)"]),
    ("memory-window-just-below-high", obs(utilization=util(93.0, 89.9)), DEFAULTS,
     "healthy", ["window minimum 89.9%"]),
    ("memory-latest-high-window-not", obs(utilization=util(97.0, 60.0)), DEFAULTS,
     "healthy", ["memory 97%"]),
    ("memory-pressure-custom-threshold", obs(utilization=util(75.0, 71.0)),
     VerdictThresholds(memory_high=70.0), "memory-pressure", ["at or over 70%"]),
    ("memory-pressure-beats-behind",
     obs(backlog=12, previous_backlog=8, utilization=util(95.0, 92.0)), DEFAULTS,
     "memory-pressure", ["backlog 12 messages, 8 last cycle"]),
    ("utilization-not-read", obs(utilization=None), DEFAULTS, "healthy",
     ["memory and CPU utilization not read"]),
    ("utilization-no-datapoints", obs(utilization=util(None, None, None, None)), DEFAULTS,
     "healthy", ["no memory datapoints"]),
    ("missing-queues-count-zero", obs(backlog=0, missing_queues=("reports", "emails")),
     DEFAULTS, "healthy", ["queues no broker has, counted as 0: reports, emails"]),
    ("unknown-no-heartbeats-ever", obs(workers=()), DEFAULTS, "unknown",
     ["no heartbeats seen: is toolkit.install(app) in the worker?"]),
    ("unknown-ecs-unreadable", obs(ecs=None, ecs_error="ThrottlingException after retries"),
     DEFAULTS, "unknown", ["could not read ECS: ThrottlingException after retries"]),
    ("unknown-ecs-unreadable-no-detail", obs(ecs=None), DEFAULTS, "unknown",
     ["could not read ECS", "backlog 5 messages"]),
    ("unknown-service-not-found", obs(ecs=EcsView(False, 0, 0, 0, False, None)), DEFAULTS,
     "unknown", ["service worker-default not found in cluster prod"]),
    ("unknown-broker-unreadable", obs(backlog=None, broker_error="connection refused"),
     DEFAULTS, "unknown", ["could not read the broker backlog: connection refused"]),
    ("unknown-registry-unreadable", obs(workers=None), DEFAULTS, "unknown",
     ["could not read the heartbeat registry"]),
    ("unknown-beats-deploying", obs(backlog=None, ecs=ecs(deploying=True)), DEFAULTS,
     "unknown", ["could not read the broker backlog"]),
    ("unknown-names-every-missing-piece", obs(ecs=None, backlog=None), DEFAULTS, "unknown",
     ["could not read ECS", "could not read the broker backlog"]),
    ("clock-skew-beat-in-future", obs(workers=(worker(beat=-3.0),)), DEFAULTS, "healthy",
     ["newest beat 0 s ago"]),
]


@pytest.mark.parametrize(
    ("observation", "thresholds", "verdict", "fragments"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_judge(
    observation: ServiceObservation,
    thresholds: VerdictThresholds,
    verdict: Verdict,
    fragments: list[str],
) -> None:
    result = judge(observation, thresholds, NOW)
    text = "\n".join(result.reasons)
    assert result.verdict == verdict, text
    for fragment in fragments:
        assert fragment in text


def test_every_verdict_has_a_case() -> None:
    assert {case[3] for case in CASES} == set(VERDICTS)


@pytest.mark.parametrize(
    ("beat", "verdict"),
    [
        pytest.param(89.0, "healthy", id="dead_after-minus-1"),
        pytest.param(90.0, "healthy", id="dead_after-exactly-still-alive"),
        pytest.param(91.0, "stuck", id="dead_after-plus-1"),
    ],
)
def test_dead_after_boundary(beat: float, verdict: Verdict) -> None:
    result = judge(obs(workers=(worker(beat=beat),)), DEFAULTS, NOW)
    assert result.verdict == verdict
    assert result.workers_alive == (1 if verdict == "healthy" else 0)


@pytest.mark.parametrize(
    ("start", "verdict"),
    [
        pytest.param(299.0, "healthy", id="stuck_after-minus-1"),
        pytest.param(300.0, "healthy", id="stuck_after-exactly-still-progress"),
        pytest.param(301.0, "stuck", id="stuck_after-plus-1"),
    ],
)
def test_stuck_after_boundary(start: float, verdict: Verdict) -> None:
    assert judge(obs(workers=(worker(start=start),)), DEFAULTS, NOW).verdict == verdict


@pytest.mark.parametrize(
    ("beat", "verdict"),
    [
        pytest.param(29.0, "healthy", id="custom-29"),
        pytest.param(30.0, "healthy", id="custom-30"),
        pytest.param(31.0, "stuck", id="custom-31"),
    ],
)
def test_custom_dead_after(beat: float, verdict: Verdict) -> None:
    thresholds = VerdictThresholds(dead_after=30.0)
    assert judge(obs(workers=(worker(beat=beat),)), thresholds, NOW).verdict == verdict


@pytest.mark.parametrize(
    ("backlog", "verdict"),
    [
        pytest.param(4, "healthy", id="min_backlog-minus-1"),
        pytest.param(5, "stuck", id="min_backlog-exactly"),
        pytest.param(6, "stuck", id="min_backlog-plus-1"),
    ],
)
def test_min_backlog_boundary(backlog: int, verdict: Verdict) -> None:
    thresholds = VerdictThresholds(min_backlog=5)
    assert judge(obs(backlog=backlog, workers=HUNG), thresholds, NOW).verdict == verdict


def test_the_same_service_goes_stuck_as_time_passes() -> None:
    observation = obs(workers=(worker(beat=0.0, start=0.0),))
    assert judge(observation, DEFAULTS, NOW + 90).verdict == "healthy"
    assert judge(observation, DEFAULTS, NOW + 301).verdict == "stuck"


def test_stuck_tasks_name_every_worker_arn_deduplicated_and_sorted() -> None:
    workers = (
        worker("celery@c", beat=150.0, arn=ARN + "ccc"),
        worker("celery@a1", beat=134.0, arn=ARN + "aaa"),
        worker("celery@a2", beat=140.0, arn=ARN + "aaa"),  # two workers in one task
        worker("celery@x", beat=300.0, arn=None),  # no ECS metadata
    )
    result = judge(obs(workers=workers), DEFAULTS, NOW)
    assert result.verdict == "stuck"
    assert result.stuck_tasks == (ARN + "aaa", ARN + "ccc")
    assert "no heartbeat from any of its 4 workers for 134 s" in result.reasons[0]


def test_stuck_tasks_of_a_hung_service_include_its_dead_workers() -> None:
    workers = (worker("celery@a", beat=500.0), worker("celery@b", start=999.0, arn=ARN + "bbb"))
    result = judge(obs(workers=workers), DEFAULTS, NOW)
    assert result.stuck_tasks == (ARN + "aaa", ARN + "bbb")


@pytest.mark.parametrize(
    "observation",
    [
        pytest.param(obs(workers=DEAD_PAIR, ecs=ecs(deploying=True)), id="deploying"),
        pytest.param(obs(backlog=0, workers=DEAD_PAIR), id="healthy-no-backlog"),
        pytest.param(obs(workers=DEAD_PAIR, ecs=ecs(running=0, desired=0)), id="behind"),
    ],
)
def test_no_stuck_tasks_unless_stuck(observation: ServiceObservation) -> None:
    result = judge(observation, DEFAULTS, NOW)
    assert result.verdict != "stuck"
    assert result.stuck_tasks == ()


@pytest.mark.parametrize(
    ("observation", "value"),
    [
        pytest.param(obs(), 0.0, id="healthy"),
        pytest.param(obs(backlog=12, previous_backlog=8), 0.0, id="behind"),
        pytest.param(obs(workers=HUNG), 1.0, id="stuck"),
        pytest.param(obs(utilization=util(118.0, 112.0)), 0.0, id="memory-pressure"),
        pytest.param(obs(ecs=ecs(running=1, desired=3, pending=2)), 0.0, id="no-capacity"),
        pytest.param(obs(workers=DEAD_PAIR, ecs=ecs(deploying=True)), 0.0, id="deploying"),
        pytest.param(obs(ecs=None), None, id="unknown-ecs"),
        pytest.param(obs(workers=()), None, id="unknown-no-heartbeats"),
    ],
)
def test_worker_stuck_value(observation: ServiceObservation, value: float | None) -> None:
    assert judge(observation, DEFAULTS, NOW).worker_stuck_value == value


def test_worker_stuck_value_covers_every_verdict() -> None:
    for verdict in VERDICTS:
        result = dataclasses.replace(judge(obs(), DEFAULTS, NOW), verdict=verdict)
        expected = None if verdict == "unknown" else float(verdict == "stuck")
        assert result.worker_stuck_value == expected


def test_verdicts_tuple_matches_the_literal_in_order() -> None:
    assert typing.get_args(Verdict) == VERDICTS
    assert VERDICTS == (
        "healthy", "behind", "stuck", "memory-pressure", "no-capacity", "deploying", "unknown"
    )
    assert CLUSTER_RESERVATION_FULL == 95.0


KEYS = [
    "cluster", "service", "verdict", "reasons", "backlog", "workers_alive", "running",
    "desired", "memory_utilization", "stuck_tasks",
]


def test_to_dict_of_a_judged_service() -> None:
    data = judge(obs(workers=HUNG, utilization=util(101.5, 99.0)), DEFAULTS, NOW).to_dict()
    assert list(data) == KEYS
    assert data["cluster"] == "prod" and data["service"] == "worker-default"
    assert data["verdict"] == "stuck"
    assert isinstance(data["reasons"], list) and all(isinstance(r, str) for r in data["reasons"])
    assert (data["backlog"], data["workers_alive"], data["running"], data["desired"]) == (
        5, 1, 2, 2
    )
    assert all(type(data[k]) is int for k in ("backlog", "workers_alive", "running", "desired"))
    assert type(data["memory_utilization"]) is float and data["memory_utilization"] == 101.5
    assert data["stuck_tasks"] == [ARN + "aaa"]
    assert json.loads(json.dumps(data)) == data


def test_to_dict_of_an_unknown_service_uses_nulls_and_zero_backlog() -> None:
    data = judge(obs(backlog=None, ecs=None, workers=None, utilization=None), DEFAULTS, NOW)
    assert data.to_dict() == {
        "cluster": "prod",
        "service": "worker-default",
        "verdict": "unknown",
        "reasons": [
            "could not read ECS",
            "could not read the broker backlog",
            "could not read the heartbeat registry",
            "memory and CPU utilization not read",
        ],
        "backlog": 0,
        "workers_alive": None,
        "running": None,
        "desired": None,
        "memory_utilization": None,
        "stuck_tasks": [],
    }


def test_not_found_service_reports_no_ecs_counts() -> None:
    result = judge(obs(ecs=EcsView(False, 0, 0, 0, False, None)), DEFAULTS, NOW)
    assert (result.running, result.desired, result.workers_alive) == (None, None, 1)


def test_inputs_and_verdict_are_frozen() -> None:
    result = judge(obs(), DEFAULTS, NOW)
    assert isinstance(result, ServiceVerdict)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.verdict = "stuck"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULTS.dead_after = 1.0  # type: ignore[misc]

"""The pure verdict rules (toolkit.collector.verdicts and worker_rules), edge by edge.

Each case says what it stands for in production. Times are seconds before NOW; the defaults are
the shipped thresholds (dead_after 90, stuck_after 300, max_task_runtime 3600, min_backlog 1).
"""

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
    RunningTask,
    ServiceObservation,
    ServiceVerdict,
    UtilizationView,
    Verdict,
    VerdictThresholds,
    WorkerProgress,
    judge,
)
from toolkit.collector.worker_rules import WorkerContext, judge_worker

NOW = 1_700_000_000.0
DEFAULTS = VerdictThresholds()
SHORT = VerdictThresholds(dead_after=10, stuck_after=10, max_task_runtime=20)
ARN = "arn:aws:ecs:eu-west-1:123456789012:task/prod/"


def worker(
    node: str = "celery@a",
    beat: float = 5.0,
    start: float | None = 10.0,
    active: int = 1,
    arn: str | None = ARN + "aaa",
    *,
    concurrency: int = 4,
    held: int | None = 0,
    booted: float | None = 7200.0,
    youngest: float | None = None,
    task: str = "app.work",
    prefetched: int = 0,
    eta: int = 0,
    rate_limited: int = 0,
    limit: float | None = None,
) -> WorkerProgress:
    """A worker whose last beat was ``beat`` s before NOW, last task start ``start`` s before,
    up for ``booted`` s, running ``active`` tasks (the youngest ``youngest`` s old, default
    ``start``; each with the hard time ``limit``) and holding ``prefetched``, ``eta`` and
    ``rate_limited`` tasks. ``held=None`` and ``booted=None``: a heartbeat of an older toolkit."""
    young = youngest if youngest is not None else start
    tasks = () if not active or young is None else tuple(
        RunningTask(task, f"id-{i}", NOW - young - i, limit) for i in range(min(active, 3)))
    if held is not None:
        held = prefetched + eta + rate_limited
    return WorkerProgress(
        node=node,
        last_beat=NOW - beat,
        started=0 if start is None else 42,
        last_task_started=None if start is None else NOW - start,
        active=active,
        task_arn=arn,
        concurrency=concurrency,
        held=held,
        booted=None if booted is None else NOW - booted,
        tasks=tasks,
        youngest_start=None if not active or young is None else NOW - young,
        pool="prefork",
        prefetched=prefetched,
        eta=eta,
        rate_limited=rate_limited,
        longest_limit=limit if active else None,
    )


def legacy(node: str = "celery@old", **kw: Any) -> WorkerProgress:
    """A format 2 heartbeat: no held count, no boot time, no task list."""
    return dataclasses.replace(worker(node, held=None, booted=None, **kw), tasks=(),
                               youngest_start=None)


def ecs(
    running: int = 2, desired: int = 2, pending: int = 0, deploying: bool = False,
    short_since: float | None = None, placement_failure: str | None = None,
) -> EcsView:
    return EcsView(True, running, desired, pending, deploying, "EC2",
                   short_since=None if short_since is None else NOW - short_since,
                   placement_failure=placement_failure)


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
# free slots, nothing held, work ready, nothing started for 412 s: the consumer stopped
HUNG = (worker(beat=5.0, start=412.0, active=0),)
# -c 1 and the slot has run one task for 4000 s (> max_task_runtime 3600)
IN_TASK = (worker(start=4000.0, active=1, concurrency=1, prefetched=4, task="app.sync"),)

CASES = [
    # id, observation, thresholds, verdict, fragments that must appear in the reasons
    ("healthy", obs(), DEFAULTS, "healthy", [
        "backlog 5 messages ready (min_backlog 1)",
        "1 of 1 workers alive (1 progressing), 1 tasks running (dead after 90 s, stuck after"
        " 300 s, max_task_runtime 3600 s)",
        "ECS running 2, desired 2, pending 0",
        "memory 40%, window minimum 35% (high 90%), CPU 20%",
    ]),
    ("healthy-draining", obs(backlog=5, previous_backlog=9), DEFAULTS, "healthy",
     ["backlog 5 messages ready, 9 last cycle"]),
    ("idle-nothing-ready-nothing-started-for-an-hour",
     obs(backlog=0, workers=(worker(start=3600.0, active=0),)), DEFAULTS, "healthy",
     ["1 idle"]),
    ("idle-never-started", obs(backlog=0, workers=(worker(start=None, active=0),)),
     DEFAULTS, "healthy", ["1 idle"]),
    ("steady-backlog-is-not-growth", obs(backlog=5, previous_backlog=5), DEFAULTS, "healthy",
     ["backlog 5 messages ready, 5 last cycle"]),
    # --- busy is not hung ---------------------------------------------------------------------
    ("busy-one-long-legit-task-with-backlog",  # -c 1, a 2000 s export, 10 quick ones waiting
     obs(backlog=10, workers=(worker(start=2000.0, concurrency=1),)), DEFAULTS, "healthy",
     ["1 busy"]),
    ("busy-every-slot-young-tasks-for-hours-since-last-start",
     obs(backlog=40, workers=(worker(start=3000.0, active=4, concurrency=4),)), DEFAULTS,
     "healthy", ["1 busy"]),
    ("busy-but-backlog-growing-is-behind",
     obs(backlog=12, previous_backlog=8, workers=(worker(start=900.0, concurrency=1),)),
     DEFAULTS, "behind", ["backlog grew from 8 to 12"]),
    ("rate-limited-holds-its-tasks",  # 12 tasks at 1/m: 3 held in the bucket, 8 ready
     obs(backlog=8, workers=(worker(start=35.0, active=0, concurrency=1, rate_limited=3),)),
     SHORT, "healthy", ["1 waiting", "holds 3 rate-limited tasks in their token bucket"]),
    ("eta-tasks-held-and-nothing-ready-is-idle",
     obs(backlog=0, workers=(worker(start=None, active=0, eta=6),)), SHORT, "healthy",
     ["1 idle"]),
    ("eta-tasks-do-not-hide-a-consumer-that-takes-no-ready-work",  # ETA does not block prefetch
     obs(backlog=2, workers=(worker(start=None, active=0, eta=6),)), SHORT, "stuck",
     ["2 messages ready in its queues, but no task started"]),
    ("prefetched-behind-a-running-task-is-waiting",
     obs(backlog=0, workers=(worker(start=400.0, active=1, prefetched=3),)), DEFAULTS,
     "healthy", ["holds 3 prefetched tasks behind the 1 it runs"]),
    ("prefetched-and-an-idle-pool-is-a-wedged-consumer",  # due tasks never handed to the pool
     obs(backlog=0, workers=(worker(start=400.0, active=0, prefetched=3),)), DEFAULTS, "stuck",
     ["3 tasks it prefetched, but no task started for 395 s since its last start"]),
    ("free-slots-but-young-tasks-running-is-not-hung",
     obs(backlog=5, workers=(worker(start=400.0, youngest=400.0, active=2),)), DEFAULTS,
     "healthy", ["its consumer may be stuck; not judged hung while tasks run"]),
    # --- hung -----------------------------------------------------------------------------------
    ("hung-in-task-with-prefetched-work-and-an-empty-ready-list",
     obs(backlog=0, workers=IN_TASK), DEFAULTS, "stuck", [
         "no worker makes progress (1 of 1 dead or hung) while 4 messages wait (0 ready, 4 held)",
         "celery@a (task " + ARN + "aaa): every slot (1) runs a task past its limit"
         " (max_task_runtime 3600 s, or its own time limit + 60 s): app.sync[id-0] for 4000 s"]),
    ("a-task-under-its-own-long-time-limit-is-busy",  # a 4 h export with time_limit=14400
     obs(workers=(worker(start=7200.0, concurrency=1, limit=14400.0),)), DEFAULTS, "healthy",
     ["1 busy"]),
    ("a-task-past-its-own-time-limit-and-max_task_runtime-is-hung",
     obs(workers=(worker(start=14461.0, concurrency=1, limit=14400.0),)), DEFAULTS, "stuck",
     ["app.work[id-0] for 14461 s"]),
    ("hung-in-task-nothing-waiting-is-degraded",
     obs(backlog=0, workers=(dataclasses.replace(IN_TASK[0], held=0),)), DEFAULTS, "degraded",
     ["all 1 workers dead or hung, but only 0 messages wait (min_backlog 1): not stuck"]),
    ("hung-consumer-after-its-last-start", obs(workers=HUNG), DEFAULTS, "stuck",
     ["4 of 4 slots free and 5 messages ready in its queues, but no task started for 407 s"
      " since its last start (stuck after 300 s)"]),
    ("hung-consumer-cancelled-before-its-first-task",
     obs(workers=(worker(start=None, active=0, booted=35.0, concurrency=1),)), SHORT, "stuck",
     ["no task started for 30 s since it came up"]),
    ("just-booted-never-started-is-not-hung",
     obs(workers=(worker(start=None, active=0, booted=5.0, concurrency=1),)), SHORT, "healthy",
     ["1 progressing"]),
    ("fresh-backlog-does-not-blame-the-worker",
     obs(oldest_ready_age=4.0, workers=(worker(start=None, active=0, booted=35.0),)), SHORT,
     "healthy", ["the ready work is only 4 s old"]),
    ("a-burst-in-its-own-queue-is-fresh-even-when-another-queue-is-old",
     obs(backlog=9, ready_by_queue=(("a", 4, 2.0), ("b", 5, 900.0)),
         workers=(dataclasses.replace(worker("celery@a", start=900.0, active=0), queues=("a",)),
                  dataclasses.replace(worker("celery@b", start=5.0, concurrency=1,
                                             arn=ARN + "b"), queues=("b",)))),
     DEFAULTS, "healthy", ["the ready work is only 2 s old"]),
    ("ready-work-in-a-queue-the-worker-never-consumed-is-not-its-hang",  # a config mistake
     obs(backlog=5, ready_by_queue=(("emails", 0, None), ("default", 5, None)),
         workers=(dataclasses.replace(HUNG[0], queues=("emails",)),)), DEFAULTS, "healthy",
     ["1 idle"]),
    ("ready-work-in-its-own-queue-after-a-cancel-is",
     obs(backlog=5, ready_by_queue=(("emails", 5, None), ("default", 0, None)),
         workers=(dataclasses.replace(HUNG[0], queues=("emails",)),)), DEFAULTS, "stuck",
     ["5 messages ready in its queues, but no task started for 407 s"]),
    ("hung-below-raised-min-backlog", obs(backlog=5, workers=HUNG),
     VerdictThresholds(min_backlog=10), "healthy", ["1 idle"]),
    # --- dead -----------------------------------------------------------------------------------
    ("stuck-dead", obs(workers=DEAD_PAIR), DEFAULTS, "stuck",
     ["no worker makes progress (2 of 2 dead or hung)",
      "celery@a (task " + ARN + "aaa): no heartbeat for 134 s (dead after 90 s)",
      "0 of 2 workers alive (2 dead)"]),
    ("dead-but-nothing-waits-is-degraded", obs(backlog=0, workers=DEAD_PAIR), DEFAULTS,
     "degraded", ["all 2 workers dead or hung, but only 0 messages wait"]),
    ("one-frozen-one-draining-is-degraded",
     obs(workers=(worker("celery@a", beat=500.0), worker("celery@b", arn=ARN + "bbb"))),
     DEFAULTS, "degraded",
     ["1 of 2 workers dead or hung while 1 make progress", "celery@a (task " + ARN + "aaa)"]),
    ("three-of-four-hung-one-progressing-is-degraded",
     obs(workers=(*(worker(f"celery@h{i}", start=900.0, active=0, arn=f"{ARN}h{i}")
                    for i in range(3)), worker("celery@ok", arn=ARN + "ok"))),
     DEFAULTS, "degraded", ["3 of 4 workers dead or hung while 1 make progress"]),
    ("stopped-tasks-entries-are-not-counted",
     obs(workers=(worker("celery@old", beat=900.0, arn=ARN + "old"), worker(arn=ARN + "new")),
         task_status=((ARN + "old", "STOPPED"),)), DEFAULTS, "healthy",
     ["1 registry entries of tasks ECS reports stopped: not counted",
      "1 of 1 workers alive"]),
    ("degraded-beats-memory-pressure",
     obs(workers=(worker("celery@a", beat=500.0), worker("celery@b", arn=ARN + "bbb")),
         utilization=util(130.0, 120.0)), DEFAULTS, "degraded", ["memory 130%"]),
    ("stuck-beats-memory-pressure", obs(workers=HUNG, utilization=util(130.0, 120.0)),
     DEFAULTS, "stuck", ["no task started for 407 s", "memory 130%"]),
    ("stuck-beats-no-capacity",
     obs(workers=DEAD_PAIR, ecs=ecs(running=1, desired=3, pending=2)), DEFAULTS, "stuck",
     ["ECS running 1, desired 3, pending 2"]),
    ("a-dead-worker-whose-task-status-could-not-be-read-is-unknown",
     obs(workers=(worker(beat=500.0),), unreadable_tasks=(ARN + "aaa",),
         tasks_error="ECS DescribeTasks in cluster prod failed: AccessDeniedException"),
     DEFAULTS, "unknown", ["could not tell whether task " + ARN + "aaa is stopped or its worker"
                           " dead: ECS DescribeTasks in cluster prod failed: AccessDenied"]),
    ("dead-workers-zero-running-desired-zero",
     obs(workers=DEAD_PAIR, ecs=ecs(running=0, desired=0)), DEFAULTS, "behind",
     ["no ECS task is running, so this does not make it stuck"]),
    # --- older toolkit heartbeats: never hung, dead still counts --------------------------------
    ("legacy-quiet-workers-are-behind-never-stuck",
     obs(workers=(legacy(start=412.0, active=0),)), DEFAULTS, "behind",
     ["older heartbeat format) started no task for 412 s: busy or hung cannot be told",
      "older celery-ecs-toolkit heartbeat without task details"]),
    ("legacy-never-started-is-behind", obs(workers=(legacy(start=None, active=0),)), DEFAULTS,
     "behind", ["none of its 1 live workers (an older heartbeat format) has started a task"]),
    ("legacy-dead-is-stuck", obs(workers=(legacy(beat=200.0),)), DEFAULTS, "stuck",
     ["no heartbeat for 200 s"]),
    # --- deployments --------------------------------------------------------------------------
    ("deploying-with-dead-workers",
     obs(workers=DEAD_PAIR, ecs=ecs(running=1, desired=2, pending=1, deploying=True)),
     DEFAULTS, "deploying",
     ["deployment in progress: not judged until it completes",
      "no heartbeat for 134 s (dead after 90 s), expected while tasks are replaced"]),
    ("partial-dead-during-a-deployment",
     obs(workers=(worker("celery@a", beat=500.0), worker("celery@b", arn=ARN + "bbb")),
         ecs=ecs(running=2, desired=2, deploying=True)), DEFAULTS, "deploying", []),
    ("deploying-new-service-no-heartbeats",
     obs(workers=(), ecs=ecs(running=0, desired=2, pending=2, deploying=True)), DEFAULTS,
     "deploying", ["deployment in progress"]),
    # --- capacity -----------------------------------------------------------------------------
    ("scale-out-within-its-grace-is-not-no-capacity",
     obs(ecs=ecs(running=2, desired=6, pending=4, short_since=40.0)), DEFAULTS, "healthy",
     ["scaling out: running 2 of desired 6 with 4 pending for 40 s (no-capacity after 300 s)"]),
    ("scale-out-past-its-grace-is-no-capacity",
     obs(ecs=ecs(running=2, desired=6, pending=4, short_since=400.0)), DEFAULTS, "no-capacity",
     ["running 2 of desired 6 with 4 pending for 400 s: ECS cannot place or keep the tasks"]),
    ("placement-failure-is-no-capacity-at-once",
     obs(ecs=ecs(running=2, desired=6, pending=0, short_since=10.0, placement_failure=(
         "(service w) was unable to place a task because no container instance met all of its"
         " requirements."))), DEFAULTS, "no-capacity", ["was unable to place a task"]),
    ("no-capacity-pending-since-unknown", obs(ecs=ecs(running=1, desired=3, pending=2)),
     DEFAULTS, "no-capacity", ["running 1 of desired 3 with 2 pending: ECS cannot place"]),
    ("running-below-desired-none-pending", obs(ecs=ecs(running=1, desired=3)), DEFAULTS,
     "healthy", ["ECS running 1, desired 3, pending 0"]),
    ("no-capacity-nothing-running",
     obs(workers=(), ecs=ecs(running=0, desired=2, pending=0), utilization=None), DEFAULTS,
     "no-capacity", ["running 0 of desired 2 with 0 pending",
                     "memory and CPU utilization not read"]),
    ("no-capacity-cluster-memory", obs(utilization=util(cluster_memory=96.5)), DEFAULTS,
     "no-capacity", ["cluster memory reservation 96.5% (full at 95%)"]),
    ("no-capacity-cluster-cpu-exactly-full", obs(utilization=util(cluster_cpu=95.0)),
     DEFAULTS, "no-capacity", ["cluster CPU reservation 95% (full at 95%)"]),
    ("cluster-cpu-just-below-full", obs(utilization=util(cluster_cpu=94.9)), DEFAULTS,
     "healthy", []),
    ("behind-zero-running-desired-zero",
     obs(workers=(), ecs=ecs(running=0, desired=0), utilization=util(None, None)), DEFAULTS,
     "behind", ["backlog 5 with no task running (desired 0)",
                "no memory datapoints (none are sent while no task runs)",
                "no worker heartbeats in the registry"]),
    ("scaled-to-zero-no-backlog", obs(backlog=0, workers=(), ecs=ecs(running=0, desired=0)),
     DEFAULTS, "healthy", ["backlog 0 messages"]),
    # --- memory ---------------------------------------------------------------------------------
    ("memory-pressure-over-100", obs(utilization=util(118.0, 112.0)), DEFAULTS,
     "memory-pressure", ["memory at or over 90% for the whole window (minimum 112%)"]),
    ("memory-pressure-window-exactly-high", obs(utilization=util(93.0, 90.0)), DEFAULTS,
     "memory-pressure", ["(minimum 90%)"]),
    ("memory-window-just-below-high", obs(utilization=util(93.0, 89.9)), DEFAULTS,
     "healthy", ["window minimum 89.9%"]),
    ("memory-pressure-beats-behind",
     obs(backlog=12, previous_backlog=8, utilization=util(95.0, 92.0)), DEFAULTS,
     "memory-pressure", ["backlog 12 messages ready, 8 last cycle"]),
    ("utilization-not-read", obs(utilization=None), DEFAULTS, "healthy",
     ["memory and CPU utilization not read"]),
    ("missing-queues-count-zero", obs(backlog=0, missing_queues=("reports", "emails")),
     DEFAULTS, "healthy", ["queues no broker has, counted as 0: reports, emails"]),
    # --- unknown ---------------------------------------------------------------------------------
    ("unknown-no-heartbeats-ever", obs(workers=()), DEFAULTS, "unknown",
     ["no heartbeats seen: is toolkit.install(app) in the worker?"]),
    ("unknown-ecs-unreadable", obs(ecs=None, ecs_error="ThrottlingException after retries"),
     DEFAULTS, "unknown", ["could not read ECS: ThrottlingException after retries"]),
    ("unknown-service-not-found", obs(ecs=EcsView(False, 0, 0, 0, False, None)), DEFAULTS,
     "unknown", ["service worker-default not found in cluster prod"]),
    ("unknown-broker-unreadable", obs(backlog=None, broker_error="connection refused"),
     DEFAULTS, "unknown", ["could not read the broker backlog: connection refused"]),
    ("unknown-registry-unreadable", obs(workers=None), DEFAULTS, "unknown",
     ["could not read the heartbeat registry"]),
    ("unknown-beats-deploying", obs(backlog=None, ecs=ecs(deploying=True)), DEFAULTS,
     "unknown", ["could not read the broker backlog"]),
    ("beat-slightly-in-the-future-is-alive", obs(workers=(worker(beat=-3.0),)), DEFAULTS,
     "healthy", ["1 of 1 workers alive"]),
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
        assert fragment in text, text


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
    w = worker(beat=0.0, start=start, active=0)
    assert judge(obs(workers=(w,)), DEFAULTS, NOW).verdict == verdict


def test_quiet_is_measured_to_the_last_beat_not_to_now() -> None:
    """A burst lands after the worker's last beat: the beat cannot show its start yet."""
    w = worker(beat=5.0, start=303.0, active=0)  # 298 s quiet at its last beat, 303 s now
    assert judge(obs(workers=(w,)), DEFAULTS, NOW).verdict == "healthy"


@pytest.mark.parametrize(
    ("age", "state", "verdict"),
    [
        pytest.param(3599.0, "busy", "healthy", id="max_task_runtime-minus-1"),
        pytest.param(3600.0, "busy", "healthy", id="max_task_runtime-exactly-still-busy"),
        pytest.param(3601.0, "hung-task", "stuck", id="max_task_runtime-plus-1"),
    ],
)
def test_max_task_runtime_boundary(age: float, state: str, verdict: Verdict) -> None:
    w = worker(start=age, active=1, concurrency=1)
    result = judge(obs(workers=(w,)), DEFAULTS, NOW)
    assert (result.workers[0].state, result.verdict) == (state, verdict)


def test_a_custom_max_task_runtime_per_service() -> None:
    w = worker(start=7000.0, active=1, concurrency=1)
    assert judge(obs(workers=(w,)), VerdictThresholds(max_task_runtime=7200), NOW).verdict == (
        "healthy")
    assert judge(obs(workers=(w,)), VerdictThresholds(max_task_runtime=6000), NOW).verdict == (
        "stuck")


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


@pytest.mark.parametrize(
    ("waited", "verdict"),
    [
        pytest.param(299.0, "healthy", id="grace-minus-1"),
        pytest.param(300.0, "healthy", id="grace-exactly"),
        pytest.param(301.0, "no-capacity", id="grace-plus-1"),
    ],
)
def test_scale_out_grace_boundary(waited: float, verdict: Verdict) -> None:
    observation = obs(ecs=ecs(running=2, desired=6, pending=4, short_since=waited))
    assert judge(observation, DEFAULTS, NOW).verdict == verdict


def test_a_long_task_stays_busy_until_max_task_runtime_then_hung() -> None:
    """Production: one legitimate export of 50 minutes on a -c 1 worker with work queued. It is
    never stuck while it runs under max_task_runtime; an hour in, it is."""
    def running_for(seconds: float) -> ServiceObservation:
        return obs(backlog=10, workers=(worker(beat=5.0, start=seconds, concurrency=1),))

    for seconds in (301, 1800, 3600):
        assert judge(running_for(seconds), DEFAULTS, NOW).verdict == "healthy"
    assert judge(running_for(3601), DEFAULTS, NOW).verdict == "stuck"


def test_stuck_tasks_name_every_bad_worker_arn_deduplicated_and_sorted() -> None:
    workers = (
        worker("celery@c", beat=150.0, arn=ARN + "ccc"),
        worker("celery@a1", beat=134.0, arn=ARN + "aaa"),
        worker("celery@a2", beat=140.0, arn=ARN + "aaa"),  # two workers in one task
        worker("celery@x", beat=300.0, arn=None),  # no ECS metadata
    )
    result = judge(obs(workers=workers), DEFAULTS, NOW)
    assert result.verdict == "stuck"
    assert result.stuck_tasks == (ARN + "aaa", ARN + "ccc")
    assert result.workers_stuck_value == 0.0  # a stuck service is WorkerStuck's alarm


def test_degraded_names_only_the_bad_tasks() -> None:
    workers = (worker("celery@frozen", beat=500.0, arn=ARN + "frozen"),
               worker("celery@hung", start=900.0, active=0, arn=ARN + "hung"),
               worker("celery@ok", arn=ARN + "ok"))
    result = judge(obs(workers=workers), DEFAULTS, NOW)
    assert result.verdict == "degraded"
    assert result.stuck_tasks == (ARN + "frozen", ARN + "hung")
    assert (result.worker_stuck_value, result.workers_stuck_value) == (0.0, 2.0)
    assert [w.state for w in result.workers] == ["dead", "hung-consumer", "progressing"]


@pytest.mark.parametrize(
    "observation",
    [
        pytest.param(obs(workers=DEAD_PAIR, ecs=ecs(deploying=True)), id="deploying"),
        pytest.param(obs(workers=DEAD_PAIR, ecs=ecs(running=0, desired=0)), id="behind"),
        pytest.param(obs(workers=(legacy(start=412.0, active=0),)), id="legacy-behind"),
    ],
)
def test_no_stuck_tasks_unless_stuck_or_degraded(observation: ServiceObservation) -> None:
    result = judge(observation, DEFAULTS, NOW)
    assert result.verdict not in ("stuck", "degraded")
    assert result.stuck_tasks == ()


@pytest.mark.parametrize(
    ("observation", "stuck", "bad"),
    [
        pytest.param(obs(), 0.0, 0.0, id="healthy"),
        pytest.param(obs(backlog=12, previous_backlog=8), 0.0, 0.0, id="behind"),
        pytest.param(obs(workers=HUNG), 1.0, 0.0, id="stuck-is-one-alarm-not-two"),
        pytest.param(obs(workers=(worker("celery@a", beat=500.0),
                                  worker("celery@b", arn=ARN + "b"))), 0.0, 1.0, id="degraded"),
        pytest.param(obs(utilization=util(118.0, 112.0)), 0.0, 0.0, id="memory-pressure"),
        pytest.param(obs(ecs=ecs(running=1, desired=3, pending=2)), 0.0, 0.0, id="no-capacity"),
        pytest.param(obs(workers=DEAD_PAIR, ecs=ecs(deploying=True)), None, None,
                     id="deploying-publishes-nothing"),
        pytest.param(obs(ecs=None), None, None, id="unknown-ecs"),
        pytest.param(obs(workers=()), None, None, id="unknown-no-heartbeats"),
    ],
)
def test_worker_stuck_and_workers_stuck_values(
    observation: ServiceObservation, stuck: float | None, bad: float | None
) -> None:
    result = judge(observation, DEFAULTS, NOW)
    assert (result.worker_stuck_value, result.workers_stuck_value) == (stuck, bad)


def test_worker_stuck_value_covers_every_verdict() -> None:
    for verdict in VERDICTS:
        result = dataclasses.replace(judge(obs(), DEFAULTS, NOW), verdict=verdict)
        expected = None if verdict in ("unknown", "deploying") else float(verdict == "stuck")
        assert result.worker_stuck_value == expected


def test_verdicts_tuple_matches_the_literal_in_order() -> None:
    assert typing.get_args(Verdict) == VERDICTS
    assert VERDICTS == (
        "healthy", "behind", "stuck", "degraded", "memory-pressure", "no-capacity", "deploying",
        "unknown",
    )
    assert CLUSTER_RESERVATION_FULL == 95.0


KEYS = [
    "cluster", "service", "verdict", "reasons", "backlog", "workers_alive", "running",
    "desired", "memory_utilization", "stuck_tasks", "held", "workers",
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
    assert data["workers"] == [{"node": "celery@a", "task_arn": ARN + "aaa",
                                "state": "hung-consumer", "why": data["workers"][0]["why"]}]
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
        "held": 0,
        "workers": [],
    }


def test_not_found_service_reports_no_ecs_counts_and_publishes_nothing() -> None:
    result = judge(obs(ecs=EcsView(False, 0, 0, 0, False, None)), DEFAULTS, NOW)
    assert (result.running, result.desired, result.workers_alive) == (None, None, 1)
    assert not result.exists


def test_inputs_and_verdict_are_frozen() -> None:
    result = judge(obs(), DEFAULTS, NOW)
    assert isinstance(result, ServiceVerdict)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.verdict = "stuck"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULTS.dead_after = 1.0  # type: ignore[misc]


# --- one worker on its own ----------------------------------------------------------------------

CTX = WorkerContext(ready=5, oldest_ready_age=None, min_backlog=1, dead_after=90,
                    stuck_after=300, max_task_runtime=3600)


@pytest.mark.parametrize(
    ("w", "ctx", "state"),
    [
        pytest.param(worker(beat=91.0), CTX, "dead", id="dead"),
        pytest.param(worker(beat=91.0, concurrency=1, start=9000.0), CTX, "dead",
                     id="dead-wins-over-hung"),
        pytest.param(legacy(start=9000.0, active=0), CTX, "legacy", id="legacy-never-hung"),
        pytest.param(worker(start=4000.0, active=4, concurrency=4, youngest=3700.0), CTX,
                     "hung-task", id="all-slots-past-max"),
        pytest.param(worker(start=4000.0, active=4, concurrency=4, youngest=100.0), CTX,
                     "busy", id="one-slot-young-is-busy"),
        pytest.param(worker(start=9000.0, active=0, rate_limited=1), CTX, "waiting",
                     id="rate-limited"),
        pytest.param(worker(start=9000.0, active=0, eta=1), CTX, "hung-consumer",
                     id="eta-held-does-not-shield"),
        pytest.param(worker(beat=0.0, start=None, active=0, booted=301.0), CTX,
                     "hung-consumer", id="never-started-up-too-long"),
        pytest.param(worker(beat=0.0, start=None, active=0, booted=299.0), CTX, "progressing",
                     id="never-started-just-up"),
        pytest.param(worker(start=5000.0, active=2, youngest=5000.0), CTX, "hung-consumer",
                     id="free-slots-and-only-tasks-past-max"),
        pytest.param(worker(start=400.0, active=0),
                     dataclasses.replace(CTX, oldest_ready_age=300.0), "progressing",
                     id="ready-work-exactly-stuck_after-old"),
        pytest.param(worker(start=4000.0, active=1, concurrency=1, limit=7200.0), CTX, "busy",
                     id="own-limit-extends-max_task_runtime"),
        pytest.param(worker(start=4000.0, active=1, concurrency=1, limit=60.0), CTX,
                     "hung-task", id="own-short-limit-never-shortens-it"),
        pytest.param(worker(start=3000.0, active=1, concurrency=1, limit=60.0), CTX, "busy",
                     id="own-short-limit-under-max"),
        pytest.param(worker(start=400.0, active=0),
                     dataclasses.replace(CTX, oldest_ready_age=301.0), "hung-consumer",
                     id="ready-work-older-than-stuck_after"),
        pytest.param(worker(start=400.0, active=0, concurrency=0), CTX, "hung-consumer",
                     id="unknown-slot-count"),
        pytest.param(worker(start=400.0, active=0), dataclasses.replace(CTX, ready=0), "idle",
                     id="nothing-ready"),
    ],
)
def test_judge_worker(w: WorkerProgress, ctx: WorkerContext, state: str) -> None:
    assert judge_worker(w, ctx, NOW).state == state

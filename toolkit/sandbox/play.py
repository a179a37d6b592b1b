"""Plays one scenario on the local stack: traffic, the fault, collector, alarms, handler, ECS.

:func:`play` starts everything (broker, moto, local Slack, task metadata, two worker processes,
a producer), runs the loop below every ``collect_every`` seconds, and stops everything on the way
out, Ctrl-C included::

    collector cycle (verdicts)  ->  PutMetricData to moto
    local CloudWatch evaluation ->  SetAlarmState, and on a change the real alarm handler
    the handler                 ->  Slack (local) and UpdateService(forceNewDeployment) in moto
    the sandbox as ECS          ->  a new deployment replaces that service's worker process

With ``remediation`` ``off`` (or ``dry-run``) the handler only alerts, and the sandbox's on-call
presses the alert's button (:mod:`toolkit.sandbox.press`): a signed request to the real Slack
actions handler, which re-checks every guard and acts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from toolkit.config import (
    BrokerSettings,
    ServiceDeployment,
    ServiceSettings,
    Settings,
    Thresholds,
    VerdictSettings,
)
from toolkit.sandbox.alarmdefs import TOPIC, alarm_definitions
from toolkit.sandbox.press import ONCALL, on_call, press_due
from toolkit.sandbox.scenario import (
    LambdaContext,
    Scenario,
    Timeline,
    Timings,
    eventbridge_event,
    outcome,
)

ENVIRONMENT = "sandbox"
CLUSTER = f"{ENVIRONMENT}-cluster"
SERVICES = {"worker-emails": "emails", "worker-reports": "reports"}  # service -> queue
FROZEN = "worker-emails"
REGION = "eu-west-1"


@dataclass
class Run:
    scenario: Scenario
    timings: Timings
    broker_label: str = ""
    timeline: Timeline = field(default_factory=Timeline)
    lengths: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)
    slack: list[Any] = field(default_factory=list)
    deployments: int = 0
    ok: bool = False
    result: str = ""
    started: float = field(default_factory=time.time)
    logs: list[str] = field(default_factory=list)  # the handler's and collector's log lines
    remediation: str = "enabled"  # REMEDIATION; otherwise the on-call presses the button

    def t(self) -> float:
        return time.time() - self.started


STATE_TABLE = f"{ENVIRONMENT}-celery-ecs-state"


def sandbox_settings(url: str, prefix: str, timings: Timings) -> Settings:
    verdicts = VerdictSettings(dead_after=timings.dead_after, stuck_after=timings.stuck_after,
                               max_task_runtime=timings.max_task_runtime)
    return Settings(
        environment=ENVIRONMENT, broker=BrokerSettings(url=url, global_keyprefix=prefix),
        interval=timings.collect_every, queues=tuple(SERVICES.values()),
        thresholds=Thresholds(max_length=500, max_age=600),
        services=tuple(ServiceSettings(CLUSTER, s, (q,), ServiceDeployment(remediate=True),
                                       verdicts) for s, q in SERVICES.items()),
        state_table=STATE_TABLE,
    )


def _create_state_table(dynamodb: Any) -> None:
    """The table the collector writes verdict records to and the handler keeps its state in."""
    dynamodb.create_table(
        TableName=STATE_TABLE, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])


class _Keep(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.INFO)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@contextlib.contextmanager
def _keep_logs(into: list[str]) -> Iterator[None]:
    """The toolkit's log lines (the handler's decisions) go to the report, not the screen."""
    logger = logging.getLogger("toolkit")
    saved = logger.propagate, logger.level
    handler = _Keep(into)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = saved


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _load_module(name: str) -> Any:
    """A real Lambda handler module, loaded fresh (its settings are read on first event)."""
    from toolkit.assets import lambda_handler

    source = lambda_handler(name)
    spec = importlib.util.spec_from_loader(
        f"sandbox_{name}_{os.getpid()}_{time.monotonic_ns()}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source.read_text(), str(source), "exec"), module.__dict__)  # noqa: S102
    return module


def _load_handler() -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    handler: Callable[[dict[str, Any], Any], dict[str, Any]] = _load_module(
        "alarm_handler").handler
    return handler



def _producer(url: str, prefix: str, rate: float, stop: threading.Event) -> None:
    from celery import Celery

    app = Celery("sandbox-producer", broker=url, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix} if prefix else {}
    import toolkit

    toolkit.install(app)  # in a producer only the publish stamp (behind QueueAge) does anything
    rng = random.Random(7)
    n = 0
    with app.producer_or_acquire() as producer:
        while not stop.wait(1.0 / (rate * len(SERVICES))):
            queue = list(SERVICES.values())[n % len(SERVICES)]
            app.send_task("sandbox.work", args=[n], kwargs={"seconds": rng.uniform(0.02, 0.1)},
                          queue=queue, producer=producer)
            n += 1
    app.close()


def _why_not(d: Any) -> str:
    """Why the local stand-in for CloudWatch cannot evaluate this metric-math alarm."""
    if "Anomaly" in d.name:
        return "an anomaly band needs CloudWatch's trained model"
    if "RunningBelowDesired" in d.name:
        return "Container Insights task counts, which the sandbox does not play"
    return "a metric-math expression"


def _send_one(url: str, prefix: str, queue: str, name: str, *args: Any) -> None:
    from celery import Celery

    app = Celery("sandbox-fault", broker=url, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix} if prefix else {}
    import toolkit

    toolkit.install(app)
    try:
        app.send_task(name, args=list(args), queue=queue)
    finally:
        app.close()


def play(scenario: Scenario, *, broker: str | None, timings: Timings,
         view: Any, stop: threading.Event | None = None, remediation: str = "enabled") -> Run:
    from toolkit.sandbox import LocalAws, local_broker
    from toolkit.sandbox.ecs import LocalEcs
    from toolkit.sandbox.slack import LocalSlack

    run = Run(scenario, timings, remediation=remediation)
    secret = os.urandom(16).hex()  # the local Slack app's signing secret, new each run
    oncall: list[Any] = []  # the on-call, once the local Slack is up (remediation not enabled)
    stop = stop or threading.Event()
    server, url, run.broker_label = local_broker(broker)
    prefix = f"sandbox-{os.getpid()}-{int(time.time())}:" if broker else ""
    view.note(f"broker      {run.broker_label}")
    halt = threading.Event()

    def on_slack(posted: Any) -> None:
        run.slack.append((run.t(), posted))
        run.timeline.add(run.t(), "slack", posted.text)
        view.slack(run.t(), posted)
        for person in oncall:
            person.saw(run.t(), posted.buttons, posted.channel, posted.ts)

    with contextlib.ExitStack() as stack:
        stack.enter_context(_keep_logs(run.logs))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="celery-ecs-sandbox-")))
        stack.enter_context(server)
        stack.enter_context(_environ({"MOTO_ECS_SERVICE_RUNNING": "1"}))
        aws = stack.enter_context(LocalAws(region=REGION))
        slack = stack.enter_context(LocalSlack(on_slack))
        _create_state_table(aws.client("dynamodb"))
        stack.enter_context(_environ({
            "ENVIRONMENT": ENVIRONMENT, "SLACK_BOT_TOKEN": "xoxb-sandbox",
            "SLACK_CHANNEL": "#sandbox-alerts", "SLACK_API_URL": slack.api_url,
            "REMEDIATION": remediation, "COOLDOWN_SECONDS": "60", "STATE_TABLE": STATE_TABLE,
            "SLACK_SIGNING_SECRET": secret, "SLACK_ALLOWED_USERS": ONCALL}))
        if remediation != "enabled":
            oncall.append(on_call(scenario, slack.api_url, secret, _load_module))
        view.note(f"AWS         moto on {aws.endpoint} (ECS, CloudWatch; nothing leaves "
                  "this machine)")
        view.note(f"Slack       local endpoint on {slack.api_url}" + (
            f"; REMEDIATION={remediation}: the on-call ({ONCALL}) presses the alert's button, "
            "signed, to the Slack actions handler" if oncall else ""))
        settings = sandbox_settings(url, prefix, timings)
        ecs_client, cw = aws.client("ecs"), aws.client("cloudwatch")
        ecs = LocalEcs(ecs_client, CLUSTER, SERVICES, broker=url, keyprefix=prefix, tmp=tmp,
                       region=REGION, desired={FROZEN: 2} if scenario == "partial" else None)
        if prefix:  # callbacks run last-in first-out: the keys go after the workers have stopped
            stack.callback(_cleanup, url, prefix)
        stack.callback(ecs.close)
        ecs.create(remediate=True)
        definitions = alarm_definitions(settings, REGION)
        topic = TOPIC.format(region=REGION, env=ENVIRONMENT)
        for d in definitions:
            if not d.math:
                cw.put_metric_alarm(**d.put_args(topic))
        view.note(f"alarms      {sum(not d.math for d in definitions)} created with "
                  "PutMetricAlarm from service.yaml and queue-alarms.yaml")
        for d in definitions:
            if d.math:
                view.note(f"            not evaluated here: {d.name} ({_why_not(d)})")
        view.note(f"CloudWatch  moto stores alarms but does not evaluate them: the sandbox is the "
                  f"local stand-in, periods scaled 1/{timings.scale:g} (60 s -> "
                  f"{60 / timings.scale:g} s)")
        ecs.start_all()
        ecs.wait_ready()
        view.note(f"workers     {len(ecs.all_tasks())} Celery worker processes with "
                  "toolkit.install(app), each one ECS task (moto RunTask) of its service")
        run.started = time.time()
        producer = threading.Thread(target=_producer, args=(url, prefix, timings.rate, halt),
                                    daemon=True)
        producer.start()
        stack.callback(producer.join, 5)
        stack.callback(halt.set)
        _loop(run, settings, ecs, cw, definitions, _load_handler(), view, stop, oncall)
    run.deployments = run.timeline.count("deployment")
    run.ok, run.result = outcome(scenario, run.timeline, run.deployments, remediation)
    return run


def _loop(run: Run, settings: Settings, ecs: Any, cw: Any, definitions: Any,
          handler: Any, view: Any, stop: threading.Event, oncall: list[Any]) -> None:
    from toolkit.collector.brokers import open_reader
    from toolkit.collector.cycle import QueueSource, run_cycle
    from toolkit.collector.publisher import CloudWatchPublisher
    from toolkit.sandbox.cloudwatch import AlarmEvaluator

    timings = run.timings
    reader = open_reader(settings.broker)  # type: ignore[arg-type]
    publisher = CloudWatchPublisher(settings.namespace, client=cw)
    source = QueueSource(settings)
    evaluator = AlarmEvaluator(cw, definitions, timings.scale, datetime.now(UTC))
    fault_at: float | None = None
    end_at: float | None = None
    try:
        while not stop.is_set():
            tick = time.monotonic()
            now = run.t()
            if fault_at is None and now >= timings.warmup:
                fault_at = now
                _fault(run, ecs, now, view)
            _play_ecs_metrics(cw, run.scenario, fault_at is not None)
            result = run_cycle(reader, settings, publisher, source=source)
            lengths = {q.queue: q.length for q in result.queues}
            run.lengths.append((now, lengths))
            run.verdicts = {v.service: v.verdict for v in result.services}
            _watch_long_task(run, result.services, view)
            for change in evaluator.tick():
                _alarm_changed(run, change, handler, view)
            for person in oncall:
                press_due(person, run.timeline, run.t(), view)
            for service in ecs.replace_if_deployed():
                view.event(run.timeline.add(run.t(), "deployment", f"ECS shows a new deployment "
                           f"of {service}: the old task is stopped, a new one starts"))
            for task in ecs.replace_stopped():
                view.event(run.timeline.add(run.t(), "task-stopped", (
                    f"ECS shows task {task.task_id[:8]} of {task.service} stopped (StopTask): "
                    "its process is killed and one new task replaces it")))
            _recovery(run, {v.service: v for v in result.services}, lengths, view)
            view.status(run.t(), lengths, run.verdicts, evaluator.states)
            end_at = end_at or _finished(run, evaluator.states)
            if (end_at is not None and run.t() >= end_at) or run.t() > timings.timeout:
                if end_at is None:
                    view.event(run.timeline.add(run.t(), "timeout", "the scenario did not "
                                                f"finish in {timings.timeout:g} s"))
                break
            stop.wait(max(0.0, timings.collect_every - (time.monotonic() - tick)))
        if stop.is_set():
            run.timeline.add(run.t(), "interrupted", "stopped by the user")
    finally:
        reader.close()


def _recovery(run: Run, verdicts: dict[str, Any], lengths: dict[str, int], view: Any) -> None:
    """After the deployment: ``recovered`` once the service has a live worker and is no longer
    stuck; ``drained`` once its backlog is back to a handful."""
    tl = run.timeline
    v = verdicts.get(FROZEN)
    remedy = tl.first("deployment") or tl.first("task-stopped")
    if not remedy or v is None:
        return
    backlog = lengths.get(SERVICES[FROZEN], 0)
    want = 2 if run.scenario == "partial" else 1
    if not tl.first("recovered") and v.verdict not in ("stuck", "degraded") \
            and (v.workers_alive or 0) >= want:
        view.event(tl.add(run.t(), "recovered", f"{FROZEN}: a live worker again (verdict "
                          f"{v.verdict}, backlog {backlog})"))
    if tl.first("recovered") and not tl.first("drained") and backlog <= 3:
        view.event(tl.add(run.t(), "drained", f"{FROZEN}: backlog back to {backlog}"))


def _fault(run: Run, ecs: Any, now: float, view: Any) -> None:
    if run.scenario in ("stuck", "partial"):
        ecs.tasks[FROZEN][0].freeze()
        which = "one of the two workers" if run.scenario == "partial" else "the worker"
        view.event(run.timeline.add(now, "frozen", f"SIGSTOP to {which} of {FROZEN}: its "
                                    "process stays, its loop and heartbeats stop"))
    elif run.scenario == "memory":
        view.event(run.timeline.add(now, "memory", f"ECS reports MemoryUtilization 96% for "
                                    f"{FROZEN} (the sandbox plays ECS)"))
    elif run.scenario == "long-task":
        seconds = run.timings.long_task
        _send_one(ecs.broker, ecs.keyprefix, SERVICES[FROZEN], "sandbox.long", seconds)
        view.event(run.timeline.add(now, "long-task", (
            f"a legitimate {seconds:g} s task for {FROZEN} (-c 1, stuck_after "
            f"{run.timings.stuck_after:g} s, max_task_runtime {run.timings.max_task_runtime:g} s)"
            "; work keeps arriving behind it")))


def _watch_long_task(run: Run, verdicts: Any, view: Any) -> None:
    """Timeline marks: a service ever judged stuck or degraded, and the long task seen busy past
    stuck_after (what the long-task scenario is about)."""
    for v in verdicts:
        if v.verdict in ("stuck", "degraded"):
            run.timeline.add(run.t(), "judged-stuck", f"{v.service}: {v.verdict}")
    if run.scenario != "long-task" or run.timeline.first("busy"):
        return
    frozen = next((v for v in verdicts if v.service == FROZEN), None)
    if frozen is None:
        return
    for w in frozen.workers:
        started = run.timeline.first("long-task")
        ran = 0.0 if started is None else run.t() - started.t
        if w.state == "busy" and ran > run.timings.stuck_after + run.timings.collect_every:
            view.event(run.timeline.add(run.t(), "busy", (
                f"{FROZEN} has run one task for {ran:.0f} s (> stuck_after): "
                f"verdict {frozen.verdict}, worker busy, not stuck")))


def _play_ecs_metrics(cw: Any, scenario: Scenario, faulty: bool) -> None:
    """AWS/ECS MemoryUtilization, as ECS publishes it for each service with a running task."""
    data = []
    for service in SERVICES:
        high = scenario == "memory" and faulty and service == FROZEN
        data.append({"MetricName": "MemoryUtilization", "Unit": "Percent",
                     "Value": 96.0 if high else 38.0 + random.random() * 4,
                     "Dimensions": [{"Name": "ClusterName", "Value": CLUSTER},
                                    {"Name": "ServiceName", "Value": service}]})
    cw.put_metric_data(Namespace="AWS/ECS", MetricData=data)


def _alarm_changed(run: Run, change: Any, handler: Any, view: Any) -> None:
    name = change.alarm.name
    if change.new == "ALARM":
        view.event(run.timeline.add(run.t(), "alarm", name))
    elif change.old == "ALARM" and change.new == "OK":
        view.event(run.timeline.add(run.t(), "resolved", name))
    else:
        return
    handler(eventbridge_event(change, REGION), LambdaContext())


def _finished(run: Run, states: Mapping[str, str]) -> float | None:
    """When to stop (seconds since start), once the scenario's story is told."""
    tl, t = run.timeline, run.timings
    if run.remediation == "dry-run" and run.scenario in ("stuck", "partial"):
        pressed = tl.first("pressed")  # a dry run changes nothing: its reply is the story
        return pressed.t + t.settle if pressed else None
    if run.scenario in ("stuck", "partial"):
        alarm = "WorkerStuck" if run.scenario == "stuck" else "WorkersStuck"
        resolved = any(e.event == "resolved" and e.detail.endswith(alarm) for e in tl.events)
        return run.t() + 1.0 if resolved and tl.first("drained") else None
    if run.scenario == "memory":
        first = tl.first("alarm")
        return first.t + t.settle if first else None
    if run.scenario == "long-task":
        return t.warmup + t.long_task + t.settle
    return t.warmup + t.healthy_for


def _cleanup(url: str, prefix: str) -> None:
    """Remove the sandbox's keys (all under ``prefix``) from a Redis given with --broker."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()

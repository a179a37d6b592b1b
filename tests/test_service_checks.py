"""The ECS / CloudWatch read helpers against moto, the service checker, the service metrics of
a cycle, and `celery-ecs check` (config errors, JSON shape)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from toolkit import cli
from toolkit.aws.ecs import describe_services, services_of_tasks
from toolkit.aws.metrics import read_utilization
from toolkit.collector.brokers.base import BrokerReading, QueueReading
from toolkit.collector.cycle import QueueSource, run_cycle
from toolkit.collector.publisher import PublishReport, Sample
from toolkit.collector.services import ServiceChecker
from toolkit.config import ServiceSettings, Settings, VerdictSettings
from toolkit.errors import AwsError
from toolkit.registry import WorkerHeartbeat

REGION = "eu-west-1"
NOW = time.time()


class Counting:
    """A boto3 client that counts calls per operation (and can fail some of them)."""

    def __init__(self, inner: Any, fail: dict[str, str] | None = None) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}
        self.fail = fail or {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def call(**kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            if name in self.fail:
                code = self.fail[name]
                raise ClientError({"Error": {"Code": code, "Message": "Rate exceeded"}}, name)
            return method(**kwargs)

        return call


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "1")  # moto: tasks run, rollout completed
    with mock_aws():
        yield (boto3.client("ecs", region_name=REGION),
               boto3.client("cloudwatch", region_name=REGION))


def make_services(ecs: Any, cluster: str, names: list[str]) -> None:
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(family="worker", containerDefinitions=[
        {"name": "worker", "image": "w", "memory": 256, "essential": True}])
    for name in names:
        ecs.create_service(cluster=cluster, serviceName=name, taskDefinition="worker",
                           desiredCount=1)


def put(cw: Any, metric: str, value: float, ago: float, **dims: str) -> None:
    cw.put_metric_data(Namespace="AWS/ECS", MetricData=[{
        "MetricName": metric, "Value": value, "Unit": "Percent",
        "Timestamp": datetime.fromtimestamp(NOW - ago, UTC),
        "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
    }])


# --- the read helpers ---------------------------------------------------------------------------


def test_describe_services_ten_per_call_and_missing_ones(aws: tuple[Any, Any]) -> None:
    ecs = Counting(aws[0])
    names = [f"svc-{i}" for i in range(23)]
    make_services(aws[0], "prod", names)
    read = describe_services(ecs, "prod", [*names, "ghost"])
    assert ecs.calls == {"describe_services": 3} and read.calls == 3
    assert sorted(read.found) == sorted(names)
    view = read.found["svc-0"]
    assert (view.running, view.desired, view.pending, view.deploying) == (1, 1, 0, False)
    assert view.rollout_state == "COMPLETED" and view.launch_type == "EC2"
    assert read.missing == {"ghost": "service ghost not found in cluster prod"}


def test_cluster_that_does_not_exist_makes_every_service_missing(aws: tuple[Any, Any]) -> None:
    read = describe_services(aws[0], "nowhere", ["a", "b"])
    assert read.found == {} and read.missing == {
        "a": "cluster nowhere not found", "b": "cluster nowhere not found"}


def test_throttling_after_retries_is_an_aws_error_with_its_code(aws: tuple[Any, Any]) -> None:
    ecs = Counting(aws[0], fail={"describe_services": "ThrottlingException"})
    with pytest.raises(AwsError) as err:
        describe_services(ecs, "prod", ["a"])
    assert err.value.code == "ThrottlingException" and "Rate exceeded" in str(err.value)


def test_unknown_tasks_are_left_out_100_per_call(aws: tuple[Any, Any]) -> None:
    ecs = Counting(aws[0])
    make_services(aws[0], "prod", [])
    arn = "arn:aws:ecs:eu-west-1:123456789012:task/prod/unknown"
    found, calls = services_of_tasks(ecs, "prod", [arn] * 3 + [f"{arn}{i}" for i in range(150)])
    assert calls == 2 and ecs.calls == {"describe_tasks": 2} and found == {}


class TasksStub:
    def describe_tasks(self, cluster: str, tasks: list[str]) -> dict[str, Any]:
        return {"tasks": [
            {"taskArn": tasks[0], "group": "service:worker-emails"},
            {"taskArn": tasks[1], "group": "family:one-off"},
        ], "failures": []}


def test_fargate_tasks_map_to_services_through_their_group() -> None:
    found, calls = services_of_tasks(TasksStub(), "prod", ["arn:t/1", "arn:t/2"])
    assert found == {"arn:t/1": "worker-emails"} and calls == 1


def test_utilization_in_one_call_drops_the_incomplete_period(aws: tuple[Any, Any]) -> None:
    cw = Counting(aws[1])
    dims = {"ClusterName": "prod", "ServiceName": "svc"}
    put(aws[1], "MemoryUtilization", 80.0, 300, **dims)
    put(aws[1], "MemoryUtilization", 130.0, 190, **dims)  # over 100: a soft limit
    put(aws[1], "MemoryUtilization", 5.0, 10, **dims)  # the newest minute, maybe partial: dropped
    put(aws[1], "MemoryReservation", 97.0, 200, ClusterName="prod")
    read = read_utilization(cw, [("prod", "svc"), ("prod", "idle")], ["prod"], now=NOW)
    assert cw.calls == {"get_metric_data": 1} and read.queries == 6
    mem = read.services[("prod", "svc")]["MemoryUtilization"]
    assert mem.latest == 130.0 and mem.minimum == 80.0
    assert read.services[("prod", "idle")]["MemoryUtilization"].latest is None  # no task runs
    assert read.clusters["prod"]["MemoryReservation"].latest == 97.0


def test_utilization_batches_500_queries_per_call(aws: tuple[Any, Any]) -> None:
    cw = Counting(aws[1])
    read = read_utilization(cw, [("prod", f"s{i}") for i in range(300)], now=NOW)
    assert read.queries == 600 and cw.calls == {"get_metric_data": 2}


# --- the checker -------------------------------------------------------------------------------


def beat(node: str, service: str, *, beat_ago: float, start_ago: float | None = 5.0,
         arn: str = "arn:aws:ecs:eu-west-1:1:task/prod/t", **kw: Any) -> WorkerHeartbeat:
    return WorkerHeartbeat(**{
        "node": node, "queues": ("q",), "updated": NOW - beat_ago, "started": 3,
        "last_task_started": None if start_ago is None else NOW - start_ago, "ttl": 30.0,
        "ecs_cluster": "arn:aws:ecs:eu-west-1:1:cluster/prod", "ecs_service": service,
        "ecs_task_arn": f"{arn}-{node}", "concurrency": 2, "held": 0, "booted": NOW - 600,
        **kw,
    })


def settings(*services: tuple[str, tuple[str, ...]]) -> Settings:
    return Settings(environment="test", services=tuple(
        ServiceSettings("prod", name, queues, verdicts=VerdictSettings(dead_after=10))
        for name, queues in services))


def reading(lengths: dict[str, int], workers: tuple[WorkerHeartbeat, ...] | None,
            missing: tuple[str, ...] = ()) -> BrokerReading:
    queues = tuple(QueueReading(q, n) for q, n in lengths.items())
    queues += tuple(QueueReading(q, 0, exists=False) for q in missing)
    return BrokerReading(queues=queues, workers=workers)


def test_missing_service_is_unknown_while_the_others_are_judged(aws: tuple[Any, Any]) -> None:
    make_services(aws[0], "prod", ["alive", "frozen"])
    checker = ServiceChecker(
        settings(("alive", ("a",)), ("frozen", ("f",)), ("ghost", ("g",)), ("nobroker", ("x",))),
        ecs=Counting(aws[0]), cloudwatch=Counting(aws[1]))
    workers = (beat("w1", "alive", beat_ago=1), beat("w2", "frozen", beat_ago=40))
    got = checker.check(reading({"a": 3, "f": 4, "g": 1}, workers, missing=("x",)), NOW)
    by = {v.service: v for v in got.verdicts}
    assert by["alive"].verdict == "healthy" and by["alive"].workers_alive == 1
    assert by["frozen"].verdict == "stuck" and by["frozen"].stuck_tasks == (
        "arn:aws:ecs:eu-west-1:1:task/prod/t-w2",)
    assert "no heartbeat for 40 s (dead after 10 s)" in by["frozen"].reasons[1]
    assert by["ghost"].verdict == "unknown"
    assert by["ghost"].reasons[0] == "service ghost not found in cluster prod"
    assert by["nobroker"].backlog == 0
    assert any("queues no broker has, counted as 0: x" in r for r in by["nobroker"].reasons)
    # 1 DescribeServices, 1 DescribeTasks (is the dead-looking worker's task stopped? moto does
    # not know it: judged by its heartbeat alone), 1 GetMetricData
    assert got.aws_calls == 3 and got.errors == ()


def test_missing_cluster_is_named_as_the_cluster_not_the_service(aws: tuple[Any, Any]) -> None:
    make_services(aws[0], "prod", ["alive"])
    conf = Settings(environment="test", services=(
        ServiceSettings("prod", "alive", ("a",)), ServiceSettings("nocluster", "svc-x", ("a",)),
        ServiceSettings("prod", "gone", ("a",))))
    checker = ServiceChecker(conf, ecs=aws[0], cloudwatch=aws[1])
    got = checker.check(reading({"a": 0}, (beat("w1", "alive", beat_ago=1),)), NOW)
    by = {v.service: v for v in got.verdicts}
    assert by["svc-x"].verdict == "unknown" and by["svc-x"].worker_stuck_value is None
    assert by["svc-x"].reasons[0] == "cluster nocluster not found"
    assert by["gone"].reasons[0] == "service gone not found in cluster prod"
    assert by["alive"].verdict == "healthy"


def test_throttled_ecs_makes_services_unknown_not_a_crash(aws: tuple[Any, Any]) -> None:
    make_services(aws[0], "prod", ["alive"])
    throttled = Counting(aws[0], fail={"describe_services": "ThrottlingException"})
    checker = ServiceChecker(settings(("alive", ("a",))), ecs=throttled, cloudwatch=aws[1])
    got = checker.check(reading({"a": 1}, (beat("w1", "alive", beat_ago=1),)), NOW)
    (v,) = got.verdicts
    assert v.verdict == "unknown" and v.worker_stuck_value is None
    assert "could not read ECS: ECS DescribeServices in cluster prod failed: ThrottlingException" \
        in v.reasons[0]
    assert len(got.errors) == 1


def test_registry_missing_is_unknown_and_says_why(aws: tuple[Any, Any]) -> None:
    make_services(aws[0], "prod", ["alive"])
    checker = ServiceChecker(settings(("alive", ("a",))), ecs=aws[0], cloudwatch=aws[1])
    (v,) = checker.check(reading({"a": 1}, None), NOW).verdicts
    assert v.verdict == "unknown" and "could not read the heartbeat registry" in v.reasons[0]


class Recorder:
    def __init__(self) -> None:
        self.samples: list[Sample] = []

    def publish(self, samples: Any) -> PublishReport:
        self.samples = list(samples)
        return PublishReport(len(self.samples), 1)


class FixedReader:
    kind = "fake"

    def __init__(self, result: BrokerReading) -> None:
        self.result = result

    def read(self, queues: Any) -> BrokerReading:
        return self.result

    def discover_queues(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


def test_cycle_publishes_service_metrics_and_keeps_the_previous_backlog(
    aws: tuple[Any, Any]
) -> None:
    make_services(aws[0], "prod", ["alive", "frozen"])
    conf = settings(("alive", ("a",)), ("frozen", ("f",)), ("ghost", ("g",)))
    source = QueueSource(conf, services=ServiceChecker(conf, ecs=aws[0], cloudwatch=aws[1]))
    workers = (replace(beat("w1", "alive", beat_ago=1), active=2),
               replace(beat("w2", "frozen", beat_ago=40), active=1))
    pub = Recorder()
    run_cycle(FixedReader(reading({"a": 3, "f": 4, "g": 0}, workers)), conf, pub, source=source,
              clock=lambda: NOW)
    result = run_cycle(FixedReader(reading({"a": 5, "f": 4, "g": 0}, workers)), conf, pub,
                       source=source, clock=lambda: NOW)
    got = {(s.name, s.dimension("ServiceName")): s.value for s in pub.samples
           if s.dimension("ServiceName")}
    assert got == {
        ("WorkersAlive", "alive"): 1, ("BacklogPerTask", "alive"): 5.0,
        ("WorkerStuck", "alive"): 0.0, ("WorkersStuck", "alive"): 0.0,
        ("WorkersAlive", "frozen"): 0, ("BacklogPerTask", "frozen"): 4.0,
        ("WorkerStuck", "frozen"): 1.0, ("WorkersStuck", "frozen"): 0.0,
        # ghost is not in ECS: it publishes nothing at all (not "0 workers alive")
        # running tasks of live workers only: the frozen worker's last count is not believed
        ("TasksRunning", "alive"): 2, ("TasksRunning", "frozen"): 0,
    }
    sample = next(s for s in pub.samples if s.name == "WorkerStuck")
    assert [k for k, _ in sample.dimensions] == ["Environment", "ClusterName", "ServiceName"]
    alive = next(v for v in result.services if v.service == "alive")
    assert alive.verdict == "behind" and "backlog grew from 3 to 5" in alive.reasons[0]
    # `collect` prints each service's verdict and its first reason under the queues
    from toolkit.collector.render import render_json, render_table

    table = render_table(result, conf).splitlines()
    start = table.index(next(line for line in table if line.startswith("SERVICE")))
    assert [line.split()[:2] for line in table[start:start + 4]] == [
        ["SERVICE", "VERDICT"], ["prod/alive", "behind"], ["prod/frozen", "stuck"],
        ["prod/ghost", "unknown"]]
    assert "backlog grew from 3 to 5 while workers make progress" in table[start + 1]
    assert all(len(line) <= 100 for line in table[start:start + 4])
    doc = json.loads(render_json(result, conf))
    assert [(s["service"], s["verdict"]) for s in doc["services"]] == [
        ("alive", "behind"), ("frozen", "stuck"), ("ghost", "unknown")]


# --- the command ---------------------------------------------------------------------------------


@pytest.mark.parametrize("line, message", [
    ("dead_after = -1", "verdicts.dead_after must be a positive number, got -1"),
    ("dead_after = inf", "verdicts.dead_after must be a positive number, got inf"),
    ("dead_after = nan", "verdicts.dead_after must be a positive number, got nan"),
    ('dead_after = ""', "verdicts.dead_after must be a number, got ''"),
    ('memory_high = "90"', "verdicts.memory_high must be a number, got '90'"),
    ("memory_high = true", "verdicts.memory_high must be a number, got True"),
    ("min_backlog = 0", "verdicts.min_backlog must be at least 1, got 0"),
    ("min_backlog = -2", "verdicts.min_backlog must be at least 1, got -2"),
    ('min_backlog = "3"', "verdicts.min_backlog must be an integer, got '3'"),
    ("stuck_after = 0", "verdicts.stuck_after must be a positive number, got 0"),
    ("min_backlog = 1.5", "verdicts.min_backlog must be an integer, got 1.5"),
    ('memory_high = "lots"', "verdicts.memory_high must be a number, got 'lots'"),
    ("dead_afterr = 3", "[verdicts] has unknown keys: dead_afterr"),
    ("max_task_runtime = 0", "verdicts.max_task_runtime must be a positive number, got 0"),
    ("max_task_runtime = -60", "verdicts.max_task_runtime must be a positive number, got -60"),
    ('max_task_runtime = "1h"', "verdicts.max_task_runtime must be a number, got '1h'"),
    ("max_task_runtime = inf", "verdicts.max_task_runtime must be a positive number, got inf"),
    ("scale_out_grace = 0", "verdicts.scale_out_grace must be a positive number, got 0"),
])
def test_malformed_verdicts_exit_2_with_one_line(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('environment = "t"\n[broker]\nurl = "redis://127.0.0.1:6379/1"\n'
                    f'[verdicts]\n{line}\n[[services]]\ncluster = "c"\nservice = "s"\n'
                    'queues = ["q"]\n')
    assert cli.main(["check", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert err == f"celery-ecs check: error: {message}\n"


def test_service_entry_overrides_verdicts(tmp_path: Any) -> None:
    from toolkit.config import load_settings

    conf = tmp_path / "c.toml"
    conf.write_text('environment = "t"\n[broker]\nurl = "redis://h/0"\n[verdicts]\n'
                    'dead_after = 30\n[[services]]\ncluster = "c"\nservice = "s"\nqueues = ["q"]\n'
                    'stuck_after = 60\n')
    (svc,) = load_settings(conf, environ={}).services
    assert svc.verdicts == VerdictSettings(dead_after=30, stuck_after=60)


def test_max_task_runtime_per_service_over_the_default(tmp_path: Any) -> None:
    from toolkit.config import load_settings

    conf = tmp_path / "c.toml"
    conf.write_text('environment = "t"\n[broker]\nurl = "redis://h/0"\n[verdicts]\n'
                    'max_task_runtime = 900\n[[services]]\ncluster = "c"\nservice = "exports"\n'
                    'queues = ["q"]\nmax_task_runtime = 7200\n[[services]]\ncluster = "c"\n'
                    'service = "emails"\nqueues = ["e"]\n')
    exports, emails = load_settings(conf, environ={}).services
    assert (exports.verdicts.max_task_runtime, emails.verdicts.max_task_runtime) == (7200, 900)


@pytest.mark.redis
def test_check_json_against_real_redis_and_moto(
    aws: tuple[Any, Any], tmp_path: Any, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import redis

    make_services(aws[0], "prod", ["svc"])
    prefix = f"chk-{unique}:"
    client = redis.Redis.from_url("redis://127.0.0.1:6379/1")
    try:
        client.lpush(f"{prefix}jobs", b"{}", b"{}")
        conf = tmp_path / "c.toml"
        conf.write_text(f'environment = "t"\n[broker]\nurl = "redis://127.0.0.1:6379/1"\n'
                        f'global_keyprefix = "{prefix}"\n[[services]]\ncluster = "prod"\n'
                        'service = "svc"\nqueues = ["jobs"]\n')
        assert cli.main(["check", "--config", str(conf), "--json"]) == 1
        doc = json.loads(capsys.readouterr().out)
        assert doc["environment"] == "t"
        (svc,) = doc["services"]
        assert set(svc) == {"cluster", "service", "verdict", "reasons", "backlog",
                            "workers_alive", "running", "desired", "memory_utilization",
                            "stuck_tasks", "held", "workers"}
        assert (svc["verdict"], svc["backlog"], svc["running"], svc["desired"]) == (
            "unknown", 2, 1, 1)
        assert svc["workers_alive"] is None and svc["stuck_tasks"] == []
    finally:
        client.delete(f"{prefix}jobs")
        client.close()


@pytest.mark.redis
def test_no_aws_region_is_one_line_not_a_traceback(
    tmp_path: Any, unique: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    conf = tmp_path / "c.toml"
    conf.write_text(f'environment = "t"\n[broker]\nurl = "redis://127.0.0.1:6379/1"\n'
                    f'[[services]]\ncluster = "c"\nservice = "s"\nqueues = ["q-{unique}"]\n')
    line = "no AWS region configured: set AWS_DEFAULT_REGION or a profile's region"
    assert cli.main(["check", "--config", str(conf)]) == 2
    assert capsys.readouterr().err == f"celery-ecs check: error: {line}\n"
    assert cli.main(["collect", "--config", str(conf), "--once", "--dry-run", "--json"]) == 1
    err = capsys.readouterr().err
    assert err == f"celery-ecs collect: error: {line}\n"


# --- clocks, stopped tasks, scale-out, verdict records ------------------------------------------


def test_workers_are_judged_on_the_broker_clock_whatever_their_own(aws: tuple[Any, Any]) -> None:
    """Production: one host's NTP is 100 s behind, another's 2 h ahead, and the collector's own
    clock 50 s off. Beats are aged on the broker's clock (the index score), each worker's task
    starts by its own offset: the behind one is alive, the ahead one that froze is dead."""
    make_services(aws[0], "prod", ["svc"])
    checker = ServiceChecker(settings(("svc", ("q",))), ecs=aws[0], cloudwatch=aws[1])
    broker_now = NOW
    behind = replace(beat("behind", "svc", beat_ago=102, start_ago=None, active=1,
                          youngest_start=NOW - 102 - 3, version=3), beat_at=broker_now - 2)
    ahead = replace(beat("ahead", "svc", beat_ago=-7200 + 200, version=3),
                    beat_at=broker_now - 200)
    read = replace(reading({"q": 3}, (behind, ahead)), clock=broker_now)
    (v,) = checker.check(read, NOW + 50).verdicts
    states = {w.node: w for w in v.workers}
    assert states["behind"].state == "progressing", states["behind"]
    assert states["ahead"].state == "dead" and "no heartbeat for 200 s" in states["ahead"].why
    assert v.verdict == "degraded"
    assert v.stuck_tasks == ("arn:aws:ecs:eu-west-1:1:task/prod/t-ahead",)


def test_entries_of_stopped_tasks_are_not_counted_and_stopped_is_remembered(
    aws: tuple[Any, Any]
) -> None:
    """After a forced deployment the old task is STOPPED but its registry entry stays for a
    while: it must not make the new service look degraded, and ECS is asked once."""
    ecs = aws[0]
    make_services(ecs, "prod", ["svc"])
    instance = _container_instance(ecs, "prod")
    (task,) = ecs.start_task(cluster="prod", taskDefinition="worker", group="service:svc",
                             containerInstances=[instance])["tasks"]
    ecs.stop_task(cluster="prod", task=task["taskArn"], reason="replaced")
    counting = Counting(ecs)
    checker = ServiceChecker(settings(("svc", ("q",))), ecs=counting, cloudwatch=aws[1])
    old = replace(beat("old", "svc", beat_ago=300), ecs_task_arn=task["taskArn"])
    new = beat("new", "svc", beat_ago=1)
    (v,) = checker.check(reading({"q": 2}, (old, new)), NOW).verdicts
    assert v.verdict == "healthy", v.reasons
    assert "1 registry entries of tasks ECS reports stopped: not counted" in v.reasons
    assert [w.node for w in v.workers] == ["new"]
    assert counting.calls["describe_tasks"] == 1
    checker.check(reading({"q": 2}, (old, new)), NOW)
    assert counting.calls["describe_tasks"] == 1  # STOPPED is cached: never asked again


def _container_instance(ecs: Any, cluster: str) -> str:
    """A moto container instance so that start_task has somewhere to run."""
    ec2 = boto3.client("ec2", region_name=REGION)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    (inst,) = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"]
    doc = json.dumps({"instanceId": inst["InstanceId"], "region": REGION,
                      "availabilityZone": f"{REGION}a", "accountId": "123456789012"})
    reply = ecs.register_container_instance(cluster=cluster, instanceIdentityDocument=doc)
    return str(reply["containerInstance"]["containerInstanceArn"])


def test_short_of_desired_since_the_first_sight_or_the_deployment_update() -> None:
    from toolkit.aws.ecs import ServiceView

    checker = ServiceChecker(settings(("svc", ("q",))), ecs=object(), cloudwatch=object())
    (svc,) = checker.settings.services
    short = ServiceView("prod", "svc", 2, 6, 4, False, "COMPLETED", "EC2",
                        updated_at=NOW - 40)
    assert checker._short_since(svc, short, NOW) == NOW - 40  # the scale-out began 40 s ago
    # 10 minutes later ECS still reports the same deployment update: short since then
    assert checker._short_since(svc, short, NOW + 600) == NOW - 40
    # no deployment time: this checker's first sight of it
    blind = replace(short, updated_at=None)
    checker.short_since.clear()
    assert checker._short_since(svc, blind, NOW) == NOW
    assert checker._short_since(svc, blind, NOW + 400) == NOW
    done = replace(short, running=6, pending=0)
    assert checker._short_since(svc, done, NOW + 500) is None and not checker.short_since


def test_verdict_records_are_written_and_a_cold_collector_keeps_the_history(
    aws: tuple[Any, Any]
) -> None:
    from toolkit.collector.records import VerdictRecords
    from toolkit.verdictrecord import VerdictRecord

    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(TableName="state", BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    make_services(aws[0], "prod", ["alive", "frozen"])
    conf = settings(("alive", ("a",)), ("frozen", ("f",)), ("ghost", ("g",)))
    workers = (beat("w1", "alive", beat_ago=1), beat("w2", "frozen", beat_ago=40))

    def checker() -> ServiceChecker:
        records = VerdictRecords("state", "test", 60.0, client=Counting(dynamodb))
        return ServiceChecker(conf, ecs=aws[0], cloudwatch=aws[1], records=records)

    first = checker()
    for n in (3, 4, 5):
        got = first.check(reading({"a": n, "f": 7, "g": 0}, workers), NOW)
        assert got.errors == ()
    assert first.records is not None and first.records.client.calls == {
        "batch_get_item": 1, "batch_write_item": 3}

    def record(service: str) -> VerdictRecord:
        item = dynamodb.get_item(TableName="state",
                                 Key={"pk": {"S": f"verdict#prod/{service}"}})["Item"]
        return VerdictRecord.from_item(item)

    frozen = record("frozen")
    assert (frozen.verdict, frozen.environment, frozen.interval) == ("stuck", "test", 60.0)
    assert frozen.stuck_tasks == ("arn:aws:ecs:eu-west-1:1:task/prod/t-w2",)
    assert frozen.backlog == (7, 7, 7) and frozen.at == pytest.approx(NOW)
    assert frozen.reasons[0].startswith("no worker makes progress")
    assert record("alive").backlog == (3, 4, 5)
    assert "Item" not in dynamodb.get_item(TableName="state",
                                           Key={"pk": {"S": "verdict#prod/ghost"}})
    cold = checker()  # a new Lambda container: the history comes from the table
    cold.check(reading({"a": 6, "f": 7, "g": 0}, workers), NOW + 60)
    assert record("alive").backlog == (3, 4, 5, 6)


def test_a_failing_state_table_is_an_error_line_and_the_verdicts_still_come(
    aws: tuple[Any, Any]
) -> None:
    from toolkit.collector.records import VerdictRecords

    make_services(aws[0], "prod", ["alive"])
    records = VerdictRecords("no-such-table", "test", 60.0,
                             client=boto3.client("dynamodb", region_name=REGION))
    checker = ServiceChecker(settings(("alive", ("a",))), ecs=aws[0], cloudwatch=aws[1],
                             records=records)
    got = checker.check(reading({"a": 1}, (beat("w1", "alive", beat_ago=1),)), NOW)
    assert [v.verdict for v in got.verdicts] == ["healthy"]
    assert any("ResourceNotFoundException" in e for e in got.errors), got.errors


def test_a_deploying_service_publishes_no_worker_stuck_datum() -> None:
    from toolkit.collector.services import service_samples
    from toolkit.collector.verdicts import ServiceVerdict

    v = ServiceVerdict("prod", "svc", "deploying", (), 3, 1, 2, 2, None, (), 1)
    names = {s.name for s in service_samples("test", [v])}
    assert names == {"WorkersAlive", "TasksRunning", "BacklogPerTask"}


def test_a_failed_describe_tasks_makes_dead_looking_services_unknown(
    aws: tuple[Any, Any]
) -> None:
    """Without ecs:DescribeTasks the collector cannot tell a stopped task's leftover entry from a
    dead worker: those services are unknown (no alarm datum), not degraded or stuck."""
    make_services(aws[0], "prod", ["svc", "fine"])
    denied = Counting(aws[0], fail={"describe_tasks": "AccessDeniedException"})
    checker = ServiceChecker(settings(("svc", ("q",)), ("fine", ("f",))), ecs=denied,
                             cloudwatch=aws[1])
    workers = (beat("old", "svc", beat_ago=300), beat("new", "svc", beat_ago=1),
               beat("ok", "fine", beat_ago=1))
    got = checker.check(reading({"q": 3, "f": 0}, workers), NOW)
    by = {v.service: v for v in got.verdicts}
    assert by["svc"].verdict == "unknown" and by["svc"].worker_stuck_value is None
    assert "could not tell whether task arn:aws:ecs:eu-west-1:1:task/prod/t-old is stopped" in \
        by["svc"].reasons[0] and "AccessDeniedException" in by["svc"].reasons[0]
    assert by["fine"].verdict == "healthy"
    assert any("AccessDeniedException" in e for e in got.errors)

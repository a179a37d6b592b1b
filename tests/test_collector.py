"""One cycle and the loop, with an in-memory reader and publisher (no I/O)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from toolkit.collector.brokers.base import BrokerReading, QueueReading
from toolkit.collector.cycle import Loop, QueueSource, run_cycle
from toolkit.collector.publisher import PublishReport, Sample
from toolkit.config import Settings, Thresholds
from toolkit.errors import BrokerUnreachable, PublishError


class FakeReader:
    kind = "fake"

    def __init__(self, lengths: dict[str, int], stamps: dict[str, float] | None = None) -> None:
        self.lengths = lengths
        self.stamps = stamps or {}
        self.fail_next = 0
        self.discoveries = 0
        self.asked: list[list[str]] = []

    def read(self, queues: Sequence[str]) -> BrokerReading:
        self.asked.append(list(queues))
        if self.fail_next:
            self.fail_next -= 1
            raise BrokerUnreachable("cannot reach Redis at redis://:***@h:6379/0: refused")
        return BrokerReading(
            tuple(QueueReading(q, self.lengths.get(q, 0), self.stamps.get(q)) for q in queues),
            unacked=3,
        )

    def discover_queues(self) -> list[str]:
        self.discoveries += 1
        return sorted(self.lengths)

    def close(self) -> None:
        pass


class FakePublisher:
    def __init__(self, fail: bool = False) -> None:
        self.published: list[list[Sample]] = []
        self.fail = fail

    def publish(self, samples: Sequence[Sample]) -> PublishReport:
        if self.fail:
            raise PublishError("PutMetricData to namespace 'Celery' failed: Throttling")
        self.published.append(list(samples))
        return PublishReport(len(samples), 1)


def by_name(samples: Sequence[Sample]) -> dict[tuple[str, str | None], float]:
    return {(s.name, s.dimension("Queue")): s.value for s in samples}


def test_cycle_metrics_and_thresholds() -> None:
    settings = Settings(
        environment="prod",
        only_queues=("emails", "images"),
        thresholds=Thresholds(max_length=100),
        queue_thresholds={"emails": Thresholds(max_length=10, max_age=60)},
    )
    reader = FakeReader({"emails": 12, "images": 50}, stamps={"emails": 1000.0})
    pub = FakePublisher()
    result = run_cycle(reader, settings, pub, clock=lambda: 1090.0)
    assert result.ok
    got = by_name(pub.published[0])
    assert got[("QueueLength", "emails")] == 12
    assert got[("QueueLength", "images")] == 50
    assert got[("QueueAge", "emails")] == 90.0
    assert ("QueueAge", "images") not in got  # no stamp: omitted, not zero
    assert got[("UnackedMessages", None)] == 3
    assert got[("CollectorHeartbeat", None)] == 1 and got[("CollectorErrors", None)] == 0
    assert all(("Environment", "prod") in s.dimensions for s in pub.published[0])
    emails, images = result.queues
    assert emails.state == "critical"
    assert emails.reasons == ("length 12 > 10", "oldest task waiting 90s > 60s")
    assert images.state == "ok"


def test_broker_failure_reports_an_error_metric_and_no_heartbeat() -> None:
    reader = FakeReader({"q": 1})
    reader.fail_next = 1
    pub = FakePublisher()
    result = run_cycle(reader, Settings(environment="e", only_queues=("q",)), pub)
    assert not result.ok and "cannot reach Redis" in result.errors[0]
    assert by_name(pub.published[0]) == {("CollectorErrors", None): 1}


def test_publish_failure_is_reported_not_raised() -> None:
    result = run_cycle(FakeReader({"q": 1}), Settings(environment="e", only_queues=("q",)),
                       FakePublisher(fail=True))
    assert result.errors == ("PutMetricData to namespace 'Celery' failed: Throttling",)
    assert result.queues[0].length == 1


def test_discovery_merges_configured_queues_and_is_cached() -> None:
    from toolkit.config import ServiceSettings

    settings = Settings(environment="e", services=(ServiceSettings("c", "s", ("idle",)),))
    reader = FakeReader({"a": 1, "b": 2})
    source = QueueSource(settings, rediscover_every=300)
    run_cycle(reader, settings, None, source=source, clock=lambda: 0.0)
    run_cycle(reader, settings, None, source=source, clock=lambda: 100.0)
    run_cycle(reader, settings, None, source=source, clock=lambda: 400.0)
    assert reader.asked[0] == ["idle", "a", "b"]  # an idle configured queue is still reported
    assert reader.discoveries == 2


def test_file_queues_add_to_discovery_and_flags_restrict(tmp_path: Path) -> None:
    from toolkit.config import load_settings

    config = tmp_path / "c.toml"
    config.write_text(
        'environment = "e"\n[broker]\nurl = "redis://h/0"\n[queues.emails]\nmax_length = 5\n'
        '[[services]]\ncluster = "c"\nservice = "s"\nqueues = ["images"]\n'
    )
    reader = FakeReader({"default": 1, "emails": 2})
    from_file = load_settings(config, environ={})
    run_cycle(reader, from_file, None)
    # a threshold for one queue does not switch discovery off nor drop the services' queues
    assert reader.asked[-1] == ["emails", "images", "default"]
    flagged = load_settings(config, queues=["default"], environ={})
    run_cycle(reader, flagged, None)
    assert reader.asked[-1] == ["default"]
    from_env = load_settings(config, environ={"CELERY_ECS_QUEUES": "emails, default"})
    run_cycle(reader, from_env, None)
    assert reader.asked[-1] == ["emails", "default"]


def test_loop_survives_outages_and_stops() -> None:
    reader = FakeReader({"q": 5})
    reader.fail_next = 2
    pub = FakePublisher()
    results = []
    loop = Loop(reader, Settings(environment="e", only_queues=("q",), interval=0.01), pub,
                on_cycle=results.append, max_cycles=4)
    assert loop.run() == 2
    assert [r.ok for r in results] == [False, False, True, True]
    assert by_name(pub.published[-1])[("QueueLength", "q")] == 5


def test_loop_stop_interrupts_the_wait() -> None:
    reader = FakeReader({"q": 5})
    loop = Loop(reader, Settings(environment="e", only_queues=("q",), interval=3600), None)
    t = threading.Thread(target=loop.run)
    t.start()
    deadline = time.monotonic() + 5
    while not reader.asked and time.monotonic() < deadline:  # the first cycle ran: now waiting
        time.sleep(0.01)
    time.sleep(0.1)
    started = time.monotonic()
    loop.stop()
    t.join(timeout=5)
    assert not t.is_alive()
    assert time.monotonic() - started < 2  # not the hour-long interval
    assert len(reader.asked) == 1

"""The broker's and celery beat's health in one cycle: samples, error lines, verdict reasons.

Pure, apart from :class:`EvictionCounter`, the one number a cycle keeps for the next (Redis
counts ``evicted_keys`` since it started; ``BrokerEvictedKeys`` is the difference per cycle).

* ``BeatHeartbeatAge``: the broker's clock minus the newest beat tick's index score (both on
  the broker's clock); nothing when no beat ticked within the registry's retention, or when
  there is no registry to read. Missing data is what the ``BeatStale`` alarm treats as
  breaching.
* ``BrokerMemoryBytes`` always when read; ``BrokerMemoryUtilization`` only with a limit;
  ``BrokerEvictedKeys`` from the second cycle of a process on (the first has no baseline; a
  counter that went down means Redis restarted, and everything since is counted).
* A broker at or over :data:`BROKER_MEMORY_HIGH` percent of its limit, evicting keys, or under a
  RabbitMQ resource alarm adds a reason line to every service's verdict (the verdict itself is
  not changed) and has alarms of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.beatregistry import BeatTick, newest
from toolkit.collector.brokers.base import BrokerReading, BrokerStats
from toolkit.collector.publisher import Sample
from toolkit.metricnames import (
    BEAT_HEARTBEAT_AGE,
    BROKER_EVICTED_KEYS,
    BROKER_MEMORY_BYTES,
    BROKER_MEMORY_HIGH,
    BROKER_MEMORY_UTILIZATION,
    ENVIRONMENT,
)


@dataclass
class EvictionCounter:
    """Turns Redis's ``evicted_keys`` total into a per-cycle difference."""

    previous: int | None = None

    def delta(self, total: int | None) -> int | None:
        if total is None:
            return None  # not read this cycle: keep the baseline
        before, self.previous = self.previous, total
        if before is None:
            return None
        return total - before if total >= before else total


@dataclass(frozen=True)
class Health:
    """What one cycle learnt about the broker and beat."""

    stats: BrokerStats | None = None
    evicted: int | None = None  # keys evicted since the last cycle
    beat: BeatTick | None = None  # the newest tick
    beat_age: float | None = None  # seconds, on the broker's clock

    @property
    def errors(self) -> tuple[str, ...]:
        return () if self.stats is None or self.stats.error is None else (self.stats.error,)

    @property
    def warnings(self) -> tuple[str, ...]:
        """The reason lines every service's verdict gets (empty while the broker is fine)."""
        s = self.stats
        if s is None:
            return ()
        out = []
        util = s.utilization
        policy = f" (maxmemory-policy {s.policy})" if s.policy else ""
        if util is not None and util >= BROKER_MEMORY_HIGH and s.max_memory:
            out.append(f"broker memory at {util:.0f}% of its {_mib(s.max_memory)} limit"
                       f"{policy}: at the limit it evicts keys or refuses writes")
        if self.evicted:
            out.append(f"broker evicted {self.evicted} keys since the last cycle{policy}: "
                       "queued messages may be lost")
        if s.alarms:
            out.append(f"broker resource alarm: {', '.join(s.alarms)} (publishers blocked)")
        return tuple(out)


def assess(reading: BrokerReading, evictions: EvictionCounter, now: float) -> Health:
    """The health in ``reading``; ``now`` is this host's clock, used only without a broker
    clock (a registry never gives ticks without one)."""
    stats = reading.stats
    evicted = evictions.delta(None if stats is None else stats.evicted_keys)
    tick = newest(reading.beats or ())
    age = None
    if tick is not None:
        clock = reading.clock if reading.clock is not None else now
        age = max(0.0, clock - tick.last_tick)
    return Health(stats=stats, evicted=evicted, beat=tick, beat_age=age)


def health_samples(environment: str, health: Health) -> list[Sample]:
    env = ((ENVIRONMENT, environment),)
    out = []
    if health.beat_age is not None:
        out.append(Sample(BEAT_HEARTBEAT_AGE, round(health.beat_age, 3), "Seconds", env))
    s = health.stats
    if s is not None and s.used_memory is not None:
        out.append(Sample(BROKER_MEMORY_BYTES, s.used_memory, "Bytes", env))
        if s.utilization is not None:
            out.append(Sample(BROKER_MEMORY_UTILIZATION, round(s.utilization, 2), "Percent",
                              env))
    if health.evicted is not None:
        out.append(Sample(BROKER_EVICTED_KEYS, health.evicted, "Count", env))
    return out


def _mib(n: int) -> str:
    return f"{n / 1048576:.0f} MiB" if n >= 1048576 else f"{n} bytes"

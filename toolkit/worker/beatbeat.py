"""celery beat's heartbeat, written by the scheduler's own tick: a file and a registry entry.

``toolkit.install(app)`` (or :func:`install` here) connects Celery's ``beat_init`` signal. When
``celery beat`` (or an embedded ``worker -B`` beat) starts, the scheduler instance it built gets
its ``tick`` wrapped: after every tick returns, the beat

* rewrites the beat file (``CELERY_ECS_BEAT_FILE``, default ``celery-ecs-beat`` in the temp
  folder) with the tick as JSON, atomically, for ``celery-ecs healthcheck beat``;
* refreshes its entry in the beat registry (:mod:`toolkit.beatregistry`), scored on the broker's
  clock, for the collector's ``BeatHeartbeatAge``.

The beat is written by the tick itself, in beat's own thread, never by a helper thread: a beat
frozen, blocked in a tick (sending to a dead broker, a locked schedule database) or dead stops
writing. Wrapping the instance works for any scheduler class beat is given (``-S``):
Celery's ``PersistentScheduler``, RedBeat's ``RedBeatScheduler``, django-celery-beat's
``DatabaseScheduler``. For a beat run without ``toolkit.install(app)`` (a scheduler built by
hand), :class:`BeatHeartbeatMixin` does the same as a base class::

    class Scheduler(BeatHeartbeatMixin, RedBeatScheduler): ...

A file or registry that cannot be written is logged once and beat keeps scheduling; a failing
registry is retried every :data:`~toolkit.worker.beater.REGISTRY_RETRY_AFTER` seconds (each try
costs the tick at most the 1 s socket timeout).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from toolkit.beatregistry import BeatTick, write_tick
from toolkit.env import default_beat_file
from toolkit.registry import RedisLike
from toolkit.worker.beater import REGISTRY_RETRY_AFTER, _script_refused
from toolkit.worker.settings import HeartbeatSettings

logger = logging.getLogger("toolkit.heartbeat")  # the public path: operators filter on it

_APP_ATTR = "_celery_ecs_beat"
_SCHEDULER_ATTR = "_celery_ecs_beater"


def instance_name() -> str:
    """``HOST:PID``: one registry entry per beat process."""
    return f"{socket.gethostname() or 'localhost'}:{os.getpid()}"


@dataclass
class BeatBeater:
    """Writes one beat per scheduler tick: the beat file, then the registry entry."""

    file: str
    registry: RedisLike | None = None
    prefix: str = ""
    instance: str = field(default_factory=instance_name)
    clock: Callable[[], float] = time.time
    ticks: int = 0
    _warned_file: bool = False
    _registry_failing: bool = False
    _retry_at: float = 0.0
    _script: bool = True
    _offset: float = 0.0

    def tick(self, interval: Any, scheduler: Any = None) -> BeatTick:
        """Record a tick that announced ``interval`` seconds until the next one."""
        try:
            sleep = max(float(interval or 0.0), 0.0)
        except (TypeError, ValueError):
            sleep = 0.0
        beat = BeatTick(
            instance=self.instance, at=float(self.clock()), interval=round(sleep, 3),
            max_interval=float(getattr(scheduler, "max_interval", 0) or 0),
            scheduler=type(scheduler).__name__ if scheduler is not None else "",
            pid=os.getpid(),
        )
        self.ticks += 1
        self._write_file(beat)
        self._write_registry(beat)
        return beat

    def _write_file(self, beat: BeatTick) -> None:
        tmp = f"{self.file}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as out:
                out.write(beat.to_json())
            os.replace(tmp, self.file)  # the probe never reads half a file
        except OSError as exc:
            if not self._warned_file:
                self._warned_file = True
                logger.warning(
                    "celery-ecs beat heartbeat: cannot write %s (%s); beat keeps running, but "
                    "`celery-ecs healthcheck beat` on this path will report it unhealthy",
                    self.file, exc.strerror or exc)

    def _write_registry(self, beat: BeatTick) -> None:
        if self.registry is None:
            return
        now = time.monotonic()
        if self._registry_failing and now < self._retry_at:
            return
        try:
            try:
                score = write_tick(self.registry, beat, self.prefix, script=self._script,
                                   offset=self._offset)
            except Exception as exc:  # noqa: BLE001 - redis errors vary
                if not (self._script and _script_refused(exc)):
                    raise
                logger.warning("celery-ecs beat heartbeat: Redis refused the script; writing "
                               "with a pipeline on this host's clock (offset %+.3f s)",
                               self._offset)
                self._script = False
                score = write_tick(self.registry, beat, self.prefix, script=False,
                                   offset=self._offset)
            if self._script:
                self._offset = score - beat.at
        except Exception as exc:  # noqa: BLE001 - never let the registry stop the schedule
            if not self._registry_failing:
                logger.warning("celery-ecs beat heartbeat: registry write failed: %s", exc)
            self._registry_failing = True
            self._retry_at = now + REGISTRY_RETRY_AFTER
        else:
            if self._registry_failing:
                logger.info("celery-ecs beat heartbeat: registry writes recovered")
            self._registry_failing = False


def beater_for(app: Any, settings: HeartbeatSettings | None = None,
               file: str | None = None) -> BeatBeater:
    """A beater for ``app``'s beat: the file from ``CELERY_ECS_BEAT_FILE``, the registry where
    the workers' is (``CELERY_ECS_HEARTBEAT_REGISTRY``, else the broker when it is Redis)."""
    from toolkit.worker.bootstep import _registry_for

    settings = settings or HeartbeatSettings.from_env()
    beater = BeatBeater(file=file or default_beat_file())
    try:
        beater.registry, beater.prefix = _registry_for(app, settings)
    except Exception as exc:  # noqa: BLE001 - a bad registry URL must not stop beat
        logger.warning("celery-ecs beat heartbeat: cannot use the registry (%s); writing the "
                       "beat file only", type(exc).__name__)
    return beater


def attach(scheduler: Any, beater: BeatBeater) -> bool:
    """Wrap ``scheduler.tick`` (the instance's) so every tick beats; False when it already
    does (a :class:`BeatHeartbeatMixin`, or attached before)."""
    if isinstance(scheduler, BeatHeartbeatMixin) or getattr(scheduler, _SCHEDULER_ATTR, None):
        return False
    original = scheduler.tick

    def tick(*args: Any, **kwargs: Any) -> Any:
        interval = original(*args, **kwargs)
        beater.tick(interval, scheduler)
        return interval

    scheduler.tick = tick
    setattr(scheduler, _SCHEDULER_ATTR, beater)
    return True


class BeatHeartbeatMixin:
    """A scheduler base class that beats at every tick: ``class S(BeatHeartbeatMixin, Base)``.

    Put it first, so its ``tick`` wraps the scheduler's own. The beater is built at the first
    tick from the scheduler's ``app``."""

    def tick(self, *args: Any, **kwargs: Any) -> Any:
        interval = super().tick(*args, **kwargs)  # type: ignore[misc]
        beater = getattr(self, _SCHEDULER_ATTR, None)
        if beater is None:
            beater = beater_for(getattr(self, "app", None))
            setattr(self, _SCHEDULER_ATTR, beater)
        beater.tick(interval, self)
        return interval


def install(app: Any) -> None:
    """Make ``app``'s beat processes beat at every tick (idempotent; nothing in workers)."""
    if getattr(app, _APP_ATTR, False):
        return
    from celery import signals

    def on_beat_init(sender: Any = None, **_: Any) -> None:
        if sender is None or getattr(sender, "app", None) is not app:
            return
        try:
            scheduler = sender.scheduler
            if attach(scheduler, beater_for(app)):
                logger.info("celery-ecs beat heartbeat: %s beats at every tick",
                            type(scheduler).__name__)
        except Exception:  # noqa: BLE001 - the heartbeat must never stop beat from starting
            logger.exception("celery-ecs beat heartbeat: could not attach to the scheduler")

    signals.beat_init.connect(on_beat_init, weak=False, dispatch_uid=f"celery-ecs-beat-{id(app)}")
    setattr(app, _APP_ATTR, True)

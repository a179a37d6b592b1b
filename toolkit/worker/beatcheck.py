"""``celery-ecs healthcheck beat``: is celery beat still ticking? Standard library only.

Beat rewrites its beat file at every scheduler tick (:mod:`toolkit.worker.beatbeat`) with the
tick's time and the interval it announced (the seconds until its next tick). The probe reads that
one small JSON file; it imports no Celery, kombu, redis or boto3, so it costs what
``healthcheck heartbeat`` costs.

Healthy while the last tick is at most the limit old: ``--max-age S`` when given, else three of
the intervals beat itself announced at that tick, and never less than :data:`MIN_MAX_AGE`
(beat sleeps up to ``beat_max_loop_interval``, 300 s by default, when nothing is due sooner,
so a fixed limit would either be slow to notice or kill a healthy beat).

    0  healthy        the last tick is fresh
    1  unhealthy      no beat file, a stale tick, one from the future, a file that is not a beat
                      heartbeat (not JSON, no tick time): stale, never a crash
    2  misconfigured  a bad ``--max-age``, a path that is a directory or cannot be read
"""

from __future__ import annotations

import json
import math
import time

from toolkit.env import default_beat_file
from toolkit.worker.healthcheck import FUTURE_TOLERANCE, ProbeResult

#: intervals a tick may be late before beat is stale (the BeatStale alarm uses the same rule)
STALE_INTERVALS = 3
#: the smallest default limit: scheduling jitter and a slow tick (many due tasks) fit in it
MIN_MAX_AGE = 30.0
#: a beat file is a few hundred bytes; reading more than this proves it is something else
MAX_FILE_BYTES = 65536


def check_beat(
    path: str | None = None, max_age: float | None = None, *, now: float | None = None
) -> ProbeResult:
    """Healthy when the beat file's last tick is fresh; see the module docstring."""
    if max_age is not None and not (max_age > 0 and math.isfinite(max_age)):
        return ProbeResult("misconfigured", f"--max-age must be a positive number, got {max_age}")
    path = path or default_beat_file()
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return ProbeResult(
            "unhealthy",
            f"no beat file at {path} (beat not started or not ticked yet, or the beat's app "
            "does not call toolkit.install(app))",
        )
    except IsADirectoryError:
        return ProbeResult("misconfigured", f"beat file path {path} is not a regular file")
    except OSError as exc:
        return ProbeResult("misconfigured", f"cannot read beat file {path}: {exc.strerror}")
    tick = _tick_of(raw)
    if isinstance(tick, str):
        return ProbeResult("unhealthy", f"beat file {path} {tick}: treated as stale")
    at, interval = tick
    if max_age is not None:
        limit, why = max_age, f"max {max_age:g} s"
    else:
        limit = max(STALE_INTERVALS * interval, MIN_MAX_AGE)
        why = f"max {limit:g} s: {STALE_INTERVALS} x its {interval:g} s interval, at least " \
              f"{MIN_MAX_AGE:g} s"
    age = (time.time() if now is None else now) - at
    if age < -FUTURE_TOLERANCE:
        return ProbeResult(
            "unhealthy", f"last beat tick is {-age:.1f} s in the future (clock skew): stale")
    if age > limit:
        return ProbeResult("unhealthy", f"last beat tick {age:.1f} s ago ({why})")
    return ProbeResult("healthy", f"last beat tick {max(age, 0.0):.1f} s ago ({why})")


def _tick_of(raw: bytes) -> tuple[float, float] | str:
    """(tick time, announced interval) from the file, or why it is not a beat heartbeat."""
    if len(raw) > MAX_FILE_BYTES:
        return "is too large to be a beat heartbeat"
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return "is not a beat heartbeat (not JSON)"
    if not isinstance(data, dict):
        return "is not a beat heartbeat (not a JSON object)"
    at, interval = data.get("at"), data.get("interval", 0.0)
    for value in (at, interval):
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or value < 0:
            return "is not a beat heartbeat (no valid tick time and interval)"
    return float(at), float(interval)  # type: ignore[arg-type]

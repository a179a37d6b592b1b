"""The invocation's time budget: every Slack and AWS call fits inside what Lambda has left.

:class:`Deadline` is started once per invocation from ``context.get_remaining_time_in_millis()``
minus :data:`MARGIN_SECONDS` (kept to record what is still owed); senders and the responder ask
it how many seconds are :meth:`~Deadline.left` before each call. The remediation runs first, so
the Slack calls get what is left, each request's timeout capped to it. Without a Lambda context
(the CLI, tests) it never runs out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

MARGIN_SECONDS = 3.0  # kept back at the end of an invocation to write the owed record
MIN_CALL_SECONDS = 1.0  # no Slack request is started with less than this left
# Remediation runs first (before any Slack call) and is not started with less than this left: a
# floor for a few AWS calls, not a reservation (the 20 s kept back for it before is gone).
MIN_REMEDIATION_SECONDS = 2.0


class Deadline:
    """Seconds left in the current invocation (``inf`` when it has no deadline)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end: float | None = None

    def start(self, remaining_ms: float | None, margin: float = MARGIN_SECONDS) -> None:
        """Begin an invocation that has ``remaining_ms`` left (``None``: no deadline)."""
        if remaining_ms is None:
            self._end = None
        else:
            self._end = self._clock() + max(0.0, float(remaining_ms) / 1000.0 - margin)

    def left(self) -> float:
        if self._end is None:
            return math.inf
        return max(0.0, self._end - self._clock())

    @property
    def total_left_seconds(self) -> float:
        """Time left including the margin (the lease must outlast the whole invocation)."""
        return self.left() + MARGIN_SECONDS if self._end is not None else math.inf


def remaining_ms(context: object) -> float | None:
    """``context.get_remaining_time_in_millis()`` when the context has it, else ``None``."""
    getter = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(getter):
        return None
    try:
        value = float(getter())
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None

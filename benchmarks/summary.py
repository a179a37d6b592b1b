"""Summary rows for ``benchmarks/run_all.py``: each benchmark records its headline figures here.

When ``CELERY_ECS_BENCH_SUMMARY`` names a file (run_all sets it), :func:`record` appends one JSON
line per figure; run on its own, a benchmark records nothing and prints only its own report.
Also the small statistics every benchmark prints the same way: a median with its min-max.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence

ENV = "CELERY_ECS_BENCH_SUMMARY"


def record(benchmark: str, measured: str, figure: str, peer: str = "", ratio: str = "",
           target: str = "", held: bool | None = None) -> None:
    """One row: what was measured, its figure, the baseline or peer (with its figure) it was
    compared with in the same run, the ratio, the target and whether it held (None: no target)."""
    path = os.environ.get(ENV)
    if not path:
        return
    row = {"benchmark": benchmark, "measured": measured, "figure": figure, "peer": peer,
           "ratio": ratio, "target": target,
           "held": "-" if held is None else ("yes" if held else "no")}
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")


def spread(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    """``median (min-max)`` of ``values`` times ``scale``, e.g. ``8.0 (7.1-9.3)``."""
    med = statistics.median(values) * scale
    lo, hi = min(values) * scale, max(values) * scale
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"

"""The benchmarks' own venv, ``.venv-bench``: the project plus the peers it is measured against.

Flower is a peer, never a dependency of the project (runtime or dev): it lives here only. The
venv is made on first use and remade when ``pyproject.toml`` or the pins change; celery, kombu
and redis-py are pinned to the versions of the interpreter that builds it (the dev ``.venv``),
so the toolkit and its peer run on the same client library as the rest of the benchmarks.

Flower registers a ``celery flower`` sub-command, which ``celery`` imports at start-up: the probe
benchmark (``celery inspect ping``) therefore runs in ``.venv``, not here.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_VENV = ROOT / ".venv-bench"
BIN = BENCH_VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
FLOWER = "flower==2.2.0"
SAME_AS_DEV = ("celery", "kombu", "redis")


def pins() -> list[str]:
    """Flower, and the dev venv's celery, kombu and redis-py (when this interpreter has them)."""
    out = [FLOWER]
    for dist in SAME_AS_DEV:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out.append(f"{dist}=={importlib.metadata.version(dist)}")
    return out


def in_bench_venv() -> bool:
    return Path(sys.prefix).resolve() == BENCH_VENV.resolve()


def ensure() -> Path:
    """The bench venv's python, building the venv first when it is missing or out of date."""
    if in_bench_venv():
        return Path(sys.executable)
    wanted = pins()
    stamp = BENCH_VENV / ".installed"
    want = hashlib.sha256("\n".join(wanted).encode()
                          + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PY.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return PY
    print(f"[bench] creating {BENCH_VENV.name}: the project + {', '.join(wanted)} "
          "(first run only, about a minute)", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(BENCH_VENV)
    step = [str(PY), "-m", "pip", "--disable-pip-version-check", "-q", "install",
            "-e", str(ROOT), *wanted]
    proc = subprocess.run(step, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{proc.stdout}{proc.stderr}\n[bench] could not build {BENCH_VENV} "
                 "(pip's output above)")
    stamp.write_text(want)
    return PY


if __name__ == "__main__":
    print(ensure())

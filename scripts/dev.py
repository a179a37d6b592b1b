#!/usr/bin/env python3
"""Developer entry point: `python3 scripts/dev.py demo` and `python3 scripts/dev.py test`.

Needs only Python 3.11+. Creates `.venv` beside the project on first use and reinstalls the
project's dependencies when pyproject.toml changes; otherwise reuses it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".celery-ecs-installed"
# checkov pins an older boto3 than the project: it gets a venv of its own, made on first use.
CHECKOV_VENV = ROOT / ".venv-checkov"
CHECKOV_VERSION = "3.3.30"
PYTEST_WORKERS = os.environ.get("CELERY_ECS_TEST_WORKERS", "3")


def log(msg: str) -> None:
    print(f"[dev] {msg}", flush=True)


def _venv_ok() -> bool:
    """The venv exists and its pip runs (a venv made without pip, or half made, is not ok)."""
    if not PY.exists():
        return False
    probe = subprocess.run([str(PY), "-m", "pip", "--version"], capture_output=True)
    return probe.returncode == 0


def _uv() -> str | None:
    """uv in .venv (pip-installed there once, ~2 s): it installs the project in seconds where
    pip takes a minute. None when it cannot be had (no index, CELERY_ECS_NO_UV=1): pip then."""
    if os.environ.get("CELERY_ECS_NO_UV"):
        return None
    exe = BIN / ("uv.exe" if os.name == "nt" else "uv")
    if not exe.exists():
        subprocess.run([str(PY), "-m", "pip", "--disable-pip-version-check", "-q", "install",
                        "uv"], cwd=ROOT, capture_output=True)
    return str(exe) if exe.exists() else None


def install(python: Path, *args: str) -> bool:
    """``pip install ARGS`` into the venv of ``python``: with uv, and with pip if uv fails (uv
    reads no pip.conf: a private index configured there is pip's to use)."""
    uv = _uv()
    # --compile-bytecode as pip does: a module compiled on first import under pytest's
    # warnings-as-errors fails on a dependency's invalid escape (parliament's)
    uv_cmd = [uv, "pip", "install", "-q", "--compile-bytecode", "--python", str(python)] if uv \
        else []
    if uv and subprocess.run([*uv_cmd, *args], cwd=ROOT).returncode == 0:
        return True
    if uv:
        log("uv failed; installing with pip instead")
    return subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", "-q",
                           "install", *args], cwd=ROOT).returncode == 0


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may be run by an older python3
        sys.exit(f"Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
    if not _venv_ok():
        log(f"creating {VENV.relative_to(ROOT)}" + (" again (no working pip in it)"
                                                     if PY.exists() else ""))
        try:
            venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        except (subprocess.CalledProcessError, OSError) as exc:
            sys.exit(f"[dev] could not create {VENV}: {exc}. On Debian/Ubuntu install "
                     "python3-venv (apt-get install python3-venv) and run this again.")
        STAMP.unlink(missing_ok=True)
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == want:
        return
    log("installing the project and its dev dependencies into .venv")
    if not install(PY, "-e", f"{ROOT}[dev]"):
        sys.exit("[dev] failed: installing the project (see the installer's output above; a "
                 "network or index problem is the usual cause)")
    STAMP.write_text(want)


def ensure_checkov() -> Path:
    """checkov in .venv-checkov (its boto3 pin conflicts with the project's), installed once."""
    bindir = CHECKOV_VENV / ("Scripts" if os.name == "nt" else "bin")
    exe = bindir / "checkov"
    stamp = CHECKOV_VENV / ".installed"
    if exe.exists() and stamp.exists() and stamp.read_text().strip() == CHECKOV_VERSION:
        return exe
    log(f"installing checkov {CHECKOV_VERSION} into {CHECKOV_VENV.name} (first run only)")
    venv.EnvBuilder(with_pip=True, clear=True).create(CHECKOV_VENV)
    if not install(bindir / "python", f"checkov=={CHECKOV_VERSION}"):
        sys.exit("[dev] failed to install checkov (see the installer's output above)")
    stamp.write_text(CHECKOV_VERSION)
    return exe


def run(cmd: list[str], **kw: object) -> int:
    log("$ " + " ".join(cmd))
    return subprocess.run(cmd, cwd=ROOT, **kw).returncode  # type: ignore[call-overload,no-any-return]


def run_together(steps: list[tuple[str, list[str]]]) -> list[tuple[str, int]]:
    """Run the checks side by side (mypy alone takes 12 s cold), then print each one's output
    in order under its command line, as if they had run one after another."""
    procs = [(name, cmd, subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
             for name, cmd in steps]
    results = []
    for name, cmd, proc in procs:
        out, _ = proc.communicate()
        log("$ " + " ".join(cmd))
        print(out, end="" if out.endswith("\n") or not out else "\n", flush=True)
        results.append((name, proc.returncode))
    return results


def test(extra: list[str]) -> int:
    """Lint, type-check, template-check, then the whole pytest suite. First failure wins."""
    steps: list[tuple[str, list[str]]] = [
        ("ruff", [str(BIN / "ruff"), "check", "toolkit", "lambdas", "tests", "benchmarks",
                  "scripts"]),
        ("mypy", [str(BIN / "mypy")]),
    ]
    templates = sorted(str(p) for p in (ROOT / "cloudformation").rglob("*.yaml"))
    if templates:
        steps.append(("cfn-lint", [str(BIN / "cfn-lint"), *templates]))
        checkov = ensure_checkov()
        steps.append(("checkov", [str(checkov), "-d", str(ROOT / "cloudformation"),
                                  "--framework", "cloudformation", "--compact", "--quiet",
                                  "--skip-download"]))
    failed = [name for name, rc in run_together(steps) if rc != 0]
    # Most tests wait on real processes and servers (workers, moto, the sandbox): three xdist
    # workers on two cores (the wheel is built once and shared, see tests/test_wheel.py).
    # Tests go out two at a time (xdist's default sends each worker a block of ~125 in a row,
    # which put every long test on one worker: 404 s busy beside 183 s and 168 s).
    rc = run([str(PY), "-m", "pytest", "-n", PYTEST_WORKERS, "--maxschedchunk", "1",
              "--durations", "15", *extra])
    if rc == 5:
        log("pytest collected no tests: that is a failure")
    if rc != 0:
        failed.append("pytest")
    if failed:
        log("FAILED: " + ", ".join(failed))
        return 1
    log("all checks passed")
    return 0


def demo(extra: list[str]) -> int:
    return run([str(BIN / "celery-ecs"), "sandbox", *extra])


# The oldest versions pyproject.toml admits (its floors): `compat` runs the tests of what changes
# between their minor versions (worker bootsteps and signals, kombu's Redis transport, boto3's
# clients, slack_sdk) on them, in a venv of its own.
COMPAT_VENV = ROOT / ".venv-compat"
COMPAT_PINS = ("celery[redis]==5.3.6", "kombu==5.3.7", "redis==5.0.8", "boto3==1.34.0",
               "slack-sdk==3.27.0")
COMPAT_TOOLS = ("pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "hypothesis>=6.100",
                "fakeredis[lua]>=2.26", "moto[server]>=5.0", "PyYAML>=6.0", "PyMySQL>=1.1")
COMPAT_TESTS = ("tests/test_brokers_redis.py", "tests/test_heartbeat.py",
                "tests/test_busy_vs_hung.py", "tests/test_verdicts.py",
                "tests/test_service_checks.py", "tests/test_alarm_handler.py",
                "tests/test_alarms.py", "tests/test_remediation.py", "tests/test_slack.py")


def compat(extra: list[str]) -> int:
    """The broker, worker/heartbeat, verdict and alarm-handler tests on the oldest supported
    versions; prints the versions it ran."""
    bindir = COMPAT_VENV / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / "python"
    stamp = COMPAT_VENV / ".installed"
    want = hashlib.sha256("\n".join((*COMPAT_PINS, *COMPAT_TOOLS)).encode()
                          + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not (stamp.exists() and stamp.read_text().strip() == want and py.exists()):
        log(f"creating {COMPAT_VENV.name} with the oldest supported versions (first run only)")
        venv.EnvBuilder(with_pip=True, clear=True).create(COMPAT_VENV)
        # the project without its dependencies, so that nothing lifts the pins
        for step in ((*COMPAT_PINS, *COMPAT_TOOLS), ("--no-deps", "-e", str(ROOT))):
            if not install(py, *step):
                sys.exit("[dev] failed to build the compat venv (see the installer's output)")
        stamp.write_text(want)
    versions = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(', '.join(f'{d} ' + "
         "m.version(d) for d in ('celery', 'kombu', 'redis', 'boto3', 'botocore', "
         "'slack_sdk', 'billiard')))"], capture_output=True, text=True, cwd=ROOT)
    log("compat versions: " + versions.stdout.strip())
    rc = run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", PYTEST_WORKERS,
              "--maxschedchunk", "1", *COMPAT_TESTS, *extra])
    log(("compat passed on " if rc == 0 else "compat FAILED on ") + versions.stdout.strip())
    return rc


def bench(extra: list[str]) -> int:
    """Every benchmark, then one summary table (benchmarks/run_all.py; minutes, not a test)."""
    return run([str(PY), str(ROOT / "benchmarks" / "run_all.py"), *extra])


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "setup", "compat", "bench"}:
        print("usage: python3 scripts/dev.py demo|test|setup|compat|bench [args...]",
              file=sys.stderr)
        return 2
    command, extra = argv[0], argv[1:]
    ensure_venv()  # compat too: uv lives in .venv
    if command == "compat":
        return compat(extra)
    if command == "setup":
        return 0
    if command == "bench":
        return bench(extra)
    return demo(extra) if command == "demo" else test(extra)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The installed package is the product: what `pip install` gives a user works, not only a checkout.

One session builds the sdist, builds the wheel from that sdist (so the sdist is proven to carry
everything the wheel needs, and no stale ``build/lib`` of the checkout leaks in), installs the
wheel with the ``sandbox`` extra into a clean virtual environment (no system site-packages, no
checkout on ``sys.path``) and runs the commands from a directory outside the checkout. With uv in
the test venv (scripts/dev.py installs it) that is ``uv build`` and ``uv pip install``, the same
setuptools backend in ~5 s; without, ``python -m build --sdist``, ``pip wheel`` and ``pip``.

Adding a command to the smoke run is one line in ``SMOKES``; a line whose command has not landed in
this checkout yet is skipped, and runs as soon as it lands.
"""

from __future__ import annotations

import fcntl
import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
import tarfile
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import toolkit
from toolkit.packaging import PROVIDED_BY_RUNTIME

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
VERSION = toolkit.__version__
LAMBDAS = sorted(p.name for p in (ROOT / "lambdas").iterdir() if (p / "handler.py").is_file())
SMALL_CONFIG = """\
environment = "smoke"
namespace = "Celery"

[queues.default]

[[services]]
cluster = "smoke-cluster"
service = "worker-default"
queues = ["default"]
"""


@dataclass(frozen=True)
class Smoke:
    args: tuple[str, ...]  # "{config}" becomes the path of SMALL_CONFIG
    expect: str  # a piece of stdout that only a working command prints
    needs: str = ""  # toolkit/commands/<needs>.py: skipped until that command has landed


SMOKES = [
    Smoke(("--version",), f"celery-ecs {VERSION}"),
    Smoke(("--help",), "package      build the Lambda zip"),
    Smoke(("sandbox", "--help"), "--broker"),
    Smoke(("sandbox", "--scenario", "healthy", "--warmup", "1", "--healthy-for", "3"),
          "OK: no alarm, no deployment"),
    Smoke(("healthcheck", "--help"), "usage: celery-ecs healthcheck"),
    Smoke(("healthcheck", "beat", "--help"), "beat file (default"),
    Smoke(("deploy", "--help"), "--dry-run", needs="deploy"),
    Smoke(("dashboard", "--config", "{config}", "--format", "grafana"), '"panels"',
          needs="dashboard"),
    Smoke(("inspect-queue", "celery-ecs-smoke-no-such-queue", "--broker",
           "redis://127.0.0.1:6379/1", "--json"), '"total": 0', needs="inspect_queue"),
]


@dataclass(frozen=True)
class Installed:
    sdist: Path
    wheel: Path
    bin: Path  # the clean venv's bin/
    site: Path  # its site-packages
    workdir: Path  # outside the checkout; commands run here


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


def _clean_env(bindir: Path, home: Path) -> dict[str, str]:
    """What a user's shell would have: no PYTHONPATH, no active venv, no AWS settings."""
    return {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Built and installed once per run: under pytest-xdist the first worker to get here builds
    (two builds of one checkout at once would share setuptools' release tree) and the others
    wait for it, then reuse the wheel and its venv; each worker runs commands in a folder of its
    own."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with (shared / "wheel.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / "wheel" / "installed.json"
        if not done.exists():
            _build_and_install(shared / "wheel", done)
        paths = {k: Path(v) for k, v in json.loads(done.read_text()).items()}
    workdir = tmp_path_factory.mktemp("elsewhere")
    return Installed(paths["sdist"], paths["wheel"], paths["bin"], paths["site"], workdir)


def _build_and_install(tmp: Path, done: Path) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    pip_env = {k: v for k, v in os.environ.items()
               if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    uv = Path(sys.executable).parent / "uv"  # scripts/dev.py puts it there
    if uv.exists():  # the same setuptools build and wheel, in ~5 s instead of ~35 s
        # uv build: the sdist, then the wheel from that sdist (not from the checkout)
        _run([str(uv), "build", "-q", "--out-dir", str(tmp / "dist"), str(ROOT)],
             cwd=tmp, env=pip_env)
        (sdist,) = (tmp / "dist").glob("*.tar.gz")
        (wheel,) = (tmp / "dist").glob("*.whl")
        _run([str(uv), "venv", "-q", "--python", sys.executable, str(tmp / "venv")],
             cwd=tmp, env=pip_env)
        bindir = tmp / "venv" / "bin"
        _run([str(uv), "pip", "install", "-q", "--python", str(bindir / "python"),
              f"{wheel}[sandbox]"], cwd=tmp, env=pip_env, timeout=600)
    else:
        _run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp / "dist"),
              str(ROOT)], cwd=tmp, env=pip_env)
        (sdist,) = (tmp / "dist").glob("*.tar.gz")
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
              "--disable-pip-version-check", "-w", str(tmp / "dist"), str(sdist)],
             cwd=tmp, env=pip_env)
        (wheel,) = (tmp / "dist").glob("*.whl")
        venv.EnvBuilder(with_pip=True, clear=True).create(tmp / "venv")
        bindir = tmp / "venv" / "bin"
        # --no-compile: .pyc files are written on first import instead (saves ~10 s of ~40 s)
        _run([str(bindir / "python"), "-m", "pip", "install", "-q",
              "--disable-pip-version-check", "--no-compile", f"{wheel}[sandbox]"], cwd=tmp,
             env=pip_env, timeout=600)
    (site,) = (tmp / "venv" / "lib").glob("python3*/site-packages")
    done.write_text(json.dumps({"sdist": str(sdist), "wheel": str(wheel), "bin": str(bindir),
                                "site": str(site)}))


def test_sdist_carries_tests_docs_templates_and_lambdas(installed: Installed) -> None:
    with tarfile.open(installed.sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    wanted = {
        p.relative_to(ROOT).as_posix()
        for folder in ("tests", "docs", "cloudformation", "lambdas")
        for p in (ROOT / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert "tests/test_wheel.py" in wanted and "cloudformation/master.yaml" in wanted
    assert sorted(wanted - names) == []
    assert {"README.md", "CHANGELOG.md", "setup.py", "pyproject.toml"} <= names


def test_wheel_carries_the_package_templates_and_handlers(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as archive:
        names = set(archive.namelist())
        meta = archive.read(f"celery_ecs_toolkit-{VERSION}.dist-info/METADATA").decode()
    code = {p.relative_to(ROOT).as_posix() for p in (ROOT / "toolkit").rglob("*.py")}
    templates = {f"toolkit/_assets/{p.relative_to(ROOT).as_posix()}"
                 for p in (ROOT / "cloudformation").rglob("*") if p.is_file()}
    handlers = {f"toolkit/_assets/lambdas/{name}/handler.py" for name in LAMBDAS}
    assert sorted(code - names) == [] and sorted(templates - names) == []
    assert handlers <= names and "toolkit/py.typed" in names
    assert not any(n.startswith(("tests/", "docs/", "lambdas/", "cloudformation/")) for n in names)
    assert f"\nVersion: {VERSION}\n" in meta


@pytest.mark.parametrize("smoke", SMOKES, ids=[" ".join(s.args) for s in SMOKES])
def test_command_works_from_the_installed_wheel(installed: Installed, smoke: Smoke) -> None:
    if smoke.needs and not (ROOT / "toolkit" / "commands" / f"{smoke.needs}.py").exists():
        pytest.skip(f"celery-ecs {smoke.needs} has not landed in this checkout")
    config = installed.workdir / "small.toml"
    config.write_text(SMALL_CONFIG)
    args = [a.replace("{config}", str(config)) for a in smoke.args]
    proc = _run([str(installed.bin / "celery-ecs"), *args], cwd=installed.workdir,
                env=_clean_env(installed.bin, installed.workdir), timeout=120)
    assert smoke.expect in proc.stdout, proc.stdout[-2000:]


def _lambda_runtime(site: Path, into: Path) -> Path:
    """A folder holding only what the Python Lambda runtime provides (boto3 and its dependencies),
    linked from the clean venv."""
    into.mkdir(exist_ok=True)
    for dist in metadata.distributions(path=[str(site)]):
        if re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower() not in PROVIDED_BY_RUNTIME:
            continue
        for top in {Path(str(f)).parts[0] for f in dist.files or []} - {"..", "bin"}:
            if not (into / top).exists() and (site / top).exists():
                (into / top).symlink_to(site / top)
    return into


# Run with `python -S` and sys.path = [zip contents, runtime], as the Lambda runtime would.
IMPORT_CHECK = """
import sys, json, importlib.util
sys.path[:0] = sys.argv[1:3]
assert importlib.util.find_spec("celery") is None, "celery must not be importable here"
import boto3, handler, toolkit
result = {"version": toolkit.__version__, "boto3": boto3.__file__, "handler": handler.__file__}
if sys.argv[3] == "alarm_handler":
    result["response"] = handler.handler({"hello": "world"}, None)
if sys.argv[3] == "slack_actions":  # wrongly signed: slack_sdk's verifier, from the zip, refuses
    import time
    stamp = str(int(time.time()))
    result["response"] = handler.handler({
        "requestContext": {"http": {"method": "POST"}}, "body": "payload=%7B%7D",
        "headers": {"x-slack-request-timestamp": stamp, "x-slack-signature": "v0=00"}}, None)
    result["verifier"] = sys.modules["slack_sdk.signature"].__file__
print(json.dumps(result))
"""


@pytest.mark.parametrize("name", LAMBDAS)
def test_package_builds_a_zip_that_runs_with_only_boto3(installed: Installed, name: str,
                                                         tmp_path: Path) -> None:
    celery_ecs = str(installed.bin / "celery-ecs")
    env = _clean_env(installed.bin, installed.workdir)
    line = _run([celery_ecs, "package", "--lambda", name], cwd=installed.workdir, env=env).stdout
    zip_path = installed.workdir / "build" / f"{name}.zip"  # the default: under the cwd
    assert line.startswith(f"wrote build/{name}.zip (") and f"toolkit {VERSION}" in line
    again = tmp_path / "again.zip"
    _run([celery_ecs, "package", "--lambda", name, "--output", str(again)],
         cwd=installed.workdir, env=env)
    assert again.read_bytes() == zip_path.read_bytes()

    with zipfile.ZipFile(zip_path) as archive:
        assert archive.comment.decode() == f"celery-ecs-toolkit {VERSION} {name}"
        assert archive.read("handler.py") == (ROOT / "lambdas" / name / "handler.py").read_bytes()
        assert not any(n.startswith("toolkit/_assets") for n in archive.namelist())
        archive.extractall(tmp_path / "zip")
    runtime = _lambda_runtime(installed.site, tmp_path / "runtime")
    proc = _run([str(installed.bin / "python"), "-S", "-c", IMPORT_CHECK,
                 str(tmp_path / "zip"), str(runtime), name],
                cwd=tmp_path, env={"REMEDIATION": "off", "PATH": "/usr/bin:/bin",
                                   "SLACK_SIGNING_SECRET": "wheel-test-signing-secret"},
                timeout=60)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["version"] == VERSION
    assert result["handler"].startswith(str(tmp_path / "zip"))
    assert result["boto3"].startswith(str(runtime))
    if name == "alarm_handler":
        assert result["response"]["status"] == "ignored"
    if name == "slack_actions":
        assert result["response"]["statusCode"] == 401
        assert result["verifier"].startswith(str(tmp_path / "zip"))

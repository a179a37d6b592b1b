"""The Lambda zip: reproducible bytes, the right contents, importable on its own."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from toolkit.cli import main
from toolkit.errors import PackagingError
from toolkit.packaging import build_lambda_zip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("zips")
    first = build_lambda_zip(output=tmp / "a.zip")
    second = build_lambda_zip(output=tmp / "b.zip")
    assert first.sha256 == second.sha256
    return first.path, second.path


def test_two_builds_are_byte_identical(built: tuple[Path, Path]) -> None:
    a, b = built
    assert a.read_bytes() == b.read_bytes()


def test_contents(built: tuple[Path, Path]) -> None:
    with zipfile.ZipFile(built[0]) as archive:
        infos = archive.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert "handler.py" in names and "toolkit/py.typed" in names
    assert "toolkit/alarms/events.py" in names
    assert "slack_sdk/__init__.py" in names
    assert not any(n.startswith(("boto3/", "botocore/")) for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


def test_zip_is_importable_and_handles_an_event_on_its_own(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    with zipfile.ZipFile(built[0]) as archive:
        archive.extractall(tmp_path)
    code = (
        "import sys, json; sys.path[:0] = [sys.argv[1]];"
        "import handler; from toolkit.alarms.senders import WebhookSender;"
        "WebhookSender('http://127.0.0.1:9/x');"
        "print(json.dumps(handler.handler({'hello': 'world'}, None)))"
    )
    # -S: no site-packages, so only the zip's contents (and the standard library) are importable.
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
        env={"REMEDIATION": "off", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["status"] == "ignored"


def test_cli_package_reports_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "handler.zip"
    assert main(["package", "--output", str(out), "--no-deps"]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"wrote {out} (") and "bytes" in line and "dependencies: none" in line
    with zipfile.ZipFile(out) as archive:
        assert not any(n.startswith("slack_sdk/") for n in archive.namelist())


def test_unknown_lambda_and_missing_dependency(tmp_path: Path) -> None:
    with pytest.raises(PackagingError, match="no Lambda named"):
        build_lambda_zip("nope", tmp_path / "x.zip")
    with pytest.raises(PackagingError, match="not installed"):
        build_lambda_zip(output=tmp_path / "x.zip", dependencies=["surely-not-installed-pkg"])


def test_pip_failure_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PackagingError, match="pip install failed"):
        build_lambda_zip(
            output=tmp_path / "x.zip",
            source="pip",
            dependencies=["surely-not-installed-pkg"],
            pip_args=["--no-index"],  # never reaches the network
        )


def test_zip_comment_names_the_version_and_the_lambda(built: tuple[Path, Path]) -> None:
    from toolkit import __version__

    with zipfile.ZipFile(built[0]) as archive:
        assert archive.comment == f"celery-ecs-toolkit {__version__} alarm_handler".encode()


def test_a_conditional_dependency_pip_did_not_install_is_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # redis requires async-timeout only before Python 3.11.3; without `packaging` the marker
    # cannot be evaluated, and the missing distribution itself says pip judged it false here.
    from toolkit import packaging

    monkeypatch.setattr(packaging, "_marker_true", lambda spec: True)
    names = {d.metadata["Name"].lower() for d in packaging._closure(["redis"])}
    assert "redis" in names and "async-timeout" not in names
    with pytest.raises(PackagingError, match="surely-not-installed-pkg is not installed"):
        packaging._closure(["surely-not-installed-pkg"])


def test_default_output_is_under_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = build_lambda_zip("collector", dependencies=())
    assert result.path == Path("build/collector.zip") and (tmp_path / result.path).is_file()

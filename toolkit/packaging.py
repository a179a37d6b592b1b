"""Build a Lambda deployment zip reproducibly: same inputs, same bytes.

Layout of ``<name>.zip`` (Lambda ``Handler`` = ``handler.handler``)::

    handler.py            lambdas/<name>/handler.py (found through :mod:`toolkit.assets`)
    toolkit/...           the toolkit package (``.py`` files and ``py.typed``, read with
                          :mod:`importlib.resources`, so an installed wheel packages itself)
    slack_sdk/...         runtime dependencies, without boto3/botocore (the runtime has them)

Dependencies come from one of two sources:

* ``venv`` (default): the distributions already installed next to this toolkit are copied file by
  file from their ``RECORD`` - offline, fast, and exactly what the tests ran against. Only
  pure-Python dependencies are portable this way (the alarm handler's only one is slack_sdk).
* ``pip``: ``pip install --target`` into a temporary directory, from the configured index, for a
  clean resolution (``--platform`` wheels are the caller's business via ``pip_args``).

Every entry gets the same timestamp (1980-01-01), mode 0644 and deflate level 9, entries are
sorted, and ``__pycache__``/``*.pyc`` are left out, so two builds produce identical bytes. The
zip's comment names the toolkit version and the Lambda (``celery-ecs-toolkit 0.1.0 alarm_handler``;
``unzip -z`` or ``zipfile.ZipFile(path).comment`` shows it), and ``toolkit/__init__.py`` inside
carries the same ``__version__``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import io
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

from toolkit import __version__, assets
from toolkit.errors import PackagingError

__all__ = [
    "LAMBDA_DEPENDENCIES",
    "PROVIDED_BY_RUNTIME",
    "PackageResult",
    "build_lambda_zip",
    "zip_comment",
]

DependencySource = Literal["venv", "pip"]

# What each Lambda needs at run time beyond the standard library and boto3.
LAMBDA_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "alarm_handler": ("slack_sdk",),
    "slack_actions": ("slack_sdk",),
    "collector": ("redis", "kombu"),
}
# The Python Lambda runtime ships these; bundling them only makes the zip bigger and older.
# Written normalised (lower case, '-'), as both dependency sources compare normalised names.
PROVIDED_BY_RUNTIME = frozenset(
    {"boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3"}
)
FIXED_DATE = (1980, 1, 1, 0, 0, 0)
_SKIP_PARTS = {"__pycache__"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
# toolkit/_assets (templates, handler files) is in an installed toolkit but not code the Lambda runs
_NOT_SHIPPED = {"__pycache__", "_assets"}


@dataclass(frozen=True)
class PackageResult:
    path: Path
    size: int
    files: int
    sha256: str
    dependencies: tuple[str, ...]
    version: str = __version__

    def line(self) -> str:
        deps = ", ".join(self.dependencies) or "none"
        return (
            f"wrote {self.path} ({self.size:,} bytes, {self.files} files, "
            f"sha256 {self.sha256[:16]}, toolkit {self.version}, dependencies: {deps})"
        )


def zip_comment(name: str) -> bytes:
    """The comment stamped into ``<name>.zip``: which toolkit version built which Lambda."""
    return f"celery-ecs-toolkit {__version__} {name}".encode()


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str | None:
    """Name of a ``Requires-Dist`` entry, or ``None`` if it only applies to an extra."""
    if "extra ==" in spec or "extra==" in spec:
        return None
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    return match.group(1) if match else None


def _closure(roots: Iterable[str]) -> list[metadata.Distribution]:
    """The installed distributions ``roots`` need, transitively, minus the runtime's own."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [(root, False) for root in roots]
    while todo:
        spec_name, conditional = todo.pop()
        name = _normalise(spec_name)
        if name in seen or name in PROVIDED_BY_RUNTIME:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if conditional:  # pip judged its marker false here (e.g. async-timeout on 3.11.3+)
                continue
            raise PackagingError(
                f"dependency {name} is not installed in this environment"
            ) from None
        seen[name] = dist
        for spec in dist.requires or []:
            marker_ok = ";" not in spec or _marker_true(spec)
            dep = _requirement_name(spec)
            if dep and marker_ok:
                todo.append((dep, ";" in spec))
    return [seen[k] for k in sorted(seen)]


def _marker_true(spec: str) -> bool:
    """Whether a requirement's environment marker holds here (extras are never requested).

    Uses ``packaging`` when importable; otherwise a conservative reading that drops extras and
    Windows-only requirements and keeps everything else.
    """
    marker = spec.split(";", 1)[1]
    try:
        from packaging.markers import Marker
    except ImportError:
        return "extra" not in marker and "win32" not in marker
    try:
        return bool(Marker(marker).evaluate({"extra": ""}))
    except Exception:  # noqa: BLE001 - an odd marker: keep the dependency rather than lose it
        return True


def _wanted(rel: str) -> bool:
    parts = Path(rel).parts
    return (
        not rel.startswith("..")
        and not _SKIP_PARTS.intersection(parts)
        and not rel.endswith(_SKIP_SUFFIXES)
        and not rel.endswith(".dist-info/RECORD")  # lists hashes of files we do not ship
        and not rel.endswith(".dist-info/INSTALLER")
        and not rel.endswith(".dist-info/direct_url.json")  # local paths: not reproducible
    )


def _venv_files(dists: Sequence[metadata.Distribution]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for dist in dists:
        for rel in dist.files or []:
            name = str(rel).replace("\\", "/")
            if not _wanted(name):
                continue
            path = Path(str(dist.locate_file(rel)))
            if path.is_file():
                files[name] = path.read_bytes()
    return files


def _pip_files(requirements: Sequence[str], pip_args: Sequence[str]) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="celery-ecs-pip-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-compile", "--target", tmp, *pip_args, *requirements,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PackagingError(f"pip install failed: {tail[0]}")
        root = Path(tmp)
        files = {}
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            top = _normalise(rel.split("/", 1)[0].split(".dist-info")[0].rsplit("-", 1)[0])
            keep = _wanted(rel) and top not in PROVIDED_BY_RUNTIME and rel.split("/")[0] != "bin"
            if path.is_file() and keep:
                files[rel] = path.read_bytes()
        return files


def _package_files(folder: Traversable, prefix: str) -> dict[str, bytes]:
    """``.py`` files and ``py.typed`` under ``folder``, keyed ``prefix/relative/path``."""
    files: dict[str, bytes] = {}
    for entry in folder.iterdir():
        rel = f"{prefix}/{entry.name}"
        if entry.is_dir():
            if entry.name not in _NOT_SHIPPED:
                files.update(_package_files(entry, rel))
        elif (entry.name.endswith(".py") or entry.name == "py.typed") and _wanted(rel):
            files[rel] = entry.read_bytes()
    return files


def _source_files(name: str) -> dict[str, bytes]:
    handler = assets.lambda_handler(name)
    if not handler.is_file():
        known = ", ".join(sorted(LAMBDA_DEPENDENCIES))
        raise PackagingError(f"no Lambda named {name!r} (known: {known})")
    files = {"handler.py": handler.read_bytes()}
    files.update(_package_files(resources.files("toolkit"), "toolkit"))
    return files


def _zip_bytes(files: dict[str, bytes], comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.comment = comment
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so the mode below is honoured
            info.external_attr = 0o100644 << 16
            archive.writestr(info, files[name], compresslevel=9)
    return buffer.getvalue()


def build_lambda_zip(
    name: str = "alarm_handler",
    output: str | Path | None = None,
    *,
    dependencies: Sequence[str] | None = None,
    source: DependencySource = "venv",
    pip_args: Sequence[str] = (),
    extra_files: Mapping[str, bytes] | None = None,
) -> PackageResult:
    """Write ``output`` (default: ``build/<name>.zip`` in the current directory), describe it.

    ``extra_files`` (archive name -> bytes) are added at the top of the zip: ``celery-ecs deploy``
    bundles the deployed ``celery-ecs.toml`` into the collector this way.
    """
    if dependencies is None:
        dependencies = LAMBDA_DEPENDENCIES.get(name, ())
    requirements = tuple(dependencies)
    files = _source_files(name)
    if requirements:
        if source == "pip":
            deps = _pip_files(requirements, pip_args)
            names = tuple(
                sorted(r.split("/")[0] for r in deps if r.endswith(".dist-info/METADATA"))
            )
        else:
            dists = _closure(requirements)
            deps = _venv_files(dists)
            names = tuple(f"{d.metadata['Name']}=={d.version}" for d in dists)
        clash = sorted(set(deps) & set(files))
        if clash:
            raise PackagingError(f"dependency files clash with the sources: {', '.join(clash[:3])}")
        files.update(deps)
    else:
        names = ()
    for extra, body in (extra_files or {}).items():
        if extra in files:
            raise PackagingError(f"extra file {extra} clashes with a packaged file")
        files[extra] = body
    data = _zip_bytes(files, zip_comment(name))
    path = Path(output) if output else Path("build") / f"{name}.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return PackageResult(
        path=path,
        size=len(data),
        files=len(files),
        sha256=hashlib.sha256(data).hexdigest(),
        dependencies=names,
    )

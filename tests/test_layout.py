"""The package layout is enforced, not only drawn in docs/architecture.md.

Layers, lowest first: core <- contracts <- features <- tooling <- adapters. A feature imports
only core and contracts (and itself), never another feature; core imports only the standard
library (and other core modules). Every import counts, including those inside functions.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "toolkit"

CORE = {"errors", "env", "urls", "metricnames"}
CONTRACTS = {
    "config", "serviceconfig", "registry", "beatregistry", "stamp", "celeryapp", "aws",
    "verdictrecord", "taskcounts",
}
FEATURES = {"collector", "worker", "alarms", "tasks"}
TOOLING = {"sandbox", "packaging", "dashboards", "deploy", "assets"}
ADAPTERS = {"commands", "cli"}
# thin re-exports that keep documented import paths working (toolkit.heartbeat, ...)
PUBLIC_PATHS = {"__init__", "heartbeat", "locks", "checkpoints", "beat", "healthcheck"}
LAYERS = [CORE, CONTRACTS, FEATURES, TOOLING, ADAPTERS, PUBLIC_PATHS]


def part_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def toolkit_imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, dotted name) of every import; relative imports resolved against ``path``."""
    found: list[tuple[int, str]] = []
    package = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)[:-1]
    text = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module]
            if module == "toolkit" or not node.module:
                names = [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.extend((node.lineno, name) for name in names)
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_is_in_exactly_one_layer() -> None:
    parts = {part_of(p) for p in modules()}
    unplaced = {p for p in parts if sum(p in layer for layer in LAYERS) != 1}
    assert not unplaced, f"place these in one layer of tests/test_layout.py: {sorted(unplaced)}"


def allowed(source: str, target: str) -> bool:
    if source in PUBLIC_PATHS or source in ADAPTERS:
        return True
    if target in CORE or target == "__version__":  # the import-light toolkit/__init__.py
        return True
    if source in CORE:
        return False
    if target in CONTRACTS:
        return True
    if source in CONTRACTS:
        return False
    if source in FEATURES:
        return target == source
    if source in TOOLING:
        # tooling also uses the product as users do: `toolkit.install(app)` (toolkit/__init__.py)
        return target in FEATURES or target in TOOLING or target == "__init__"
    return False


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_imports_respect_the_layers(path: Path) -> None:
    source = part_of(path)
    bad = []
    for line, name in toolkit_imports(path):
        top = name.split(".")[0]
        if top == "toolkit":
            target = name.split(".")[1] if "." in name else "__init__"
            if not allowed(source, target):
                bad.append(f"line {line}: {source} imports {name}")
        elif source in CORE and top not in sys.stdlib_module_names and top != "__future__":
            bad.append(f"line {line}: core module imports third-party {name}")
    assert not bad, "\n".join(bad)


def test_relative_imports_are_resolved() -> None:
    path = PACKAGE / "alarms" / "guards.py"
    source = "from ..collector import cycle\nfrom . import x\n"
    names = [n for _, n in toolkit_imports(path, source)]
    assert names == ["toolkit.collector", "toolkit.alarms.x"]


def test_the_layer_rule_catches_a_feature_importing_another() -> None:
    assert not allowed("collector", "alarms")
    assert not allowed("errors", "config")
    assert not allowed("config", "collector")
    assert allowed("sandbox", "collector") and allowed("alarms", "config")
    assert allowed("sandbox", "__init__") and not allowed("collector", "__init__")


# every import path the README and docs/ show
PUBLIC = [
    ("toolkit", "install"),
    ("toolkit", "__version__"),
    ("toolkit.errors", "ToolkitError"),
    ("toolkit.errors", "is_transient"),
    ("toolkit.locks", "single_instance"),
    ("toolkit.locks", "TaskLock"),
    ("toolkit.locks", "current_lock"),
    ("toolkit.locks", "SKIPPED"),
    ("toolkit.checkpoints", "open_store"),
    ("toolkit.checkpoints", "checkpointed"),
    ("toolkit.heartbeat", "install"),
    ("toolkit.heartbeat", "read_registry"),
    ("toolkit.heartbeat", "install_beat"),
    ("toolkit.heartbeat", "BeatHeartbeatMixin"),
    ("toolkit.beat", "register_collector"),
    ("toolkit.healthcheck", "main"),
    ("toolkit.config", "load_settings"),
    ("toolkit.stamp", "install"),
    ("toolkit.registry", "WorkerHeartbeat"),
    ("toolkit.alarms", "AlarmResponder"),
    ("toolkit.collector", "run_cycle"),
    ("toolkit.metricnames", "METRICS"),
    ("toolkit.checkpoints", "StaleCheckpoint"),
    ("toolkit.errors", "CheckpointError"),
    ("toolkit.errors", "LockError"),
    ("toolkit.locks", "LockNotAcquired"),
    ("toolkit.deploy", "render_master"),
]


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_public_import_paths_still_work(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None


def test_lambda_handlers_import() -> None:
    root = PACKAGE.parent
    for name in ("alarm_handler", "collector", "slack_actions"):
        spec = importlib.util.spec_from_file_location(
            f"_handler_{name}", root / "lambdas" / name / "handler.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert callable(module.handler)

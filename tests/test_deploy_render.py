"""The root-stack renderer and the [[services]] deployment keys (pure: no AWS).

The wiring of rendered stacks (parameters, outputs, alarm metrics) is checked for the example
and a second config in tests/test_cloudformation.py.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from toolkit.config import ServiceDeployment, ServiceSettings, Settings, Thresholds, load_settings
from toolkit.deploy import logical_ids, render_master
from toolkit.deploy.master import declared_parameters
from toolkit.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent / "cloudformation"
SECOND = Path(__file__).resolve().parent / "data" / "second.celery-ecs.toml"


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    pass


_Loader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix}")


def _parsed(text: str) -> dict[str, object]:
    data: dict[str, object] = yaml.load(text, Loader=_Loader)  # noqa: S506
    return data


def _settings(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_settings(path, environ={}, require_broker=False)


def test_committed_master_is_the_renderer_output_for_the_example() -> None:
    settings = load_settings(ROOT / "example.celery-ecs.toml", environ={}, require_broker=False)
    rendered = render_master(settings, source="example.celery-ecs.toml")
    if os.environ.get("UPDATE_GOLDEN"):
        (ROOT / "master.yaml").write_text(rendered)
    assert rendered == (ROOT / "master.yaml").read_text(), (
        "cloudformation/master.yaml is generated: rerun this test with UPDATE_GOLDEN=1 and "
        "commit its output"
    )


def test_second_config_gets_one_stack_per_service_and_queue_with_its_values() -> None:
    settings = load_settings(SECOND, environ={}, require_broker=False)
    resources = _parsed(render_master(settings))["Resources"]
    assert isinstance(resources, dict)
    services = {r["Properties"]["Parameters"]["ServiceName"]: r["Properties"]["Parameters"]
                for r in resources.values()
                if "ServiceName" in r["Properties"].get("Parameters", {})}
    assert set(services) == {"worker_high-prio", "worker.bulk", "worker-bulk"}
    high = services["worker_high-prio"]
    assert (high["Cpu"], high["Memory"], high["Concurrency"]) == (1024, 2048, 8)
    assert (high["MinCapacity"], high["DesiredCount"], high["MaxCapacity"]) == (2, 3, 20)
    assert high["Remediate"] == "true" and services["worker.bulk"]["Remediate"] == "false"
    assert high["MemoryHighThreshold"] == 90  # [verdicts] memory_high default
    queues = {r["Properties"]["Parameters"]["Queue"]: r["Properties"]["Parameters"]
              for r in resources.values() if "Queue" in r["Properties"].get("Parameters", {})}
    assert {q: (p["MaxLength"], p["MaxAge"]) for q, p in queues.items()} == {
        "priority_high": (10, 30), "bulk.import": (5000, 120.5), "celery": (5000, 120.5)}
    params = _parsed(render_master(settings))["Parameters"]
    assert isinstance(params, dict)
    assert params["EnvironmentName"]["Default"] == "staging"
    assert params["MetricNamespace"]["Default"] == "CeleryStaging"


def test_logical_ids_are_alphanumeric_unique_and_independent_of_order() -> None:
    names = ["worker-default", "worker_default", "worker.default", "x", "---", "1st"]
    ids = logical_ids(names, "Service")
    assert all(re.fullmatch(r"[A-Za-z0-9]+", i) for i in ids.values())
    assert len(set(ids.values())) == len(names)
    assert ids["x"] == "XService" and ids["1st"] == "1stService"
    # collisions get a hash of the name, not a position: reordering changes nothing
    assert logical_ids(list(reversed(names)), "Service") == ids
    assert ids["worker-default"] != "WorkerDefaultService"
    assert logical_ids(["worker-default"], "Service") == {"worker-default": "WorkerDefaultService"}


def test_names_yaml_would_misread_are_quoted(tmp_path: Path) -> None:
    settings = _settings(tmp_path, """
environment = "prod"
[thresholds]
max_length = 1
max_age = 2
[[services]]
cluster = "prod-cluster"
service = "on"
queues = ["yes", "123", "a b"]
""")
    resources = _parsed(render_master(settings))["Resources"]
    assert isinstance(resources, dict)
    queues = sorted(r["Properties"]["Parameters"]["Queue"] for r in resources.values()
                    if "Queue" in r["Properties"].get("Parameters", {}))
    assert queues == ["123", "a b", "yes"]  # strings, not True / 123
    service = next(r for r in resources.values() if "ServiceName" in r["Properties"]["Parameters"])
    assert service["Properties"]["Parameters"]["ServiceName"] == "on"


def _one_service(queue_thresholds: dict[str, Thresholds], defaults: Thresholds) -> Settings:
    return Settings(
        environment="prod", thresholds=defaults, queue_thresholds=queue_thresholds,
        services=(ServiceSettings("prod-cluster", "w", tuple(queue_thresholds)),),
    )


def test_a_queue_without_thresholds_gets_no_alarm_stack() -> None:
    settings = _one_service({"q": Thresholds()}, Thresholds())
    assert "QueueAlarms" not in render_master(settings)


def test_a_queue_with_one_threshold_only_is_a_config_error() -> None:
    settings = _one_service({"q": Thresholds(max_length=5)}, Thresholds())
    with pytest.raises(ConfigError, match=r"^queue q: the alarms need both .* max_age is not set"):
        render_master(settings)


def test_a_service_on_another_cluster_is_a_config_error() -> None:
    settings = Settings(environment="prod", services=(ServiceSettings("other", "w", ("q",)),))
    with pytest.raises(ConfigError, match="cluster is 'other', but the stack creates 'prod-clu"):
        render_master(settings)


def test_no_services_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"no \[\[services\]\]"):
        render_master(Settings(environment="prod"))


def test_declared_parameters_know_which_are_required() -> None:
    declared = declared_parameters((ROOT / "master.yaml").read_text())
    required = {k for k, has_default in declared.items() if not has_default}
    assert required == {"SlackSecretArn", "TemplateURLPrefix", "LambdaCodeBucket",
                        "CollectorCodeKey", "AlarmHandlerCodeKey", "SlackActionsCodeKey",
                        "WorkerImage", "CeleryApp"}
    assert declared["Remediation"] is True


# ---- the [[services]] deployment keys of toolkit/config.py ----

_BASE = 'environment = "p"\n[[services]]\ncluster = "p-cluster"\nservice = "w"\nqueues = ["q"]\n'


def test_deployment_keys_default_when_absent(tmp_path: Path) -> None:
    assert _settings(tmp_path, _BASE).services[0].deployment == ServiceDeployment()
    assert ServiceDeployment().remediate is False  # opt-in


@pytest.mark.parametrize("extra,message", [
    ("cpu = 0", r"^services\[0\]\.cpu must be at least 128, got 0$"),
    ("memory = \"lots\"", r"^services\[0\]\.memory must be an integer, got 'lots'$"),
    ("concurrency = 0", r"^services\[0\]\.concurrency must be at least 1, got 0$"),
    ("min_capacity = 5\nmax_capacity = 2", r"^services\[0\]: min_capacity 5 > max_capacity 2$"),
    ("desired_count = 20", r"^services\[0\]: desired_count 20 is outside .*\(1\.\.10\)$"),
    ("remediate = \"maybe\"", r"^services\[0\]\.remediate must be true or false"),
])
def test_bad_deployment_keys_are_one_line_errors(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _settings(tmp_path, _BASE + extra + "\n")

"""What ``celery-ecs deploy`` refuses before any AWS call: pure checks, one-line ConfigErrors.

* every ``--parameter`` names a parameter of the rendered root template, and its value obeys
  that parameter's ``AllowedValues``, ``AllowedPattern``, ``MinValue``/``MaxValue``,
  ``MinLength``/``MaxLength`` and ``Type: Number`` (CloudFormation's own checks, which it
  would otherwise make only after the uploads, when the change set is created);
* every ``[[services]]`` entry's ``cpu``/``memory`` is a Fargate size. The task definition
  declares ``RequiresCompatibilities: [FARGATE, EC2]``, and ECS holds such a task definition to
  the Fargate table even when it runs on EC2.

:func:`root_parameters` reads the ``Parameters`` section that :func:`render_master` writes (a
fixed, simple layout; ``tests/test_deploy_validate.py`` compares it with cfn-lint's decoder), so
the command needs no YAML library at run time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from toolkit.config import Settings
from toolkit.errors import ConfigError

__all__ = ["FARGATE_SIZES", "ParameterSpec", "check_parameters", "check_sizes", "fargate_memory",
           "root_parameters"]

#: AWS's table of Fargate task sizes: cpu units -> (lowest MiB, highest MiB, step MiB), or the
#: explicit list for the three smallest sizes ("Task CPU and memory", Amazon ECS Developer Guide;
#: 8192 and 16384 need Linux platform version 1.4.0, the default).
FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: (1024, 2048, 3072, 4096),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}


def fargate_memory(cpu: int) -> tuple[int, ...]:
    """The memory sizes (MiB) Fargate accepts with ``cpu`` units; empty for an unknown cpu."""
    return FARGATE_SIZES.get(cpu, ())


def _sizes_text(values: tuple[int, ...]) -> str:
    if len(values) <= 4:
        return ", ".join(str(v) for v in values)
    step = values[1] - values[0]
    return f"{values[0]} to {values[-1]} in steps of {step}"


def check_sizes(settings: Settings) -> None:
    """A :class:`ConfigError` naming the first service whose cpu/memory is not a Fargate size."""
    for svc in settings.services:
        cpu, memory = svc.deployment.cpu, svc.deployment.memory
        allowed = fargate_memory(cpu)
        if not allowed:
            raise ConfigError(
                f"service {svc.service}: cpu {cpu} is not a Fargate size (cpu is one of "
                f"{', '.join(str(c) for c in FARGATE_SIZES)})")
        if memory not in allowed:
            raise ConfigError(
                f"service {svc.service}: cpu {cpu} with memory {memory} is not a Fargate size "
                f"(cpu {cpu} takes memory {_sizes_text(allowed)})")


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    type: str = "String"
    default: str | None = None
    allowed_values: tuple[str, ...] | None = None
    allowed_pattern: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    min_length: int | None = None
    max_length: int | None = None

    def problem(self, value: str) -> str | None:
        """Why CloudFormation would refuse ``value`` for this parameter, or None."""
        if self.type == "Number":
            try:
                number = float(value)
            except ValueError:
                return f"{self.name} is a number"
            if self.min_value is not None and number < self.min_value:
                return f"{self.name} is at least {_num(self.min_value)}" + self._range()
            if self.max_value is not None and number > self.max_value:
                return f"{self.name} is at most {_num(self.max_value)}" + self._range()
        if self.allowed_values is not None and value not in self.allowed_values:
            return f"{self.name} is one of {', '.join(self.allowed_values) or '(nothing)'}"
        if self.allowed_pattern is not None and not re.fullmatch(self.allowed_pattern, value):
            return f"{self.name} must match {self.allowed_pattern}"
        if self.min_length is not None and len(value) < self.min_length:
            return f"{self.name} has at least {self.min_length} characters"
        if self.max_length is not None and len(value) > self.max_length:
            return f"{self.name} has at most {self.max_length} characters"
        return None

    def _range(self) -> str:
        if self.min_value is not None and self.max_value is not None:
            return f" (allowed: {_num(self.min_value)} to {_num(self.max_value)})"
        return ""


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _scalar(text: str) -> str:
    text = text.strip()
    if text.startswith('"'):
        return str(json.loads(text))
    if text.startswith("'") and text.endswith("'"):
        return text[1:-1].replace("''", "'")
    return text


def _flow_list(text: str) -> tuple[str, ...]:
    inner = text.strip()
    if not (inner.startswith("[") and inner.endswith("]")):
        raise ValueError(f"not a flow list: {text}")
    items = re.findall(r'"(?:[^"\\]|\\.)*"|\'(?:[^\']|\'\')*\'|[^,\s][^,]*', inner[1:-1])
    return tuple(_scalar(item) for item in items)


def root_parameters(template: str) -> dict[str, ParameterSpec]:
    """Each parameter of a root template :func:`render_master` wrote, with its constraints."""
    section = ("\n" + template).split("\nParameters:\n", 1)[1].split("\n\n", 1)[0]
    raw: dict[str, dict[str, str]] = {}
    current = ""
    for line in section.splitlines():
        header = re.fullmatch(r"  ([A-Za-z0-9]+):", line)
        if header:
            current = header.group(1)
            raw[current] = {}
            continue
        field = re.fullmatch(r"    ([A-Za-z]+): ?(.*)", line)
        if field and current:
            raw[current][field.group(1)] = field.group(2)
    out = {}
    for name, fields in raw.items():
        def number(key: str, f: Mapping[str, str] = fields) -> float | None:
            return float(f[key]) if key in f else None

        out[name] = ParameterSpec(
            name=name,
            type=_scalar(fields.get("Type", "String")),
            default=_scalar(fields["Default"]) if "Default" in fields else None,
            allowed_values=_flow_list(fields["AllowedValues"])
            if "AllowedValues" in fields else None,
            allowed_pattern=_scalar(fields["AllowedPattern"])
            if "AllowedPattern" in fields else None,
            min_value=number("MinValue"), max_value=number("MaxValue"),
            min_length=int(fields["MinLength"]) if "MinLength" in fields else None,
            max_length=int(fields["MaxLength"]) if "MaxLength" in fields else None,
        )
    return out


def check_parameters(specs: Mapping[str, ParameterSpec], given: Mapping[str, str],
                     own: Iterable[str] = ()) -> None:
    """A :class:`ConfigError` for the first ``--parameter`` the root stack would refuse."""
    owned = set(own)
    for key, value in given.items():
        if key in owned:
            raise ConfigError(f"--parameter {key} is set by celery-ecs deploy itself")
        spec = specs.get(key)
        if spec is None:
            names = ", ".join(sorted(k for k in specs if k not in owned))
            raise ConfigError(f"unknown stack parameter {key} (the root stack declares {names})")
        why = spec.problem(value)
        if why is not None:
            raise ConfigError(f"--parameter {key}={value} is refused: {why}")

"""Files the commands need besides code: the CloudFormation templates and the Lambda handlers.

Every command reads them through these functions, never through paths of its own, so that one
place decides where they live (a checkout today; inside the installed package once it ships
them).
"""

from __future__ import annotations

from importlib.resources.abc import Traversable
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def templates() -> Traversable:
    """The folder holding ``master.yaml``, ``infrastructure/`` and ``services/``."""
    return _CHECKOUT / "cloudformation"


def lambda_handler(name: str) -> Traversable:
    """The thin handler file of the Lambda ``name`` (``collector``, ``alarm_handler``)."""
    return _CHECKOUT / "lambdas" / name / "handler.py"

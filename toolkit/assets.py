"""Files the commands need besides code: the CloudFormation templates and the Lambda handlers.

Every command reads them through these functions, never through paths of its own, so that one
place decides where they live:

* installed from a wheel: inside the package, ``toolkit/_assets/cloudformation`` and
  ``toolkit/_assets/lambdas`` (setup.py maps the top-level folders there), found with
  :mod:`importlib.resources`;
* a checkout or an editable install: the top-level ``cloudformation/`` and ``lambdas/`` folders
  next to ``toolkit/`` (the package has no ``_assets`` there).
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def _folder(name: str) -> Traversable:
    shipped = resources.files("toolkit").joinpath("_assets", name)
    if shipped.is_dir():
        return shipped
    return _CHECKOUT / name


def templates() -> Traversable:
    """The folder holding ``master.yaml``, ``infrastructure/`` and ``services/``."""
    return _folder("cloudformation")


def lambda_handler(name: str) -> Traversable:
    """The thin handler file of the Lambda ``name`` (``collector``, ``alarm_handler``,
    ``slack_actions``)."""
    return _folder("lambdas").joinpath(name, "handler.py")

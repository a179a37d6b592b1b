"""The one part of the build pyproject.toml cannot say: ship lambdas/ and cloudformation/ inside
the package.

The folders stay at the top of the checkout (where people read them and cfn-lint checks them);
the package-dir mapping below installs them as ``toolkit/_assets/lambdas`` and
``toolkit/_assets/cloudformation``, where :mod:`toolkit.assets` finds them with
``importlib.resources``. Everything else is in pyproject.toml.
"""

from setuptools import find_namespace_packages, find_packages, setup

ASSETS = {
    "toolkit._assets.cloudformation": "cloudformation",
    "toolkit._assets.lambdas": "lambdas",
}


def _asset_packages() -> list[str]:
    """Each mapped folder and its sub-folders (listed, so setuptools does not warn about them)."""
    found = list(ASSETS)
    for package, folder in ASSETS.items():
        found += [f"{package}.{sub}" for sub in find_namespace_packages(folder)]
    return found


setup(
    packages=[*find_packages(include=["toolkit", "toolkit.*"]), *_asset_packages()],
    package_dir=ASSETS,
    package_data={
        "toolkit": ["py.typed"],
        "toolkit._assets.cloudformation": ["*.yaml", "*.toml", "**/*.yaml"],
        "toolkit._assets.lambdas": ["*/handler.py"],
    },
)

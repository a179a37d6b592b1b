"""``python -m toolkit.healthcheck MODE ...``: the container probe without the console script.

The same as ``celery-ecs healthcheck MODE ...``; the probe itself is
:mod:`toolkit.worker.healthcheck` (standard library only at import).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run ``celery-ecs healthcheck`` with ``argv`` (default: this process's arguments)."""
    from toolkit.cli import main as cli_main

    return cli_main(["healthcheck", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

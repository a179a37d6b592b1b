"""The ``celery-ecs`` console script.

Sub-commands live in ``toolkit.commands.<name>``; only the one being run is imported, so that
``celery-ecs healthcheck heartbeat`` (run every 30 s in every container) stays cheap. Each module
defines ``configure(parser)`` and ``run(args) -> int``; the one-line help is in ``COMMANDS``.

Exit codes: 0 success, 1 failure (or "unhealthy"), 2 misconfiguration or bad usage. Expected
failures print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

# name -> (module, one-line help). Kept here, not in the modules, so `--help` imports nothing.
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("toolkit.commands.collect", "read queue backlogs and publish them to CloudWatch"),
    "check": ("toolkit.commands.check", "print each worker service's verdict with its reasons"),
    "healthcheck": ("toolkit.commands.healthcheck", "container probe for ECS health checks"),
    "remediate": ("toolkit.commands.remediate", "guarded force-new-deployment of one service"),
    "inspect-queue": ("toolkit.commands.inspect_queue",
                      "what waits in one queue, by task name, without taking it"),
    "dashboard": ("toolkit.commands.dashboard", "print a Grafana or CloudWatch dashboard JSON"),
    "package": ("toolkit.commands.package", "build the Lambda zip reproducibly"),
    "deploy": ("toolkit.commands.deploy", "package the Lambdas and deploy the stack"),
    "sandbox": ("toolkit.commands.sandbox", "run the whole loop on this machine, no AWS account"),
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_MISCONFIGURED = 2


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(
        f"  {name:<12} {help_}" + ("" if _available(module) else " (not yet available)")
        for name, (module, help_) in COMMANDS.items()
    )
    parser = argparse.ArgumentParser(
        prog="celery-ecs",
        description="Visibility and self-healing for Celery workers on Amazon ECS.",
        epilog=f"commands:\n{lines}\n\nRun `celery-ecs COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or args_in[0].startswith("-"):
        top = _top_parser()
        ns = top.parse_args(args_in)
        if ns.version:
            from toolkit import __version__

            print(f"celery-ecs {__version__}")
            return EXIT_OK
        top.print_help()
        return EXIT_MISCONFIGURED if not args_in else EXIT_OK
    name, rest = args_in[0], args_in[1:]
    if name not in COMMANDS:
        print(
            f"celery-ecs: unknown command {name!r} (choose from {', '.join(COMMANDS)})",
            file=sys.stderr,
        )
        return EXIT_MISCONFIGURED
    module_name, help_ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print(f"celery-ecs: {name} is not available in this version", file=sys.stderr)
            return EXIT_MISCONFIGURED
        raise
    parser = argparse.ArgumentParser(prog=f"celery-ecs {name}", description=help_)
    module.configure(parser)
    try:
        ns = parser.parse_args(rest)
    except SystemExit as exc:  # argparse: --help exits 0, usage errors exit 2
        return int(exc.code or 0)
    _setup_logging(getattr(ns, "verbose", False))
    try:
        return int(module.run(ns))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - map expected failures to one line
        from toolkit.errors import ConfigError, ToolkitError

        if isinstance(exc, ToolkitError):
            print(f"celery-ecs {name}: error: {exc}", file=sys.stderr)
            return EXIT_MISCONFIGURED if isinstance(exc, ConfigError) else EXIT_FAILURE
        raise


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

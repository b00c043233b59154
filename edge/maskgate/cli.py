"""The ``maskgate`` command line. Each subcommand lives in its own ``cmd_*`` module."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__, logfmt
from .errors import MaskgateError

log = logging.getLogger(__name__)

# Subcommand modules, each exposing ``register(subparsers)`` that sets ``func`` on its parser.
COMMAND_MODULES = (
    "maskgate.cmd_classify",
    "maskgate.cmd_models",
    "maskgate.cmd_config",
    "maskgate.cmd_run",
    "maskgate.cmd_demo",
    "maskgate.cmd_check",
    "maskgate.cmd_stats",
    "maskgate.cmd_bench",
    "maskgate.cmd_failsafe",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskgate", description="Face-mask gate for shop doors.")
    parser.add_argument("--version", action="version", version=f"maskgate {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    journal = logfmt.setup(logging.WARNING - 10 * min(args.verbose, 2))
    try:
        return int(args.func(args) or 0)
    except MaskgateError as exc:
        print(logfmt.error_line(str(exc), journal), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

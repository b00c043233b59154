"""The ``maskgate`` command line. Each subcommand lives in its own ``cmd_*`` module."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__, logfmt
from .errors import MaskgateError

log = logging.getLogger(__name__)

# Subcommands and their modules, each exposing ``register(subparsers)`` that sets ``func`` on its parser.
COMMANDS = {
    "classify": "maskgate.cmd_classify",
    "models": "maskgate.cmd_models",
    "config": "maskgate.cmd_config",
    "run": "maskgate.cmd_run",
    "demo": "maskgate.cmd_demo",
    "check": "maskgate.cmd_check",
    "stats": "maskgate.cmd_stats",
    "bench": "maskgate.cmd_bench",
    "failsafe": "maskgate.cmd_failsafe",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``only`` just that subcommand: a command then imports only its
    own module (``maskgate failsafe --off``, which systemd runs after every stop, loads no OpenCV)."""
    parser = argparse.ArgumentParser(prog="maskgate", description="Face-mask gate for shop doors.")
    parser.add_argument("--version", action="version", version=f"maskgate {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module).register(sub)
    return parser


def named_command(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names (its first word that is not an option), if it is one and the
    top-level help is not asked for before it; the global options take no values."""
    for a in argv:
        if a in ("-h", "--help"):
            return None
        if not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(named_command(words))
    args = parser.parse_args(words)
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

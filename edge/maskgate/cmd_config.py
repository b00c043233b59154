"""``maskgate config check [PATH]`` and ``maskgate config example``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import DEFAULT_CONFIG_PATH, example_path, load_config
from .errors import ConfigFileError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check a config file or print the commented example")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    c = csub.add_parser("check", help="validate a config file; print each problem as key.path: message")
    c.add_argument("path", nargs="?", type=Path, default=DEFAULT_CONFIG_PATH,
                   help=f"config file (default {DEFAULT_CONFIG_PATH})")
    c.set_defaults(func=check)
    e = csub.add_parser("example", help="print the commented example config (every key, with defaults)")
    e.set_defaults(func=example)


def check(args: argparse.Namespace) -> int:
    try:
        load_config(args.path)
    except ConfigFileError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        print(f"{args.path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.path}: ok")
    return 0


def example(args: argparse.Namespace) -> int:
    sys.stdout.write(example_path().read_text(encoding="utf-8"))
    return 0

"""``maskgate run [--config PATH]``: the daemon systemd starts on the Pi."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .config import DEFAULT_CONFIG_PATH, resolve_config
from .daemon import run_gate
from .events import EventWriter, Observer
from .sdnotify import Notifier

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the gate daemon (camera, models, LEDs, buzzer, door relay)")
    p.add_argument("--config", type=Path, default=None, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    p.add_argument("--events", default=None, metavar="FILE|-",
                   help="debug stream: one JSON line per processed frame (off by default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings, path = resolve_config(args.config)
    observers: list[Observer] = []
    writer = EventWriter(args.events) if args.events else None
    if writer:
        observers.append(writer)
    try:
        with Notifier.from_env(unset=True) as notifier:
            return run_gate(settings, config_path=path, observers=observers, notifier=notifier)
    finally:
        if writer:
            writer.close()

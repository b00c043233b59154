"""``maskgate demo --source PATH|INDEX|URL|synthetic``: the whole pipeline on a laptop, mock pins."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import resource
import sys
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from .config import resolve_config
from .daemon import run_gate
from .events import AnnotatedSaver, DecisionPrinter, EventWriter, Observer
from .sources import source_settings_for
from .stats import Stats

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline with mock pins; a line per decision")
    p.add_argument("--source", default="synthetic", metavar="PATH|INDEX|URL|synthetic",
                   help="image folder, image or video file, camera index, stream URL, or 'synthetic' "
                        "(default)")
    p.add_argument("--fps", type=float, default=10.0, help="playback rate of replayed and synthetic sources")
    p.add_argument("--config", type=Path, default=None, help="config file (default: /etc/maskgate/maskgate.toml "
                                                             "if present, else built-in defaults)")
    p.add_argument("--detector-model", type=Path, default=None, metavar="PATH",
                   help="YuNet .onnx file, or a folder holding it (default: detector.model of the config, "
                        "else the cache, else a download)")
    p.add_argument("--events", default=None, metavar="FILE|-", help="one JSON line per processed frame")
    p.add_argument("--save-annotated", type=Path, default=None, metavar="DIR",
                   help="write every processed frame with boxes and the decision")
    p.add_argument("--event-log", type=Path, default=None, metavar="DIR",
                   help="write the decision event log ([events] of the config) to DIR; off by default "
                        "(a demo's decisions are not the door's)")
    p.add_argument("--mqtt", action="store_true",
                   help="publish to MQTT as [mqtt] of the config says (off by default in a demo)")
    p.add_argument("--snapshots", type=Path, default=None, metavar="DIR",
                   help="snapshot-on-deny into DIR ([snapshots] of the config: blur, retention); off by default")
    p.add_argument("--faces", type=Path, default=None,
                   help="synthetic: face crops folder (with_mask/, without_mask/, incorrect_mask/)")
    p.add_argument("--people", type=int, default=None, help="synthetic: at most this many people at once (1-8)")
    p.add_argument("--seed", type=int, default=None, help="synthetic: random seed")
    p.add_argument("--visits", type=int, default=None, help="synthetic: stop after this many visits")
    p.add_argument("--hold", type=int, default=None, help="image folders: frames each image is shown")
    p.add_argument("--frames", type=int, default=None, help="stop after this many processed frames")
    p.add_argument("--fast", action="store_true",
                   help="replay as fast as possible (decisions still follow frame time)")
    p.add_argument("--http", default=None, metavar="HOST:PORT", type=http_address,
                   help="serve the status page, /healthz, /metrics and the JSON API there (e.g. 127.0.0.1:8080; "
                        "anything but loopback needs [http] token)")
    p.add_argument("--preview", action="store_true", help="with --http: also serve the live view /preview.mjpg")
    p.set_defaults(func=run)


def http_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) for ``--http``."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080; port 0 picks a free one)")
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    settings, path = resolve_config(args.config)
    src = source_settings_for(args.source, settings.source)
    changes: dict[str, object] = {"fps": args.fps}
    for name in ("people", "seed", "hold"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.faces is not None:
        changes["faces"] = str(args.faces)
    src = dataclasses.replace(src, **changes)  # type: ignore[arg-type]
    detector = settings.detector
    if args.detector_model is not None:
        detector = dataclasses.replace(detector, model=str(args.detector_model))
    settings = dataclasses.replace(
        settings, source=src, detector=detector, outputs=dataclasses.replace(settings.outputs, pin_factory="mock"),
        # a demo reports only what it is asked to: its decisions are not the door's
        events=dataclasses.replace(settings.events, enabled=args.event_log is not None,
                                   dir=str(args.event_log or settings.events.dir)),
        mqtt=dataclasses.replace(settings.mqtt, enabled=args.mqtt and settings.mqtt.enabled),
        snapshots=dataclasses.replace(settings.snapshots, enabled=args.snapshots is not None,
                                      dir=str(args.snapshots or settings.snapshots.dir)))
    if args.mqtt and not settings.mqtt.enabled:
        log.warning("--mqtt: [mqtt] enabled = false in the config; not publishing")
    if args.http is not None:
        host, port = args.http
        settings = dataclasses.replace(settings, http=dataclasses.replace(
            settings.http, enabled=True, host=host, port=port, preview=args.preview or settings.http.preview))
    observers: list[Observer] = [DecisionPrinter(sys.stderr if args.events == "-" else sys.stdout)]
    writer = EventWriter(args.events) if args.events else None
    if writer:
        observers.append(writer)
    if args.save_annotated:
        observers.append(AnnotatedSaver(args.save_annotated, settings.detector.roi))
    stats = Stats()
    try:
        rc = run_gate(settings, config_path=path, pin_factory=MockFactory(), observers=observers,
                      max_frames=args.frames, realtime=not args.fast, visits=args.visits,
                      keep_images=args.save_annotated is not None, stats=stats,
                      on_http=lambda server: print(f"status page: {server.url}", file=sys.stderr, flush=True))
    finally:
        if writer:
            writer.close()
    snap = stats.snapshot()
    summary = {k: snap[k] for k in ("frames", "dropped", "bad_frames", "errors", "faults", "fps", "decisions",
                                    "triggers")}
    summary["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("demo summary: " + json.dumps(summary), file=sys.stderr)
    return rc

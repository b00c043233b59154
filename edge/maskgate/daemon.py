"""Assemble and run one gate (shared by ``maskgate run`` and ``maskgate demo``), with signals:
SIGTERM/SIGINT stop it (relay off first), SIGHUP reloads the config file between frames.

Order matters for the door: the outputs come up first (relay driven off) before any model or the
camera is loaded, so a daemon restarted after a crash takes the relay back at once. A live camera
that cannot be opened at start is not a start failure: the gate reports ready, shows the fault and
reopens it with backoff. A :class:`~maskgate.health.HealthMonitor` thread judges the loop and feeds
the systemd watchdog only while it is healthy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .config import Settings, load_config
from .errors import ConfigFileError, SourceError
from .events import Observer
from .health import Health, HealthMonitor
from .outputs import Outputs
from .pipeline import Pipeline, build_classifier, build_detector
from .sdnotify import Notifier
from .sources import FrameSource, make_source
from .stats import Stats

log = logging.getLogger(__name__)


@contextlib.contextmanager
def signal_handlers(pipeline: Pipeline) -> Iterator[None]:
    """Install SIGTERM/SIGINT (stop, relay off first) and SIGHUP (reload) while the gate runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    outputs = getattr(pipeline.outputs, "unwrapped", pipeline.outputs)

    def stop(signum: int, _frame: Any) -> None:
        outputs.relay_off()
        log.warning("%s: stopping", signal.Signals(signum).name)
        pipeline.stop()

    def hup(_signum: int, _frame: Any) -> None:
        log.warning("SIGHUP: reloading the configuration")
        pipeline.request_reload()

    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hup)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def reloader_for(path: Path | None, notifier: Notifier | None = None) -> Callable[[], Settings]:
    """Reads the config file again; under systemd it also says RELOADING=1, then READY=1 with the outcome."""
    def reload() -> Settings:
        if notifier is not None:
            notifier.reloading("reloading the configuration")
        try:
            if path is None:
                raise ConfigFileError("(none)", ["(file): started without a config file; nothing to reload"])
            new = load_config(path)
        except Exception as exc:
            if notifier is not None:
                notifier.ready("reload failed, running configuration kept: " + str(exc).splitlines()[-1].strip())
            raise
        if notifier is not None:
            notifier.ready("configuration reloaded")
        return new
    return reload


def run_gate(settings: Settings, *, config_path: Path | None = None, pin_factory: Any = None,
             source: FrameSource | None = None, observers: list[Observer] | None = None,
             on_alive: Callable[[], None] | None = None, max_frames: int | None = None,
             realtime: bool = True, visits: int | None = None, keep_images: bool = False,
             stats: Stats | None = None, notifier: Notifier | None = None) -> int:
    """Build the outputs (relay off), models and source, run until stopped; 0 ok, 1 source failed.

    With a ``notifier`` (systemd ``Type=notify``): READY=1 once outputs and models are up (a live
    camera may still be missing), WATCHDOG=1 from the health monitor while the loop is healthy,
    RELOADING=1/READY=1 around a SIGHUP reload, STOPPING=1 on the way out.
    """
    outputs = Outputs(settings.outputs, pin_factory, mode=settings.decision.mode)
    log.info("outputs up, relay off; loading the models")
    src: FrameSource | None = None
    monitor: HealthMonitor | None = None
    try:
        detector = build_detector(settings)
        classifier = build_classifier(settings)
        src = source or make_source(settings.source, realtime=realtime, visits=visits)
        camera_error: SourceError | None = None
        try:
            src.open()
        except SourceError as exc:
            if not src.live:
                raise
            camera_error = exc
        health = Health(settings.health, settings.source)
        pipeline = Pipeline(settings, src, detector, classifier, outputs, stats=stats, observers=observers,
                            on_alive=on_alive, reloader=reloader_for(config_path, notifier), max_frames=max_frames,
                            keep_images=keep_images, health=health)
        if camera_error is not None:
            pipeline.source_failed(camera_error)
        monitor = HealthMonitor(health, notifier=notifier,
                                on_unhealthy=lambda _why: outputs.show_fault(pipeline.decider.is_active(time.time())))
        with signal_handlers(pipeline):
            log.info("gate running: mode %s, source %r, %r", settings.decision.mode, src, detector)
            if notifier is not None:
                camera = "" if camera_error is None else ", camera missing (retrying)"
                notifier.ready(f"mode {settings.decision.mode}, {classifier.runtime}/{classifier.delegate}{camera}")
            monitor.start()
            pipeline.run()
        log.info("gate stopped: %s", json.dumps(pipeline.stats.snapshot()))
        return 1 if pipeline.failure else 0
    finally:
        if monitor is not None:
            monitor.close()
        outputs.close()
        if notifier is not None:
            notifier.stopping()
        if src is not None:
            src.close()

"""Assemble and run one gate (shared by ``maskgate run`` and ``maskgate demo``), with signals:
SIGTERM/SIGINT stop it (relay off first), SIGHUP reloads the config file between frames."""

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
from .errors import ConfigFileError
from .events import Observer
from .httpd import HttpServer, start_http
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

    def stop(signum: int, _frame: Any) -> None:
        pipeline.outputs.relay_off()
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


def reloader_for(path: Path | None) -> Callable[[], Settings]:
    def reload() -> Settings:
        if path is None:
            raise ConfigFileError("(none)", ["(file): started without a config file; nothing to reload"])
        return load_config(path)
    return reload


def run_gate(settings: Settings, *, config_path: Path | None = None, pin_factory: Any = None,
             source: FrameSource | None = None, observers: list[Observer] | None = None,
             on_alive: Callable[[], None] | None = None, max_frames: int | None = None,
             realtime: bool = True, visits: int | None = None, keep_images: bool = False,
             stats: Stats | None = None, notifier: Notifier | None = None,
             clock_synced: Callable[[], bool] | None = None,
             on_http: Callable[[HttpServer], None] | None = None) -> int:
    """Build the outputs (relay off), models and source, run until stopped; 0 ok, 1 source failed.

    With a ``notifier`` (systemd ``Type=notify``): READY=1 once outputs, models and source are up,
    WATCHDOG=1 from the frame loop (only after a frame was processed, at most every half interval),
    STOPPING=1 on the way out.

    With ``[http] enabled``, the HTTP server starts right after the outputs (a busy port or a missing
    token fails the start before models load) and is handed to ``on_http``; ``clock_synced`` tells
    its status page whether the wall clock is set.
    """
    outputs = Outputs(settings.outputs, pin_factory, mode=settings.decision.mode)
    src: FrameSource | None = None
    http: HttpServer | None = None
    stats = stats if stats is not None else Stats()
    try:
        if settings.http.enabled:
            http = start_http(settings, stats, clock_synced=clock_synced)
            if on_http is not None:
                on_http(http)
        detector = build_detector(settings)
        classifier = build_classifier(settings)
        src = source or make_source(settings.source, realtime=realtime, visits=visits)
        src.open()
        if notifier is not None:
            on_alive = _watchdog_feed(notifier, on_alive)
        reloader = reloader_for(config_path)
        if http is not None:
            observers = [*(observers or []), *http.board.observers()]
            keep_images = keep_images or http.board.keep_images
            reloader = http.board.watch_reloads(reloader)
        pipeline = Pipeline(settings, src, detector, classifier, outputs, stats=stats, observers=observers,
                            on_alive=on_alive, reloader=reloader, max_frames=max_frames,
                            keep_images=keep_images)
        if http is not None:
            http.board.attach(pipeline)
        with signal_handlers(pipeline):
            log.info("gate running: mode %s, source %r, %r", settings.decision.mode, src, detector)
            if notifier is not None:
                notifier.ready(f"mode {settings.decision.mode}, {classifier.runtime}/{classifier.delegate}")
            pipeline.run()
        log.info("gate stopped: %s", json.dumps(pipeline.stats.snapshot()))
        return 1 if pipeline.failure else 0
    finally:
        outputs.close()
        if notifier is not None:
            notifier.stopping()
        if src is not None:
            src.close()
        if http is not None:
            http.board.detach()
            http.close()


def _watchdog_feed(notifier: Notifier, inner: Callable[[], None] | None) -> Callable[[], None]:
    """Wrap the loop's liveness callback so it also feeds systemd's watchdog, rate-limited."""
    interval = notifier.watchdog_interval()
    last = [float("-inf")]

    def alive() -> None:
        if inner is not None:
            inner()
        now = time.monotonic()
        if interval is not None and now - last[0] >= interval / 2:
            last[0] = now
            notifier.watchdog()

    return alive

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
from typing import TYPE_CHECKING, Any

from .clock import clock_synced as default_clock_synced
from .config import Settings, load_config
from .errors import ConfigFileError, SourceError
from .eventlog import EventLog, events_dir, read_events, summarise
from .events import DecisionEvent, DecisionEvents, Observer
from .health import Health, HealthMonitor
from .outputs import Outputs
from .pipeline import Pipeline, build_classifier, build_detector
from .sdnotify import Notifier
from .snapshots import SnapshotSaver, blur_detector
from .sources import FrameSource, make_source
from .stats import Stats

if TYPE_CHECKING:  # imported where used: with [http] and [mqtt] off (the defaults) the daemon never
    # loads http.server, http.client or ssl, about 6 MB of resident memory on this machine
    from .httpd import HttpServer
    from .mqtt import MqttPublisher

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
        log.info("%s: stopping", signal.Signals(signum).name)
        pipeline.stop()

    def hup(_signum: int, _frame: Any) -> None:
        log.info("SIGHUP: reloading the configuration")
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


DecisionSink = Callable[[DecisionEvent], None]


class Reporting:
    """What the gate reports besides its outputs, built from ``[events]``, ``[mqtt]`` and
    ``[snapshots]``: one DecisionEvents observer whose sinks are the event log, MQTT and any extra
    sinks (a status page's ring buffer), plus the frame observers MQTT and snapshots need.
    ``close()`` says ``offline`` on MQTT and closes the files; safe twice."""

    def __init__(self, settings: Settings, *, sinks: list[DecisionSink] | None = None,
                 clock_synced: Callable[[], bool] | None = None) -> None:
        self.event_log: EventLog | None = None
        self.mqtt: MqttPublisher | None = None
        self.snapshots: SnapshotSaver | None = None
        clock = clock_synced or default_clock_synced
        clock()  # the first answer may run a subprocess (chronyc): before the frame loop, not in it
        self.decisions = DecisionEvents(clock_synced=clock)
        self.observers: list[Observer] = [self.decisions]
        try:
            if settings.events.enabled:
                self.event_log = EventLog.from_settings(settings.events)
                self.decisions.sinks.append(self.event_log)
                log.info("event log: %s", self.event_log.path)
            if settings.mqtt.enabled:
                from .mqtt import MqttPublisher

                self.mqtt = MqttPublisher(settings.mqtt, timezone=settings.schedule.timezone,
                                          counts=self._today_counts(settings))
                self.decisions.sinks.append(self.mqtt)
                self.observers.append(self.mqtt.observe)
            if settings.snapshots.enabled:
                detect = blur_detector(settings).detect if settings.snapshots.blur_faces else None
                self.snapshots = SnapshotSaver(settings.snapshots, detect=detect)
                self.observers.append(self.snapshots)
                log.warning("snapshot-on-deny is on: deny frames are kept in %s (faces %s)",
                            self.snapshots.directory, "blurred" if settings.snapshots.blur_faces else "NOT blurred")
            self.decisions.sinks.extend(sinks or [])
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<Reporting {self.decisions!r} log={self.event_log!r} mqtt={self.mqtt!r} snapshots={self.snapshots!r}>"

    @property
    def keep_images(self) -> bool:
        return self.snapshots is not None

    @staticmethod
    def _today_counts(settings: Settings) -> dict[str, int]:
        """Today's counts from the event log, so MQTT's counts survive a restart."""
        if not settings.events.enabled:
            return {}
        from zoneinfo import ZoneInfo

        found = read_events(events_dir(settings.events))
        return dict(summarise(found.records, ZoneInfo(settings.schedule.timezone))["today_counts"])

    def start(self) -> None:
        if self.mqtt is not None:
            self.mqtt.start()

    def close(self) -> None:
        parts: tuple[MqttPublisher | SnapshotSaver | EventLog | None, ...] = (self.mqtt, self.snapshots, self.event_log)
        for part in parts:
            if part is not None:
                try:
                    part.close()
                except Exception:
                    log.exception("closing %r failed", part)


def warn_if_watchdog_outlasts_relay(relay_max_on: float, notifier: Notifier | None) -> bool:
    """Warn (and return True) when systemd's watchdog timeout is longer than ``outputs.relay_max_on``:
    a frozen process cannot run its relay timer, and only the watchdog's kill ends a pulse then."""
    timeout = notifier.watchdog_timeout() if notifier is not None else None
    if timeout is None or timeout <= relay_max_on:
        return False
    log.warning("outputs.relay_max_on (%g s) is shorter than the service's WatchdogSec (%g s): a frozen "
                "process would hold the relay on for up to %g s; set WatchdogSec= at or below relay_max_on "
                "(systemctl edit maskgate)", relay_max_on, timeout, timeout)
    return True


def run_gate(settings: Settings, *, config_path: Path | None = None, pin_factory: Any = None,
             source: FrameSource | None = None, observers: list[Observer] | None = None,
             on_alive: Callable[[], None] | None = None, max_frames: int | None = None,
             realtime: bool = True, visits: int | None = None, keep_images: bool = False,
             stats: Stats | None = None, notifier: Notifier | None = None,
             decision_sinks: list[DecisionSink] | None = None,
             clock_synced: Callable[[], bool] | None = None,
             on_http: Callable[[HttpServer], None] | None = None) -> int:
    """Build the outputs (relay off), models and source, run until stopped; 0 ok, 1 source failed.

    With a ``notifier`` (systemd ``Type=notify``): READY=1 once outputs and models are up (a live
    camera may still be missing), WATCHDOG=1 from the health monitor while the loop is healthy,
    RELOADING=1/READY=1 around a SIGHUP reload, STOPPING=1 on the way out.

    With ``[http] enabled``, the HTTP server starts right after the outputs (a busy port or a missing
    token fails the start before models load) and is handed to ``on_http``. Decisions go to the
    event log, MQTT and snapshots as ``settings`` says (see ``Reporting``), to the status page, and
    to ``decision_sinks``; ``clock_synced`` (default ``maskgate.clock.clock_synced``) stamps them
    and tells the status page whether the wall clock is set.
    """
    outputs = Outputs(settings.outputs, pin_factory, mode=settings.decision.mode)
    log.info("outputs up, relay off; loading the models")
    warn_if_watchdog_outlasts_relay(settings.outputs.relay_max_on, notifier)
    src: FrameSource | None = None
    http: HttpServer | None = None
    reporting: Reporting | None = None
    monitor: HealthMonitor | None = None
    stats = stats if stats is not None else Stats()
    clock = clock_synced or default_clock_synced
    try:
        sinks = list(decision_sinks or [])
        if settings.http.enabled:
            from .httpd import start_http

            http = start_http(settings, stats, clock_synced=clock)
            sinks += http.board.decision_sinks()
            if on_http is not None:
                on_http(http)
        detector = build_detector(settings)
        classifier = build_classifier(settings)
        reporting = Reporting(settings, sinks=sinks, clock_synced=clock)
        observers = [*reporting.observers, *(observers or [])]
        keep_images = keep_images or reporting.keep_images
        src = source or make_source(settings.source, realtime=realtime, visits=visits)
        camera_error: SourceError | None = None
        try:
            src.open()
        except SourceError as exc:
            if not src.live:
                raise
            camera_error = exc
        reporting.start()
        reloader = reloader_for(config_path, notifier)
        if http is not None:
            observers = [*observers, http.board]
            keep_images = keep_images or http.board.keep_images
            reloader = http.board.watch_reloads(reloader)
        health = Health(settings.health, settings.source)
        pipeline = Pipeline(settings, src, detector, classifier, outputs, stats=stats, observers=observers,
                            on_alive=on_alive, reloader=reloader, max_frames=max_frames,
                            keep_images=keep_images, health=health)
        if http is not None:
            http.board.attach(pipeline)
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
        if reporting is not None:
            reporting.close()
        if src is not None:
            src.close()
        if http is not None:
            http.board.detach()
            http.close()

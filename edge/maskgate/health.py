"""Is the gate working? Judged by outcomes, Frigate-style, never by "the loop called me".

The loop marks the stage it is in (``with health.stage("detect"): ...``) and reports each processed
frame. :meth:`Health.verdict` then says the gate is unhealthy when

- a stage has been running longer than its limit (``health.*_timeout``; a camera read gets
  ``source.frame_timeout`` plus a margin, the wait between reopen attempts
  ``source.reopen_max_delay`` plus a margin), or
- no frame has been processed for ``health.fault_grace`` seconds (camera missing or failing, every
  frame unreadable, every inference failing), or
- camera reads got stuck for good more than :data:`MAX_STUCK_READS` times (each one abandoned a
  capture thread and its device handle; only a new process gets them back).

Retrying a missing camera is healthy for ``fault_grace`` seconds: the loop is making progress, and
restarting the service would not plug the camera back in. A stage that never returns is not.

:class:`HealthMonitor` is a thread that asks for the verdict a few times a second. While healthy
it feeds the systemd watchdog; when the verdict turns bad it stops feeding (systemd restarts the
service after ``WatchdogSec``), makes the outputs safe (relay off, red LED fault pattern) and says
why in the log and in systemd's STATUS line. It does not need the loop thread to do any of this.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .config import HealthSettings, SourceSettings
from .sdnotify import Notifier

log = logging.getLogger(__name__)

MAX_STUCK_READS = 3
"""Camera reads abandoned (stuck in the driver) before the gate asks for a process restart."""

CAPTURE_MARGIN = 2.0
"""Seconds a camera read may run past ``source.frame_timeout`` (the read's own timeout) or a
reopen wait past ``source.reopen_max_delay`` before it counts as stuck."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""
    """Why the gate is unhealthy (empty when ok)."""


class Health:
    """Stage marks and frame outcomes of one loop, and the verdict drawn from them (thread-safe)."""

    def __init__(self, settings: HealthSettings | None = None, source: SourceSettings | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.RLock()  # re-entrant: a signal handler may mark a stage mid-update
        self._stages: list[list[Any]] = []
        self.limits: dict[str, float] = {}
        self.fault_grace = 0.0
        self.loop_timeout = 10.0
        self.configure(settings or HealthSettings(), source or SourceSettings())
        self.last_frame = clock()
        """Clock time of the last processed frame (start time before the first)."""
        self.frames = 0
        self.stuck_reads = 0

    def configure(self, settings: HealthSettings, source: SourceSettings) -> None:
        self.limits = {
            "open": settings.open_timeout,
            "capture": source.frame_timeout + CAPTURE_MARGIN,
            "backoff": source.reopen_max_delay + CAPTURE_MARGIN,
            "detect": settings.detect_timeout,
            "classify": settings.classify_timeout,
            "output": settings.output_timeout,
        }
        self.loop_timeout = settings.loop_timeout
        self.fault_grace = settings.fault_grace

    def __repr__(self) -> str:
        v = self.verdict()
        stages = ",".join(name for name, _ in self.stages()) or "-"
        return f"<Health {'ok' if v.ok else 'UNHEALTHY'} stage={stages} frames={self.frames}>"

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Mark the loop as inside ``name`` (open, capture, backoff, detect, classify, output, ...).

        Stages nest; only the innermost one is judged, and when it ends the enclosing stage's own
        time starts again, so ``loop`` measures only the work outside the stages within it."""
        entry = [name, self._clock()]
        with self._lock:
            self._stages.append(entry)
        try:
            yield
        finally:
            with self._lock:
                for i, e in enumerate(self._stages):
                    if e is entry:
                        del self._stages[i]
                        if i == len(self._stages) and i > 0:
                            self._stages[i - 1][1] = self._clock()
                        break

    def stages(self) -> list[tuple[str, float]]:
        """The open stages, outermost first, each with the time its own current run started."""
        with self._lock:
            return [(str(n), float(t)) for n, t in self._stages]

    def frame_done(self) -> None:
        self.last_frame = self._clock()
        self.frames += 1

    def note_stuck_reads(self, n: int) -> None:
        self.stuck_reads = n

    def verdict(self) -> Verdict:
        now = self._clock()
        stages = self.stages()
        if stages:
            name, since = stages[-1]
            limit = self.limits.get(name, self.loop_timeout)
            if now - since > limit:
                return Verdict(False, f"stage {name} running for {now - since:.1f} s (limit {limit:g} s)")
        idle = now - self.last_frame
        if self.fault_grace > 0 and idle > self.fault_grace:
            return Verdict(False, f"no frame processed for {idle:.0f} s (limit health.fault_grace "
                                  f"{self.fault_grace:g} s)")
        if self.stuck_reads > MAX_STUCK_READS:
            return Verdict(False, f"{self.stuck_reads} camera reads stuck in the driver; a restart frees them")
        return Verdict(True)


class Watched:
    """A stage's part (detector, classifier, outputs) whose every method call is marked as that stage.

    Attribute reads and writes go straight to the wrapped object; only calls are timed, so the
    loop needs no change to be watched wherever it calls the part.
    """

    __slots__ = ("_health", "_stage", "_target")

    def __init__(self, target: Any, health: Health, stage: str) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_health", health)
        object.__setattr__(self, "_stage", stage)

    @property
    def unwrapped(self) -> Any:
        return self._target

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value) or isinstance(value, type):
            return value
        health, stage = self._health, self._stage

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            with health.stage(stage):
                return value(*args, **kwargs)

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __repr__(self) -> str:
        return repr(self._target)


def watched(target: Any, health: Health, stage: str) -> Any:
    """``target`` wrapped so its calls count as ``stage`` (re-wrapping replaces the old mark)."""
    if isinstance(target, Watched):
        target = target.unwrapped
    return Watched(target, health, stage)


class HealthMonitor:
    """A thread that judges the loop, feeds the watchdog while healthy and acts when it is not."""

    def __init__(self, health: Health, *, notifier: Notifier | None = None,
                 on_unhealthy: Callable[[str], None] | None = None,
                 on_healthy: Callable[[], None] | None = None, period: float = 0.25) -> None:
        self.health = health
        self.notifier = notifier
        self.on_unhealthy = on_unhealthy
        self.on_healthy = on_healthy
        interval = notifier.watchdog_interval() if notifier is not None else None
        self.feed_every = None if interval is None else interval / 2
        self.period = period if self.feed_every is None else min(period, self.feed_every / 2)
        self.feeds = 0
        self.unhealthy: str | None = None
        """The reason while the verdict is bad, else None."""
        self.episodes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_feed = float("-inf")

    def __repr__(self) -> str:
        state = "stopped" if self._thread is None else ("UNHEALTHY" if self.unhealthy else "healthy")
        return f"<HealthMonitor {state} feeds={self.feeds} episodes={self.episodes}>"

    def start(self) -> HealthMonitor:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="health-monitor", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def __enter__(self) -> HealthMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> Verdict:
        """One round: judge, act on a change, feed the watchdog when healthy (the thread calls this)."""
        v = self.health.verdict()
        if not v.ok:
            if self.unhealthy is None:
                self.episodes += 1
                log.error("unhealthy: %s; relay off, watchdog no longer fed", v.reason)
                if self.notifier is not None:
                    self.notifier.status(f"unhealthy: {v.reason}")
                if self.on_unhealthy is not None:
                    self.on_unhealthy(v.reason)
            self.unhealthy = v.reason
            return v
        if self.unhealthy is not None:
            log.warning("healthy again after: %s", self.unhealthy)
            self.unhealthy = None
            if self.notifier is not None:
                self.notifier.status("healthy")
            if self.on_healthy is not None:
                self.on_healthy()
        now = time.monotonic()
        if self.notifier is not None and self.feed_every is not None and now - self._last_feed >= self.feed_every:
            self._last_feed = now
            if self.notifier.watchdog():
                self.feeds += 1
        return v

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # the monitor must outlive any callback failure
                log.exception("health check failed")
            self._stop.wait(self.period)

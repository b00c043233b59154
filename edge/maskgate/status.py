"""What the status page, /healthz, /api/status and /metrics read: the gate's live state in one place.

A :class:`StatusBoard` is a frame observer (it keeps a reference to the newest FrameResult: no copy,
no encoding, nothing written) and is told about the pipeline once the models are loaded. Readers
(HTTP threads) build their answers from ``Stats.snapshot()`` and these references, so the frame
loop never waits for them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import HttpSettings, Settings
from .errors import ConfigError, ConfigFileError
from .events import DecisionEvent, DecisionEvents, FrameResult
from .recent import RecentEvents
from .stats import Stats

if TYPE_CHECKING:
    from .pipeline import Pipeline

log = logging.getLogger(__name__)

PREVIEW_HOW = ("The live preview is off. To aim the camera, set preview = true in the [http] section of "
               "/etc/maskgate/maskgate.toml and restart maskgate (systemctl restart maskgate).")

LIGHTS = {"allow": "allow", "deny": "deny", "fault": "fault", "checking": "checking", "uncertain": "checking",
          "idle": "idle"}
"""Decision state -> the page's light: green (allow), red (deny, fault), amber (checking), grey (idle)."""


def utc_iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StatusBoard:
    """The gate's live state for readers in other threads. Thread-safe."""

    def __init__(self, settings: Settings, stats: Stats, *, recent: RecentEvents | None = None,
                 clock_synced: Callable[[], bool] | None = None) -> None:
        self.settings = settings
        self.stats = stats
        self.recent = recent or RecentEvents(timezone=settings.schedule.timezone)
        self.clock_synced = clock_synced or (lambda: True)
        self.keep_images = settings.http.enabled and settings.http.preview
        """Whether the pipeline should hand over its frames (only for the preview)."""
        self.phase = "starting"
        self._lock = threading.Lock()
        self._pipeline: Pipeline | None = None
        self._latest: FrameResult | None = None
        self._latest_image: FrameResult | None = None
        self._problems: list[str] = []
        self._problems_at: float | None = None

    def __repr__(self) -> str:
        ok, why = self.health()
        return f"<StatusBoard {self.phase} healthy={ok} ({why}) {self.recent!r}>"

    # -- fed by the daemon -------------------------------------------------------------------------
    def attach(self, pipeline: Pipeline) -> None:
        """The models are loaded and the source is open: from now on frames are expected."""
        with self._lock:
            self._pipeline = pipeline
            self.phase = "running"

    def detach(self) -> None:
        with self._lock:
            self.phase = "stopped"

    def __call__(self, result: FrameResult) -> None:
        """Frame observer: keep references to the newest result (and the newest one with an image)."""
        self._latest = result
        if result.image is not None:
            self._latest_image = result

    def decision_sinks(self) -> list[Callable[[DecisionEvent], None]]:
        """Where decisions go for this board: the recent-events ring buffer and the outcome counters
        of ``/metrics`` (the daemon adds them to its one DecisionEvents observer)."""
        return [self.recent, self.stats.outcome]

    def observers(self) -> list[Callable[[FrameResult], None]]:
        """What a pipeline without the daemon's reporting should call per frame: this board, and a
        DecisionEvents recorder feeding ``decision_sinks()``."""
        return [self, DecisionEvents(self.decision_sinks(), clock_synced=self.clock_synced)]

    def watch_reloads(self, reloader: Callable[[], Settings]) -> Callable[[], Settings]:
        """Wrap the daemon's reloader so the page shows a failed reload's problems (and clears them
        after a good one)."""
        def reload() -> Settings:
            try:
                new = reloader()
            except ConfigFileError as exc:
                self.config_problems([f"{exc.source}: {p}" for p in exc.problems])
                raise
            except (ConfigError, OSError) as exc:
                self.config_problems([str(exc)])
                raise
            self.config_problems([])
            if new.http != self.settings.http:
                log.warning("reload: [http] changes apply after a restart")
            return new
        return reload

    def config_problems(self, problems: list[str]) -> None:
        """The messages of the last failed reload (empty: the last reload worked)."""
        with self._lock:
            self._problems = list(problems)
            self._problems_at = time.time() if problems else None

    # -- read by HTTP threads --------------------------------------------------------------------
    @property
    def pipeline(self) -> Pipeline | None:
        return self._pipeline

    @property
    def http(self) -> HttpSettings:
        return self.settings.http

    def live_settings(self) -> Settings:
        p = self._pipeline
        return p.settings if p is not None else self.settings

    def latest(self) -> FrameResult | None:
        return self._latest

    def latest_image(self) -> FrameResult | None:
        return self._latest_image

    def roi(self) -> tuple[float, ...]:
        return tuple(self.live_settings().detector.roi)

    def health(self) -> tuple[bool, str]:
        """(healthy, reason): frames flow (one processed within ``source.frame_timeout``), the
        models are loaded, and no stage is stuck past its ``[health]`` timeout (the same judge that
        feeds systemd's watchdog)."""
        if self.phase == "starting":
            return False, "starting: models and camera not ready yet"
        if self.phase == "stopped":
            return False, "stopped"
        latest = self._latest
        if latest is not None and latest.decision.state == "fault":
            d = latest.decision
            return False, f"fault: {d.reason or 'unknown'}" + (f" ({d.detail})" if d.detail else "")
        p = self._pipeline
        if p is not None:
            verdict = p.health.verdict()  # the watchdog's judge: a stage stuck past its timeout
            if not verdict.ok:
                return False, f"stuck: {verdict.reason}"
        last = self.stats.last_frame_at
        if last is None:
            return False, "no frame processed yet"
        age = time.monotonic() - last
        limit = self.live_settings().source.frame_timeout
        if age > limit:
            return False, f"stale: no frame processed for {age:.1f} s (source.frame_timeout is {limit:g} s)"
        return True, f"ok: last frame processed {age:.2f} s ago"

    def camera_state(self) -> str:
        latest = self._latest
        if self.phase != "running":
            return self.phase
        if latest is not None and latest.decision.state == "fault":
            if latest.decision.detail:
                return latest.decision.detail
            return {"camera": "failed, reopening", "frames": "unreadable frames"}.get(
                latest.decision.reason or "", f"fault ({latest.decision.reason})")
        last = self.stats.last_frame_at
        if last is None:
            return "waiting for the first frame"
        age = time.monotonic() - last
        if age > self.live_settings().source.frame_timeout:
            return f"no frame for {age:.0f} s"
        return "ok"

    def runtime(self) -> dict[str, Any]:
        p = self._pipeline
        s = self.live_settings()
        if p is None:
            return {"classifier": None, "runtime": None, "delegate": None, "threads": s.classifier.threads,
                    "model_sha256": None, "detector": None, "source": None}
        clf = p.classifier
        return {"classifier": clf.bundle.name, "runtime": clf.runtime, "delegate": clf.delegate,
                "threads": s.classifier.threads, "model_sha256": str(clf.bundle.manifest.get("sha256", "")),
                "detector": repr(p.detector), "source": repr(p.source)}

    def info(self) -> dict[str, str]:
        """Labels of ``maskgate_info``."""
        rt = self.runtime()
        return {"version": __version__, "model": str(rt["classifier"] or ""),
                "model_sha256": str(rt["model_sha256"] or ""), "runtime": str(rt["runtime"] or ""),
                "delegate": str(rt["delegate"] or ""), "detector": "yunet",
                "mode": self.live_settings().decision.mode}

    def light(self) -> str:
        ok, _ = self.health()
        latest = self._latest
        if self.phase == "running" and not ok and self.stats.last_frame_at is not None:
            return "fault"
        if latest is None:
            return "idle"
        return LIGHTS.get(latest.decision.state, "idle")

    def status(self, recent: int = 10) -> dict[str, Any]:
        """Everything the status page shows, in the daemon's vocabulary."""
        s = self.live_settings()
        self.recent.set_timezone(s.schedule.timezone)
        now = time.time()
        snap = self.stats.snapshot()
        ok, why = self.health()
        latest = self._latest
        decision: dict[str, Any] = {"state": None, "reason": None, "active": None, "mode": s.decision.mode,
                                    "faces": [], "at": None}
        if latest is not None:
            d = latest.decision
            decision = {"state": d.state, "reason": d.reason, "active": d.active, "mode": d.mode,
                        "faces": [{"track": f.track, "label": f.label, "score": round(f.score, 4)}
                                  for f in latest.faces],
                        "at": utc_iso(latest.wall)}
        day, counts = self.recent.today(now)
        with self._lock:
            problems, problems_at = list(self._problems), self._problems_at
        return {
            "maskgate": __version__,
            "now": utc_iso(now),
            "clock_synced": bool(self.clock_synced()),
            "phase": self.phase,
            "health": {"ok": ok, "reason": why},
            "light": self.light(),
            "decision": decision,
            "outputs": dict(latest.outputs) if latest is not None else {},
            "camera": {"state": self.camera_state(), "last_frame_age_s": snap["since_last_frame_s"]},
            "fps": snap["recent_fps"],
            "stages_ms": snap["stages_ms"],
            "runtime": self.runtime(),
            "today": {"date": day, "timezone": s.schedule.timezone, **counts},
            "recent": [e.to_json() for e in self.recent.events(recent)],
            "counters": {k: snap[k] for k in ("frames", "dropped", "bad_frames", "errors", "faults", "faces",
                                              "relay_pulses", "camera_reconnects", "reloads", "button_presses",
                                              "uptime_s")},
            "config_problems": problems,
            "config_problems_at": utc_iso(problems_at) if problems_at is not None else None,
            "preview": {"enabled": self.keep_images, "path": "/preview.mjpg",
                        "how": None if self.keep_images else PREVIEW_HOW},
        }

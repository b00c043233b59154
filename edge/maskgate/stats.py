"""Counters, per-stage latency and score histograms the loop updates; the status page, /metrics and
MQTT read ``snapshot()`` (a copy taken under one short lock, so readers never hold up the loop)."""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .events import DecisionEvent

STAGES = ("capture", "motion", "detect", "follow", "preprocess", "classify", "decide", "output")
"""``capture`` includes waiting for the next frame (a live camera or a paced replay)."""

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds (seconds) of the per-stage latency histograms: 0.5 ms (classify on a PC) to 5 s
(a camera read about to time out)."""

SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
"""Upper bounds of the classifier score histograms; fine near 1, where a drifting model shows first."""

RECENT_FRAMES = 50
"""Frames/s on the status page is measured over this many recent frames, not the whole run."""


@dataclass
class Histogram:
    """A fixed-bucket histogram: ``counts[i]`` observations <= ``bounds[i]`` (and above the bound
    before it); the last count is the overflow bucket (+Inf)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` pairs ending with ``(inf, count)``, as Prometheus wants."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.sum)


@dataclass
class StageTime:
    count: int = 0
    total: float = 0.0
    last: float = 0.0
    max: float = 0.0
    hist: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.last = seconds
        self.max = max(self.max, seconds)
        self.hist.observe(seconds)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class Stats:
    """Thread-safe counters: frames, dropped, bad frames, errors, faces, decisions, stage times,
    classifier scores per label, relay pulses, camera reconnects, and DecisionEvent outcomes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.frames = 0
        self.dropped = 0
        self.bad_frames = 0
        self.errors = 0
        self.faces = 0
        self.faults = 0
        self.reloads = 0
        self.button_presses = 0
        self.relay_pulses = 0
        self.camera_reconnects = 0
        """Times a failed live camera was reopened."""
        self.converted_frames = 0
        """Gray, 4-channel or 16-bit frames converted to BGR before processing."""
        self.size_changes = 0
        """Times the stream's frame size changed and the gate followed it (single odd frames are bad frames)."""
        self.colourless_faces = 0
        """Faces seen without colour (a gray frame): tracked, not judged (an uncertain vote)."""
        self.vetoes = 0
        """Searched frames on which the door would have opened but waited: a face narrower than
        ``detector.min_face`` in the doorway was judged bare or wrongly masked."""
        self.second_looks = 0
        """Faces the second opinion looked at: before a vote that would sound the alarm
        (``classifier.second_opinion`` ``deny`` or ``door``), and with ``door`` also on masked votes too
        weak to count."""
        self.alarms_held = 0
        """Votes that would have sounded the alarm which the second opinion turned uncertain (it saw a
        mask): no alarm on them."""
        self.masks_confirmed = 0
        """Masked votes too weak to count that the second opinion confirmed (``second_opinion = "door"``):
        they counted as masked."""
        self.colourless_frames = 0
        """Frames without colour or too dark as a whole (a camera in mono or night mode, lights off); a long
        run is a fault."""
        self.decisions: Counter[str] = Counter()
        """Frames per decision state (idle, checking, ...); a fault without frames (camera gone, frames
        unreadable, inference failing) counted once per fault report, one with frames (no colour) per frame."""
        self.triggers: Counter[str] = Counter()
        self.outcomes: Counter[tuple[str, str]] = Counter()
        """DecisionEvents by (outcome, reason or ''): door actions and fault starts."""
        self.stages: dict[str, StageTime] = {s: StageTime() for s in STAGES}
        self.scores: dict[str, Histogram] = {}
        """Classifier verdicts: a score histogram per predicted label."""
        self.last_frame_at: float | None = None
        self._recent: deque[float] = deque(maxlen=RECENT_FRAMES)

    def __repr__(self) -> str:
        return (f"<Stats frames={self.frames} dropped={self.dropped} bad={self.bad_frames} "
                f"errors={self.errors} decisions={dict(self.decisions)}>")

    def stage(self, name: str, seconds: float) -> None:
        with self._lock:
            self.stages.setdefault(name, StageTime()).add(seconds)

    def score(self, label: str, score: float) -> None:
        """One classifier verdict (called per classified face)."""
        with self._lock:
            hist = self.scores.get(label)
            if hist is None:
                hist = self.scores[label] = Histogram(SCORE_BUCKETS)
            hist.observe(score)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def fault(self) -> None:
        with self._lock:
            self.faults += 1
            self.decisions["fault"] += 1

    def outcome(self, event: DecisionEvent) -> None:
        """A DecisionEvents sink: count door actions and fault starts by outcome and reason."""
        with self._lock:
            self.outcomes[(event.outcome, event.reason or "")] += 1

    def frame_done(self, faces: int, decision: str, trigger: str | None) -> None:
        with self._lock:
            self.frames += 1
            self.faces += faces
            self.decisions[decision] += 1
            if trigger:
                self.triggers[trigger] += 1
            self.last_frame_at = time.monotonic()
            self._recent.append(self.last_frame_at)

    def recent_fps(self) -> float:
        """Frames per second over the last few frames (0 when frames stopped longer than that span)."""
        with self._lock:
            return self._recent_fps(time.monotonic())

    def _recent_fps(self, now: float) -> float:
        if len(self._recent) < 2:
            return 0.0
        span = self._recent[-1] - self._recent[0]
        idle = now - self._recent[-1]
        if span <= 0 or idle > max(span, 1.0):
            return 0.0
        return (len(self._recent) - 1) / span

    def histograms(self) -> tuple[dict[str, Histogram], dict[str, Histogram]]:
        """Copies of (stage latency histograms, score histograms per label)."""
        with self._lock:
            return ({k: v.hist.copy() for k, v in self.stages.items()},
                    {k: v.copy() for k, v in self.scores.items()})

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            up = now - self.started
            return {
                "uptime_s": round(up, 3), "frames": self.frames, "dropped": self.dropped,
                "bad_frames": self.bad_frames, "errors": self.errors, "faces": self.faces,
                "faults": self.faults, "reloads": self.reloads, "button_presses": self.button_presses,
                "relay_pulses": self.relay_pulses, "camera_reconnects": self.camera_reconnects,
                "converted_frames": self.converted_frames, "colourless_faces": self.colourless_faces,
                "colourless_frames": self.colourless_frames, "size_changes": self.size_changes,
                "vetoes": self.vetoes, "second_looks": self.second_looks, "alarms_held": self.alarms_held,
                "masks_confirmed": self.masks_confirmed,
                "fps": round(self.frames / up, 3) if up > 0 else 0.0,
                "recent_fps": round(self._recent_fps(now), 3),
                "decisions": dict(self.decisions), "triggers": dict(self.triggers),
                "outcomes": [{"outcome": o, "reason": r or None, "count": n}
                             for (o, r), n in sorted(self.outcomes.items())],
                "stages_ms": {k: {"mean": round(v.mean * 1e3, 3), "last": round(v.last * 1e3, 3),
                                  "max": round(v.max * 1e3, 3), "count": v.count}
                              for k, v in self.stages.items()},
                "scores": {k: {"count": v.count, "mean": round(v.sum / v.count, 4) if v.count else None}
                           for k, v in sorted(self.scores.items())},
                "since_last_frame_s": None if self.last_frame_at is None
                else round(now - self.last_frame_at, 3),
            }

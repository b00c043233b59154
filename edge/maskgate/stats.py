"""Counters and per-stage latency the loop updates; a status page or MQTT can read ``snapshot()``."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

STAGES = ("capture", "detect", "preprocess", "classify", "decide", "output")
"""``capture`` includes waiting for the next frame (a live camera or a paced replay)."""


@dataclass
class StageTime:
    count: int = 0
    total: float = 0.0
    last: float = 0.0
    max: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.last = seconds
        self.max = max(self.max, seconds)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class Stats:
    """Thread-safe counters: frames, dropped, bad frames, errors, faces, decisions, stage times."""

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
        self.converted_frames = 0
        """Gray, 4-channel or 16-bit frames converted to BGR before processing."""
        self.reopens = 0
        """Times a failed live camera was reopened."""
        self.decisions: Counter[str] = Counter()
        self.triggers: Counter[str] = Counter()
        self.stages: dict[str, StageTime] = {s: StageTime() for s in STAGES}
        self.last_frame_at: float | None = None

    def __repr__(self) -> str:
        return (f"<Stats frames={self.frames} dropped={self.dropped} bad={self.bad_frames} "
                f"errors={self.errors} decisions={dict(self.decisions)}>")

    def stage(self, name: str, seconds: float) -> None:
        with self._lock:
            self.stages.setdefault(name, StageTime()).add(seconds)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def fault(self) -> None:
        with self._lock:
            self.faults += 1
            self.decisions["fault"] += 1

    def frame_done(self, faces: int, decision: str, trigger: str | None) -> None:
        with self._lock:
            self.frames += 1
            self.faces += faces
            self.decisions[decision] += 1
            if trigger:
                self.triggers[trigger] += 1
            self.last_frame_at = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            up = time.monotonic() - self.started
            return {
                "uptime_s": round(up, 3), "frames": self.frames, "dropped": self.dropped,
                "bad_frames": self.bad_frames, "errors": self.errors, "faces": self.faces,
                "faults": self.faults, "reloads": self.reloads, "button_presses": self.button_presses,
                "converted_frames": self.converted_frames, "reopens": self.reopens,
                "fps": round(self.frames / up, 3) if up > 0 else 0.0,
                "decisions": dict(self.decisions), "triggers": dict(self.triggers),
                "stages_ms": {k: {"mean": round(v.mean * 1e3, 3), "last": round(v.last * 1e3, 3),
                                  "max": round(v.max * 1e3, 3), "count": v.count}
                              for k, v in self.stages.items()},
                "since_last_frame_s": None if self.last_frame_at is None
                else round(time.monotonic() - self.last_frame_at, 3),
            }

"""What the loop tells its observers after each frame, and the observers that ship: the JSON-lines
debug stream, a readable line per decision change, and annotated frame saving."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from .decider import Decision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceEvent:
    box: tuple[int, int, int, int]
    label: str
    score: float
    track: int


@dataclass(frozen=True)
class FrameResult:
    """One processed frame (or a fault without a frame: ``frame == -1``)."""

    frame: int
    wall: float
    faces: tuple[FaceEvent, ...]
    decision: Decision
    outputs: dict[str, bool]
    image: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": datetime.fromtimestamp(self.wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "frame": self.frame,
            "faces": [{"box": list(f.box), "label": f.label, "score": round(f.score, 4), "track": f.track}
                      for f in self.faces],
            "decision": self.decision.state,
            "reason": self.decision.reason,
            **({"detail": self.decision.detail} if self.decision.detail else {}),
            "outputs": dict(self.outputs),
        }


Observer = Callable[[FrameResult], None]
"""Anything called with each FrameResult (event stream, status page, MQTT, ...)."""


@dataclass(frozen=True)
class DecisionEvent:
    """One decision worth recording: the door opened (``allow``), the buzzer sounded (``deny``), or a
    fault began. No image, no box: nothing that identifies a person.

    ``clock_synced`` is False while the wall clock is not known to be set (a Pi has no real-time
    clock); consumers say so next to the time.
    """

    wall: float
    outcome: str
    """``allow`` | ``deny`` | ``fault`` (the daemon's decision vocabulary)."""
    reason: str | None
    """deny: ``without_mask`` | ``incorrect_mask``; fault: ``camera`` | ``model`` | ``frames`` ..."""
    confidence: float | None
    """The deciding track's classifier score (None for a fault)."""
    faces: int
    """Faces in the doorway region at that moment."""
    track: int | None
    """The deciding track's id (a number local to this run, not an identity)."""
    mode: str
    active: bool
    """False when the gate was off or outside its schedule (nothing was driven)."""
    clock_synced: bool = True
    detail: str | None = None
    """A fault's particulars in words (e.g. ``no colour in the picture`` for reason ``camera``)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": datetime.fromtimestamp(self.wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "outcome": self.outcome, "reason": self.reason,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "faces": self.faces, "track": self.track, "mode": self.mode, "active": self.active,
            "clock_synced": self.clock_synced,
            **({"detail": self.detail} if self.detail else {}),
        }


def decision_event(result: FrameResult, previous: FrameResult | None, *,
                   clock_synced: bool = True) -> DecisionEvent | None:
    """The DecisionEvent a frame result makes, if any: an action fired (``open`` -> allow, ``alarm``
    -> deny), or a fault began (the previous result was not a fault with the same reason)."""
    d = result.decision
    if d.state == "fault":
        p = previous.decision if previous is not None else None
        if p is not None and p.state == "fault" and p.reason == d.reason and p.detail == d.detail:
            return None
        return DecisionEvent(result.wall, "fault", d.reason, None, 0, None, d.mode, d.active, clock_synced,
                             d.detail)
    if d.trigger not in ("open", "alarm"):
        return None
    outcome = "allow" if d.trigger == "open" else "deny"
    inside = [t for t in d.tracks if t.in_roi]
    deciding = [t for t in inside if t.state == outcome] or inside
    if outcome == "allow":
        track = min(deciding, key=lambda t: t.score, default=None)  # the least sure of the masked faces
    else:
        track = max(deciding, key=lambda t: t.score, default=None)
    return DecisionEvent(result.wall, outcome, d.reason, None if track is None else track.score, len(inside),
                         None if track is None else track.id, d.mode, d.active, clock_synced)


class DecisionEvents:
    """An observer that turns frame results into DecisionEvents and hands each to its sinks
    (the event log, the status page, MQTT). A failing sink is logged and the others still run."""

    def __init__(self, sinks: list[Callable[[DecisionEvent], None]] | None = None, *,
                 clock_synced: Callable[[], bool] | None = None) -> None:
        self.sinks: list[Callable[[DecisionEvent], None]] = list(sinks or [])
        self._clock_synced = clock_synced
        self._previous: FrameResult | None = None

    def __repr__(self) -> str:
        return f"<DecisionEvents {len(self.sinks)} sink(s)>"

    def __call__(self, result: FrameResult) -> None:
        synced = self._clock_synced() if self._clock_synced is not None else True
        event = decision_event(result, self._previous, clock_synced=synced)
        self._previous = result
        if event is None:
            return
        for sink in list(self.sinks):
            try:
                sink(event)
            except Exception:
                log.exception("decision sink %r failed", sink)


class EventWriter:
    """``--events FILE|-``: one JSON line per processed frame.

    A file is written unbuffered, one ``write`` per line, so a failed write (a full disk: ENOSPC)
    loses only that line and leaves nothing queued to grow. Failures are counted in ``errors`` and
    logged once until a write works again; the loop goes on.
    """

    def __init__(self, target: str | Path) -> None:
        self.target = str(target)
        self._own = self.target != "-"
        self._raw: IO[bytes] | None = open(self.target, "ab", buffering=0) if self._own else None
        self.written = 0
        self.errors = 0
        self._failing = False

    def __repr__(self) -> str:
        return f"<EventWriter {self.target} written={self.written} errors={self.errors}>"

    def __call__(self, result: FrameResult) -> None:
        line = json.dumps(result.to_json()) + "\n"
        try:
            if self._raw is not None:
                self._raw.write(line.encode())
            else:
                sys.stdout.write(line)
                sys.stdout.flush()
        except OSError as exc:
            self.errors += 1
            if not self._failing:
                self._failing = True
                log.error("events: cannot write to %s (%s); lines are dropped and counted until it works again",
                          self.target, exc.strerror or exc)
            return
        self.written += 1
        if self._failing:
            self._failing = False
            log.warning("events: writing to %s works again after %d lost line(s)", self.target, self.errors)

    def close(self) -> None:
        if self._raw is not None and not self._raw.closed:
            self._raw.close()


def describe(result: FrameResult) -> str:
    d = result.decision
    ts = datetime.fromtimestamp(result.wall, UTC).strftime("%H:%M:%S.%f")[:-3]
    faces = ", ".join(f"#{f.track} {f.label} {f.score:.2f}" for f in result.faces) or "no face"
    why = f" ({d.reason})" if d.reason else ""
    act = {"open": "  -> door open", "alarm": "  -> buzzer"}.get(d.trigger or "", "")
    if not d.active and d.state not in ("idle", "fault"):
        act = "  (gate inactive)"
    return f"{ts} frame {result.frame:6d}  {d.state}{why}  [{faces}]{act}"


class DecisionPrinter:
    """A readable line whenever the decision changes or an action fires."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self._last: tuple[str, str | None] | None = None

    def __call__(self, result: FrameResult) -> None:
        key = (result.decision.state, result.decision.reason)
        if key != self._last or result.decision.trigger:
            self._last = key
            print(describe(result), file=self.stream, flush=True)


COLORS = {"with_mask": (0, 200, 0), "without_mask": (0, 0, 230), "incorrect_mask": (0, 160, 255)}
"""Box colour per label (BGR): green masked, red bare, orange worn wrongly."""
ROI_COLOR = (255, 200, 0)
"""The doorway region's outline (BGR light blue)."""


def annotate(image: np.ndarray, result: FrameResult, roi: tuple[float, ...] | None = None) -> np.ndarray:
    """A copy of ``image`` with each face's box, track, label and score, the decision, and the doorway
    region ``roi`` (fractions of the frame; not drawn when it is the whole frame)."""
    img = image.copy()
    h, w = img.shape[:2]
    if roi is not None and tuple(roi) != (0.0, 0.0, 1.0, 1.0):
        x0, y0, x1, y1 = roi
        p0 = (int(x0 * w), int(y0 * h))
        p1 = (min(w - 1, int(round(x1 * w))), min(h - 1, int(round(y1 * h))))
        cv2.rectangle(img, p0, p1, ROI_COLOR, 2)
        cv2.putText(img, "doorway", (p0[0] + 4, p1[1] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, ROI_COLOR, 1,
                    cv2.LINE_AA)
    for f in result.faces:
        x, y, bw, bh = f.box
        c = COLORS.get(f.label, (200, 200, 200))
        cv2.rectangle(img, (x, y), (x + bw, y + bh), c, 2)
        cv2.putText(img, f"#{f.track} {f.label} {f.score:.2f}", (x, max(12, y - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, c, 1, cv2.LINE_AA)
    d = result.decision
    cv2.putText(img, d.state + (f" ({d.reason})" if d.reason else ""), (8, 22),
                cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
    return img


class AnnotatedSaver:
    """``--save-annotated DIR``: each processed frame as a JPEG with boxes, the decision and the doorway
    region."""

    def __init__(self, directory: str | Path, roi: tuple[float, ...] | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.roi = roi

    def __call__(self, result: FrameResult) -> None:
        if result.image is None:
            return
        img = annotate(result.image, result, self.roi)
        cv2.imwrite(str(self.directory / f"frame_{result.frame:06d}.jpg"), img)

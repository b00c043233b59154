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
            "outputs": dict(self.outputs),
        }


Observer = Callable[[FrameResult], None]
"""Anything called with each FrameResult (event stream, status page, MQTT, ...)."""


class EventWriter:
    """``--events FILE|-``: one JSON line per processed frame."""

    def __init__(self, target: str | Path) -> None:
        self.target = str(target)
        self._own = self.target != "-"
        self._fh: IO[str] = open(self.target, "a", encoding="utf-8") if self._own else sys.stdout

    def __repr__(self) -> str:
        return f"<EventWriter {self.target}>"

    def __call__(self, result: FrameResult) -> None:
        self._fh.write(json.dumps(result.to_json()) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._own and not self._fh.closed:
            self._fh.close()


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


class AnnotatedSaver:
    """``--save-annotated DIR``: each processed frame as a JPEG with boxes and the decision."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def __call__(self, result: FrameResult) -> None:
        if result.image is None:
            return
        img = result.image.copy()
        for f in result.faces:
            x, y, w, h = f.box
            c = COLORS.get(f.label, (200, 200, 200))
            cv2.rectangle(img, (x, y), (x + w, y + h), c, 2)
            cv2.putText(img, f"#{f.track} {f.label} {f.score:.2f}", (x, max(12, y - 4)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, c, 1, cv2.LINE_AA)
        d = result.decision
        cv2.putText(img, d.state + (f" ({d.reason})" if d.reason else ""), (8, 22),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.imwrite(str(self.directory / f"frame_{result.frame:06d}.jpg"), img)

"""Has anything moved since the gate last looked? A tiny grayscale copy of the frame against a reference.

The frame is shrunk to ``SIZE`` by bilinear sampling (each cell averages 2x2 pixels, which halves sensor
noise, at a hundredth of the cost of averaging whole cells), and a cell counts as changed when it differs
from the reference by more than ``LEVEL`` grey levels. The gate uses it to skip
the face detector on an empty doorway where nothing moves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

SIZE = (80, 60)
"""Width and height of the tiny copy (a 640x480 frame averages 8x8 pixels per cell)."""
LEVEL = 12
"""Grey levels a cell must change by to count as changed (several times the averaged sensor noise)."""


def tiny_gray(frame_bgr: np.ndarray) -> np.ndarray:
    small = cv2.resize(frame_bgr, SIZE, interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)


class MotionGate:
    """``changed(frame)`` is True when more than ``share`` of the tiny copy differs from the reference.

    The reference is the frame passed to ``look(frame)``, the last frame the detector searched, so slow
    movement adds up until it counts. With no reference yet, everything has changed.
    """

    def __init__(self, share: float) -> None:
        self.share = share
        self._ref: np.ndarray | None = None
        self._last: tuple[np.ndarray, np.ndarray] | None = None
        """The last frame ``changed`` saw and its tiny copy, so ``look`` on that frame reuses it."""
        self.last_change = 1.0
        """Share of cells changed at the last ``changed`` call (for logs and tests)."""
        self.box: tuple[int, int, int, int] | None = None
        """Where the last ``changed`` call saw change: (x0, y0, x1, y1) in frame pixels, None if nowhere
        or unknown (no reference yet)."""

    def __repr__(self) -> str:
        return f"<MotionGate share>{self.share} last={self.last_change:.4f} ref={self._ref is not None}>"

    def look(self, frame_bgr: np.ndarray) -> None:
        """Remember ``frame_bgr`` as what the detector last saw."""
        last = self._last
        self._ref = last[1] if last is not None and last[0] is frame_bgr else tiny_gray(frame_bgr)
        self._last = None

    def changed(self, frame_bgr: np.ndarray, outside: Sequence[tuple[int, int, int, int]] = ()) -> bool:
        """Has more than ``share`` of the frame changed since ``look``? Change inside the ``outside`` boxes
        (x0, y0, x1, y1 in frame pixels) does not count."""
        self.box = None
        if self._ref is None:
            self.last_change = 1.0
            return True
        cur = tiny_gray(frame_bgr)
        self._last = (frame_bgr, cur)
        if cur.shape != self._ref.shape:
            self.last_change = 1.0
            return True
        moved = cv2.absdiff(cur, self._ref) > LEVEL
        fy, fx = frame_bgr.shape[0] / SIZE[1], frame_bgr.shape[1] / SIZE[0]
        for x0, y0, x1, y1 in outside:
            r0, r1 = max(0, int(y0 / fy)), max(0, int(np.ceil(y1 / fy)))
            c0, c1 = max(0, int(x0 / fx)), max(0, int(np.ceil(x1 / fx)))
            moved[r0:r1, c0:c1] = False
        self.last_change = float(np.count_nonzero(moved)) / moved.size
        if self.last_change > 0:
            ys, xs = np.nonzero(moved)
            self.box = (int(xs.min() * fx), int(ys.min() * fy), int(np.ceil((xs.max() + 1) * fx)),
                        int(np.ceil((ys.max() + 1) * fy)))
        return self.last_change > self.share

    def reset(self) -> None:
        self._ref = self._last = self.box = None

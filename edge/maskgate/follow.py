"""Finds a tracked face again between detections by matching a small grey template of it.

When the detector finds a face, ``remember`` keeps a ``TEMPLATE``-pixel-wide greyscale copy of it;
on the frames in between, ``find`` searches the neighbourhood of the face's predicted place
(``SEARCH`` face widths around it) at the template's scale with normalised cross-correlation. That
costs a few hundredths of a millisecond instead of a detector pass, and follows a walking person
well; the box keeps the detected size, and the next detection corrects it.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]

TEMPLATE = 24
"""Width in pixels of the stored face template (its height follows the box's aspect)."""
SEARCH = 0.75
"""The search window reaches this many face widths (heights) beyond the predicted box on every side."""
MIN_SCORE = 0.5
"""Normalised cross-correlation below this means the face was not found."""


def _gray(img: np.ndarray, box: Box, scale: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """The box's pixels at ``scale``, greyscale. Bilinear: the template and the search region are shrunk
    the same way, and it follows faces as well as area averaging at a fifth of the cost."""
    x, y, w, h = box
    dsize = size or (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.cvtColor(cv2.resize(img[y:y + h, x:x + w], dsize, interpolation=cv2.INTER_LINEAR),
                        cv2.COLOR_BGR2GRAY)


class FaceFollower:
    """Templates of detected faces by key (track id); ``find`` locates one in a new frame."""

    def __init__(self) -> None:
        self._templates: dict[int, tuple[np.ndarray, float, int, int]] = {}

    def __repr__(self) -> str:
        return f"<FaceFollower {len(self._templates)} template(s)>"

    def __len__(self) -> int:
        return len(self._templates)

    def remember(self, key: int, img: np.ndarray, box: Box) -> None:
        x, y, w, h = _clip(box, img.shape[1], img.shape[0])
        if w < 8 or h < 8:
            self._templates.pop(key, None)
            return
        scale = TEMPLATE / w
        th = max(1, round(h * scale))
        self._templates[key] = (_gray(img, (x, y, w, h), scale, (TEMPLATE, th)), scale, w, h)

    def find(self, key: int, img: np.ndarray, predicted: Box) -> tuple[Box, float] | None:
        """The box of face ``key`` near ``predicted`` (the remembered size) and its match score, or None."""
        entry = self._templates.get(key)
        if entry is None:
            return None
        tpl, scale, w, h = entry
        H, W = img.shape[:2]
        mx, my = int(round(SEARCH * w)), int(round(SEARCH * h))
        cx, cy = predicted[0] + predicted[2] / 2.0, predicted[1] + predicted[3] / 2.0
        region = _clip((int(round(cx - w / 2.0)) - mx, int(round(cy - h / 2.0)) - my, w + 2 * mx, h + 2 * my), W, H)
        small = _gray(img, region, scale) if region[2] > 0 and region[3] > 0 else None
        if small is None or small.shape[0] < tpl.shape[0] or small.shape[1] < tpl.shape[1]:
            return None
        res = cv2.matchTemplate(small, tpl, cv2.TM_CCOEFF_NORMED)
        _, score, _, loc = cv2.minMaxLoc(res)
        if score < MIN_SCORE:
            return None
        fx, fy = region[0] + loc[0] * region[2] / small.shape[1], region[1] + loc[1] * region[3] / small.shape[0]
        return _clip((int(round(fx)), int(round(fy)), w, h), W, H), float(score)

    def keep(self, keys: set[int]) -> None:
        """Forget the templates of every key not in ``keys`` (ended tracks)."""
        for k in [k for k in self._templates if k not in keys]:
            del self._templates[k]

    def clear(self) -> None:
        self._templates.clear()


def _clip(box: Box, width: int, height: int) -> Box:
    x0, y0 = max(0, box[0]), max(0, box[1])
    x1, y1 = min(width, box[0] + box[2]), min(height, box[1] + box[3])
    return (x0, y0, max(0, x1 - x0), max(0, y1 - y0))

"""Face detection with YuNet (cv2.FaceDetectorYN), tuned to find masked faces.

OpenCV Zoo's default score threshold (0.9) misses most masked faces: a mask hides the mouth and
nose landmarks YuNet scores on. maskgate runs YuNet with a low threshold and lets the classifier's
``no_face`` class reject the extra boxes; small frames can also be searched at a second, upscaled
scale. Thresholds were chosen on the tuning half of the scenes (see reports/detector.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ModelError
from .model_store import find_yunet

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Face:
    """One detected face: integer box in frame pixels and the detector's score."""

    box: tuple[int, int, int, int]
    score: float

    @property
    def width(self) -> int:
        return self.box[2]


PHOTO_BORDER = 0.1
"""``DetectorSettings.border`` for still photos (``maskgate classify``, the build's scene evaluation,
snapshot blurring), chosen on the tuning half of the scenes (reports/detector.md)."""


@dataclass(frozen=True)
class DetectorSettings:
    score_threshold: float = 0.3
    track_threshold: float | None = None
    """With ``detect(keep_low=True)``, boxes scoring this or more are returned too (None: the same as
    ``score_threshold``); the caller keeps them only where it already follows a face."""
    nms_threshold: float = 0.3
    top_k: int = 5000
    """Candidate boxes kept, best first, before non-maximum suppression (OpenCV's default). Each face
    yields several overlapping candidates: with 50, a crowd's best faces used them all up and weaker
    ones got no box at any threshold (reports/detector.md)."""
    max_side: int = 640
    """Frames are downscaled so their longer side is at most this before detection."""
    upscale: float = 1.0
    """Also search at this scale (>1 finds small faces; 1 disables the second pass)."""
    border: float = 0.0
    """Also search the picture framed by a black border this share of its longer side wide (0: no
    such pass). YuNet misses some faces cut by the picture's edge and finds them once the picture
    has a margin: for photos, where a face at the edge counts (a door decides on faces in view)."""
    min_face: int = 0
    """Boxes narrower than this (frame pixels) are dropped."""
    face_px: int = 0
    """Downscale frames so a ``min_face``-wide face is this many pixels wide for YuNet (never
    enlarges; 0 or ``min_face`` 0: only ``max_side`` limits the size). YuNet finds faces from about
    10 px, so a door that only cares about faces of 48 px and more can search a much smaller image."""


class FaceDetector:
    """YuNet behind a one-method interface: ``detect(frame_bgr) -> list[Face]``."""

    def __init__(self, settings: DetectorSettings = DetectorSettings(),
                 model_path: str | Path | None = None, *, download: bool = True) -> None:
        self.settings = settings
        self.model_path = find_yunet(model_path, download=download)
        self._floor = (settings.score_threshold if settings.track_threshold is None
                       else min(settings.score_threshold, settings.track_threshold))
        """The lowest score YuNet returns: ``detect(keep_low=True)`` keeps boxes down to it."""
        try:
            self._net = cv2.FaceDetectorYN.create(
                str(self.model_path), "", (320, 320), self._floor,
                settings.nms_threshold, settings.top_k)
        except cv2.error as exc:
            raise ModelError(f"{self.model_path}: OpenCV cannot load the detector ({exc})") from exc
        self._size: tuple[int, int] = (320, 320)

    def __repr__(self) -> str:
        s = self.settings
        low = f" track_threshold={s.track_threshold}" if self._floor < s.score_threshold else ""
        border = f" border={s.border}" if s.border > 0 else ""
        return (f"<FaceDetector yunet threshold={s.score_threshold}{low} upscale={s.upscale}{border} "
                f"max_side={s.max_side} face_px={s.face_px}>")

    def scale_for(self, height: int, width: int, full_size: bool = False) -> float:
        """The factor a frame of this size is resized by before detection (at most 1); ``full_size``:
        only ``max_side`` limits it, not ``face_px``."""
        s = self.settings
        scale = min(1.0, s.max_side / max(height, width))
        if s.face_px > 0 and s.min_face > 0 and not full_size:
            scale = min(scale, s.face_px / s.min_face)
        return scale

    def _run(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        if (w, h) != self._size:
            self._net.setInputSize((w, h))
            self._size = (w, h)
        _, faces = self._net.detect(img)
        return faces if faces is not None else np.zeros((0, 15), np.float32)

    def detect(self, frame_bgr: np.ndarray, *, full_size: bool = False, keep_low: bool = False,
               narrowest: int | None = None) -> list[Face]:
        """Detect faces in a BGR frame; boxes are clipped integer pixels of that frame. ``full_size``:
        no ``face_px`` downscale (for a small window around one face; ``max_side`` still applies).
        ``keep_low``: also boxes scoring under ``score_threshold`` down to ``track_threshold``.
        ``narrowest``: keep boxes down to this width instead of ``min_face`` (the scale stays)."""
        s = self.settings
        narrow = s.min_face if narrowest is None else narrowest
        floor = self._floor if keep_low else s.score_threshold
        h, w = frame_bgr.shape[:2]
        scale = self.scale_for(h, w, full_size)
        # bilinear is as good as area averaging for YuNet down to half size, and a quarter of the cost
        interp = cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA
        img = frame_bgr if scale == 1.0 else cv2.resize(
            frame_bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
        rows = [(self._run(img), scale, 0)]
        if s.upscale > 1.0:
            up = cv2.resize(img, None, fx=s.upscale, fy=s.upscale, interpolation=cv2.INTER_LINEAR)
            rows.append((self._run(up), scale * s.upscale, 0))
        if s.border > 0.0:
            pad = max(1, round(s.border * max(img.shape[:2])))
            framed = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            rows.append((self._run(framed), scale, pad))
        boxes: list[list[float]] = []
        scores: list[float] = []
        for faces, sc, pad in rows:
            for f in faces:
                if not np.isfinite(f[:4]).all() or not np.isfinite(f[14]):
                    continue  # YuNet can decode a box to infinity on a small window; no face there
                if f[14] < floor:
                    continue
                boxes.append([(float(f[0]) - pad) / sc, (float(f[1]) - pad) / sc, float(f[2]) / sc, float(f[3]) / sc])
                scores.append(float(f[14]))
        if len(rows) > 1 and boxes:
            keep = cv2.dnn.NMSBoxes(boxes, scores, floor, s.nms_threshold)
            idx = [int(i) for i in np.array(keep).reshape(-1)]
        else:
            idx = list(range(len(boxes)))
        out = []
        for i in idx:
            x, y, bw, bh = boxes[i]
            x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
            x1, y1 = min(w, int(round(x + bw))), min(h, int(round(y + bh)))
            if x1 - x0 < max(2, narrow) or y1 - y0 < 2:
                continue
            out.append(Face((x0, y0, x1 - x0, y1 - y0), scores[i]))
        out.sort(key=lambda f: -f.score)
        return out

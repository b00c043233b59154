"""OpenCV's Haar cascade face detector behind the same ``detect(frame_bgr) -> list[Face]`` interface as YuNet.

A benchmark alternative (the classic choice of many mask-detector tutorials), never the product's
default: it is trained on bare frontal faces. The cascade ships with opencv-python(-headless) in
``cv2.data.haarcascades``; Debian's OpenCV keeps it in ``/usr/share/opencv4/haarcascades``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from .detector import DetectorSettings, Face
from .errors import ModelError

log = logging.getLogger(__name__)

CASCADE = "haarcascade_frontalface_default.xml"
SYSTEM_DIRS = (Path("/usr/share/opencv4/haarcascades"), Path("/usr/share/opencv/haarcascades"))


def find_cascade(name: str = CASCADE) -> Path:
    """The cascade file from the OpenCV package, else from the system's OpenCV data folder."""
    data = getattr(cv2, "data", None)
    dirs = ([Path(data.haarcascades)] if data is not None else []) + list(SYSTEM_DIRS)
    for d in dirs:
        if (d / name).is_file():
            return d / name
    raise ModelError(f"{name}: Haar cascade not found in {', '.join(str(d) for d in dirs)} "
                     "(install opencv-python-headless, or Debian's opencv-data)")


class HaarFaceDetector:
    """``cv2.CascadeClassifier.detectMultiScale`` on a grayscale frame downscaled to ``max_side``."""

    def __init__(self, settings: DetectorSettings | None = None, cascade: str | Path | None = None, *,
                 scale_factor: float = 1.1, min_neighbors: int = 5) -> None:
        self.settings = settings or DetectorSettings()
        self.path = Path(cascade) if cascade else find_cascade()
        self._cascade = cv2.CascadeClassifier(str(self.path))
        if self._cascade.empty():
            raise ModelError(f"{self.path}: OpenCV cannot load this Haar cascade")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    def __repr__(self) -> str:
        s = self.settings
        return f"<HaarFaceDetector {self.path.name} max_side={s.max_side} min_face={s.min_face}>"

    def detect(self, frame_bgr: np.ndarray, *, full_size: bool = False, keep_low: bool = False,
               narrowest: int | None = None) -> list[Face]:
        """Faces as clipped integer boxes of the frame; Haar gives no score, so each scores 1.0.
        ``full_size`` changes nothing: only ``max_side`` shrinks a Haar search (no ``face_px``); nor
        does ``keep_low`` (there are no low scores). ``narrowest``: keep boxes down to this width
        instead of ``min_face``."""
        s = self.settings
        narrow = s.min_face if narrowest is None else narrowest
        h, w = frame_bgr.shape[:2]
        scale = min(1.0, s.max_side / max(h, w))
        gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        min_side = max(20, int(narrow * scale))
        rects = self._cascade.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                               minSize=(min_side, min_side))
        out = []
        for x, y, bw, bh in rects:
            x0, y0 = max(0, round(x / scale)), max(0, round(y / scale))
            x1, y1 = min(w, round((x + bw) / scale)), min(h, round((y + bh) / scale))
            if x1 - x0 >= max(2, narrow) and y1 - y0 >= 2:
                out.append(Face((int(x0), int(y0), int(x1 - x0), int(y1 - y0)), 1.0))
        out.sort(key=lambda f: -f.box[2])
        return out

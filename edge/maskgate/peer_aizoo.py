"""The AIZOO one-stage face-mask detector, decoded as its authors do (a benchmark peer, never the product).

AIZOOTech FaceMaskDetection (MIT): 260x260x3 float RGB in 0..1; outputs SSD box regressions and
two class scores (0 = mask, 1 = no mask) over anchors on feature maps 33/17/9/5/3 with anchor sizes
(0.04, 0.056), (0.08, 0.11), (0.16, 0.22), (0.32, 0.45), (0.64, 0.72) and ratios 1, 0.62, 0.42;
variances 0.1, 0.1, 0.2, 0.2; confidence 0.5; single-class NMS at IoU 0.4 on the best class score.
The model file is read from a path the user gives (``../shared/peers/aizoo`` here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .runtime import load_interpreter

FEATURE_MAPS = (33, 17, 9, 5, 3)
ANCHOR_SIZES = ((0.04, 0.056), (0.08, 0.11), (0.16, 0.22), (0.32, 0.45), (0.64, 0.72))
ANCHOR_RATIOS = (1.0, 0.62, 0.42)
VARIANCES = np.array([0.1, 0.1, 0.2, 0.2], np.float32)
INPUT = 260
LABELS = ("with_mask", "without_mask")


def anchors() -> np.ndarray:
    """(N, 4) anchors as xmin, ymin, xmax, ymax in 0..1, in the model's output order."""
    out = []
    for fm, sizes in zip(FEATURE_MAPS, ANCHOR_SIZES, strict=True):
        c = (np.arange(fm) + 0.5) / fm
        cx, cy = np.meshgrid(c, c)
        wh = []
        for s in sizes:
            r = ANCHOR_RATIOS[0]
            wh.append((s * np.sqrt(r), s / np.sqrt(r)))
        for r in ANCHOR_RATIOS[1:]:
            wh.append((sizes[0] * np.sqrt(r), sizes[0] / np.sqrt(r)))
        boxes = np.empty((fm, fm, len(wh), 4), np.float32)
        for k, (w, h) in enumerate(wh):
            boxes[:, :, k] = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
        out.append(boxes.reshape(-1, 4))
    return np.concatenate(out)


@dataclass(frozen=True)
class PeerFace:
    box: tuple[int, int, int, int]
    label: str
    score: float


class AizooDetector:
    """Face + mask detection in one pass; ``detect(frame_bgr) -> list[PeerFace]``."""

    def __init__(self, model: str | Path, threads: int = 1, conf: float = 0.5, iou: float = 0.4) -> None:
        loaded = load_interpreter(Path(model), threads)
        self._it = loaded.interpreter
        self._in = self._it.get_input_details()[0]["index"]
        outs = self._it.get_output_details()
        self._loc = next(o["index"] for o in outs if o["shape"][-1] == 4)
        self._cls = next(o["index"] for o in outs if o["shape"][-1] == 2)
        self._anchors = anchors()
        self.conf = conf
        self.iou = iou

    def preprocess(self, frame_bgr: np.ndarray) -> np.ndarray:
        rgb = cv2.cvtColor(cv2.resize(frame_bgr, (INPUT, INPUT)), cv2.COLOR_BGR2RGB)
        return (rgb.astype(np.float32) / 255.0)[None]

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._it.set_tensor(self._in, x)
        self._it.invoke()
        return self._it.get_tensor(self._loc)[0], self._it.get_tensor(self._cls)[0]

    def decode(self, loc: np.ndarray, cls: np.ndarray, width: int, height: int) -> list[PeerFace]:
        a = self._anchors
        acx, acy = (a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2
        aw, ah = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        r = loc * VARIANCES
        cx, cy = r[:, 0] * aw + acx, r[:, 1] * ah + acy
        w, h = np.exp(r[:, 2]) * aw, np.exp(r[:, 3]) * ah
        score = cls.max(1)
        label = cls.argmax(1)
        keep = np.nonzero(score > self.conf)[0]
        if keep.size == 0:
            return []
        boxes = [[float((cx[i] - w[i] / 2) * width), float((cy[i] - h[i] / 2) * height),
                  float(w[i] * width), float(h[i] * height)] for i in keep]
        idx = cv2.dnn.NMSBoxes(boxes, [float(score[i]) for i in keep], self.conf, self.iou)
        out = []
        for j in np.array(idx).reshape(-1):
            x, y, bw, bh = boxes[int(j)]
            x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
            x1, y1 = min(width, int(round(x + bw))), min(height, int(round(y + bh)))
            if x1 > x0 and y1 > y0:
                i = keep[int(j)]
                out.append(PeerFace((x0, y0, x1 - x0, y1 - y0), LABELS[int(label[i])], float(score[i])))
        return out

    def detect(self, frame_bgr: np.ndarray) -> list[PeerFace]:
        h, w = frame_bgr.shape[:2]
        loc, cls = self.infer(self.preprocess(frame_bgr))
        return self.decode(loc, cls, w, h)

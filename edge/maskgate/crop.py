"""The one crop rule and preprocessing, shared by the build stage and the device.

A detector box (x, y, w, h) becomes a square crop centred on the face, enlarged by ``margin`` on
each side so a mask below the chin and the hairline are in view, padded by edge replication where
it leaves the frame, resized to the model's input and converted to its colour space. The model
takes raw 0..255 pixel values (it rescales internally), so training and device feed the same
numbers and the int8 input quantization is exact (scale 1, zero point -128).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class CropRule:
    """How a face box becomes a square crop."""

    margin: float = 0.15
    """Fraction of the box's longer side added on every side."""
    shift_y: float = 0.05
    """Centre moved down by this fraction of the side (masks sit low on the face)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CropRule:
        return cls(margin=float(d["margin"]), shift_y=float(d["shift_y"]))


@dataclass(frozen=True)
class InputSpec:
    """What the classifier expects: size and colour space (``rgb`` or ``gray``)."""

    height: int
    width: int
    color: str = "rgb"

    def __post_init__(self) -> None:
        if self.color not in ("rgb", "gray"):
            raise ConfigError(f"input color: must be 'rgb' or 'gray' (got {self.color!r})")

    @property
    def channels(self) -> int:
        return 3 if self.color == "rgb" else 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def square_box(box: tuple[float, float, float, float], rule: CropRule) -> tuple[int, int, int]:
    """Return (x0, y0, side) of the square crop for a detector box."""
    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * rule.margin)
    cx = x + w / 2.0
    cy = y + h / 2.0 + rule.shift_y * side
    side_i = max(int(round(side)), 2)
    return int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), side_i


def crop_face(frame_bgr: np.ndarray, box: tuple[float, float, float, float], size: int,
              rule: CropRule = CropRule()) -> np.ndarray:
    """Cut the square face crop around ``box`` from a BGR frame and resize it to ``size``."""
    x0, y0, side = square_box(box, rule)
    fh, fw = frame_bgr.shape[:2]
    x1, y1 = x0 + side, y0 + side
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, fw), min(y1, fh)
    patch: np.ndarray
    if cx1 <= cx0 or cy1 <= cy0:
        patch = np.zeros((side, side, 3), np.uint8)
    else:
        patch = frame_bgr[cy0:cy1, cx0:cx1]
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            patch = cv2.copyMakeBorder(patch, cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1,
                                       cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


def to_model_input(crop_bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Convert a BGR crop (already square) to the model's HxWxC float32 array of 0..255 values."""
    if crop_bgr.shape[:2] != (spec.height, spec.width):
        crop_bgr = cv2.resize(crop_bgr, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
    out: np.ndarray
    if spec.color == "gray":
        out = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY)[:, :, None]
    else:
        out = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2RGB)
    return out.astype(np.float32)


MIN_CHROMA = 1.0
"""A colour model's input whose channels differ by less than this on average (0..255 levels) has no
colour: a gray frame (a camera in mono or night mode, or sending gray frames by fault) converted to
BGR. The mask classifier reads masks partly by colour and misjudges gray faces (on held-out faces
made gray: masked ones called bare, wrongly worn ones masked), so such a face is not judged."""


def colourless(x: np.ndarray, spec: InputSpec) -> bool:
    """Whether ``x`` (from :func:`to_model_input`) lacks the colour a ``rgb`` model needs."""
    if spec.color != "rgb" or x.ndim != 3 or x.shape[2] != 3:
        return False
    # per-pixel max - min of the three channels; elementwise on the channel planes, since numpy's
    # reduction along a 3-long last axis took 0.3 ms a face (20x this)
    c0, c1, c2 = x[..., 0], x[..., 1], x[..., 2]
    spread = np.maximum(np.maximum(c0, c1), c2) - np.minimum(np.minimum(c0, c1), c2)
    return float(spread.mean()) < MIN_CHROMA


PICTURE_SAMPLE = (40, 30)
"""A whole frame is judged for colour and light on a copy this small (nearest pixels: microseconds)."""

DARK_LEVEL = 16
"""Mean brightness (0..255) under which a picture is too dark to see anyone (lights off, a covered lens)."""


def picture_sample(frame_bgr: np.ndarray) -> np.ndarray:
    """The tiny copy :func:`colourless_picture` and :func:`dark_picture` judge a frame on."""
    return cv2.resize(frame_bgr, PICTURE_SAMPLE, interpolation=cv2.INTER_NEAREST)


def colourless_picture(frame_bgr: np.ndarray, sample: np.ndarray | None = None) -> bool:
    """Whether a BGR frame as a whole has no colour (a camera in mono or night mode, an IR camera at
    night, gray frames converted to BGR), judged cheaply on a tiny copy: its channels differ by less
    than :data:`MIN_CHROMA` on average (|B-G| + |G-R|, at least the per-pixel max-min :func:`colourless`
    uses). A frame too dark to show colour counts as colourless too."""
    small = picture_sample(frame_bgr) if sample is None else sample
    b, g, r = cv2.split(small)
    return (cv2.norm(b, g, cv2.NORM_L1) + cv2.norm(g, r, cv2.NORM_L1)) / b.size < MIN_CHROMA


def dark_picture(frame_bgr: np.ndarray, sample: np.ndarray | None = None) -> bool:
    """Whether a BGR frame is too dark to see anyone: mean brightness under :data:`DARK_LEVEL`."""
    small = picture_sample(frame_bgr) if sample is None else sample
    return float(small.mean()) < DARK_LEVEL


def face_input(frame_bgr: np.ndarray, box: tuple[float, float, float, float], spec: InputSpec,
               rule: CropRule = CropRule()) -> np.ndarray:
    """The whole path from a frame and a box to the classifier's input (one function, everywhere)."""
    return to_model_input(crop_face(frame_bgr, box, max(spec.height, spec.width), rule), spec)

"""Reading images from disk with clear errors (used by classify, training and replay)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError

log = logging.getLogger(__name__)

MAX_PIXELS = 80_000_000
"""Images above this many pixels are decoded at reduced size (a 12,000 x 12,000 photo)."""


def read_bgr(path: str | Path) -> np.ndarray:
    """Read an image as 3-channel BGR uint8, flattening alpha onto white and gray to BGR.

    Raises ImageError naming the path for a missing, empty, non-image or undecodable file.
    Very large images are decoded at 1/2, 1/4 or 1/8 scale so memory stays bounded.
    """
    p = Path(path)
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"{p}: cannot read file ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise ImageError(f"{p}: empty file")
    flags = cv2.IMREAD_UNCHANGED
    reduced = _reduced_flag(data)
    if reduced is not None:
        flags = reduced
        log.info("%s: large image, decoding at reduced size", p)
    img = cv2.imdecode(data, flags)
    if img is None or img.size == 0:
        raise ImageError(f"{p}: not a readable image (JPEG, PNG, BMP, WebP, TIFF are supported)")
    return to_bgr(img)


def to_bgr(img: np.ndarray) -> np.ndarray:
    """Convert gray, BGRA or 16-bit images to BGR uint8."""
    if img.dtype != np.uint8:
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(float(img.max()), 1.0))
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        rgb = img[:, :, :3].astype(np.float32)
        return (rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if img.shape[2] == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return img[:, :, :3]


def _reduced_flag(data: np.ndarray) -> int | None:
    """Pick a reduced-decode flag when the header says the image is huge (JPEG/PNG only)."""
    size = _header_size(data.tobytes()[:64 * 1024])
    if size is None:
        return None
    pixels = size[0] * size[1]
    if pixels <= MAX_PIXELS:
        return None
    for factor, flag in ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4)):
        if pixels / (factor * factor) <= MAX_PIXELS:
            return flag
    return cv2.IMREAD_REDUCED_COLOR_8


def _header_size(head: bytes) -> tuple[int, int] | None:
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(head):
            if head[i] != 0xFF:
                i += 1
                continue
            marker = head[i + 1]
            seg = int.from_bytes(head[i + 2:i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2):
                h = int.from_bytes(head[i + 5:i + 7], "big")
                w = int.from_bytes(head[i + 7:i + 9], "big")
                return w, h
            i += 2 + seg
    return None

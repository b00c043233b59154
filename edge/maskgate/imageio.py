"""Reading images from disk with clear errors (used by classify, training and replay), memory bounded."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError

log = logging.getLogger(__name__)

DECODE_PIXELS = 16_000_000
"""A JPEG above this many pixels is decoded at 1/2, 1/4 or 1/8 size (libjpeg scales while decoding,
so a 12,000 x 12,000 photo never needs its full 432 MB raster)."""

MAX_PIXELS = 40_000_000
"""Other formats above this many pixels are refused: OpenCV can only decode them whole."""


@dataclass(frozen=True)
class Decoded:
    """A decoded image and how it relates to the file's own pixels."""

    image: np.ndarray
    """BGR uint8."""
    scale: float
    """Decoded pixels per original pixel (1.0, or 0.5 / 0.25 / 0.125 for a reduced decode)."""
    size: tuple[int, int]
    """The original (width, height)."""

    def to_original(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """A box in decoded pixels as integer pixels of the original image (clipped to it)."""
        if self.scale == 1.0:
            return box
        w, h = self.size
        x0, y0 = int(round(box[0] / self.scale)), int(round(box[1] / self.scale))
        x1, y1 = int(round((box[0] + box[2]) / self.scale)), int(round((box[1] + box[3]) / self.scale))
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        return x0, y0, x1 - x0, y1 - y0


def read_bgr(path: str | Path) -> np.ndarray:
    """Read an image as 3-channel BGR uint8, flattening alpha onto white and gray to BGR.

    Raises ImageError naming the path for a missing, empty, non-image, undecodable or (non-JPEG)
    oversized file. Very large JPEGs are decoded at reduced size so memory stays bounded; use
    :func:`read_image` to know the scale.
    """
    return read_image(path).image


def read_image(path: str | Path) -> Decoded:
    """Like :func:`read_bgr`, with the decode scale and the original size (to map boxes back)."""
    p = Path(path)
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"{p}: cannot read file ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise ImageError(f"{p}: empty file")
    flags = cv2.IMREAD_UNCHANGED
    header = _header(data.data)
    factor = 1
    if header is not None:
        kind, (w, h) = header
        pixels = w * h
        if kind == "jpeg" and pixels > DECODE_PIXELS:
            factor, flags = _reduction(pixels)
            flags |= cv2.IMREAD_IGNORE_ORIENTATION  # like IMREAD_UNCHANGED: the header's width is the width
            log.info("%s: %dx%d JPEG, decoding at 1/%d size", p, w, h, factor)
        elif kind != "jpeg" and pixels > MAX_PIXELS:
            raise ImageError(f"{p}: {w}x{h} {kind.upper()} is too large to decode safely (limit "
                             f"{MAX_PIXELS // 1_000_000} Mpx; a JPEG would be decoded at reduced size)")
    try:
        img = cv2.imdecode(data, flags)
    except cv2.error as exc:
        raise ImageError(f"{p}: OpenCV cannot decode it ({str(exc).strip().splitlines()[-1]})") from exc
    if img is None or img.size == 0:
        raise ImageError(f"{p}: not a readable image (JPEG, PNG, BMP, WebP, TIFF are supported)")
    bgr = to_bgr(img)
    if header is None:
        return Decoded(bgr, 1.0, (bgr.shape[1], bgr.shape[0]))
    size = header[1]
    return Decoded(bgr, bgr.shape[1] / size[0] if factor > 1 else 1.0, size)


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


def _reduction(pixels: int) -> tuple[int, int]:
    """The smallest JPEG decode reduction (and its imread flag) that fits DECODE_PIXELS."""
    for factor, flag in ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4)):
        if pixels / (factor * factor) <= DECODE_PIXELS:
            return factor, flag
    return 8, cv2.IMREAD_REDUCED_COLOR_8


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _header(buf: memoryview) -> tuple[str, tuple[int, int]] | None:
    """(format, (width, height)) from a PNG, JPEG, BMP or WebP header; None for anything else."""
    head = bytes(buf[:32])
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        if head[12:16] != b"IHDR":  # not a PNG header after all: let the decoder say so
            return None
        return "png", (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"))
    if head[:2] == b"BM" and len(head) >= 26:
        return "bmp", (abs(int.from_bytes(head[18:22], "little", signed=True)),
                       abs(int.from_bytes(head[22:26], "little", signed=True)))
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        chunk = head[12:16]
        if chunk == b"VP8X":
            return "webp", (1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little"))
        if chunk == b"VP8L":
            bits = int.from_bytes(head[21:25], "little")
            return "webp", (1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))
        if chunk == b"VP8 ":
            return "webp", (int.from_bytes(head[26:28], "little") & 0x3FFF,
                            int.from_bytes(head[28:30], "little") & 0x3FFF)
        return None
    if head[:2] == b"\xff\xd8":
        i, n = 2, len(buf)
        while i + 9 < n:
            if buf[i] != 0xFF:
                i += 1
                continue
            marker = buf[i + 1]
            if marker == 0xFF or 0xD0 <= marker <= 0xD8 or marker == 0x01:  # fill bytes and bare markers
                i += 1 if marker == 0xFF else 2
                continue
            seg = int.from_bytes(bytes(buf[i + 2:i + 4]), "big")
            if marker in _SOF:
                h = int.from_bytes(bytes(buf[i + 5:i + 7]), "big")
                w = int.from_bytes(bytes(buf[i + 7:i + 9]), "big")
                return "jpeg", (w, h)
            if marker == 0xDA:  # start of scan before any frame header: not a JPEG we understand
                return None
            i += 2 + seg
    return None

"""A stand-in for picamera2's ``Picamera2`` where there is no Pi camera, as gpiozero's ``MockFactory``
stands in for pins: it lets a laptop or CI run the gate's picamera2 source (``source.type =
"picamera2"``) on real pictures.

It takes the calls :class:`maskgate.sources.Picamera2Source` makes and answers them as picamera2 does
for a video configuration with a YUV420 ``lores`` stream (picamera2's ``Helpers.make_array``):

- ``configure`` may change the ``lores`` size, as libcamera adjusts a size it cannot deliver (odd
  sizes become even; ``adjust`` forces one), and records the stride: each row padded to a multiple
  of 64 bytes;
- ``capture_array("lores")`` waits for the next frame at the configured ``FrameRate`` and returns a
  ``uint8`` array of ``(height * 3 // 2, stride)``: the Y plane, then U and V at half the stride,
  with the padding left in (filled with noise, so a reader that forgets to cut it off shows it).

Frames come from a list of BGR pictures, resized to the stream's size and looped.
``installed(frames)`` puts it into ``sys.modules`` as ``picamera2`` for the duration of a ``with``.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import threading
import time
import types
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np

STRIDE_ALIGN = 64
"""Row alignment of the fake's YUV420 buffers (bytes)."""


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def to_yuv420(bgr: np.ndarray, stride: int, rng: np.random.Generator) -> np.ndarray:
    """A BGR picture as picamera2 returns a YUV420 stream: ``(h * 3 // 2, stride)``, rows padded with noise."""
    h, w = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).ravel()  # Y (h x w), then U and V (h/2 x w/2 each)
    out = rng.integers(0, 256, size=(h * 3 // 2, stride), dtype=np.uint8)
    out[:h, :w] = i420[: h * w].reshape(h, w)
    chroma = out[h:].reshape(-1)  # U, then V: h/2 rows each, at a row stride of stride/2
    n = (h // 2) * (w // 2)
    for k in range(2):
        plane = i420[h * w + k * n: h * w + (k + 1) * n].reshape(h // 2, w // 2)
        rows = chroma[k * (h // 2) * (stride // 2): (k + 1) * (h // 2) * (stride // 2)].reshape(h // 2, stride // 2)
        rows[:, : w // 2] = plane
    return out


class Picamera2:
    """The part of ``picamera2.Picamera2`` the gate uses; see the module docstring."""

    def __init__(self, camera_num: int = 0, *, frames: Sequence[np.ndarray],
                 adjust: tuple[int, int] | None = None, fail_start: str | None = None) -> None:
        if not frames:
            raise ValueError("the fake camera needs at least one frame")
        self.camera_num = camera_num
        self.frames = list(frames)
        self.adjust = adjust
        self.fail_start = fail_start
        self.camera_config: dict[str, Any] | None = None
        self.started = False
        self.closed = False
        self.captured = 0
        self._next = 0.0
        self._rng = np.random.default_rng(camera_num)
        self._lock = threading.Lock()

    def create_video_configuration(self, main: dict[str, Any] | None = None, lores: dict[str, Any] | None = None,
                                   controls: dict[str, Any] | None = None, buffer_count: int = 6,
                                   **_: Any) -> dict[str, Any]:
        return {"use_case": "video", "buffer_count": buffer_count,
                "main": {"format": "XBGR8888", "size": (640, 480), **(main or {})},
                "lores": None if lores is None else {"format": "YUV420", **lores},
                "controls": {"FrameRate": 30.0, **(controls or {})}}

    def configure(self, config: dict[str, Any]) -> None:
        cfg = copy.deepcopy(config)
        lores = cfg.get("lores")
        if lores is not None:
            if lores.get("format") != "YUV420":
                raise RuntimeError(f"lores stream must be YUV420 on this camera (got {lores.get('format')})")
            # libcamera adjusts what it cannot deliver: here ``adjust``, else odd sizes down to even ones
            w, h = self.adjust if self.adjust is not None else (lores["size"][0] // 2 * 2, lores["size"][1] // 2 * 2)
            lores["size"] = (w, h)
            lores["stride"] = _align(w, STRIDE_ALIGN)
            lores["framesize"] = lores["stride"] * h * 3 // 2
        self.camera_config = cfg

    def camera_configuration(self) -> dict[str, Any] | None:
        return self.camera_config

    def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(self.fail_start)
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True
        self._next = time.monotonic()

    def capture_array(self, name: str = "main") -> np.ndarray:
        if not self.started or self.camera_config is None:
            raise RuntimeError("Camera is not running")
        cfg = self.camera_config.get(name)
        if cfg is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        with self._lock:
            period = 1.0 / float(self.camera_config["controls"].get("FrameRate", 30.0))
            self._next = max(self._next + period, time.monotonic())
            wait = self._next - time.monotonic()
            img = self.frames[self.captured % len(self.frames)]
            self.captured += 1
        if wait > 0:
            time.sleep(wait)
        w, h = cfg["size"]
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA) if img.shape[:2] != (h, w) else img
        if name != "lores":
            return cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
        return to_yuv420(img, cfg["stride"], self._rng)

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.started = False
        self.closed = True


@contextlib.contextmanager
def installed(frames: Sequence[np.ndarray], **options: Any) -> Iterator[list[Picamera2]]:
    """``import picamera2`` gives this fake inside the ``with``; yields the cameras made so far."""
    made: list[Picamera2] = []

    def factory(camera_num: int = 0) -> Picamera2:
        cam = Picamera2(camera_num, frames=frames, **options)
        made.append(cam)
        return cam

    module = types.ModuleType("picamera2")
    module.Picamera2 = factory  # type: ignore[attr-defined]
    saved = sys.modules.get("picamera2")
    sys.modules["picamera2"] = module
    try:
        yield made
    finally:
        if saved is None:
            sys.modules.pop("picamera2", None)
        else:
            sys.modules["picamera2"] = saved

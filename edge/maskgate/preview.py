"""``/preview.mjpg``: the live annotated view for aiming the camera.

The frame loop only leaves a reference to its newest frame on the StatusBoard. Here, in the HTTP
thread of a viewer, that frame is annotated (``events.annotate``: boxes, verdicts, doorway region)
and JPEG-encoded, at most ``http.preview_fps`` times a second and only while someone watches.
Viewers share one encoding per frame. Nothing is written to disk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np

from .events import FrameResult, annotate
from .status import StatusBoard

log = logging.getLogger(__name__)

BOUNDARY = "maskgate-frame"
CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"


def part(jpeg: bytes) -> bytes:
    """One multipart part holding a JPEG."""
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode("ascii")
    return head + jpeg + b"\r\n"


class Preview:
    """Encodes the newest annotated frame for viewers; counts viewers and refuses more than ``max_clients``."""

    def __init__(self, board: StatusBoard, fps: float = 5.0, quality: int = 70, max_clients: int = 2) -> None:
        self.board = board
        self.fps = fps
        self.quality = quality
        self.max_clients = max_clients
        self.clients = 0
        self.encoded = 0
        """JPEG encodings done (one per frame shown, shared by all viewers)."""
        self._lock = threading.Lock()
        self._cache: tuple[FrameResult, bytes] | None = None
        self._placeholder: bytes | None = None

    def __repr__(self) -> str:
        return f"<Preview {self.clients}/{self.max_clients} viewer(s) fps<={self.fps:g} encoded={self.encoded}>"

    def join(self) -> bool:
        with self._lock:
            if self.clients >= self.max_clients:
                return False
            self.clients += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.clients = max(0, self.clients - 1)
            if self.clients == 0:
                self._cache = None  # no viewer: keep no encoded frame either

    def jpeg(self, result: FrameResult) -> bytes:
        """The annotated JPEG of ``result`` (encoded once, however many viewers)."""
        with self._lock:
            if self._cache is not None and self._cache[0] is result:
                return self._cache[1]
        assert result.image is not None
        img = annotate(result.image, result, self.board.roi())
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError(f"frame {result.frame}: JPEG encoding failed")
        data = buf.tobytes()
        with self._lock:
            self._cache = (result, data)
            self.encoded += 1
        return data

    def placeholder(self) -> bytes:
        """A grey JPEG saying no frame has arrived yet (sent while the camera is not delivering)."""
        if self._placeholder is None:
            img = np.full((240, 320, 3), 60, np.uint8)
            cv2.putText(img, "waiting for the camera", (20, 125), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (230, 230, 230), 1,
                        cv2.LINE_AA)
            self._placeholder = cv2.imencode(".jpg", img)[1].tobytes()
        return self._placeholder

    def frames(self, stopped: Callable[[], bool], *, wait: float = 0.02, keepalive: float = 2.0) -> Iterator[bytes]:
        """JPEGs of new frames, at most ``fps`` a second, until ``stopped()``. While no new frame comes
        (camera fault), the last one is repeated every ``keepalive`` seconds so a viewer that left is
        noticed (the write fails) and its slot freed."""
        interval = 1.0 / self.fps
        sent: FrameResult | None = None
        next_at = last_at = time.monotonic()
        while not stopped():
            now = time.monotonic()
            if next_at > now:
                time.sleep(min(next_at - now, 0.25))
                continue
            result = self.board.latest_image()
            if result is None and now - last_at >= keepalive:
                last_at = now
                yield self.placeholder()
                continue
            if result is None or (result is sent and now - last_at < keepalive):
                time.sleep(wait)
                continue
            sent = result
            last_at, next_at = now, now + interval
            yield self.jpeg(result)

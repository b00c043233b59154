"""Frame sources behind one small interface: ``open()``, ``read() -> Frame | None``, ``close()``.

``read`` returns the newest frame (``None`` at the end of a finite source), raises ``FrameError``
for one unreadable frame (the caller skips it) and ``SourceError`` when the source itself failed.
Every frame carries its own timestamp: live sources stamp capture time on the monotonic clock,
replayed and synthetic sources stamp ``index / fps``, so decisions follow frame time and a replay
may run faster than real time. Stale frames (a newer one arrived before the loop asked) are
dropped and counted in ``dropped``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from .config import SourceSettings
from .errors import FrameError, ImageError, SourceError
from .imageio import read_bgr, to_bgr

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class TruthFace:
    """Ground truth of a synthetic frame: who is where, wearing what."""

    person: int
    label: str
    box: tuple[int, int, int, int]
    visible: float = 1.0
    """The share of the head left in sight by the people drawn in front of it (a synthetic door draws
    nearer, larger people over farther ones); the frame's edge does not count here (see ``box``)."""


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    ts: float
    """Seconds on the source's clock (frame time); decisions use this, never the wall clock."""
    index: int
    truth: tuple[TruthFace, ...] | None = None
    name: str = ""
    wall: float | None = None
    """Wall-clock time (epoch seconds) of the frame; the schedule and event timestamps use it.
    Replayed frames get the open time plus ``ts``."""


class FrameSource(Protocol):
    @property
    def dropped(self) -> int: ...

    @property
    def live(self) -> bool: ...

    # Sources whose frames may differ in size from one to the next (a folder of photos) also have a
    # true ``mixed_sizes`` attribute; for the others a frame of another size is a torn buffer.

    def open(self) -> None: ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


def orient(image: np.ndarray, rotation: int, flip: str) -> np.ndarray:
    """Rotate clockwise by ``rotation`` degrees, then mirror."""
    if rotation == 90:
        image = cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    elif rotation == 180:
        image = cv2.rotate(image, cv2.ROTATE_180)
    elif rotation == 270:
        image = cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    code = {"horizontal": 1, "vertical": 0, "both": -1}.get(flip)
    return image if code is None else cv2.flip(image, code)


class Pacer:
    """Plays frame indices at ``fps``: in real time (skipping to the newest index and counting the
    skipped ones as dropped) or as fast as the consumer asks."""

    def __init__(self, fps: float, realtime: bool, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.fps = fps
        self.realtime = realtime
        self._clock = clock
        self._sleep = sleep
        self._t0: float | None = None
        self._next = 0

    def next_index(self) -> tuple[int, int]:
        """Return (index to deliver, number of stale indices skipped)."""
        if not self.realtime:
            i = self._next
            self._next += 1
            return i, 0
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
        target = self._t0 + self._next / self.fps
        if now < target:
            self._sleep(target - now)
            due = self._next
        else:
            due = max(self._next, int((now - self._t0) * self.fps))
        skipped = due - self._next
        self._next = due + 1
        return due, skipped


class FrameList:
    """Frames already in memory, read once in order as fast as the loop asks (benchmarks: capture
    costs a list lookup)."""

    live = False
    mixed_sizes = True

    def __init__(self, frames: Sequence[Frame]) -> None:
        self.frames = frames
        self.i = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<FrameList {self.i}/{len(self.frames)} frames>"

    def open(self) -> None:
        self.i = 0

    def read(self) -> Frame | None:
        if self.i >= len(self.frames):
            return None
        self.i += 1
        return self.frames[self.i - 1]

    def close(self) -> None:
        pass


class ReplaySource:
    """A folder of images (each held for ``hold`` frames, ``gap`` blank frames between) or a list
    of image paths, played at ``fps``."""

    live = False
    mixed_sizes = True

    def __init__(self, images: Path | Sequence[Path], fps: float = 10.0, *, hold: int = 1, gap: int = 0,
                 loop: bool = False, realtime: bool = True, start_wall: float | None = None) -> None:
        self.spec = images
        self.start_wall = start_wall
        self.fps = fps
        self.hold = max(1, hold)
        self.gap = max(0, gap)
        self.loop = loop
        self.realtime = realtime
        self.dropped = 0
        self._paths: list[Path] = []
        self._pacer = Pacer(fps, realtime)
        self._cache: tuple[Path, np.ndarray] | None = None
        self._blank: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"<ReplaySource {len(self._paths)} images fps={self.fps} hold={self.hold} dropped={self.dropped}>"

    def open(self) -> None:
        if isinstance(self.spec, Path | str):
            p = Path(self.spec)
            if not p.is_dir():
                raise SourceError(f"{p}: replay source is not a folder")
            self._paths = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        else:
            self._paths = [Path(q) for q in self.spec]
        if not self._paths:
            raise SourceError(f"{self.spec}: no images to replay")
        self._pacer = Pacer(self.fps, self.realtime)
        self.start_wall = time.time() if self.start_wall is None else self.start_wall
        log.info("replaying %d image(s) at %.1f fps, hold %d", len(self._paths), self.fps, self.hold)

    def read(self) -> Frame | None:
        i, skipped = self._pacer.next_index()
        self.dropped += skipped
        per = self.hold + self.gap
        total = per * len(self._paths)
        k = i % total if self.loop else i
        if k >= total:
            return None
        path = self._paths[k // per]
        ts = i / self.fps
        if k % per >= self.hold:
            return Frame(self._blank_like(path), ts, i, name="(gap)", wall=self._wall(ts))
        if self._cache is None or self._cache[0] != path:
            try:
                img = read_bgr(path)
            except ImageError as exc:
                raise FrameError(f"frame {i}: {exc}") from exc
            self._cache = (path, img)
        return Frame(self._cache[1], ts, i, name=path.name, wall=self._wall(ts))

    def _wall(self, ts: float) -> float:
        return (self.start_wall or 0.0) + ts

    def _blank_like(self, path: Path) -> np.ndarray:
        shape = self._cache[1].shape if self._cache else (480, 640, 3)
        if self._blank is None or self._blank.shape != shape:
            self._blank = np.full(shape, 96, np.uint8)
        return self._blank

    def close(self) -> None:
        self._cache = None


class VideoFileSource:
    """A video file replayed at ``fps`` (frame time ``index / fps``)."""

    live = False

    def __init__(self, path: Path, fps: float = 10.0, *, loop: bool = False, realtime: bool = True,
                 start_wall: float | None = None) -> None:
        self.path = Path(path)
        self.start_wall = start_wall
        self.fps = fps
        self.loop = loop
        self.realtime = realtime
        self.dropped = 0
        self._cap: Any = None
        self._pos = 0
        self._offset = 0
        self._pacer = Pacer(fps, realtime)

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"{self.path}: video file not found")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise SourceError(f"{self.path}: OpenCV cannot open this video")
        self._cap, self._pos, self._offset = cap, 0, 0
        self.start_wall = time.time() if self.start_wall is None else self.start_wall
        self._pacer = Pacer(self.fps, self.realtime)

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.path}: not open")
        i, skipped = self._pacer.next_index()
        self.dropped += skipped
        for _ in range(2):
            want = i - self._offset
            while self._pos < want and self._cap.grab():
                self._pos += 1
            if self._pos == want:
                ok, img = self._cap.read()
                if ok and img is not None:
                    self._pos += 1
                    return Frame(to_bgr(img), i / self.fps, i, name=self.path.name,
                                 wall=(self.start_wall or 0.0) + i / self.fps)
            if not self.loop or self._pos == 0:
                return None
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._pos, self._offset = 0, i
        return None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class LatestFrame:
    """A one-slot mailbox between a capture thread and the loop; overwritten frames count as dropped."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._error: BaseException | None = None
        self.dropped = 0
        self.captured = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self.captured += 1
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            self._error = exc
            self._cond.notify_all()

    def take(self, timeout: float) -> Frame:
        with self._cond:
            if not self._cond.wait_for(lambda: self._frame is not None or self._error is not None, timeout):
                raise SourceError(f"no frame for {timeout:.1f} s")
            if self._frame is not None:
                f, self._frame = self._frame, None
                return f
            assert self._error is not None
            exc, self._error = self._error, None
            if isinstance(exc, SourceError):
                raise exc
            raise SourceError(str(exc)) from exc


class ThreadedCapture:
    """Base of live sources: a daemon thread grabs frames into a ``LatestFrame`` slot.

    ``read`` waits at most ``frame_timeout`` for a frame, so a camera whose driver hangs in a read
    becomes a ``SourceError`` for the loop. Each ``open`` starts a capture thread with its own slot
    and stop flag, so a thread that wakes up after it was given up on cannot feed the next one. A
    thread still stuck ``join_timeout`` seconds after ``close`` is abandoned (counted in
    ``abandoned``) and its device handle is not released under it.
    """

    live = True
    name = "camera"
    join_timeout = 2.0

    def __init__(self, frame_timeout: float = 5.0) -> None:
        self.frame_timeout = frame_timeout
        self._slot = LatestFrame()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._index = 0
        self._dropped_before = 0
        self.abandoned = 0
        """Capture threads given up on while stuck in a read (each holds its device handle)."""

    @property
    def dropped(self) -> int:
        return self._dropped_before + self._slot.dropped

    def _start(self, handle: Any) -> None:
        """Start a capture thread reading from ``handle`` (the device object this open created)."""
        self._dropped_before += self._slot.dropped
        self._slot, self._stop = LatestFrame(), threading.Event()
        self._thread = threading.Thread(target=self._run, args=(handle, self._slot, self._stop),
                                        name=f"capture-{self.name}", daemon=True)
        self._thread.start()

    def _run(self, handle: Any, slot: LatestFrame, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                img = self._grab(handle)
                if stop.is_set():
                    break
                slot.put(Frame(img, time.monotonic(), self._index, wall=time.time()))
                self._index += 1
        except Exception as exc:  # any capture failure becomes a SourceError for the loop
            if not stop.is_set():
                log.warning("%s capture stopped: %s", self.name, exc)
                slot.fail(exc)

    def _grab(self, handle: Any) -> np.ndarray:
        raise NotImplementedError

    def read(self) -> Frame | None:
        return self._slot.take(self.frame_timeout)

    def _join(self) -> bool:
        """Stop the capture thread; False when it is stuck in a read (then keep its handle alive)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout=self.join_timeout)
        if thread.is_alive():
            self.abandoned += 1
            log.error("%s: a camera read has not returned for %.1f s; abandoning that capture thread and its "
                      "device handle (%d so far)", self.name, self.join_timeout, self.abandoned)
            return False
        return True


class OpenCVSource(ThreadedCapture):
    """A camera index, RTSP/HTTP stream or device path through ``cv2.VideoCapture``."""

    name = "opencv"

    def __init__(self, device: str | int, width: int = 640, height: int = 480, fps: float = 10.0,
                 frame_timeout: float = 5.0) -> None:
        super().__init__(frame_timeout)
        self.device = int(device) if isinstance(device, str) and device.isdigit() else device
        self.width, self.height, self.fps = width, height, fps
        self._cap: Any = None

    def __repr__(self) -> str:
        return f"<OpenCVSource {self.device!r} dropped={self.dropped}>"

    def open(self) -> None:
        if isinstance(self.device, str) and "://" in self.device:
            # A network camera through FFmpeg with bounded waits: without them an unreachable URL
            # blocks open() for 30 s and a stalled stream blocks read() as long.
            ms = int(self.frame_timeout * 1000)
            cap = cv2.VideoCapture(self.device, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2 * ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        else:
            cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            raise SourceError(f"{self.device!r}: OpenCV cannot open this camera or stream")
        if isinstance(self.device, int):
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap
        self._start(cap)

    def _grab(self, handle: Any) -> np.ndarray:
        ok, img = handle.read()
        if not ok or img is None:
            raise SourceError(f"{self.device!r}: stream ended or camera stopped delivering frames")
        return to_bgr(img)

    def close(self) -> None:
        released = self._join()
        if self._cap is not None:
            if released:
                self._cap.release()
            self._cap = None


class Picamera2Source(ThreadedCapture):
    """The Raspberry Pi camera via picamera2 (imported here only), inference on its low-res stream."""

    name = "picamera2"

    def __init__(self, width: int = 640, height: int = 480, fps: float = 10.0, frame_timeout: float = 5.0) -> None:
        super().__init__(frame_timeout)
        self.width, self.height, self.fps = width, height, fps
        self._cam: Any = None
        self._size = (width, height)

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError("picamera2 is not installed (on Raspberry Pi OS: "
                              "`sudo apt install python3-picamera2`, and create the venv with "
                              "--system-site-packages)") from exc
        try:
            cam = Picamera2()
            cfg = cam.create_video_configuration(
                main={"size": (max(self.width, 1280), max(self.height, 720))},
                lores={"size": (self.width, self.height), "format": "YUV420"},
                controls={"FrameRate": float(self.fps)}, buffer_count=2)
            cam.configure(cfg)
            # libcamera may deliver another size than asked for (it adjusts what the sensor and ISP
            # cannot do); the frames are cut to the size it chose
            w, h = (int(v) for v in cam.camera_configuration()["lores"]["size"])
            cam.start()
        except Exception as exc:  # libcamera raises many kinds
            raise SourceError(f"picamera2: cannot start the camera ({exc})") from exc
        if (w, h) != (self.width, self.height):
            log.warning("picamera2: the camera gives %dx%d frames (source.width x source.height asks for %dx%d)",
                        w, h, self.width, self.height)
        self._size = (w, h)
        self._cam = cam
        self._start(cam)

    def _grab(self, handle: Any) -> np.ndarray:
        # picamera2 returns a YUV420 stream as (height * 3 / 2, stride) bytes: rows padded to the
        # stride, which OpenCV converts as wider pictures; the padding is cut off after
        yuv = handle.capture_array("lores")
        bgr = cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)
        return bgr[:, : self._size[0]]

    def close(self) -> None:
        released = self._join()
        if self._cam is not None:
            try:
                if released:
                    self._cam.stop()
                    self._cam.close()
            finally:
                self._cam = None


VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mjpeg", ".h264"}


def make_source(s: SourceSettings, *, realtime: bool = True, visits: int | None = None) -> FrameSource:
    """Build the configured source (not yet opened)."""
    if s.type == "picamera2":
        return Picamera2Source(s.width, s.height, s.fps, s.frame_timeout)
    if s.type == "opencv":
        if s.device == "":
            raise SourceError("source.device: an opencv source needs a device index, file or URL")
        return OpenCVSource(s.device, s.width, s.height, s.fps, s.frame_timeout)
    if s.type == "synthetic":
        from .synthetic import SyntheticDoor
        if not s.faces.strip():
            raise SourceError("source.faces: the synthetic door needs a folder of face crops with with_mask/, "
                              "without_mask/ and incorrect_mask/ subfolders (got '', the default): pass "
                              "`--faces DIR` (for example ../shared/data/faces) or set source.faces")
        return SyntheticDoor(s.faces, s.width, s.height, s.fps, people=s.people, seed=s.seed,
                             visits=visits, loop=s.loop, realtime=realtime)
    p = Path(s.device)
    if p.is_dir():
        return ReplaySource(p, s.fps, hold=s.hold, loop=s.loop, realtime=realtime)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return ReplaySource([p], s.fps, hold=s.hold, loop=s.loop, realtime=realtime)
    return VideoFileSource(p, s.fps, loop=s.loop, realtime=realtime)


def source_settings_for(spec: str, base: SourceSettings) -> SourceSettings:
    """Settings for a ``--source`` argument: ``synthetic``, a camera index, a URL, or a path."""
    import dataclasses
    if spec == "synthetic":
        return dataclasses.replace(base, type="synthetic")
    if spec.isdigit() or "://" in spec:
        return dataclasses.replace(base, type="opencv", device=spec)
    p = Path(spec)
    if p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES or p.suffix.lower() in VIDEO_SUFFIXES or p.exists():
        return dataclasses.replace(base, type="replay", device=spec)
    raise SourceError(f"{spec}: no such file or folder (use a path, a camera index, a URL or 'synthetic')")

"""Fault injection that ships with maskgate, through the same seams the product uses.

Tests, ``maskgate`` fault drills and ``benchmarks/soak.py`` break the gate here, never by patching
its internals:

- **camera** (frame sources): fails to open, disconnects mid-stream, hangs in a read, delivers
  empty, truncated, wrong-size, grayscale, garbage or undecodable frames, then comes back.
  :class:`FaultySource` wraps any source synchronously; :class:`FaultyCamera` is a live camera with
  a real capture thread (the product's ``ThreadedCapture``), so a hang really hangs a thread and
  the product's own frame timeout must catch it; :class:`SimCamera` is a live camera on a
  :class:`VirtualClock` for soaks that run faster than real time.
- **models**: :func:`broken_bundle` writes a missing, truncated, corrupt, mismatched-manifest or
  wrong-input-shape bundle; :class:`FaultyDetector` and :class:`FaultyClassifier` wrap the real
  adapters and raise, hang, or take 10x longer.
- **outputs** (gpiozero pin factories): :class:`FaultyPinFactory` makes pin writes raise (a busy
  pin); :class:`JournalFactory` (pin factory name ``journal``) appends every pin write with its
  time to the file in ``$MASKGATE_PIN_JOURNAL``, a pin backend that outlives the process, so a test
  can see what the relay did around a SIGKILL and a restart.
- **when**: an :class:`Injector` holds the faults active now, switched by a test or following a
  seeded schedule from :func:`random_schedule`; every faulty part asks it on each call.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gpiozero.pins.mock import MockFactory, MockPin

from .bundle import MANIFEST, load_bundle
from .config import DEFAULT_PINS
from .errors import FrameError, SourceError
from .model_store import sha256_file
from .sources import Frame, ThreadedCapture

log = logging.getLogger(__name__)

BAD_FRAME_KINDS = ("empty", "truncated", "wrong_size", "grayscale", "garbage", "corrupt")
"""What a broken camera frame can look like; ``corrupt`` is one the source cannot decode (FrameError)."""

BUNDLE_FAULTS = ("missing", "truncated", "corrupt", "wrong_manifest", "wrong_shape")

SOAK_FAULTS: dict[str, tuple[float, float]] = {
    "camera_down": (0.5, 30.0),
    "camera_hang": (1.0, 15.0),
    "bad_frame": (0.1, 2.0),
    "detect_error": (0.1, 3.0),
    "inference_error": (0.1, 3.0),
    "detect_slow": (2.0, 20.0),
    "inference_slow": (2.0, 20.0),
    "gpio_busy": (1.0, 30.0),
}
"""Fault kinds a soak draws from, with the range of their durations in seconds of frame time."""

JOURNAL_ENV = "MASKGATE_PIN_JOURNAL"


def bad_frame(kind: str, image: np.ndarray, rng: np.random.Generator | None = None, index: int = 0) -> np.ndarray:
    """A broken version of ``image`` as a camera might deliver it; ``corrupt`` raises FrameError."""
    rng = rng or np.random.default_rng(index)
    h, w = image.shape[:2]
    if kind == "empty":
        return np.zeros((0, 0, 3), np.uint8)
    if kind == "truncated":  # a partial buffer: only the top rows arrived
        return image[: max(1, h // 3)].copy()
    if kind == "wrong_size":
        return np.ascontiguousarray(np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)[: h + h // 2, : w + w // 3])
    if kind == "grayscale":
        return np.ascontiguousarray(image.mean(axis=2).astype(np.uint8)) if image.ndim == 3 else image.copy()
    if kind == "garbage":
        return rng.integers(0, 256, image.shape, dtype=np.uint8)
    if kind == "corrupt":
        raise FrameError(f"frame {index}: injected undecodable frame")
    raise ValueError(f"unknown bad frame kind {kind!r}; expected one of {', '.join(BAD_FRAME_KINDS)}")


class VirtualClock:
    """Seconds that pass only when someone waits: soaks run faster than real time, in frame time."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def __repr__(self) -> str:
        return f"<VirtualClock {self.now:.3f} s>"

    def advance_to(self, t: float) -> None:
        self.now = max(self.now, t)

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)

    def wait(self, seconds: float) -> bool:
        """Like ``Event.wait`` that nobody sets: time passes, returns False."""
        self.sleep(seconds)
        return False


@dataclass(frozen=True)
class ScheduledFault:
    kind: str
    start: float
    end: float
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def covers(self, start: float, end: float) -> bool:
        return self.start <= start and end <= self.end

    def overlaps(self, start: float, end: float) -> bool:
        return self.start < end and start < self.end


def random_schedule(seed: int, duration: float, every: float = 30.0,
                    kinds: Mapping[str, tuple[float, float]] | None = None,
                    pins: Sequence[str] = ("green", "red", "buzzer", "relay")) -> list[ScheduledFault]:
    """Faults at random (seeded): on average one starts every ``every`` seconds, kinds drawn evenly."""
    kinds = SOAK_FAULTS if kinds is None else kinds
    names = sorted(kinds)
    rng = np.random.default_rng(seed)
    out: list[ScheduledFault] = []
    t = float(rng.exponential(every))
    while t < duration:
        kind = names[int(rng.integers(len(names)))]
        lo, hi = kinds[kind]
        params: dict[str, Any] = {}
        if kind == "bad_frame":
            params["kind"] = BAD_FRAME_KINDS[int(rng.integers(len(BAD_FRAME_KINDS)))]
        elif kind in ("detect_slow", "inference_slow"):
            params["factor"] = 10.0
        elif kind == "gpio_busy":
            params["pin"] = pins[int(rng.integers(len(pins)))]
            if params["pin"] == "relay":
                params["level"] = 1  # a busy relay pin refuses to energize; the door stays locked
        out.append(ScheduledFault(kind, t, t + float(rng.uniform(lo, hi)), params))
        t += float(rng.exponential(every))
    return out


class Injector:
    """The faults active now: switched on and off by hand (``start``/``stop``) or following a
    schedule on ``clock``. Thread-safe; ``hits`` counts the calls each fault kind affected."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 schedule: Iterable[ScheduledFault] = ()) -> None:
        self.clock = clock
        self.schedule = sorted(schedule, key=lambda f: f.start)
        self.hits: Counter[str] = Counter()
        self._manual: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._next = 0
        self._active: list[ScheduledFault] = []
        self._t = float("-inf")

    def __repr__(self) -> str:
        return f"<Injector active={sorted(self.active_kinds())} hits={dict(self.hits)}>"

    def start(self, fault: str, /, **params: Any) -> None:
        """Switch ``fault`` on with its parameters (``count=n``: only for its next n hits)."""
        with self._cond:
            self._manual[fault] = dict(params)
            self._cond.notify_all()

    def stop(self, kind: str) -> None:
        """Switch ``kind`` off; anything hanging on it returns."""
        with self._cond:
            self._manual.pop(kind, None)
            self._cond.notify_all()

    def _scheduled(self) -> list[ScheduledFault]:
        now = self.clock()
        if now < self._t:  # the clock went back (a new run on a fresh clock): start over
            self._next, self._active = 0, []
        self._t = now
        while self._next < len(self.schedule) and self.schedule[self._next].start <= now:
            self._active.append(self.schedule[self._next])
            self._next += 1
        self._active = [f for f in self._active if f.end > now]
        return self._active

    def window(self, kind: str) -> ScheduledFault | None:
        """The scheduled fault of ``kind`` active now, if any."""
        with self._cond:
            return next((f for f in self._scheduled() if f.kind == kind), None)

    def active(self, kind: str) -> dict[str, Any] | None:
        """The parameters of ``kind`` if it is active now, else None (does not count a hit)."""
        with self._cond:
            if kind in self._manual:
                return self._manual[kind]
            f = next((f for f in self._scheduled() if f.kind == kind), None)
            return None if f is None else f.params

    def active_kinds(self) -> set[str]:
        with self._cond:
            return set(self._manual) | {f.kind for f in self._scheduled()}

    def take(self, kind: str) -> dict[str, Any] | None:
        """Like :meth:`active`, and counts a hit when the fault is on (a ``count`` runs down)."""
        with self._cond:
            params = self.active(kind)
            if params is None:
                return None
            self.hits[kind] += 1
            if "count" in params:
                params["count"] -= 1
                if params["count"] <= 0:
                    self._manual.pop(kind, None)
            return params

    def wait_while(self, kind: str, timeout: float | None = None) -> bool:
        """Block while ``kind`` is switched on by hand (a hang); True when it was released."""
        with self._cond:
            return self._cond.wait_for(lambda: kind not in self._manual, timeout)


# -- camera --------------------------------------------------------------------------------------
class FaultySource:
    """Wraps any frame source (synchronously): undecodable frames at given indices (``corrupt``),
    a failure for good from ``fail_at``, broken frames by index (``bad``), and whatever the
    ``injector`` switches on: ``camera_down`` (open and read fail), ``camera_hang`` (read blocks
    until released), ``bad_frame`` (``kind=...``). ``live`` overrides the inner source's."""

    def __init__(self, inner: Any, corrupt: Iterable[int] = (), fail_at: int | None = None, *,
                 bad: Mapping[int, str] | None = None, injector: Injector | None = None,
                 live: bool | None = None) -> None:
        self.inner = inner
        self.corrupt = set(corrupt)
        self.fail_at = fail_at
        self.bad = dict(bad or {})
        self.injector = injector
        self._live = live
        self._rng = np.random.default_rng(0)

    def __repr__(self) -> str:
        return f"<FaultySource {self.inner!r} {self.injector!r}>"

    @property
    def live(self) -> bool:
        return bool(self.inner.live) if self._live is None else self._live

    @property
    def dropped(self) -> int:
        return int(self.inner.dropped)

    @property
    def mixed_sizes(self) -> bool:
        return bool(getattr(self.inner, "mixed_sizes", False))

    def open(self) -> None:
        if self.injector is not None and self.injector.take("camera_down") is not None:
            raise SourceError("injected: camera not found")
        self.inner.open()

    def read(self) -> Frame | None:
        inj = self.injector
        if inj is not None:
            if inj.take("camera_down") is not None:
                raise SourceError("injected: camera disconnected")
            if inj.take("camera_hang") is not None:
                inj.wait_while("camera_hang")
        frame = self.inner.read()
        if frame is None:
            return None
        if self.fail_at is not None and frame.index >= self.fail_at:
            raise SourceError(f"injected source failure at frame {frame.index}")
        if frame.index in self.corrupt:
            raise FrameError(f"frame {frame.index}: injected corrupt frame")
        kind = self.bad.get(frame.index)
        if kind is None and inj is not None and (p := inj.take("bad_frame")) is not None:
            kind = str(p.get("kind", "garbage"))
        if kind is not None:
            frame = Frame(bad_frame(kind, frame.image, self._rng, frame.index), frame.ts, frame.index,
                          frame.truth, frame.name, frame.wall)
        return frame

    def close(self) -> None:
        self.inner.close()


def _image_of(rendered: Frame | np.ndarray | None) -> np.ndarray:
    if rendered is None:
        raise SourceError("the simulated camera's scene ended")
    return rendered.image if isinstance(rendered, Frame) else rendered


class FaultyCamera(ThreadedCapture):
    """A live camera with a real capture thread, paced at ``fps`` in real time, whose scene comes
    from ``render(index)`` (e.g. ``SyntheticDoor.frame``; the index follows the wall clock, so
    people keep walking while the camera is away). The injector's ``camera_down`` makes open fail
    and the running capture raise; ``camera_hang`` blocks the capture thread inside a read until
    stopped (only the product's frame timeout notices); ``bad_frame`` delivers broken frames
    (``corrupt`` arrives as garbage: a camera hands over pixels, not files)."""

    name = "faulty-camera"

    def __init__(self, render: Callable[[int], Frame | np.ndarray | None], fps: float = 10.0, *,
                 injector: Injector | None = None, frame_timeout: float = 5.0, join_timeout: float = 0.5) -> None:
        super().__init__(frame_timeout)
        self.render = render
        self.fps = fps
        self.injector = injector or Injector()
        self.join_timeout = join_timeout
        self.opens = 0
        self.open_attempts: list[float] = []
        """Monotonic time of every open() call."""
        self.delivered = 0
        self.first_frame_after_open: float | None = None
        """Monotonic time the latest open's first frame was captured."""
        self._t0: float | None = None
        self._rng = np.random.default_rng(0)

    def __repr__(self) -> str:
        return f"<FaultyCamera fps={self.fps} opens={self.opens} delivered={self.delivered} {self.injector!r}>"

    def open(self) -> None:
        self.open_attempts.append(time.monotonic())
        if self.injector.take("camera_down") is not None:
            raise SourceError("injected: camera not found")
        if self._t0 is None:
            self._t0 = time.monotonic()
        self.opens += 1
        self.first_frame_after_open = None
        self._start({"open": self.opens, "next": time.monotonic()})

    def _grab(self, handle: Any) -> np.ndarray:
        wait = handle["next"] - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        handle["next"] = max(handle["next"] + 1.0 / self.fps, time.monotonic())
        inj = self.injector
        if inj.take("camera_hang") is not None:
            inj.wait_while("camera_hang")  # stuck in the driver, deaf to close()
        if inj.take("camera_down") is not None:
            raise SourceError("injected: camera disconnected")
        assert self._t0 is not None
        index = int((time.monotonic() - self._t0) * self.fps)
        img = _image_of(self.render(index))
        if (p := inj.take("bad_frame")) is not None:
            kind = str(p.get("kind", "garbage"))
            img = bad_frame("garbage" if kind == "corrupt" else kind, img, self._rng, index)
        self.delivered += 1
        if self.first_frame_after_open is None:
            self.first_frame_after_open = time.monotonic()
        return img

    def close(self) -> None:
        self._join()


class SimCamera:
    """A live camera on a :class:`VirtualClock`: frame ``i`` is captured at ``i / fps`` of virtual
    time and ``render(i)`` gives its scene. ``read`` returns the newest frame, counting the ones
    the loop was too slow for as dropped. Scheduled ``camera_down`` windows make reads and opens
    fail; during a ``camera_hang`` window no frame arrives, and a read that would wait longer than
    ``frame_timeout`` fails after that long, as a live capture's slot does."""

    live = True

    def __init__(self, render: Callable[[int], Frame | None], clock: VirtualClock, fps: float = 10.0, *,
                 injector: Injector | None = None, frame_timeout: float = 5.0, start_wall: float = 0.0) -> None:
        self.render = render
        self.clock = clock
        self.fps = fps
        self.injector = injector or Injector(clock)
        self.frame_timeout = frame_timeout
        self.start_wall = start_wall
        self.dropped = 0
        self.opens = 0
        self.last: Frame | None = None
        """The last frame read, with its ground truth."""
        self._open = False
        self._next = 0
        self._rng = np.random.default_rng(0)

    def __repr__(self) -> str:
        return f"<SimCamera fps={self.fps} t={self.clock.now:.1f}s next={self._next} dropped={self.dropped}>"

    def open(self) -> None:
        if self.injector.take("camera_down") is not None:
            raise SourceError("injected: camera not found")
        self._open = True
        self.opens += 1

    def read(self) -> Frame | None:
        if not self._open:
            raise SourceError("camera not open")
        start = self.clock.now
        i = max(self._next, int(start * self.fps + 1e-9))
        self.clock.advance_to(i / self.fps)
        inj = self.injector
        if inj.take("camera_down") is not None:
            self._open = False
            raise SourceError("injected: camera disconnected")
        hang = inj.window("camera_hang")
        if hang is not None:
            inj.hits["camera_hang"] += 1
            if hang.end - start > self.frame_timeout:
                self.clock.advance_to(start + self.frame_timeout)
                raise SourceError(f"no frame for {self.frame_timeout:.1f} s")
            i = math.ceil(hang.end * self.fps - 1e-9)
            self.clock.advance_to(i / self.fps)
        self.dropped += i - self._next
        self._next = i + 1
        frame = self.render(i)
        if frame is None:
            return None
        img = frame.image
        if (p := inj.take("bad_frame")) is not None:
            img = bad_frame(str(p.get("kind", "garbage")), img, self._rng, i)
        ts = i / self.fps
        self.last = Frame(img, ts, i, frame.truth, frame.name, self.start_wall + ts)
        return self.last

    def close(self) -> None:
        self._open = False


class MjpegCamera:
    """A network camera: an HTTP server streaming ``render(index)`` as MJPEG at ``fps`` (what many
    IP cameras serve), for the product's real OpenCV/FFmpeg client. ``unplug()`` drops every
    connection and stops listening; ``plug()`` listens again on the same port."""

    def __init__(self, render: Callable[[int], Frame | np.ndarray | None], fps: float = 10.0,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.render = render
        self.fps = fps
        self.host = host
        self.port = port
        self.served = 0
        self._server: Any = None
        self._alive = threading.Event()
        self._t0 = time.monotonic()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/stream.mjpg"

    def __repr__(self) -> str:
        return f"<MjpegCamera {self.url} {'up' if self._server else 'unplugged'} served={self.served}>"

    def plug(self) -> MjpegCamera:
        import http.server

        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                import cv2

                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                next_t = time.monotonic()
                try:
                    while camera._alive.is_set():
                        index = int((time.monotonic() - camera._t0) * camera.fps)
                        ok, buf = cv2.imencode(".jpg", _image_of(camera.render(index)))
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(buf) + buf.tobytes() + b"\r\n")
                        camera.served += 1
                        next_t += 1.0 / camera.fps
                        camera._alive.wait(max(0.0, next_t - time.monotonic()))
                except OSError:
                    pass

        server = http.server.ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._alive.set()
        threading.Thread(target=server.serve_forever, name="mjpeg-camera", daemon=True).start()
        self._server = server
        return self

    def unplug(self) -> None:
        self._alive.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# -- models --------------------------------------------------------------------------------------
class _FaultyStage:
    """Shared by the detector and classifier wrappers: everything not overridden goes to ``inner``."""

    stage = "stage"

    def __init__(self, inner: Any, injector: Injector, *, sleep: Callable[[float], None] = time.sleep,
                 slow_base: float | None = None) -> None:
        self.inner = inner
        self.injector = injector
        self.sleep = sleep
        self.slow_base = slow_base
        """Seconds one call normally takes, for the 10x-slower fault (default: measure the call)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.inner!r}>"

    def _call(self, fn: Callable[[], Any], prefix: str) -> Any:
        inj = self.injector
        if inj.take(f"{prefix}_hang") is not None:
            inj.wait_while(f"{prefix}_hang")
        if inj.take(f"{prefix}_error") is not None:
            raise RuntimeError(f"injected {self.stage} failure")
        t = time.perf_counter()
        out = fn()
        took = time.perf_counter() - t
        if (p := inj.take(f"{prefix}_slow")) is not None:
            self.sleep((float(p.get("factor", 10.0)) - 1.0) * (self.slow_base if self.slow_base is not None else took))
        return out


class FaultyDetector(_FaultyStage):
    """A face detector that fails (``detect_error``), hangs (``detect_hang``) or slows down (``detect_slow``)."""

    stage = "detection"

    def detect(self, frame_bgr: np.ndarray, *, full_size: bool = False, keep_low: bool = False,
               narrowest: int | None = None) -> Any:
        return self._call(lambda: self.inner.detect(frame_bgr, full_size=full_size, keep_low=keep_low,
                                                    narrowest=narrowest), "detect")


class FaultyClassifier(_FaultyStage):
    """A classifier whose inference fails (``inference_error``), hangs (``inference_hang``) or takes
    ``factor`` times longer (``inference_slow``)."""

    stage = "inference"

    def classify(self, x: np.ndarray, frame: np.ndarray | None = None,
                 box: tuple[int, int, int, int] | None = None) -> Any:
        return self._call(lambda: self.inner.classify(x, frame, box), "inference")


def broken_bundle(kind: str, dest: str | Path, source: str | Path | None = None) -> Path:
    """Copy a bundle (default: the shipped one) to ``dest`` and break it the way ``kind`` says:
    ``missing`` (no model file), ``truncated`` (half the model, manifest checksum updated so the
    runtime itself must refuse it), ``corrupt`` (bytes changed, checksum not), ``wrong_manifest``
    (one label too few), ``wrong_shape`` (the manifest claims another input size)."""
    if kind not in BUNDLE_FAULTS:
        raise ValueError(f"unknown bundle fault {kind!r}; expected one of {', '.join(BUNDLE_FAULTS)}")
    src = load_bundle(source)
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    model = out / src.model_path.name
    shutil.copyfile(src.model_path, model)
    manifest = json.loads((src.directory / MANIFEST).read_text())
    manifest.pop("split", None)
    data = model.read_bytes()
    if kind == "missing":
        model.unlink()
    elif kind == "truncated":
        model.write_bytes(data[: len(data) // 2])
        manifest["sha256"] = sha256_file(model)
    elif kind == "corrupt":
        mid = len(data) // 2
        model.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:])
    elif kind == "wrong_manifest":
        manifest["labels"] = list(manifest["labels"])[:-1]
    elif kind == "wrong_shape":
        shape = list(manifest["input"]["shape"])
        shape[1], shape[2] = shape[1] * 2, shape[2] * 2
        manifest["input"]["shape"] = shape
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out


# -- outputs -------------------------------------------------------------------------------------
def _gpio(pin: MockPin) -> int:
    return int(pin.info.name[4:])


class FaultyPin(MockPin):
    """A mock pin whose writes raise ``OSError(EBUSY)`` while its factory says the pin is busy.
    ``on_change`` hooks get (monotonic time, new level); ``history`` bounds ``states``."""

    def __init__(self, factory: FaultyPinFactory, info: Any) -> None:
        super().__init__(factory, info)
        self.on_change: list[Callable[[float, bool], None]] = []

    def _set_state(self, value: Any) -> None:
        factory = self.factory
        assert isinstance(factory, FaultyPinFactory)
        if factory.busy(_gpio(self), bool(value)):
            raise OSError(errno.EBUSY, f"GPIO{_gpio(self)} busy (injected)")
        super()._set_state(value)

    def _change_state(self, value: Any) -> bool:
        changed = bool(super()._change_state(value))
        if changed:
            factory = self.factory
            assert isinstance(factory, FaultyPinFactory)
            if factory.history is not None and len(self.states) > factory.history:
                del self.states[: len(self.states) - factory.history]
            for hook in list(self.on_change):
                hook(self._last_change, bool(value))
        return changed


class FaultyPinFactory(MockFactory):
    """gpiozero's MockFactory whose pins raise on write while the injector's ``gpio_busy`` is on
    (``pin=`` or ``pins=`` names or BCM numbers, default every pin; ``level=0|1``: only writes of
    that level fail)."""

    def __init__(self, injector: Injector | None = None, *, pins: Mapping[str, int] | None = None,
                 history: int | None = None) -> None:
        super().__init__(pin_class=FaultyPin)
        self.injector = injector or Injector()
        self.names = dict(DEFAULT_PINS if pins is None else pins)
        self.history = history
        self.refused = 0

    def busy(self, gpio: int, level: bool) -> bool:
        p = self.injector.active("gpio_busy")
        if p is None:
            return False
        pins = p.get("pins", [p["pin"]] if "pin" in p else None)
        if pins is not None and gpio not in {self.names.get(x, x) if isinstance(x, str) else x for x in pins}:
            return False
        if "level" in p and bool(p["level"]) != level:
            return False
        self.injector.take("gpio_busy")
        self.refused += 1
        return True


class JournalPin(MockPin):
    """A mock pin that starts at the level the journal last recorded for it and journals every write."""

    def __init__(self, factory: JournalFactory, info: Any) -> None:
        super().__init__(factory, info)
        level = factory.levels.get(_gpio(self))
        if level is not None:
            self._state = bool(level)
            self.clear_states()

    def _set_state(self, value: Any) -> None:
        super()._set_state(value)
        factory = self.factory
        assert isinstance(factory, JournalFactory)
        factory.record(_gpio(self), str(int(bool(value))))

    def close(self) -> None:
        super().close()
        factory = self.factory
        assert isinstance(factory, JournalFactory)
        factory.record(_gpio(self), "released")


class JournalFactory(MockFactory):
    """Pin factory ``journal``: mock pins whose every write is appended to a file as
    ``<epoch seconds> <BCM pin> <0|1|released>`` (path from ``$MASKGATE_PIN_JOURNAL``). The file
    outlives the process, and a new factory starts each pin at its last journalled level, like a
    relay left energized by a killed process."""

    def __init__(self, path: str | Path | None = None) -> None:
        target = path or os.environ.get(JOURNAL_ENV)
        if not target:
            raise ValueError(f"the journal pin factory needs ${JOURNAL_ENV} (the journal file)")
        self.path = Path(target)
        self.levels: dict[int, int] = {}
        for _t, pin, value in read_journal(self.path):
            if value in ("0", "1"):
                self.levels[pin] = int(value)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        super().__init__(pin_class=JournalPin)

    def record(self, pin: int, value: str) -> None:
        os.write(self._fd, f"{time.time():.6f} {pin} {value}\n".encode())

    def close(self) -> None:
        super().close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_journal(path: str | Path) -> list[tuple[float, int, str]]:
    """The journal's lines as (epoch seconds, BCM pin, value); a missing file is empty."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((float(parts[0]), int(parts[1]), parts[2]))
    return out

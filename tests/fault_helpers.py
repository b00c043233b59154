"""Shared by the tests/test_faults_*.py files: a gate running in a thread on real models and
gpiozero mock pins, with every frame result recorded on the monotonic clock."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPin

from conftest import SYNTH_FACES
from maskgate.classifier import Classifier
from maskgate.config import DEFAULT_PINS, Settings
from maskgate.detector import FaceDetector
from maskgate.events import FrameResult
from maskgate.health import Health
from maskgate.outputs import Outputs
from maskgate.pipeline import Pipeline
from maskgate.synthetic import SyntheticDoor

FACES = SYNTH_FACES

RELAY, GREEN, RED, BUZZER = (DEFAULT_PINS[k] for k in ("relay", "green", "red", "buzzer"))


def settings(**sections: dict[str, Any]) -> Settings:
    s = Settings()
    return dataclasses.replace(s, **{k: dataclasses.replace(getattr(s, k), **v) for k, v in sections.items()})


def door(faces_dir: Path, script: list[list[str]], *, width: int = 320, height: int = 240, loop: bool = False,
         realtime: bool = False, **kw: Any) -> SyntheticDoor:
    """A short synthetic door (opened), small frames to keep the tests fast."""
    d = SyntheticDoor(faces_dir, width, height, 10, script=script, images=FACES, realtime=realtime, loop=loop,
                      start_wall=kw.pop("start_wall", 0.0), enter_s=0.8, stand_s=1.5, leave_s=0.8, gap_s=0.6, **kw)
    d.open()
    return d


class Retouched:
    """A source whose frames in ``frames`` (a range of indices) come out changed by ``change``
    (image -> image): a camera switching resolution, the lights going off."""

    def __init__(self, inner: Any, frames: range, change: Callable[[Any], Any]) -> None:
        self.inner, self.frames, self.change = inner, frames, change

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read(self) -> Any:
        frame = self.inner.read()
        if frame is None or frame.index not in self.frames:
            return frame
        return dataclasses.replace(frame, image=self.change(frame.image))


def levels(factory: MockFactory, gpio: int) -> list[bool]:
    return [bool(s.state) for s in factory.pin(gpio).states]


def high_periods(pin: MockPin) -> list[float]:
    """Seconds each high period of a mock pin lasted (its ``states`` hold time since the previous change)."""
    out = []
    for prev, cur in zip(pin.states, pin.states[1:], strict=False):
        if prev.state and not cur.state:
            out.append(cur.timestamp)
    return out


@dataclasses.dataclass
class Event:
    t: float
    result: FrameResult


class Recorder:
    """An observer keeping every frame result with the monotonic time it was published."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.hooks: list[Callable[[FrameResult], None]] = []
        self._cond = threading.Condition()

    def __call__(self, result: FrameResult) -> None:
        with self._cond:
            self.events.append(Event(time.monotonic(), result))
            self._cond.notify_all()
        for hook in list(self.hooks):
            hook(result)

    def wait_for(self, pred: Callable[[FrameResult], bool], timeout: float, after: float = float("-inf")) -> Event:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events:
                    if e.t >= after and pred(e.result):
                        return e
                left = end - time.monotonic()
                if left <= 0:
                    states = [(round(e.t, 2), e.result.frame, e.result.decision.state) for e in self.events[-15:]]
                    raise AssertionError(f"no matching frame result within {timeout} s; last: {states}")
                self._cond.wait(left)

    def triggers(self) -> list[str]:
        return [e.result.decision.trigger for e in self.events if e.result.decision.trigger]


class Gate:
    """A Pipeline running in a thread (like the daemon's loop), stopped and joined on exit."""

    def __init__(self, s: Settings, source: Any, detector: Any, classifier: Any, *,
                 factory: MockFactory | None = None, health: Health | None = None, **kw: Any) -> None:
        self.factory = factory or MockFactory()
        self.outputs = Outputs(s.outputs, self.factory, mode=s.decision.mode)
        self.recorder = Recorder()
        self.health = health or Health(s.health, s.source)
        self.pipeline = Pipeline(s, source, detector, classifier, self.outputs, observers=[self.recorder],
                                 health=self.health, **kw)
        self.source = source
        self._thread = threading.Thread(target=self._run, name="gate-under-test", daemon=True)
        self.error: BaseException | None = None

    def run(self) -> Gate:
        """Run a finite source to its end in this thread, then close the outputs."""
        try:
            self.pipeline.run()
        finally:
            self.outputs.close()
        return self

    def _run(self) -> None:
        try:
            self.pipeline.run()
        except BaseException as exc:  # surfaced by __exit__
            self.error = exc

    def __enter__(self) -> Gate:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.pipeline.stop()
        self._thread.join(timeout=20)
        self.outputs.close()
        try:
            self.source.close()
        except Exception:
            pass
        assert not self._thread.is_alive(), "the loop did not stop"
        if self.error is not None:
            raise self.error


def make_models(yunet_path: Path) -> tuple[FaceDetector, Classifier]:
    return FaceDetector(model_path=yunet_path), Classifier()

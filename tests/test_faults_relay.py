"""The relay is never on longer than the pulse plus 0.2 s while the process lives, whatever fails;
a failing pin write skips only itself; the fault pattern is a slow red blink."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fault_helpers import BUZZER, GREEN, RED, RELAY, Gate, door, high_periods, levels, make_models, settings
from maskgate.classifier import Classifier
from maskgate.config import OutputSettings
from maskgate.decider import Plan
from maskgate.detector import FaceDetector
from maskgate.events import FrameResult
from maskgate.faults import FaultyClassifier, FaultyPinFactory, FaultySource, Injector
from maskgate.outputs import FAULT_BLINK, Outputs

PULSE = 0.5


@pytest.fixture(scope="module")
def models(yunet_path: Path) -> tuple[FaceDetector, Classifier]:
    return make_models(yunet_path)


# With the buzzer pin busy, gpiozero's own background beep thread dies on its first write (Python
# prints that thread's traceback): expected here, and the relay is unaffected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("failure", ["camera_hang", "inference_hang", "gpio_busy", "loop_stalled"])
def test_the_relay_is_never_on_longer_than_the_pulse_plus_0_2_s_whatever_fails(failure: str, faces_dir: Path,
                                                                               models: tuple) -> None:
    det, clf = models
    inj = Injector()
    s = settings(outputs={"relay_pulse": PULSE})
    script = [["with_mask"]] + [["without_mask"]] * 6  # one opening, then people who never open it
    src = FaultySource(door(faces_dir, script, seed=9, realtime=True), injector=inj)  # 10 fps: outlasts the pulse
    factory = FaultyPinFactory(inj)
    gate = Gate(s, src, det, FaultyClassifier(clf, inj), factory=factory)
    opened = threading.Event()
    release = threading.Event()

    def on_open(r: FrameResult) -> None:
        if r.decision.trigger != "open" or opened.is_set():
            return
        opened.set()
        if failure == "gpio_busy":  # every other output pin refuses writes from now on
            inj.start("gpio_busy", pins=("green", "red", "buzzer"))
        elif failure == "loop_stalled":
            release.wait(30)
        else:
            inj.start(failure)

    gate.recorder.hooks.append(on_open)
    with gate:
        assert opened.wait(30), "the masked person never opened the door"
        time.sleep(PULSE + 0.5)  # the loop is stuck (or still running) well past the pulse
        relay = high_periods(factory.pin(RELAY))
        still_on = gate.outputs.relay_on
        release.set()
        for kind in ("camera_hang", "inference_hang", "gpio_busy"):
            inj.stop(kind)
    assert not still_on and len(relay) == 1, relay
    assert PULSE - 0.05 <= relay[0] <= PULSE + 0.2, relay  # the safety timer, not the loop, ended it
    if failure == "gpio_busy":
        assert gate.outputs.write_errors > 0 and gate.pipeline.stats.errors == 0


def test_a_busy_pin_skips_only_itself(caplog: pytest.LogCaptureFixture) -> None:
    inj = Injector()
    factory = FaultyPinFactory(inj)
    out = Outputs(OutputSettings(relay_pulse=5.0), factory)
    try:
        inj.start("gpio_busy", pin="green")
        with caplog.at_level(logging.WARNING, logger="maskgate.outputs"):
            for _ in range(5):
                out.apply(Plan(green=True, red=False, pulse=True))
            out.apply(Plan(red=True, buzz="without_mask"))
            inj.stop("gpio_busy")
            out.apply(Plan(green=True))
        assert out.write_errors == 6 and out.relay_on  # every green write while busy, nothing else
        assert levels(factory, GREEN) == [False, True] and levels(factory, RED)[-1] is False
        assert True in levels(factory, BUZZER) or out.buzzer.is_active
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and errors[0].startswith("green: pin write failed (OSError")  # logged once
        assert any("green: pin writes work again" in r.getMessage() for r in caplog.records)
        assert "write_errors=6" in repr(out)
    finally:
        out.close()
    assert levels(factory, RELAY)[-1] is False


def test_a_busy_pin_does_not_end_the_fault_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    """gpiozero blinks in a thread of its own; a write failing there is counted and the blink goes
    on, so the red LED shows the fault pattern again once the pin works."""
    uncaught: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: uncaught.append(args.exc_value))
    inj = Injector()
    factory = FaultyPinFactory(inj)
    out = Outputs(OutputSettings(), factory)
    monkeypatch.setattr("maskgate.outputs.FAULT_BLINK", (0.02, 0.02))
    try:
        out.show_fault()
        inj.start("gpio_busy", pin="red")

        def wait_for(cond: Any) -> bool:
            end = time.monotonic() + 5.0
            while not cond() and time.monotonic() < end:
                time.sleep(0.01)
            return bool(cond())

        assert wait_for(lambda: out.write_errors >= 3)  # steps of the blink refused while busy
        inj.stop("gpio_busy")
        n = len(levels(factory, RED))
        assert wait_for(lambda: len(levels(factory, RED)) >= n + 4)  # blinking again
        assert not uncaught and out.red._blink_thread is not None and out.red._blink_thread.is_alive()
        assert levels(factory, RELAY)[-1] is False
    finally:
        out.close()


def test_a_relay_that_cannot_be_switched_off_is_retried_until_it_can() -> None:
    inj = Injector()
    factory = FaultyPinFactory(inj)
    out = Outputs(OutputSettings(relay_pulse=0.2, relay_max_on=1.0), factory)
    try:
        out.pulse()
        inj.start("gpio_busy", pin="relay", level=0)  # switching it off fails for now
        time.sleep(0.6)
        assert out.relay_on and out.write_errors >= 3  # retried every 50 ms by the safety thread
        t = time.monotonic()
        inj.stop("gpio_busy")
        while out.relay_on and time.monotonic() - t < 2.0:
            time.sleep(0.005)
        assert not out.relay_on and time.monotonic() - t < 0.3
    finally:
        out.close()


def test_the_fault_pattern_is_a_slow_red_blink_unlike_deny_s_steady_red() -> None:
    factory = FaultyPinFactory()
    out = Outputs(OutputSettings(), factory)
    try:
        out.apply(Plan(green=True, pulse=True))
        out.show_fault()
        out.show_fault()  # repeated while the fault lasts: the blink is not restarted
        assert not out.relay_on and "FAULT" in repr(out)
        time.sleep(2.3)
        on, off = FAULT_BLINK
        red = factory.pin(RED)
        highs = high_periods(red)
        lows = [cur.timestamp for prev, cur in zip(red.states[1:], red.states[2:], strict=False)
                if not prev.state and cur.state]
        assert len(highs) >= 1 and all(abs(h - on) < 0.25 for h in highs), highs
        assert lows and all(abs(low - off) < 0.5 for low in lows), lows
        assert levels(factory, GREEN)[-1] is False and levels(factory, RELAY) == [False, True, False]
        out.apply(Plan(red=True))  # a deny after the fault: steady red, the blink stops
        n = len(red.states)
        time.sleep(0.5)
        assert len(red.states) == n and red.state is True and not out.fault_shown
    finally:
        out.close()

"""Faults in the frame loop, through the product's own seams (maskgate.faults): bad frames, failed
and slow inference, a hung camera read, a camera unplugged and back, a network camera that drops.

Real detector and classifier, gpiozero mock pins; timing through frame time where the code allows
and generous wall-clock bounds where only a live capture thread can show it."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import pytest
from gpiozero.pins.mock import MockFactory

from fault_helpers import GREEN, RED, RELAY, Gate, Retouched, door, high_periods, make_models, settings
from maskgate.classifier import Classifier
from maskgate.config import Settings
from maskgate.detector import FaceDetector
from maskgate.events import FrameResult
from maskgate.faults import (
    BAD_FRAME_KINDS,
    FaultyCamera,
    FaultyClassifier,
    FaultyDetector,
    FaultySource,
    Injector,
    MjpegCamera,
    ScheduledFault,
    SimCamera,
    VirtualClock,
)
from maskgate.health import Health
from maskgate.outputs import FAULT_BLINK, Outputs
from maskgate.pipeline import Pipeline
from maskgate.sources import OpenCVSource, ReplaySource


@pytest.fixture(scope="module")
def models(yunet_path: Path) -> tuple[FaceDetector, Classifier]:
    return make_models(yunet_path)


def processed(r: FrameResult) -> bool:
    return r.frame >= 0


def test_every_kind_of_bad_frame_is_converted_or_skipped_and_counted(faces_dir: Path, models: tuple) -> None:
    script = [["with_mask"], ["without_mask"]]
    clean = Gate(settings(), door(faces_dir, script, seed=1), *models).run()
    assert clean.recorder.triggers() == ["open", "alarm"]
    inner = door(faces_dir, script, seed=1)
    total = inner.total_frames or 0
    # one of each while the first person walks in, and again while they stand in the doorway
    bad = {4 + k: kind for k, kind in enumerate(BAD_FRAME_KINDS)}
    bad.update({14 + k: kind for k, kind in enumerate(BAD_FRAME_KINDS)})
    g = Gate(settings(), FaultySource(inner, bad=bad), *models).run()
    st = g.pipeline.stats
    # nothing to look at, or not the stream's size (a torn buffer: its boxes would start new tracks)
    skipped = sum(kind in ("empty", "corrupt", "truncated", "wrong_size") for kind in bad.values())
    converted = sum(kind == "grayscale" for kind in bad.values())
    assert st.bad_frames == skipped and st.converted_frames == converted and st.size_changes == 0
    assert st.frames == total - skipped and st.errors == 0 and st.faults == 0
    # garbage frames are just frames: processed like any other, and the door does what it did
    # without them
    assert g.recorder.triggers() == ["open", "alarm"]


def test_odd_sized_frames_are_skipped_and_a_lasting_size_change_is_followed(faces_dir: Path,
                                                                           models: tuple) -> None:
    script = [["with_mask"], ["without_mask"]]
    # a masked visitor with torn frames all through the visit: one pulse, as without them
    bad = {i: "wrong_size" for i in range(3, 40, 3)}
    g = Gate(settings(), FaultySource(door(faces_dir, script, seed=1), bad=bad), *models).run()
    st = g.pipeline.stats
    assert g.recorder.triggers() == ["open", "alarm"] and st.relay_pulses == 1
    assert st.bad_frames == len(bad) and st.size_changes == 0 and st.faults == 0
    # the camera changes resolution after the door opened for the masked visitor: two frames
    # skipped, then the new size is the stream's, the visitor's track carries over (no second
    # pulse for the same person) and the bare visitor is judged on the new frames
    g = Gate(settings(), Retouched(door(faces_dir, script, seed=1), range(10, 10**6),
                       lambda img: cv2.resize(img, None, fx=1.5, fy=1.5)), *models).run()
    st = g.pipeline.stats
    assert st.bad_frames == 2 and st.size_changes == 1 and st.faults == 0
    assert g.recorder.triggers() == ["open", "alarm"] and st.relay_pulses == 1
    assert g.pipeline.frame_size == (360, 480)
    first = {f.track for e in g.recorder.events if e.result.frame < 20 for f in e.result.faces}
    assert len(first) == 1


def test_failed_inference_is_skipped_and_counted_and_only_a_run_of_them_faults(faces_dir: Path,
                                                                              models: tuple) -> None:
    det, clf = models
    inj = Injector()
    s = settings(health={"max_errors": 5})
    src = door(faces_dir, [["with_mask"], ["with_mask"], ["without_mask"]], seed=2)
    gate = Gate(s, src, FaultyDetector(det, inj), FaultyClassifier(clf, inj))

    def arm(r: FrameResult) -> None:
        if r.frame == 10:
            inj.start("inference_error", count=3)  # three failed frames: skipped, no fault
        if r.frame == 45:
            inj.start("detect_error", count=2)
        if r.frame == 60:
            inj.start("inference_error", count=7)  # seven in a row: the gate faults, then recovers

    gate.recorder.hooks.append(arm)
    gate.run()
    st = gate.pipeline.stats
    assert inj.hits["inference_error"] == 10 and inj.hits["detect_error"] == 2
    assert st.errors == 12 and st.bad_frames == 0
    faults = [e.result for e in gate.recorder.events if e.result.decision.state == "fault"]
    assert [f.decision.reason for f in faults] == ["model"] and not faults[0].outputs["relay"]
    after = [e.result for e in gate.recorder.events if e.result.frame > 60 and processed(e.result)]
    assert any(r.faces for r in after), "decisions resume after the failed inferences"
    assert set(gate.recorder.triggers()) >= {"open", "alarm"}


def test_a_failing_detector_is_retried_on_every_frame_and_the_fault_keeps_showing(tmp_path: Path,
                                                                                   models: tuple) -> None:
    """An empty, still doorway is normally searched only every few frames; after a failed search the
    next frame searches again, so a detector that keeps failing faults after ``health.max_errors``
    frames and stays faulted (no cadence-skipped frame in between ends it or hides its LED pattern)."""
    import cv2
    import numpy as np
    det, clf = models
    img = tmp_path / "empty.png"
    cv2.imwrite(str(img), np.full((240, 320, 3), 120, np.uint8))
    inj = Injector()
    inj.start("detect_error")
    s = settings(health={"max_errors": 3})
    src = ReplaySource([img], 10, hold=60, realtime=False)
    src.open()
    gate = Gate(s, src, FaultyDetector(det, inj), clf)
    shown: list[bool] = []
    gate.recorder.hooks.append(lambda r: shown.append(gate.outputs.fault_shown))
    gate.run()
    st = gate.pipeline.stats
    assert inj.hits["detect_error"] == st.errors == 60 and st.frames == 0  # every frame searched, every one failed
    assert st.faults == 1 and gate.pipeline.faulted == "model" and shown == [True]  # one fault report, blinking
    assert not any(high_periods(gate.factory.pin(RELAY)))
    # (test_gate_pipeline.py::test_motion_gate_skips_searching_a_static_empty_doorway: the same
    # doorway with a working detector is searched on one frame in idle_every)


def test_inference_ten_times_slower_still_decides(faces_dir: Path, models: tuple) -> None:
    """A live camera at 10 fps while detection and classification take 10x longer: the loop drops
    frames (newest frame first) and still opens for the masked person and alarms for the bare one."""
    det, clf = models
    inj = Injector()
    inj.start("detect_slow", factor=10.0)
    inj.start("inference_slow", factor=10.0)
    scene = door(faces_dir, [["with_mask"], ["without_mask"]], seed=3, loop=True)
    cam = FaultyCamera(scene.frame, 10, injector=inj, frame_timeout=2.0)
    cam.open()
    with Gate(settings(), cam, FaultyDetector(det, inj), FaultyClassifier(clf, inj)) as g:
        g.recorder.wait_for(lambda r: r.decision.trigger == "open", 30)
        g.recorder.wait_for(lambda r: r.decision.trigger == "alarm", 30)
        assert g.health.verdict().ok
    st = g.pipeline.stats
    # (the cadence searches the doorway every few frames only; classification runs on every face)
    assert inj.hits["detect_slow"] >= 3 and inj.hits["inference_slow"] >= 3 and st.faults == 0 and st.errors == 0


def test_hung_camera_read_is_detected_reopened_with_backoff_and_decisions_resume(faces_dir: Path,
                                                                                models: tuple) -> None:
    frame_timeout, first, most = 0.5, 0.1, 0.4
    s = settings(source={"frame_timeout": frame_timeout, "reopen_delay": first, "reopen_max_delay": most})
    inj = Injector()
    scene = door(faces_dir, [["with_mask"], ["without_mask"]], seed=4, loop=True)
    cam = FaultyCamera(scene.frame, 10, injector=inj, frame_timeout=frame_timeout, join_timeout=0.3)
    cam.open()
    delays: list[float] = []  # what the loop asks to wait between reopen attempts

    def wait(seconds: float) -> bool:
        delays.append(seconds)
        return gate.pipeline.stop_wait(seconds)

    gate = Gate(s, cam, *models, wait=wait)
    with gate:
        gate.recorder.wait_for(processed, 20)
        t_hang = time.monotonic()
        inj.start("camera_hang")  # the capture thread blocks inside a read...
        inj.start("camera_down")  # ...and the camera is gone: every reopen fails for now
        fault = gate.recorder.wait_for(lambda r: r.decision.state == "fault", 10, after=t_hang)
        assert fault.result.decision.reason == "camera" and not fault.result.outputs["relay"]
        assert fault.t - t_hang < frame_timeout + 1.5  # detected by the frame timeout, not by luck
        time.sleep(1.6)  # reopen attempts back off meanwhile; the red LED blinks the fault pattern
        red_high = high_periods(gate.factory.pin(RED))
        inj.stop("camera_hang")  # the stuck read returns into its abandoned thread
        t_back = time.monotonic()
        inj.stop("camera_down")
        resumed = gate.recorder.wait_for(processed, 10, after=t_back)
        assert cam.first_frame_after_open is not None
        assert resumed.t - cam.first_frame_after_open < 2.0  # decisions within 2 s of frames returning
        assert resumed.t - t_back < most + 2.0
        gate.recorder.wait_for(lambda r: r.decision.trigger is not None, 20, after=t_back)
    assert len(delays) >= 4 and delays[:4] == [first, 2 * first, most, most], delays  # doubling, capped
    assert set(delays[2:]) == {most}
    attempts = [t for t in cam.open_attempts if t > t_hang]
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert len(attempts) == len(delays) and max(gaps) < most + 1.0, gaps  # the waits were real
    assert cam.abandoned == 1 and gate.pipeline.stats.camera_reconnects == 1
    on, _off = FAULT_BLINK
    assert red_high and all(p < on + 0.5 for p in red_high), red_high  # short flashes, not a steady deny red
    outage = [e.result for e in gate.recorder.events if t_hang <= e.t <= t_back]
    assert outage and not any(r.outputs["relay"] for r in outage)
    assert not any(r.outputs["green"] for r in outage)


def test_camera_missing_at_start_then_plugged_in(faces_dir: Path, models: tuple) -> None:
    """A camera absent at boot is a fault the loop retries, not a failure: frames flow once it appears."""
    s = settings(source={"frame_timeout": 1.0, "reopen_delay": 0.1, "reopen_max_delay": 0.3})
    inj = Injector()
    inj.start("camera_down")
    scene = door(faces_dir, [["with_mask"]], seed=5, loop=True)
    cam = FaultyCamera(scene.frame, 10, injector=inj, frame_timeout=1.0)
    gate = Gate(s, cam, *models)
    from maskgate.errors import SourceError
    with pytest.raises(SourceError):
        cam.open()
    gate.pipeline.source_failed(SourceError("camera not found"))
    with gate:
        time.sleep(1.0)
        assert gate.pipeline.faulted == "camera" and gate.health.verdict().ok
        inj.stop("camera_down")
        gate.recorder.wait_for(processed, 10)
    assert len(cam.open_attempts) >= 3 and cam.opens == 1
    assert [e.result.decision.reason for e in gate.recorder.events if not processed(e.result)] == ["camera"]


def test_network_camera_drops_and_comes_back(faces_dir: Path, models: tuple) -> None:
    """A real MJPEG-over-HTTP camera read by OpenCV/FFmpeg: when it drops, the gate faults with the
    relay off and retries; when it is back (same URL), decisions resume."""
    scene = door(faces_dir, [["with_mask"], ["without_mask"]], seed=6, loop=True)
    ipcam = MjpegCamera(scene.frame, 10).plug()
    s = settings(source={"frame_timeout": 1.5, "reopen_delay": 0.2, "reopen_max_delay": 0.5})
    src = OpenCVSource(ipcam.url, frame_timeout=1.5)
    src.open()
    gate = Gate(s, src, *models)
    try:
        with gate:
            gate.recorder.wait_for(processed, 20)
            t_drop = time.monotonic()
            ipcam.unplug()
            fault = gate.recorder.wait_for(lambda r: r.decision.state == "fault", 10, after=t_drop)
            assert fault.result.decision.reason == "camera" and not fault.result.outputs["relay"]
            time.sleep(1.0)
            t_back = time.monotonic()
            ipcam.plug()
            back = gate.recorder.wait_for(processed, 15, after=t_back)
            assert back.t - t_back < 0.5 + 5.0
    finally:
        ipcam.unplug()
    assert gate.pipeline.stats.camera_reconnects >= 1 and gate.pipeline.stats.faults == 1
    assert gate.factory.pin(RELAY).state is False and gate.factory.pin(GREEN).state is False


@pytest.mark.parametrize("unplugged_at", [0.3, 0.7, 1.1, 1.5, 1.9])
def test_a_camera_plugged_back_as_a_visitor_walks_in_is_picked_up_in_time_to_decide_them(
        faces_dir: Path, models: tuple, unplugged_at: float) -> None:
    """Default settings, on a virtual clock: the camera is gone long enough for the reopen backoff to
    reach its cap, and comes back just as a visitor walks in. The gate reopens it within
    ``source.reopen_max_delay`` and denies that visitor within 2 s of the camera's return, whatever the
    backoff's phase; a cap as long as a visit (5 s) left such visitors unseen in the soak."""
    s = Settings()
    clock = VirtualClock()
    scene = door(faces_dir, [["with_mask"], ["with_mask"], ["without_mask"], ["with_mask"],
                             ["without_mask"], ["with_mask"]], seed=7)
    visitor = scene.visits_until(1 << 30)[4].people[0]  # without_mask, the fifth visitor
    back = visitor.start / 10
    inj = Injector(clock, [ScheduledFault("camera_down", unplugged_at, back)])
    cam = SimCamera(scene.frame, clock, 10, injector=inj, frame_timeout=s.source.frame_timeout)
    factory = MockFactory()
    outputs = Outputs(s.outputs, factory)
    results: list[FrameResult] = []
    p = Pipeline(s, cam, *models, outputs, observers=[results.append], clock=clock, wait=clock.wait,
                 health=Health(s.health, s.source, clock=clock))
    cam.open()
    try:
        p.run()
    finally:
        outputs.close()
    first = next(r for r in results if r.frame >= 0 and r.frame / 10 >= back)
    assert first.frame / 10 - back <= s.source.reopen_max_delay + 0.1
    alarms = [r.frame / 10 for r in results if r.decision.trigger == "alarm" and r.frame / 10 >= back]
    assert alarms and alarms[0] - back <= 2.0, (alarms, first.frame / 10, back)
    outage = [r for r in results if r.frame < 0 or unplugged_at <= r.frame / 10 < back]
    assert outage and not any(r.outputs["relay"] or r.outputs["green"] for r in outage)

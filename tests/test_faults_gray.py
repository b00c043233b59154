"""Gray frames (a camera in mono or night mode, or one delivering gray frames by fault) never make the
gate open or alarm: the mask classifier misjudges faces without colour (masked ones as bare, wrongly
masked ones as masked), so such faces are tracked and not judged. Real detector and classifier on the
synthetic door, gpiozero mock pins, frame time (the soak's finding: a masked visitor, rightly allowed,
was denied with the buzzer during a run of gray frames)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import SYNTH_FACES
from fault_helpers import BUZZER, RED, RELAY, Gate, Retouched, door, high_periods, levels, make_models, settings
from maskgate.classifier import Classifier
from maskgate.crop import InputSpec, colourless, colourless_picture, dark_picture, face_input
from maskgate.detector import FaceDetector
from maskgate.events import DecisionEvent, DecisionEvents, FrameResult
from maskgate.faults import FaultySource, Injector
from maskgate.metrics import render
from maskgate.pipeline import DARK, NO_COLOUR
from maskgate.status import StatusBoard
from maskgate.synthetic import SyntheticDoor

SOAK_VISITOR = {"with_mask": {"fm12k_03983.jpg": (46, 4, 166, 192)}}
"""The soak's visitor 1281 (a held-out test face; its head cut around the face box the build located):
masked in colour, bare to the classifier once gray."""


@pytest.fixture(scope="module")
def models(yunet_path: Path) -> tuple[FaceDetector, Classifier]:
    return make_models(yunet_path)


def test_a_masked_visitor_allowed_is_not_denied_when_frames_turn_gray(faces_dir: Path, models: tuple) -> None:
    masked = [["with_mask"]] * 3
    inner = SyntheticDoor(faces_dir, 320, 240, 10, script=masked, heads=SOAK_VISITOR, seed=3, realtime=False,
                          start_wall=0.0, enter_s=0.8, stand_s=1.5, leave_s=0.8, gap_s=0.6)
    inner.open()
    ends = {p.end - 1 for v in inner.visits_until(inner.total_frames or 0) for p in v.people}
    inj = Injector()
    g = Gate(settings(), FaultySource(inner, injector=inj), *models)

    def gray_once_allowed(r: FrameResult) -> None:  # the soak's case: allowed, then the frames turn gray
        if r.decision.trigger == "open":
            inj.start("bad_frame", kind="grayscale")
        if r.frame in ends:
            inj.stop("bad_frame")

    g.recorder.hooks.append(gray_once_allowed)
    g.run()
    st = g.pipeline.stats
    assert st.converted_frames == inj.hits["bad_frame"] > 20 and st.colourless_faces > 0
    assert st.bad_frames == st.faults == 0 and st.colourless_frames > 0  # a short gray run: no fault
    assert g.recorder.triggers() == ["open"] * len(masked)
    states = [e.result.decision.state for e in g.recorder.events]
    assert "deny" not in states and "uncertain" in states  # gray faces are undecided, never bare
    assert not any(levels(g.factory, RED)) and not any(levels(g.factory, BUZZER))


def test_gray_frames_never_open_the_door_or_sound_the_alarm(faces_dir: Path, models: tuple) -> None:
    script = [["with_mask"], ["incorrect_mask"], ["without_mask"], ["with_mask"], ["incorrect_mask"]]
    inner = door(faces_dir, script, seed=3)
    total = inner.total_frames or 0
    never = settings(source={"colourless_fault": 0.0})  # votes only: the gray camera's fault is the next test
    g = Gate(never, FaultySource(inner, bad={i: "grayscale" for i in range(total)}), *models).run()
    st = g.pipeline.stats
    assert st.frames == st.converted_frames == total and st.colourless_faces > 0
    assert g.recorder.triggers() == []
    assert {e.result.decision.state for e in g.recorder.events} <= {"idle", "checking", "uncertain"}
    assert not any(high_periods(g.factory.pin(RELAY))) and not any(levels(g.factory, BUZZER))


def test_a_camera_that_stays_gray_is_a_camera_fault_until_colour_returns(faces_dir: Path, models: tuple) -> None:
    """After ``source.colourless_fault`` (default 10 s) of frame time without colour the gate faults
    (reason camera, "no colour in the picture"): relay off, red fault blink, /healthz and the status
    page say so; the first frame with colour ends it and a masked visitor is let in again."""
    masked = [["with_mask"]] * 6
    inner = door(faces_dir, masked, seed=3)
    visits = inner.visits_until(inner.total_frames or 0)
    back = visits[3].start  # gray until the fourth visitor comes (over 10 s of frame time)
    assert back / 10 > 10.5
    s = settings()
    assert s.source.colourless_fault == 10.0
    g = Gate(s, FaultySource(inner, bad={i: "grayscale" for i in range(back)}), *models)
    board = StatusBoard(s, g.pipeline.stats)
    board.attach(g.pipeline)
    events: list[DecisionEvent] = []
    g.pipeline.observers[:0] = [board, DecisionEvents(sinks=[events.append])]
    seen: dict[int, tuple[bool, bool, tuple[bool, str], str]] = {}

    def during(r: FrameResult) -> None:
        if r.frame >= 0:
            seen[r.frame] = (g.outputs.relay_on, g.outputs.fault_shown, board.health(), board.camera_state())

    g.recorder.hooks.append(during)
    g.run()
    by_frame = {e.result.frame: e.result for e in g.recorder.events if e.result.frame >= 0}
    faulted = sorted(i for i, r in by_frame.items() if r.decision.state == "fault")
    assert faulted == list(range(faulted[0], back))  # one unbroken fault, over on the first colour frame
    first = by_frame[faulted[0]].decision
    assert 10.0 <= first.ts - by_frame[0].decision.ts < 10.2  # frame time, not wall time
    assert {(by_frame[i].decision.reason, by_frame[i].decision.detail) for i in faulted} == {("camera", NO_COLOUR)}
    assert by_frame[faulted[0]].to_json()["detail"] == NO_COLOUR
    assert {r.decision.state for i, r in by_frame.items() if i < faulted[0]} <= {"idle", "checking", "uncertain"}
    for i in faulted:  # relay off, the red LED's fault blink, and every reader says why
        assert seen[i] == (False, True, (False, "fault: camera (no colour in the picture)"), NO_COLOUR)
    assert not any(seen[i][1] for i in range(back, max(by_frame) + 1))
    assert True in levels(g.factory, RED)
    st = g.pipeline.stats
    assert st.faults == 1 and st.colourless_frames == back and st.decisions["fault"] == len(faulted)
    assert f"maskgate_frames_colourless_total {back}" in render(board)
    # decisions resume: each masked visitor after the colour came back is let in, and only they are
    opens = [i for i, r in by_frame.items() if r.decision.trigger == "open"]
    assert len(opens) == len(masked) - 3 and min(opens) > back
    assert not any(seen[i][0] for i in range(back)) and any(levels(g.factory, RELAY))  # (pulses are wall time)
    assert not any(levels(g.factory, BUZZER))
    assert [(e.outcome, e.reason, e.detail) for e in events] == [("fault", "camera", NO_COLOUR)] + [
        ("allow", None, None)] * len(opens)
    assert events[0].to_json()["detail"] == NO_COLOUR and "detail" not in events[1].to_json()


def test_a_picture_too_dark_to_see_anyone_is_a_camera_fault_that_says_so(faces_dir: Path, models: tuple) -> None:
    """A dark picture has no colour either; the fault names the likelier cause (lights off, a covered
    lens) so the owner looks at the right thing, and ends when the picture comes back."""
    inner = door(faces_dir, [["with_mask"]] * 6, seed=3)
    back = inner.visits_until(inner.total_frames or 0)[3].start
    g = Gate(settings(), Retouched(inner, range(back), lambda img: (img // 24).astype(np.uint8)), *models).run()
    assert g.pipeline.gray_detail == DARK  # what the last dark frame was judged
    faults = [e.result for e in g.recorder.events if e.result.decision.state == "fault"]
    assert faults and {(r.decision.reason, r.decision.detail) for r in faults} == {("camera", DARK)}
    assert max(r.frame for r in faults) == back - 1 and g.pipeline.stats.faults == 1
    assert [e.result.frame > back for e in g.recorder.events if e.result.decision.trigger] == [True] * 3
    assert not any(levels(g.factory, BUZZER))


def test_gray_bursts_shorter_than_the_limit_never_fault(faces_dir: Path, models: tuple) -> None:
    """Gray runs of 4 s with colour in between (a camera switching modes, the soak's bad-frame faults)
    give uncertain votes, never a fault: the limit counts consecutive frames without colour."""
    inner = door(faces_dir, [["with_mask"], ["without_mask"]] * 3, seed=4)
    total = inner.total_frames or 0
    gray = {i: "grayscale" for i in range(total) if i % 50 < 40}
    g = Gate(settings(source={"colourless_fault": 4.5}), FaultySource(inner, bad=gray), *models).run()
    st = g.pipeline.stats
    assert st.colourless_frames == len(gray) > total / 2 and st.faults == 0
    assert "fault" not in {e.result.decision.state for e in g.recorder.events}
    # between the gray runs the gate decides as usual; a gray frame never triggers anything
    assert all(e.result.frame not in gray for e in g.recorder.events if e.result.decision.trigger)


def test_a_face_without_colour_is_colourless_for_a_colour_model_only(faces_dir: Path) -> None:
    img = cv2.imread(str(faces_dir / "with_mask" / SYNTH_FACES["with_mask"][0]))
    box = (0, 0, img.shape[1], img.shape[0])
    rgb, gray_model = InputSpec(96, 96, "rgb"), InputSpec(96, 96, "gray")
    gray3 = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    # a 3-channel gray JPEG, as a camera in night mode may send: a level or so of chroma noise
    ok, buf = cv2.imencode(".jpg", gray3, [cv2.IMWRITE_JPEG_QUALITY, 70])
    jpeg = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert not colourless(face_input(img, box, rgb), rgb)
    assert colourless(face_input(gray3, box, rgb), rgb) and colourless(face_input(jpeg, box, rgb), rgb)
    assert not colourless(face_input(gray3, box, gray_model), gray_model)  # a gray model judges gray faces
    assert not colourless(np.zeros((96, 96, 3), np.float32) + [[[200, 120, 90]]], rgb)
    # the whole frame, on a tiny copy: gray and gray JPEG have no colour, the synthetic door has
    frame = door(faces_dir, [["with_mask"]], seed=1).read()
    assert frame is not None and not colourless_picture(frame.image)
    assert colourless_picture(gray3) and colourless_picture(jpeg) and not colourless_picture(img)
    # too dark to see anyone (some colour left in the noise); a gray picture is not dark
    dim = (frame.image // 24).astype(np.uint8)
    assert dark_picture(dim) and not colourless_picture(dim) and not dark_picture(gray3)
    assert not dark_picture(frame.image)


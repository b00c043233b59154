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
from fault_helpers import BUZZER, RED, RELAY, Gate, door, high_periods, levels, make_models, settings
from maskgate.classifier import Classifier
from maskgate.crop import InputSpec, colourless, face_input
from maskgate.detector import FaceDetector
from maskgate.events import FrameResult
from maskgate.faults import FaultySource, Injector
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
    assert st.bad_frames == st.faults == 0
    assert g.recorder.triggers() == ["open"] * len(masked)
    states = [e.result.decision.state for e in g.recorder.events]
    assert "deny" not in states and "uncertain" in states  # gray faces are undecided, never bare
    assert not any(levels(g.factory, RED)) and not any(levels(g.factory, BUZZER))


def test_gray_frames_never_open_the_door_or_sound_the_alarm(faces_dir: Path, models: tuple) -> None:
    script = [["with_mask"], ["incorrect_mask"], ["without_mask"], ["with_mask"], ["incorrect_mask"]]
    inner = door(faces_dir, script, seed=3)
    total = inner.total_frames or 0
    g = Gate(settings(), FaultySource(inner, bad={i: "grayscale" for i in range(total)}), *models).run()
    st = g.pipeline.stats
    assert st.frames == st.converted_frames == total and st.colourless_faces > 0
    assert g.recorder.triggers() == []
    assert {e.result.decision.state for e in g.recorder.events} <= {"idle", "checking", "uncertain"}
    assert not any(high_periods(g.factory.pin(RELAY))) and not any(levels(g.factory, BUZZER))


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

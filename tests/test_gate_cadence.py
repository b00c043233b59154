"""The per-frame work plan: motion gate, cadence of whole-frame searches, and following faces between them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from maskgate.cadence import DETECT, FOLLOW, SKIP, Cadence
from maskgate.follow import FaceFollower
from maskgate.imageio import read_bgr
from maskgate.motion import LEVEL, MotionGate


def scene(seed: int = 0) -> np.ndarray:
    """A textured 640x480 background (a gradient and a few shapes)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((480, 640, 3), np.uint8)
    img[:] = np.linspace(60, 200, 640, dtype=np.uint8)[None, :, None]
    for _ in range(12):
        x, y = int(rng.integers(0, 600)), int(rng.integers(0, 440))
        cv2.rectangle(img, (x, y), (x + 40, y + 40), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    return img


def noisy(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.float32) + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def test_motion_gate_ignores_sensor_noise_and_sees_a_person() -> None:
    bg = scene()
    gate = MotionGate(0.002)
    assert gate.changed(bg)  # no reference yet: everything is new
    gate.look(bg)
    # camera noise of sigma 4 grey levels on every pixel is not motion
    assert not any(gate.changed(noisy(bg, 4.0, s)) for s in range(5)), gate.last_change
    # a 48 px face-sized blob is
    person = bg.copy()
    cv2.ellipse(person, (320, 200), (24, 30), 0, 0, 360, (20, 20, 20), -1)
    assert gate.changed(person) and gate.last_change > 0.002
    # and says where: around the blob (cells of 8 px), so only that part of the frame needs a search
    assert gate.box is not None
    x0, y0, x1, y1 = gate.box
    assert 280 <= x0 <= 296 and 344 <= x1 <= 360 and 154 <= y0 <= 170 and 230 <= y1 <= 246, gate.box
    # slow drift adds up against the reference (the frame last searched), not the previous frame
    dim = [np.clip(bg.astype(np.int16) - k * (LEVEL // 3 + 1), 0, 255).astype(np.uint8) for k in range(1, 5)]
    assert not gate.changed(dim[0]) and gate.changed(dim[3])


def test_cadence_with_nobody_tracked_searches_on_motion_and_on_the_idle_beat() -> None:
    bg = scene()
    c = Cadence(every=5, moving_every=2, idle_every=10, motion=0.002)
    plan = [c.plan(bg, following=False) for _ in range(25)]
    # the first frame is searched, then a static empty doorway only every 10th frame
    assert plan == [DETECT] + [SKIP] * 9 + [DETECT] + [SKIP] * 9 + [DETECT] + [SKIP] * 4
    moving = []  # someone walks across: the frame changes on every frame
    for i in range(6):
        img = bg.copy()
        cv2.ellipse(img, (100 + 60 * i, 200), (24, 30), 0, 0, 360, (20, 20, 20), -1)
        moving.append(img)
    assert [c.plan(img, following=False) for img in moving] == [DETECT, SKIP, DETECT, SKIP, DETECT, SKIP]


def test_cadence_never_skips_while_a_face_is_followed() -> None:
    bg = scene()
    c = Cadence(every=5, moving_every=2, idle_every=10, motion=0.002)
    plan = [c.plan(bg, following=True) for _ in range(11)]
    assert SKIP not in plan
    assert plan == [DETECT, FOLLOW, FOLLOW, FOLLOW, FOLLOW, DETECT, FOLLOW, FOLLOW, FOLLOW, FOLLOW, DETECT]
    c.search_next()  # a followed face was lost, or the door would open
    assert c.plan(bg, following=True) == DETECT and c.plan(bg, following=True) == FOLLOW


def test_cadence_every_frame_when_shortcuts_are_off() -> None:
    bg = scene()
    c = Cadence(every=1, moving_every=1, idle_every=1, motion=0.0)
    assert {c.plan(bg, following=f) for f in (True, False) * 5} == {DETECT}
    c = Cadence(every=3, moving_every=1, idle_every=4, motion=0.01)
    assert [c.plan(bg, following=True) for _ in range(4)] == [DETECT, FOLLOW, FOLLOW, DETECT]


def test_motion_gate_can_ignore_change_inside_given_boxes() -> None:
    bg = scene()
    gate = MotionGate(0.002)
    gate.look(bg)
    person = bg.copy()
    cv2.ellipse(person, (320, 200), (24, 30), 0, 0, 360, (20, 20, 20), -1)
    assert gate.changed(person)
    assert not gate.changed(person, outside=[(280, 150, 360, 250)]) and gate.box is None
    # a box over half the blob: the other half still counts, and says where
    assert gate.changed(person, outside=[(280, 150, 320, 250)])
    assert gate.box is not None and gate.box[0] >= 312, gate.box


def test_every_around_searches_only_around_the_followed_faces_until_something_moves_elsewhere() -> None:
    bg = scene()
    face = (300, 120, 60, 72)  # x, y, w, h
    c = Cadence(every=3, moving_every=1, idle_every=10, motion=0.002, every_around=True)
    assert c.plan(bg, following=False) == DETECT and c.windows == []
    c.found([face])
    # the followed person sways: change inside their zone (around and below the face) is theirs
    sway = bg.copy()
    cv2.rectangle(sway, (290, 130), (370, 470), (30, 30, 30), -1)
    assert [c.plan(sway, True, [face]) for _ in range(3)] == [FOLLOW, FOLLOW, DETECT]
    assert c.windows == [(270, 84, 390, 228)]  # half a face more on every side, searched at full size
    assert c.region is None
    c.found([face])
    # a newcomer walks in at the side: the every-3rd search covers the whole doorway again
    newcomer = sway.copy()
    cv2.ellipse(newcomer, (80, 200), (24, 30), 0, 0, 360, (20, 20, 20), -1)
    assert [c.plan(newcomer, True, [face]) for _ in range(3)] == [FOLLOW, FOLLOW, DETECT]
    assert c.windows == [] and c.region is None
    # a lost face is looked for around where it was; any whole-doorway request wins
    c.found([face])
    c.search_next(around=[face])
    assert c.plan(newcomer, True, []) == DETECT and c.windows == [(270, 84, 390, 228)]
    c.search_next(around=[face])
    c.search_next()  # the door would open: the whole doorway, always
    assert c.plan(newcomer, True, []) == DETECT and c.windows == []
    c.search_next()
    c.search_next(around=[face])
    assert c.plan(newcomer, True, []) == DETECT and c.windows == []
    # off: the whole doorway every time
    off = Cadence(every=3, moving_every=1, idle_every=10, motion=0.002)
    off.plan(bg, False)
    off.search_next(around=[face])
    assert [off.plan(sway, True, [face]) for _ in range(4)] == [DETECT, FOLLOW, FOLLOW, DETECT]
    assert off.windows == []


@pytest.fixture(scope="module")
def face(faces_dir: Path) -> np.ndarray:
    return read_bgr(faces_dir / "with_mask" / "fm12k_03454.jpg")


def paste(bg: np.ndarray, face: np.ndarray, x: int, y: int, w: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    img = bg.copy()
    h = round(w * face.shape[0] / face.shape[1])
    img[y:y + h, x:x + w] = cv2.resize(face, (w, h), interpolation=cv2.INTER_AREA)
    return img, (x, y, w, h)


def test_follower_finds_a_moved_face_and_loses_a_vanished_one(face: np.ndarray) -> None:
    bg = scene(3)
    first, box = paste(bg, face, 200, 120, 120)
    f = FaceFollower()
    f.remember(7, first, box)
    # the person walked 50 px right and 10 px down; the prediction is off by 30 px
    moved, truth = paste(bg, face, 250, 130, 120)
    hit = f.find(7, moved, (220, 120, 120, box[3]))
    assert hit is not None
    (x, y, w, h), score = hit
    assert abs(x - truth[0]) <= 3 and abs(y - truth[1]) <= 3 and (w, h) == box[2:] and score > 0.9
    # the person came closer: the face is 8% wider, and the box grows with it
    closer, truth2 = paste(bg, face, 245, 125, 130)
    hit = f.find(7, closer, (x, y, w, h))
    assert hit is not None and abs(hit[0][2] - 130) <= 3 and abs(hit[0][0] - truth2[0]) <= 4, (hit, truth2)
    # nobody there any more: not found (the loop then searches the whole frame)
    assert f.find(7, bg, truth) is None
    assert f.find(99, moved, truth) is None  # never remembered
    f.keep({8})
    assert len(f) == 0 and f.find(7, moved, truth) is None


def test_the_door_opens_only_on_a_frame_whose_doorway_was_searched() -> None:
    from maskgate.config import DecisionSettings, ScheduleSettings
    from maskgate.decider import Decider, Decision, plan
    from maskgate.tracker import Observation, Tracker

    box = (100, 100, 80, 80)

    def door(searched: list[bool]) -> list[Decision]:
        tracker, decider = Tracker(), Decider(DecisionSettings(), ScheduleSettings())
        return [decider.decide(i / 10, tracker.update(i / 10, [Observation(box, "with_mask", 0.97)]), wall=0.0,
                               searched=x) for i, x in enumerate(searched)]

    # three masked votes by frame 2, but frame 2 was only followed: wait (checking, no green light);
    # frame 3 was searched: open. Each unsearched frame one vote short of opening asks for a search.
    out = door([True, False, False, True, False])
    assert [d.state for d in out] == ["checking", "checking", "checking", "allow", "allow"]
    assert [d.confirm for d in out] == [False, True, True, False, False]
    assert [d.trigger for d in out] == [None, None, None, "open", None]
    assert not plan(out[2]).green and plan(out[3]).pulse
    # the loop searches the frame after a confirm, so the door opens on the third vote as before
    assert [d.trigger for d in door([True, False, True])] == [None, None, "open"]
    # denying needs no search: one bare face is enough
    tracker, decider = Tracker(), Decider(DecisionSettings(), ScheduleSettings())
    bare = [decider.decide(i / 10, tracker.update(i / 10, [Observation(box, "without_mask", 0.9)]), wall=0.0,
                           searched=False) for i in range(3)]
    assert bare[2].state == "deny" and bare[2].trigger == "alarm"


def test_a_walker_seen_again_after_a_missed_frame_keeps_one_track() -> None:
    from maskgate.tracker import Observation, Tracker

    # measured on the synthetic door: a face found at the frame edge, missed on the next frame, and
    # found again 100 px further in: one person, so one track (a second would block the door as
    # "checking" until the first timed out)
    t = Tracker()
    t.update(0.0, [Observation((24, 187, 61, 79), "with_mask", 1.0)])
    tracks = t.update(0.2, [Observation((122, 187, 72, 92), "with_mask", 1.0)])
    assert len(tracks) == 1 and len(tracks[0].votes) == 2
    # but not across the frame: two faces far apart are two people
    tracks = t.update(0.3, [Observation((122, 187, 72, 92), "with_mask", 1.0),
                            Observation((500, 180, 70, 90), "without_mask", 1.0)])
    assert len(tracks) == 2

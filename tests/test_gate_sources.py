"""Frame sources: replay folder and video, pacing and stale-frame drops, faults, synthetic door."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskgate.config import SourceSettings
from maskgate.errors import FrameError, SourceError
from maskgate.faults import FaultySource
from maskgate.sources import (
    Frame,
    FrameList,
    LatestFrame,
    OpenCVSource,
    Pacer,
    Picamera2Source,
    ReplaySource,
    VideoFileSource,
    make_source,
    orient,
    source_settings_for,
)
from maskgate.synthetic import SyntheticDoor

SYNTH_FACES = {
    "with_mask": ["fm12k_03454.jpg", "c7_01888.jpg", "fm12k_05717.jpg"],
    "without_mask": ["fm12k_06993.jpg", "c7_02447.jpg", "fm12k_06921.jpg"],
    "incorrect_mask": ["mfn2_00463.jpg", "mfn2_00623.jpg"],
}


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"img{i:02d}.png"
        cv2.imwrite(str(p), np.full((48, 64, 3), i * 20, np.uint8))
        out.append(p)
    return out


def test_replay_folder_holds_images_with_gaps_on_frame_time(tmp_path: Path) -> None:
    _images(tmp_path / "f", 3)
    src = ReplaySource(tmp_path / "f", fps=10, hold=2, gap=1, realtime=False, start_wall=100.0)
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    assert [f.name for f in frames] == ["img00.png", "img00.png", "(gap)", "img01.png", "img01.png", "(gap)",
                                        "img02.png", "img02.png", "(gap)"]
    assert [f.ts for f in frames[:3]] == [0.0, 0.1, 0.2]
    assert frames[3].wall == pytest.approx(100.3)
    assert int(frames[3].image[0, 0, 0]) == 20


def test_replay_corrupt_image_is_a_frame_error_and_the_source_goes_on(tmp_path: Path) -> None:
    paths = _images(tmp_path / "f", 3)
    paths[1].write_bytes(b"not an image")
    src = ReplaySource(tmp_path / "f", fps=10, realtime=False)
    src.open()
    assert src.read() is not None
    with pytest.raises(FrameError, match="img01.png"):
        src.read()
    f = src.read()
    assert f is not None and f.name == "img02.png"
    assert src.read() is None


def test_replay_sources_that_cannot_open(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a folder"):
        ReplaySource(tmp_path / "missing").open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        ReplaySource(tmp_path / "empty").open()
    with pytest.raises(SourceError, match="not found"):
        VideoFileSource(tmp_path / "missing.mp4").open()
    (tmp_path / "junk.avi").write_bytes(b"junk" * 100)
    with pytest.raises(SourceError):
        VideoFileSource(tmp_path / "junk.avi").open()
    with pytest.raises(SourceError, match="cannot open"):
        OpenCVSource(str(tmp_path / "nope.mjpeg")).open()
    with pytest.raises(OSError):  # SourceError is an OSError
        make_source(SourceSettings(type="replay", device=str(tmp_path / "nothing"))).open()


def test_picamera2_missing_is_a_clear_source_error() -> None:
    pytest.importorskip("cv2")
    try:
        import picamera2  # noqa: F401
    except ImportError:
        with pytest.raises(SourceError, match="picamera2 is not installed"):
            Picamera2Source().open()
    else:
        pytest.skip("picamera2 is installed here")


def test_picamera2_source_on_the_fake_camera_cuts_the_stride_and_takes_the_size_libcamera_chose(
        scenes_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """picamera2 hands a YUV420 stream over as (height * 3 / 2, stride) bytes with each row padded
    (picamera2's Helpers.make_array); the fake does the same, padding with noise."""
    from maskgate import fake_picamera2
    from maskgate.imageio import read_bgr

    img = cv2.resize(read_bgr(scenes_dir / "images" / "maksssksksss15.jpg"), (630, 470))
    with fake_picamera2.installed([img]) as cams:
        src = Picamera2Source(630, 470, fps=50.0)
        src.open()
        try:
            frames = [src.read() for _ in range(3)]
        finally:
            src.close()
    (cam,) = cams
    cfg = cam.camera_config
    assert cfg is not None and cfg["lores"]["stride"] == 640 and cfg["controls"]["FrameRate"] == 50.0
    assert cam.closed and not cam.started
    for f in frames:
        assert f is not None and f.image.shape == (470, 630, 3)
        diff = np.abs(f.image.astype(int) - img)
        assert diff.mean() < 2 and diff[:, -8:].mean() < 2  # the padding's noise is cut off, not shown

    # libcamera gave another size than asked for: the frames have the size it gave, and the log says so
    with fake_picamera2.installed([img], adjust=(640, 480)), caplog.at_level("WARNING", logger="maskgate.sources"):
        src = Picamera2Source(630, 470, fps=50.0)
        src.open()
        try:
            f = src.read()
        finally:
            src.close()
    assert f is not None and f.image.shape == (480, 640, 3)
    assert "the camera gives 640x480 frames (source.width x source.height asks for 630x470)" in caplog.text

    with fake_picamera2.installed([img], fail_start="Camera __init__ sequence did not complete."), \
            pytest.raises(SourceError, match=r"picamera2: cannot start the camera \(Camera __init__ sequence"):
        Picamera2Source().open()


def test_the_self_test_sees_the_faces_through_the_picamera2_source(scenes_dir: Path) -> None:
    from gpiozero.pins.mock import MockFactory

    from maskgate import fake_picamera2
    from maskgate.cmd_check import PASS, run_checks
    from maskgate.config import Settings, replace
    from maskgate.imageio import read_bgr

    img = read_bgr(scenes_dir / "images" / "maksssksksss15.jpg")  # 193x400: libcamera gives 192x400
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    s = replace(Settings(), source={"type": "picamera2", "width": img.shape[1], "height": img.shape[0]})
    with fake_picamera2.installed([img]):
        res = {r.name: r for r in run_checks(s, pin_factory=MockFactory(), blink=0.01)}
    assert res["camera"].result == PASS and res["camera"].detail == f"picamera2: one {w}x{h} frame", res["camera"]
    assert res["face detector"].result == PASS and "judged" in res["face detector"].detail, res["face detector"]
    assert res["classifier"].result == PASS, res["classifier"]


def test_video_file_replay(tmp_path: Path) -> None:
    path = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for i in range(5):
        w.write(np.full((48, 64, 3), i * 40, np.uint8))
    w.release()
    src = VideoFileSource(path, fps=10, realtime=False, start_wall=0.0)
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    src.close()
    assert len(frames) == 5 and frames[-1].ts == pytest.approx(0.4)
    assert abs(int(frames[2].image.mean()) - 80) < 8


def test_pacer_drops_stale_frames_in_real_time() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    p = Pacer(10.0, True, clock=lambda: now[0], sleep=sleep)
    assert p.next_index() == (0, 0)
    assert p.next_index() == (1, 0) and slept[-1] == pytest.approx(0.1)
    now[0] += 0.55  # the consumer was slow: frames 2..6 went stale
    assert p.next_index() == (6, 4)
    fast = Pacer(10.0, False)
    assert [fast.next_index() for _ in range(3)] == [(0, 0), (1, 0), (2, 0)]


def test_latest_frame_slot_keeps_the_newest_and_counts_drops() -> None:
    from maskgate.sources import Frame
    slot = LatestFrame()
    img = np.zeros((2, 2, 3), np.uint8)
    for i in range(3):
        slot.put(Frame(img, float(i), i))
    assert slot.take(0.1).index == 2 and slot.dropped == 2
    t = time.monotonic()
    with pytest.raises(SourceError, match="no frame"):
        slot.take(0.05)
    assert time.monotonic() - t < 2.0


def test_orient() -> None:
    img = np.arange(6, dtype=np.uint8).reshape(2, 3, 1).repeat(3, axis=2)
    assert orient(img, 90, "none").shape == (3, 2, 3)
    assert orient(img, 0, "horizontal")[0, 0, 0] == 2
    assert orient(img, 180, "none")[0, 0, 0] == 5
    assert orient(img, 0, "none") is img


def test_faulty_wrapper(tmp_path: Path) -> None:
    _images(tmp_path / "f", 1)
    src = FaultySource(ReplaySource(tmp_path / "f", hold=10, realtime=False), corrupt=[2], fail_at=4)
    src.open()
    assert src.read() is not None and src.read() is not None
    with pytest.raises(FrameError):
        src.read()
    assert src.read() is not None
    with pytest.raises(SourceError):
        src.read()


def test_source_argument(tmp_path: Path) -> None:
    base = SourceSettings()
    assert source_settings_for("synthetic", base).type == "synthetic"
    assert source_settings_for("0", base).type == "opencv"
    assert source_settings_for("rtsp://cam/stream", base).device == "rtsp://cam/stream"
    assert source_settings_for(str(tmp_path), base).type == "replay"
    with pytest.raises(SourceError, match="no such file"):
        source_settings_for(str(tmp_path / "nope"), base)


def test_synthetic_door_is_deterministic_with_ground_truth(faces_dir: Path) -> None:
    def run() -> list:
        d = SyntheticDoor(faces_dir, 320, 240, 10, people=3, seed=4, visits=3, realtime=False,
                          images=SYNTH_FACES, start_wall=0.0)
        d.open()
        out = []
        while (f := d.read()) is not None:
            out.append(f)
        return out

    a, b = run(), run()
    assert len(a) == len(b) > 30
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert a[0].image.shape == (240, 320, 3)
    people = {t.person for f in a for t in (f.truth or ())}
    assert 3 <= len(people) <= 9
    assert any(not f.truth for f in a)  # gaps between visits
    for f in a:
        for t in f.truth or ():
            x, y, w, h = t.box
            assert 0 <= x and x + w <= 320 and 0 <= y and y + h <= 240 and t.label in SYNTH_FACES
    # people approach, stand and leave: the largest box sits in the middle of a visit
    widths = [max((t.box[2] for t in f.truth or ()), default=0) for f in a]
    assert max(widths) >= 40


def test_synthetic_door_truth_says_how_much_of_each_head_is_in_sight(faces_dir: Path) -> None:
    """``TruthFace.visible``: a nearer (larger) person is drawn over a farther one, and the truth says
    how much of the farther head is left in sight, so benchmarks do not blame the gate for a face it
    could not see."""
    d = SyntheticDoor(faces_dir, 320, 240, 10, people=3, seed=4, visits=6, realtime=False,
                      images=SYNTH_FACES, start_wall=0.0)
    d.open()
    frames = list(iter(d.read, None))
    faces = [(f, t) for f in frames for t in f.truth or ()]
    assert all(0.0 <= t.visible <= 1.0 for _, t in faces)
    alone = [t for f, t in faces if len(f.truth or ()) == 1]
    assert alone and all(t.visible == 1.0 for t in alone)
    hidden = [(f, t) for f, t in faces if t.visible < 0.5]
    assert hidden, "this door should have someone walk behind someone else"
    for f, t in hidden:  # another person, head or body (up to a head's width either side), in front of it
        x, _, w, _ = t.box
        assert any(o.person != t.person and o.box[0] - o.box[2] < x + w and x < o.box[0] + 2 * o.box[2]
                   for o in f.truth or ()), f.truth


def test_synthetic_door_pastes_the_head_around_the_located_face(faces_dir: Path) -> None:
    from maskgate.crop import CropRule, square_box
    from maskgate.imageio import read_bgr

    name = SYNTH_FACES["with_mask"][0]
    h, w = read_bgr(faces_dir / "with_mask" / name).shape[:2]
    box = (w // 4, h // 4, w // 3, h // 3)  # a face in part of a larger photo

    def widest(door: SyntheticDoor) -> tuple[int, int, int, int]:
        door.open()
        boxes = [t.box for f in iter(door.read, None) for t in f.truth or ()]
        return max(boxes, key=lambda b: b[2])

    whole = widest(SyntheticDoor(faces_dir, 640, 480, 10, script=[["with_mask"]], realtime=False,
                                 images={"with_mask": [name]}, start_wall=0.0))
    door = SyntheticDoor(faces_dir, 640, 480, 10, script=[["with_mask"]], realtime=False,
                         heads={"with_mask": {name: box}}, start_wall=0.0)
    head = widest(door)
    assert door.images == {"with_mask": [name]}
    assert abs(whole[3] / whole[2] - h / w) < 0.05  # the whole photo keeps its aspect
    assert abs(head[3] - head[2]) <= 1  # the head is the crop rule's square around the face
    side = square_box(box, CropRule())[2]
    head_img = door._face(faces_dir / "with_mask" / name)
    assert head_img.shape == (side, side, 4) and head_img[:, :, 3].min() == 255  # all inside the photo
    from maskgate.synthetic import _head
    corner = _head(read_bgr(faces_dir / "with_mask" / name), (0, 0, w // 2, h // 2))
    assert corner[0, 0, 3] == 0 and corner[-1, -1, 3] == 255  # transparent where the square leaves the photo


def test_the_neck_under_a_head_cut_at_the_photos_top_takes_the_photos_colour(faces_dir: Path) -> None:
    # a face box reaching above its photo: the forehead window of the head's square is transparent,
    # and its colour planes are black there; a neck drawn black under the chin reads as a mask
    from maskgate.imageio import read_bgr

    name = SYNTH_FACES["without_mask"][0]
    photo = read_bgr(faces_dir / "without_mask" / name)
    h, w = photo.shape[:2]
    box = (w // 4, -h // 2, w // 2, h)
    door = SyntheticDoor(faces_dir, 640, 480, 10, script=[["without_mask"]], realtime=False,
                         heads={"without_mask": {name: box}}, start_wall=0.0)
    door.open()
    frames = [f for f in iter(door.read, None) if f.truth]
    frame = max(frames, key=lambda f: f.truth[0].box[2])  # standing at the door
    x, y, bw, bh = frame.truth[0].box
    neck = frame.image[min(479, y + bh + bw // 5), x + bw // 2].astype(int)
    inside = photo.reshape(-1, 3).astype(int)
    assert neck.max() > 40  # not the transparent pixels' black
    assert np.abs(inside - neck).sum(axis=1).min() < 30  # a colour of the photo


def test_synthetic_door_needs_its_faces(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="faces folder"):
        SyntheticDoor(tmp_path / "none").open()
    # the default config names no folder (`maskgate demo` without --faces): say what to pass, not
    # that ./with_mask has no pictures
    with pytest.raises(SourceError, match=r"source.faces: .*--faces DIR"):
        make_source(SourceSettings(type="synthetic"))
    (tmp_path / "with_mask").mkdir()
    with pytest.raises(SourceError, match="no .jpg"):
        SyntheticDoor(tmp_path, script=[["with_mask"]]).open()


def test_frame_list_reads_its_frames_once_in_order_and_rewinds_on_open() -> None:
    frames = [Frame(np.full((8, 8, 3), i, np.uint8), i / 10, i) for i in range(3)]
    src = FrameList(frames)
    src.open()
    got = [src.read() for _ in range(4)]
    assert [f.index for f in got if f is not None] == [0, 1, 2] and got[3] is None
    assert "3/3" in repr(src) and src.dropped == 0 and not src.live
    src.open()
    first = src.read()
    assert first is not None and first.index == 0
    src.close()

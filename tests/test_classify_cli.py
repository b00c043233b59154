"""`maskgate classify`: verdicts per face, JSON lines, and bad files reported while the rest go on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maskgate", "classify", *args], capture_output=True, text=True,
                          check=False, timeout=300)


def test_classify_json_mixed_directory(tmp_path: Path, scenes_dir: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(scenes_dir / "images" / "maksssksksss0.jpg", d / "a_scene.jpg")
    (d / "b_empty.jpg").write_bytes(b"")
    (d / "c_notes.txt").write_text("not an image")
    img = cv2.imread(str(scenes_dir / "images" / "maksssksksss0.jpg"))
    bgra = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    cv2.imwrite(str(d / "d_alpha.png"), bgra)
    res = _run("--json", str(d))
    assert res.returncode == 0, res.stderr
    lines = [json.loads(s) for s in res.stdout.splitlines()]
    by = {Path(x["image"]).name: x for x in lines}
    assert set(by) == {"a_scene.jpg", "b_empty.jpg", "c_notes.txt", "d_alpha.png"}
    assert "empty file" in by["b_empty.jpg"]["error"]
    assert "not a readable image" in by["c_notes.txt"]["error"]
    faces = by["a_scene.jpg"]["faces"]
    assert len(faces) >= 2
    for f in faces:
        assert f["label"] in ("with_mask", "without_mask", "incorrect_mask")
        assert all(isinstance(v, int) for v in f["box"]) and 0 <= f["score"] <= 1
    assert len(by["d_alpha.png"]["faces"]) == len(faces)


def test_classify_all_unreadable_exits_nonzero(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    res = _run(str(tmp_path / "x.jpg"))
    assert res.returncode == 1
    assert "x.jpg: error:" in res.stdout and "no readable image" in res.stderr


def test_photos_are_also_searched_with_a_border_so_a_face_cut_by_the_edge_is_found(
        tmp_path: Path, scenes_dir: Path, yunet_path: Path) -> None:
    """``DetectorSettings.border``: YuNet scores a small masked face at the photo's left edge (scene
    maksssksksss796, tuning half) at 0.02, and at 0.47 once the picture has a black margin; boxes come
    back in the photo's own pixels. ``maskgate classify`` searches photos so."""
    from maskgate.detector import PHOTO_BORDER, DetectorSettings, FaceDetector
    from maskgate.imageio import read_bgr
    from maskgate.scenes import iou, load_scenes

    scene = next(s for s in load_scenes(scenes_dir) if s.name == "maksssksksss796")
    edge = next(f.box for f in scene.faces if f.box[:2] == (8, 113))  # the lower of two at the left edge
    img = read_bgr(scene.image)
    plain = FaceDetector(DetectorSettings(score_threshold=0.01), yunet_path).detect(img)
    assert max(f.score for f in plain if iou(f.box, edge) >= 0.3) < 0.1
    framed = FaceDetector(DetectorSettings(border=PHOTO_BORDER), yunet_path).detect(img)
    hit = [f for f in framed if iou(f.box, edge) >= 0.3]
    assert hit and hit[0].score > 0.4, hit
    h, w = img.shape[:2]
    assert all(0 <= f.box[0] and 0 <= f.box[1] and f.box[0] + f.box[2] <= w and f.box[1] + f.box[3] <= h
               for f in framed)
    # nothing found twice: the two passes are merged
    assert all(iou(a.box, b.box) < 0.3 for i, a in enumerate(framed) for b in framed[i + 1:])
    shutil.copy(scene.image, tmp_path / scene.image.name)
    res = _run("--json", "--detector-model", str(yunet_path), str(tmp_path / scene.image.name))
    assert res.returncode == 0, res.stderr
    boxes = [tuple(f["box"]) for f in json.loads(res.stdout)["faces"]]
    assert any(iou(b, edge) >= 0.3 for b in boxes), boxes


def test_classify_asks_the_second_opinion_about_unsure_faces(scenes_dir: Path, tmp_path: Path) -> None:
    """A masked face (annotated with_mask) the small classifier calls bare at 0.73: inside the band,
    the second opinion is asked and the average says masked. Without it the small one's verdict stands."""
    img = str(scenes_dir / "images" / "maksssksksss392.jpg")

    def big_face(*flags: str) -> dict[str, object]:
        res = _run("--json", *flags, img)
        assert res.returncode == 0, res.stderr
        faces = json.loads(res.stdout)["faces"]
        return max(faces, key=lambda f: f["box"][2])

    assert big_face()["label"] == "with_mask"
    assert big_face("--no-second-opinion")["label"] == "without_mask"
    res = _run("--second-model", str(tmp_path / "nowhere"), img)
    assert res.returncode != 0 and str(tmp_path / "nowhere") in res.stderr

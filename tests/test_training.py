"""A tiny real training run: data -> grouped split -> Keras -> int8 TFLite -> back through the device runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maskgate.classifier import Classifier
from maskgate.detector import PHOTO_BORDER, DetectorSettings
from maskgate.errors import DataError


def test_tiny_training_through_int8_and_device_runtime(tmp_path: Path, faces_dir: Path, scenes_dir: Path) -> None:
    from maskgate_convert.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--arch", "default", "--epochs", "1", "--limit-per-class", "40", "--data", str(faces_dir),
               "--scenes", str(scenes_dir), "--out", str(out)])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["checks"]["all_integer"] and m["checks"]["ops_not_on_edgetpu_list"] == []
    assert m["checks"]["edgetpu"]["compiled"] in (True, False)
    assert m["int8_float_agreement"] >= 0.8
    val = m["validation_int8"]  # what a model is chosen on, kept apart from the test split's numbers
    assert 0 < val["n"] < m["train_sizes"]["val"]  # its faces (the background patches are counted apart)
    assert sum(map(sum, val["confusion"]["matrix"])) == val["n"] and val["confusion"]["matrix"][3] == [0, 0, 0, 0]
    man = json.loads((out / "bundle" / "manifest.json").read_text())
    assert man["labels"] == ["with_mask", "without_mask", "incorrect_mask", "no_face"]
    assert man["input"]["dtype"] == "int8" and man["split"]["sha256"]
    # how much of the crops was padding, per source and class (facemask12k's bare faces are tight)
    assert 0.2 < man["data"]["padding"]["facemask12k"]["without_mask"] < 0.8
    mm = man["metrics"]  # the headline numbers travel with the bundle
    assert mm["test_split"]["balanced_accuracy_allow_deny"]["int8"] == \
        round(m["test"]["int8"]["balanced_accuracy_allow_deny"], 4)
    assert mm["scenes_test_half_int8"][">=48px"]["faces"] > 0 and mm["latency_ms_1thread"]["int8"] > 0
    # the device's detector changes later: rescore re-measures the scenes, the model stays
    before = (out / "bundle" / "model.tflite").read_bytes()
    assert main(["rescore", str(out / "bundle"), "--scenes", str(scenes_dir)]) == 0
    man2 = json.loads((out / "bundle" / "manifest.json").read_text())
    assert man2["sha256"] == man["sha256"] and (out / "bundle" / "model.tflite").read_bytes() == before
    assert man2["metrics"]["test_split"] == mm["test_split"] and "rescore" in man2["metrics"]["scenes_rescored"]
    assert man2["metrics"]["scenes_test_half_int8"][">=48px"]["faces"] == mm["scenes_test_half_int8"][">=48px"]["faces"]
    assert man2["detector"]["score_threshold"] == DetectorSettings().score_threshold
    assert man2["detector"]["border"] == PHOTO_BORDER and man2["detector"]["top_k"] == DetectorSettings().top_k
    clf = Classifier(out / "bundle")
    import numpy as np
    v = clf.classify(np.full(clf.input_spec.shape, 128, np.float32))
    assert v.label in man["labels"]
    assert "scenes_test_half" in m and m["scenes_test_half"]["int8"][">=48px"]["faces"] > 0


def test_missing_or_empty_class_folder_is_named(tmp_path: Path) -> None:
    from maskgate_convert.dataset import scan_classes

    (tmp_path / "with_mask").mkdir()
    (tmp_path / "with_mask" / "a.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="without_mask: class folder missing"):
        scan_classes(tmp_path, ("with_mask", "without_mask"))
    (tmp_path / "without_mask").mkdir()
    with pytest.raises(DataError, match="without_mask: class folder is empty"):
        scan_classes(tmp_path, ("with_mask", "without_mask"))


def test_inside_fraction_marks_the_padding_of_tight_crops() -> None:
    from maskgate.crop import CropRule, square_box
    from maskgate_convert.build import inside_fraction

    # a face well inside a large frame: the whole crop is real
    assert inside_fraction((480, 640, 3), (300, 200, 60, 60)) == (0.0, 0.0, 1.0, 1.0)
    # a tight face image: the crop rule's square reaches past every edge
    x0, y0, x1, y1 = inside_fraction((100, 100, 3), (10, 10, 80, 80))
    sx, sy, side = square_box((10, 10, 80, 80), CropRule())
    assert 0 < x0 < 0.1 and y0 == 0 and 0.9 < x1 < 1 and 0.8 < y1 < 1  # the crop sits low: chin
    assert sy >= 0 and x0 == pytest.approx(-sx / side) and y1 == pytest.approx((100 - sy) / side)


def test_replace_padding_keeps_the_face_and_fills_the_rest() -> None:
    import numpy as np
    import tensorflow as tf

    from maskgate_convert.build import replace_padding

    face = np.zeros((64, 64, 3), np.float32)
    out = replace_padding(tf.constant(face), tf.constant([0.0, 0.25, 0.5, 1.0]),
                          tf.fill((64, 64, 3), 200.0)).numpy()
    assert np.all(out[20:, :28] < 1.0)  # inside the image: untouched
    assert np.all(out[:, 36:] > 199.0) and np.all(out[:12] > 199.0)  # padding: the background
    assert 0 < out[40, 32, 0] < 200  # blended at the seam, no hard edge


def test_source_commit_says_when_the_code_differs_from_its_commit(tmp_path: Path) -> None:
    import subprocess

    from maskgate_convert.build import source_commit

    assert source_commit(tmp_path) == ""  # not a git checkout
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("x = 1\n")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("add", "a.py")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD")
    assert source_commit(repo) == head
    (repo / "new.txt").write_text("untracked files do not count\n")
    assert source_commit(repo) == head
    (repo / "a.py").write_text("x = 2\n")
    assert source_commit(repo) == head + "+dirty"


def test_background_patches_keep_clear_of_faces_and_keep_the_detectors_false_boxes(
        scenes_dir: Path, yunet_path: Path) -> None:
    """no_face examples: the detector's boxes away from every face (hard negatives) and random squares;
    never a box that overlaps an annotated face or one of the faces the annotations miss, and random
    squares clear of every detector box."""
    import numpy as np

    from maskgate.detector import FaceDetector
    from maskgate.imageio import read_bgr
    from maskgate.scenes import iou, load_scenes, split_scenes
    from maskgate_convert.build import background_boxes
    from maskgate_convert.scene_review import REVIEWED_DETECTOR, UNANNOTATED_FACES

    tune = {sc.name: sc for sc in split_scenes(load_scenes(scenes_dir))["tune"]}
    assert set(UNANNOTATED_FACES) <= set(tune), "the reviewed faces are all on the tuning half"
    det = FaceDetector(REVIEWED_DETECTOR, yunet_path)
    rng = np.random.default_rng(0)
    kept_detector_boxes = reviewed_faces_found = 0
    for name, reviewed in UNANNOTATED_FACES.items():
        sc = tune[name]
        img = read_bgr(sc.image)
        found = [f.box for f in det.detect(img)]
        reviewed_faces_found += sum(any(iou(r, b) > 0 for b in found) for r in reviewed)
        faces = [f.box for f in sc.faces] + list(reviewed)
        boxes = background_boxes(sc, found, img.shape, 8, rng)
        assert len(boxes) <= 8
        for b in boxes:
            assert not any(iou(b, f) > 0 for f in faces), (name, b)
            if b in found:
                kept_detector_boxes += 1
            else:
                assert not any(iou(b, f) > 0 for f in found), (name, b)
        # every detector box clear of all faces is used (there are fewer than 8 in these scenes)
        assert [b for b in found if not any(iou(b, f) > 0 for f in faces)] == \
            [b for b in boxes if b in found]
    assert reviewed_faces_found == sum(len(v) for v in UNANNOTATED_FACES.values())
    assert kept_detector_boxes > 0
    # the review looked at every box this detector finds clear of the annotations, and only those:
    # 72, of which 27 are faces (listed) and 45 not; a new detector or OpenCV means a new review
    clear = [(name, f.box) for name, sc in tune.items() for f in det.detect(read_bgr(sc.image))
             if all(iou(f.box, a.box) == 0 for a in sc.faces)]
    assert len(clear) == 72
    assert sum(any(iou(b, r) > 0 for r in UNANNOTATED_FACES.get(name, ())) for name, b in clear) == 27

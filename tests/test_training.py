"""A tiny real training run: data -> grouped split -> Keras -> int8 TFLite -> back through the device runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maskgate.classifier import Classifier
from maskgate.detector import DetectorSettings
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
    man = json.loads((out / "bundle" / "manifest.json").read_text())
    assert man["labels"] == ["with_mask", "without_mask", "incorrect_mask", "no_face"]
    assert man["input"]["dtype"] == "int8" and man["split"]["sha256"]
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

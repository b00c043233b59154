"""The shipped bundle loads and classifies; mismatched or corrupt bundles are refused with the path."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from maskgate.bundle import default_bundle_dir, load_bundle, split_faces, split_files, split_heads
from maskgate.classifier import Classifier
from maskgate.errors import ModelError
from maskgate.imageio import read_bgr
from maskgate.model_store import sha256_file

STATED_BALANCED_ACCURACY = 0.96


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    d = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), d)
    return d


def test_shipped_bundle_loads_and_classifies(scenes_dir: Path) -> None:
    clf = Classifier()
    assert clf.labels[:3] == ("with_mask", "without_mask", "incorrect_mask")
    assert clf.runtime in ("ai-edge-litert", "tflite-runtime") and clf.delegate == "cpu"
    img = read_bgr(scenes_dir / "images" / "maksssksksss0.jpg")
    v = clf.classify_face(img, (79, 105, 30, 37))
    assert v.label in clf.labels and 0.0 <= v.score <= 1.0
    assert abs(sum(v.scores.values()) - 1.0) < 0.05
    assert "with_mask" in repr(clf)


def test_shipped_model_is_small_and_integer() -> None:
    b = load_bundle()
    assert b.input.dtype == "int8" and b.output.dtype == "int8"
    assert b.model_path.stat().st_size <= 150_000  # the build stage's budget: 150 KB


def test_corrupt_model_refused_with_path(bundle_copy: Path) -> None:
    m = bundle_copy / "model.tflite"
    data = bytearray(m.read_bytes())
    data[len(data) // 2] ^= 0xFF
    m.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model\.tflite: sha256 .* does not match"):
        Classifier(bundle_copy)


def test_truncated_model_with_matching_manifest_refused_by_runtime(bundle_copy: Path) -> None:
    m = bundle_copy / "model.tflite"
    m.write_bytes(m.read_bytes()[:1000])
    man = json.loads((bundle_copy / "manifest.json").read_text())
    man["sha256"] = sha256_file(m)
    (bundle_copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelError, match="refused the model"):
        Classifier(bundle_copy)


@pytest.mark.parametrize("field,value,match", [
    ("schema_version", 99, "schema_version 99 is not supported"),
    ("labels", ["a", "b"], "2 labels but the output has"),
])
def test_manifest_mismatch_refused(bundle_copy: Path, field: str, value: object, match: str) -> None:
    man = json.loads((bundle_copy / "manifest.json").read_text())
    man[field] = value
    (bundle_copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelError, match=match):
        Classifier(bundle_copy)


def test_tensor_details_mismatch_refused(bundle_copy: Path) -> None:
    man = json.loads((bundle_copy / "manifest.json").read_text())
    man["input"]["quantization"]["zero_point"] = 7
    (bundle_copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelError, match="input tensor does not match the manifest"):
        Classifier(bundle_copy)


def test_missing_manifest_refused(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(ModelError, match="manifest not found"):
        load_bundle(bundle_copy)


def test_committed_split_has_no_group_across_train_and_test() -> None:
    b = load_bundle()
    split = b.directory / "split.csv"
    assert sha256_file(split) == b.manifest["split"]["sha256"]
    groups: dict[str, set[str]] = {}
    with split.open() as f:
        for row in csv.DictReader(f):
            groups.setdefault(row["group"], set()).add(row["split"])
    assert all(len(s) == 1 for s in groups.values())


def test_split_files_lists_only_the_held_out_split() -> None:
    b = load_bundle()
    test, train = split_files(b, "test"), split_files(b, "train")
    assert set(test) == {"with_mask", "without_mask", "incorrect_mask"}
    for label, names in test.items():
        assert names and not set(names) & set(train.get(label, ()))


def test_split_faces_gives_the_located_face_of_each_held_out_image(tmp_path: Path) -> None:
    b = load_bundle()
    files, faces = split_files(b, "test"), split_faces(b, "test")
    assert set(faces) == set(files)
    for label, boxes in faces.items():
        assert boxes and set(boxes) <= set(files[label])
        assert all(w >= 8 and h >= 8 for _x, _y, w, h in boxes.values())
    # images where the build found no face are left out (e.g. chandrikadeb7 masked photos)
    assert sum(map(len, faces.values())) < sum(map(len, files.values()))
    # a split file from before the build recorded boxes: no faces, the files are still listed
    old = tmp_path / "bundle"
    shutil.copytree(b.directory, old)
    rows = list(csv.DictReader((old / "split.csv").open()))
    with (old / "split.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "source", "group", "split"])
        w.writerows([r["file"], r["label"], r["source"], r["group"], r["split"]] for r in rows)
    assert split_faces(load_bundle(old), "test") == {} and split_files(load_bundle(old), "test") == files
    # a door built from it pastes those files whole
    assert split_heads(load_bundle(old), "test") == {lab: dict.fromkeys(v) for lab, v in files.items()}
    assert split_heads(b, "test") == faces


def test_committed_model_accuracy_on_committed_test_split(faces_dir: Path) -> None:
    """Re-crop the committed test split with the device's detector and classify with the shipped model."""
    from maskgate_convert.dataset import Item, locate_faces, source_of
    from maskgate_convert.metrics import door_metrics

    b = load_bundle()
    rows = list(csv.DictReader((b.directory / "split.csv").open()))
    test = [r for r in rows if r["split"] == "test"]
    rng = np.random.default_rng(0)
    pick = [test[i] for i in sorted(rng.choice(len(test), size=min(600, len(test)), replace=False))]
    items = [Item(faces_dir / r["file"], r["label"], source_of(Path(r["file"]))) for r in pick]
    located = locate_faces(items, cache=False, workers=2)
    clf = Classifier()
    truth, pred = [], []
    for loc in located:
        if loc.box is None:
            continue
        truth.append(loc.item.label)
        pred.append(clf.classify_face(read_bgr(loc.item.path), loc.box).label)
    m = door_metrics(truth, pred, clf.labels)
    assert len(truth) >= 400
    assert m["balanced_accuracy_allow_deny"] >= STATED_BALANCED_ACCURACY, m
    # the manifest states the build's numbers on the whole test split; this sample agrees with them
    stated = b.manifest["metrics"]["test_split"]
    assert stated["faces"] > len(truth)
    assert abs(m["balanced_accuracy_allow_deny"] - stated["balanced_accuracy_allow_deny"]["int8"]) <= 0.03, m

"""The second opinion: a larger classifier asked about the faces the small one is unsure of."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from maskgate.bundle import default_bundle_dir, load_bundle
from maskgate.classifier import Classifier, Verdict
from maskgate.config import parse_config
from maskgate.errors import ModelError
from maskgate.imageio import read_bgr
from maskgate.pipeline import build_classifier
from maskgate.second_opinion import Band, SecondOpinion, combine, default_second_dir, load_second_opinion


def verdict(scores: dict[str, float]) -> Verdict:
    label = max(scores, key=lambda k: scores[k])
    return Verdict(label, scores[label], scores)


def test_combine_averages_face_labels_and_keeps_no_face() -> None:
    first = verdict({"with_mask": 0.5, "without_mask": 0.2, "incorrect_mask": 0.1, "no_face": 0.2})
    second = verdict({"with_mask": 0.0, "without_mask": 1.0, "incorrect_mask": 0.0})
    v = combine(first, second)
    assert v.scores["no_face"] == pytest.approx(0.2)
    assert v.scores["with_mask"] == pytest.approx(0.25)
    assert v.scores["without_mask"] == pytest.approx((0.2 + 0.8) / 2)
    assert sum(v.scores.values()) == pytest.approx(1.0)
    assert v.label == "without_mask"


def test_band_is_an_open_interval_and_checked() -> None:
    b = Band(0.1, 0.9)
    assert b.holds(0.5) and not b.holds(0.1) and not b.holds(0.95)
    with pytest.raises(ValueError, match="band"):
        Band(0.9, 0.1)


def test_shipped_second_opinion_is_an_integer_model_chosen_for_the_shipped_classifier() -> None:
    from maskgate_convert.quantize import check_integer_model

    second = load_bundle(default_second_dir())
    assert second.labels == ("with_mask", "without_mask", "incorrect_mask")
    assert second.input.shape == (1, 150, 150, 3) and second.input.dtype == "int8"
    checks = check_integer_model(second.model_path)
    assert checks["all_integer"] and not checks["ops_not_on_edgetpu_list"]
    # the band was chosen on the validation faces for the shipped first model, byte for byte
    assert second.manifest["first_sha256"] == load_bundle(default_bundle_dir()).manifest["sha256"]
    low, high = second.manifest["band"]
    assert 0.0 < low < 0.5 < high < 1.0


@pytest.fixture(scope="module")
def cascade() -> SecondOpinion:
    return load_second_opinion(Classifier())


def _val_faces(faces_dir: Path, n: int) -> list[tuple[np.ndarray, tuple[int, int, int, int], str]]:
    rows = [r for r in csv.DictReader((default_bundle_dir() / "split.csv").open()) if r["split"] == "val" and r["face"]]
    out = []
    for r in rows[:n]:
        box = tuple(int(v) for v in r["face"].split())
        out.append((read_bgr(faces_dir / r["file"]), box, r["label"]))  # type: ignore[arg-type]
    return out


def test_the_second_model_is_asked_only_inside_the_band(cascade: SecondOpinion, faces_dir: Path) -> None:
    inside = outside = 0
    for img, box, _ in _val_faces(faces_dir, 300):
        first = cascade.first.classify_face(img, box)
        before = cascade.asked
        got = cascade.classify_face(img, box)
        if cascade.band.holds(first.scores["with_mask"]):
            inside += 1
            assert cascade.asked == before + 1
            assert got == combine(first, cascade.second.classify_face(img, box))
        else:
            outside += 1
            assert cascade.asked == before and got == first
        # without the frame and the box there is no second crop: the first model answers
        x = np.zeros(cascade.input_spec.shape, np.float32)
        assert cascade.classify(x) == cascade.first.classify(x)
    assert inside >= 1 and outside >= 100


def test_config_turns_the_second_opinion_off_and_names_a_missing_bundle(tmp_path: Path) -> None:
    # the gate runs the small classifier alone unless the config asks for the second opinion
    assert isinstance(build_classifier(parse_config("")), Classifier)
    asked = build_classifier(parse_config("[classifier]\nsecond_opinion = true\n"))
    assert isinstance(asked, SecondOpinion) and asked.band == Band(*asked.second.bundle.manifest["band"])
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelError, match=str(missing)):
        build_classifier(parse_config(f'[classifier]\nsecond_opinion = true\nsecond_model = "{missing}"\n'))


def test_a_bundle_without_a_band_is_refused_with_its_path(tmp_path: Path) -> None:
    d = tmp_path / "second"
    shutil.copytree(default_second_dir(), d)
    m = json.loads((d / "manifest.json").read_text())
    m["band"] = "wide"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match=r"manifest.json: no valid second-opinion band"):
        load_second_opinion(Classifier(), d)


def test_second_opinion_build_from_the_npm_weights(tmp_path: Path, faces_dir: Path) -> None:
    """A tiny real build: the pinned npm tarball (downloaded and sha-checked), the descriptor's
    trunk, a head, int8, the band chosen on the validation faces, and the device loads the result."""
    import cv2

    from maskgate_convert import descriptor
    from maskgate_convert.cli import main

    tarball = descriptor.fetch_tarball(tmp_path / "npm")
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(ModelError, match=str(bad)):
        descriptor.load_weights(bad)
    weights = descriptor.load_weights(tarball)
    trunk = descriptor.trunk(weights)
    # the port is dlib's network: a face and its mirror image are the same person (distance < 0.6)
    img, box, _ = _val_faces(faces_dir, 1)[0]
    from maskgate.crop import CropRule, face_input
    from maskgate_convert.second_opinion import BANDS, SPEC

    x = face_input(img, box, SPEC, CropRule())
    f = trunk.predict(np.stack([x, cv2.flip(x, 1)]), verbose=0)
    d = descriptor.descriptor(weights, f)
    assert float(np.linalg.norm(d[0] - d[1])) < 0.6 and float(np.linalg.norm(d[0])) > 0.1

    out = tmp_path / "so"
    rc = main(["second-opinion", "--weights", str(tarball), "--limit-per-class", "20", "--epochs", "2",
               "--data", str(faces_dir), "--no-scenes", "--out", str(out)])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["checks"]["all_integer"] and m["checks"]["ops_not_on_edgetpu_list"] == []
    man = json.loads((out / "bundle" / "manifest.json").read_text())
    assert man["labels"] == ["with_mask", "without_mask", "incorrect_mask"]
    assert man["first_sha256"] == load_bundle(default_bundle_dir()).manifest["sha256"]
    assert man["weights_source"]["sha256"] == descriptor.NPM_SHA256
    assert tuple(man["band"]) in BANDS
    cascade = load_second_opinion(Classifier(), out / "bundle")
    assert cascade.classify_face(img, box).label in cascade.labels

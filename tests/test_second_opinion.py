"""The second opinion: a larger classifier asked about the faces the small one is unsure of."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from maskgate.bundle import default_bundle_dir, load_bundle
from maskgate.classifier import Classifier, Verdict
from maskgate.config import parse_config
from maskgate.errors import ConfigFileError, ModelError
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


def test_config_chooses_when_the_second_opinion_is_asked_and_names_a_missing_bundle(tmp_path: Path) -> None:
    # the gate asks the second opinion before an alarm and on weak masked votes unless the config
    # says otherwise
    default = build_classifier(parse_config(""))
    assert isinstance(default, SecondOpinion) and default.when == "door"
    assert isinstance(build_classifier(parse_config('[classifier]\nsecond_opinion = "off"\n')), Classifier)
    for when in ("unsure", "deny", "door"):
        asked = build_classifier(parse_config(f'[classifier]\nsecond_opinion = "{when}"\n'))
        assert isinstance(asked, SecondOpinion) and asked.when == when
        assert asked.band == Band(*asked.second.bundle.manifest["band"])
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelError, match=str(missing)):
        build_classifier(parse_config(f'[classifier]\nsecond_opinion = "deny"\nsecond_model = "{missing}"\n'))
    with pytest.raises(ConfigFileError,
                       match=r"classifier.second_opinion: must be one of 'off', 'unsure', 'deny', 'door'"):
        parse_config('[classifier]\nsecond_opinion = "always"\n')


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
    trunk, its last block trained with a head, int8, the band chosen on the validation faces, and
    the device loads the result."""
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
    # cut anywhere, front and tail compose to the same network (the build retrains the tail)
    front, tail = descriptor.trunk_parts(weights, 4)
    assert front.output.shape[1:] == (8, 8, 128)
    parts = tail.predict(front.predict(x[None], verbose=0), verbose=0)[0]
    np.testing.assert_allclose(parts, f[0], rtol=1e-5, atol=1e-5)

    out = tmp_path / "so"
    rc = main(["second-opinion", "--weights", str(tarball), "--limit-per-class", "20", "--epochs", "2",
               "--tune-epochs", "2", "--data", str(faces_dir), "--no-scenes", "--out", str(out)])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["tail_blocks"] == 1 and 1 <= m["tune_epochs_run"] <= 2
    assert m["checks"]["all_integer"] and m["checks"]["ops_not_on_edgetpu_list"] == []
    man = json.loads((out / "bundle" / "manifest.json").read_text())
    assert man["labels"] == ["with_mask", "without_mask", "incorrect_mask"]
    assert man["first_sha256"] == load_bundle(default_bundle_dir()).manifest["sha256"]
    assert man["weights_source"]["sha256"] == descriptor.NPM_SHA256
    assert tuple(man["band"]) in BANDS
    cascade = load_second_opinion(Classifier(), out / "bundle")
    assert cascade.classify_face(img, box).label in cascade.labels


# Masked validation faces the small classifier reads as bare (0.92-0.99) and the second model as
# masked (0.97-1.0), with the face box the build located in each image.
MISREAD_MASKED = {"c7_02073.jpg": (62, 34, 99, 132), "fm12k_11163.jpg": (31, 9, 164, 207),
                  "fm12k_02597.jpg": (57, 44, 136, 164)}


def _door_run(faces_dir: Path, yunet_path: Path, mode: str, masked: dict[str, tuple[int, int, int, int]] | None = None,
              seed: int = 5) -> tuple[list[tuple[str, list[str]]], Any, Any]:
    from gpiozero.pins.mock import MockFactory

    from maskgate.bundle import split_heads
    from maskgate.config import Settings, replace
    from maskgate.detector import FaceDetector
    from maskgate.events import FrameResult
    from maskgate.outputs import Outputs
    from maskgate.pipeline import Pipeline, detector_settings
    from maskgate.stats import Stats
    from maskgate.synthetic import SyntheticDoor

    s = replace(Settings(), classifier={"second_opinion": mode})
    bare = dict(list(split_heads(load_bundle(default_bundle_dir()), "val")["without_mask"].items())[:3])
    door = SyntheticDoor(faces_dir, 480, 360, 10, script=[["with_mask"], ["without_mask"]] * 3, seed=seed,
                         realtime=False, start_wall=0.0, heads={"with_mask": masked or MISREAD_MASKED,
                                                                     "without_mask": bare})
    results: list[FrameResult] = []
    stats = Stats()
    out = Outputs(s.outputs, MockFactory(), mode=s.decision.mode)
    door.open()
    try:
        Pipeline(s, door, FaceDetector(detector_settings(s), str(yunet_path)), build_classifier(s), out,
                 stats=stats, observers=[results.append]).run()
    finally:
        out.close()
        door.close()
    visits = [(v.people[0].label, [r.decision.trigger for r in results
                                   if v.start <= r.frame < v.end and r.decision.trigger])
              for v in door.visits_until(0)]
    return visits, stats, results


def test_deny_mode_holds_the_alarm_for_masked_faces_the_small_model_misreads(faces_dir: Path, yunet_path: Path) -> None:
    alone, stats_alone, _ = _door_run(faces_dir, yunet_path, "off")
    asked, stats, _ = _door_run(faces_dir, yunet_path, "deny")
    # alone, the small classifier sounds the alarm for masked visitors
    assert any("alarm" in trig for label, trig in alone if label == "with_mask"), alone
    assert stats_alone.second_looks == 0
    # with the second look before an alarm: no masked visitor is buzzed, every bare one buzzed
    # alone still is, and nobody bare is let in
    for (label, trig), (_, trig_alone) in zip(asked, alone, strict=True):
        if label == "with_mask":
            assert "alarm" not in trig, asked
        else:
            assert ("alarm" in trig) == ("alarm" in trig_alone) and "open" not in trig, (asked, alone)
    assert sum("alarm" in trig for label, trig in asked if label == "without_mask") >= 2
    assert stats.second_looks >= stats.alarms_held > 0
    assert stats.second_looks < 60  # it looks only before an alarm, not on every bare frame


# Masked validation visitors the door leaves waiting or lets in late in `deny` mode: on many frames the small
# classifier reads them masked under decision.mask_score (uncertain votes), the second model surely masked.
UNSURE_MASKED = ("c7_01935.jpg", "fm12k_03625.jpg", "fm12k_02065.jpg")


def test_door_mode_lets_in_masked_faces_the_small_model_is_unsure_of(faces_dir: Path, yunet_path: Path) -> None:
    from maskgate.bundle import split_heads

    heads = split_heads(load_bundle(default_bundle_dir()), "val")["with_mask"]
    masked = {name: heads[name] for name in UNSURE_MASKED}
    deny, _, _ = _door_run(faces_dir, yunet_path, "deny", masked, seed=4)
    door, stats, _ = _door_run(faces_dir, yunet_path, "door", masked, seed=4)
    opened = [sum("open" in trig for label, trig in run if label == "with_mask") for run in (deny, door)]
    # with the second opinion also on weak masked votes, every one of them is let in; before, two waited
    assert opened == [1, 3], (deny, door)
    # nobody bare is let in, every bare visitor still hears the alarm, and no more masked ones do
    for label, trig in door:
        assert ("open" in trig) == (label == "with_mask"), door
        assert label == "with_mask" or "alarm" in trig, door
    alarmed = [sum("alarm" in trig for label, trig in run if label == "with_mask") for run in (deny, door)]
    assert alarmed[1] < alarmed[0], (deny, door)
    assert stats.second_looks > stats.masks_confirmed > 0


def test_the_second_opinion_never_outvotes_a_bare_vote(yunet_path: Path) -> None:
    from maskgate.config import Settings
    from maskgate.detector import FaceDetector
    from maskgate.finder import FaceFinder
    from maskgate.follow import FaceFollower
    from maskgate.stats import Stats
    from maskgate.tracker import Observation, Track, Tracker

    class AlwaysMasked:
        """A second model that is sure of a mask on every face."""

        asked = 0

        def second_verdict(self, frame: np.ndarray, box: tuple[int, int, int, int]) -> Verdict:
            self.asked += 1
            return verdict({"with_mask": 0.99, "without_mask": 0.01, "incorrect_mask": 0.0})

    s = Settings()
    stats = Stats()
    clf: Any = AlwaysMasked()
    finder = FaceFinder(s, FaceDetector(model_path=str(yunet_path)), clf, Tracker(), FaceFollower(), stats)
    img = np.zeros((240, 320, 3), np.uint8)
    box = (100, 60, 80, 100)
    weak = Observation(box, "with_mask", 0.7)
    # a new face, or one whose recent votes are masked or uncertain: the weak vote becomes masked at 0.99
    clean = Track(1, box, 0.0, 0.0, 5)
    clean.votes.extend([("with_mask", 0.95), ("with_mask", 0.6)])
    for tracks in ([], [clean]):
        assert finder.second_looks(img, [weak], tracks, 0.1, masks=True) == [Observation(box, "with_mask", 0.99)]
    # a track with a bare vote among the ones this vote is counted with, or one that sounded the alarm:
    # the small model's doubt stands
    bare = Track(2, box, 0.0, 0.0, 5)
    bare.votes.extend([("with_mask", 0.95), ("without_mask", 0.8)])
    alarmed = Track(3, box, 0.0, 0.0, 5)
    alarmed.votes.extend([("with_mask", 0.95)])
    alarmed.triggered["alarm"] = 0.0
    for tracks in ([bare], [alarmed]):
        assert finder.second_looks(img, [weak], tracks, 0.1, masks=True) == [weak]
    # a masked vote that already counts, or a bare one, is not asked about
    sure, no = Observation(box, "with_mask", 0.95), Observation(box, "without_mask", 0.7)
    assert finder.second_looks(img, [sure, no], [], 0.1, masks=True) == [sure, no]
    assert clf.asked == 2 and stats.masks_confirmed == 2


def test_second_sure_sets_how_sure_the_second_model_must_be_at_the_door(yunet_path: Path) -> None:
    from maskgate.config import Settings, replace
    from maskgate.detector import FaceDetector
    from maskgate.finder import FaceFinder
    from maskgate.follow import FaceFollower
    from maskgate.stats import Stats
    from maskgate.tracker import Observation, Track, Tracker

    small = Classifier(load_bundle(default_bundle_dir()))

    class FairlySure:
        """The small classifier, and a second model that gives every face with_mask 0.85."""

        input_spec, crop_rule = small.input_spec, small.crop_rule

        def classify(self, x: np.ndarray) -> Verdict:
            return verdict({"with_mask": 0.2, "without_mask": 0.8, "incorrect_mask": 0.0})

        def second_verdict(self, frame: np.ndarray, box: tuple[int, int, int, int]) -> Verdict:
            return verdict({"with_mask": 0.85, "without_mask": 0.15, "incorrect_mask": 0.0})

    img = np.zeros((240, 320, 3), np.uint8)
    box = (100, 60, 80, 100)
    weak = Observation(box, "with_mask", 0.7)
    bare = Observation(box, "without_mask", 0.8)
    # the third bare vote on this track would sound the alarm
    track = Track(1, box, 0.0, 0.0, 5)
    track.votes.extend([("without_mask", 0.8), ("without_mask", 0.8)])
    for sure, (confirmed, held) in {0.9: (weak, bare),
                                    0.8: (Observation(box, "with_mask", 0.9), "held")}.items():
        s = replace(Settings(), classifier={"second_sure": sure})
        stats = Stats()
        finder = FaceFinder(s, FaceDetector(model_path=str(yunet_path)), FairlySure(), Tracker(), FaceFollower(),
                            stats)
        # a weak masked vote on a new face: at 0.85 the second model confirms it only when 0.85 is sure
        # enough, and then it votes masked at decision.mask_score
        assert finder.second_looks(img, [weak], [], 0.1, masks=True) == [confirmed]
        out = finder.second_looks(img, [bare], [track], 0.1, masks=True)
        if held == "held":
            # the alarm held back: the average of the two verdicts, which votes neither way
            assert out[0].label == "with_mask" and out[0].score == pytest.approx(0.525)
            assert stats.alarms_held == 1
        else:
            assert out == [held] and stats.alarms_held == 0
    with pytest.raises(ConfigFileError, match="second_sure"):
        parse_config("[classifier]\nsecond_sure = 0.3\n", "maskgate.toml")

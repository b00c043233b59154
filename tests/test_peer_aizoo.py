"""The AIZOO peer is decoded as its authors do: its boxes land on the annotated faces."""

from __future__ import annotations

from pathlib import Path

from maskgate.imageio import read_bgr
from maskgate.peer_aizoo import AizooDetector, anchors
from maskgate.scenes import iou, load_scenes


def test_anchor_count_matches_model_outputs() -> None:
    assert anchors().shape == ((33 * 33 + 17 * 17 + 9 * 9 + 5 * 5 + 3 * 3) * 4, 4)


def test_peer_boxes_match_annotations(shared: Path, scenes_dir: Path) -> None:
    det = AizooDetector(shared / "peers" / "aizoo" / "face_mask_detection.tflite")
    scenes = {s.name: s for s in load_scenes(scenes_dir)}
    matched = total = right = 0
    for name in ("maksssksksss0", "maksssksksss103", "maksssksksss146", "maksssksksss148", "maksssksksss165"):
        sc = scenes[name]
        found = det.detect(read_bgr(sc.image))
        for gt in sc.faces:
            if gt.box[2] < 24:
                continue
            total += 1
            best = max(found, key=lambda f, gt=gt: iou(gt.box, f.box), default=None)
            if best is not None and iou(gt.box, best.box) >= 0.4:
                matched += 1
                right += (best.label == "with_mask") == (gt.label == "with_mask")
    assert total >= 4
    assert matched >= 0.8 * total and right >= 0.8 * matched

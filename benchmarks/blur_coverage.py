"""How many annotated faces the snapshot blur covers, on the 205 annotated street scenes.

A face counts as covered when a blurred box (a detection grown by the blur margin) contains its
centre and is at least half its width. Compares the snapshot blur's own detector
(``maskgate.snapshots.blur_detector``: threshold 0.3, also at 2x, no minimum size) with the
gate's decision detector settings. Prints numbers and asserts nothing. Usage::

    python benchmarks/blur_coverage.py [--scenes ../shared/data/scenes] [--min-width 24]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import cv2

from maskgate.config import Settings
from maskgate.pipeline import build_detector
from maskgate.scenes import load_scenes
from maskgate.snapshots import blur_detector

MARGIN = 0.25  # maskgate.snapshots.pixelate's default


def covered(face: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]]) -> bool:
    cx, cy = face[0] + face[2] / 2, face[1] + face[3] / 2
    return any(x - w * MARGIN <= cx < x + w * (1 + MARGIN) and y - h * MARGIN <= cy < y + h * (1 + MARGIN)
               and w >= 0.5 * face[2] for x, y, w, h in boxes)


def main() -> None:
    shared = Path(os.environ.get("MASKGATE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=Path, default=shared / "data" / "scenes")
    ap.add_argument("--detector-model", default=str(shared / "models" / "face_detection_yunet_2023mar.onnx"))
    ap.add_argument("--min-width", type=int, default=24, help="only annotated faces at least this wide (px)")
    args = ap.parse_args()
    s = Settings()
    s = dataclasses.replace(s, detector=dataclasses.replace(s.detector, model=args.detector_model))
    detectors = {"snapshot blur (blur_detector)": blur_detector(s), "gate decision detector": build_detector(s)}
    scenes = load_scenes(args.scenes)
    for name, det in detectors.items():
        total = missed = boxes = 0
        for scene in scenes:
            img = cv2.imread(str(scene.image))
            found = [f.box for f in det.detect(img)]
            boxes += len(found)
            for f in scene.faces:
                if f.box[2] < args.min_width:
                    continue
                total += 1
                missed += not covered(f.box, found)
        print(f"{name:32s} faces >= {args.min_width} px: {total}, not covered: {missed} "
              f"({100 * missed / max(1, total):.1f}%), boxes blurred: {boxes} in {len(scenes)} scenes")


if __name__ == "__main__":
    main()

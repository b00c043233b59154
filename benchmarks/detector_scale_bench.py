"""How small may the detector's input be? Face recall by face size when frames are downscaled so a
``min_face`` (48 px) face is ``face_px`` pixels wide for YuNet (``[detector] face_px``).

Prints numbers and asserts nothing. Usage::

    python benchmarks/detector_scale_bench.py [--face-px 0,36,28,24] [--split test] [--reps 1]

Two sets:

- the annotated street scenes (``../shared/data/scenes``, both halves as in reports/detector.md):
  faces at least 48 px wide, per label; a face counts as found when a box overlaps it at IoU >= 0.3;
- held-out faces of the shipped bundle's ``--split`` pasted into a synthetic-door background at
  random sizes (as ``maskgate.synthetic`` does), bucketed by the face's width in the frame (the face
  box YuNet finds in the original image, scaled), found at IoU >= 0.3.

``face_px`` 0 means no downscaling (a 640x480 door frame at full size).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from maskgate.bundle import load_bundle, split_files
from maskgate.detector import DetectorSettings, FaceDetector
from maskgate.imageio import read_bgr
from maskgate.scenes import iou, load_scenes, split_scenes
from maskgate.synthetic import SyntheticDoor

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKGATE_SHARED") or REPO.parent / "shared")
MIN_FACE = 48
BUCKETS = ((48, 64), (64, 96), (96, 200))


def detector(face_px: int, longer_side: int, model: Path) -> FaceDetector:
    """YuNet as the gate runs it with ``face_px`` (0: full size), without the min_face filter, so a face
    whose box comes out a pixel under 48 still counts as found."""
    side = round(longer_side * face_px / MIN_FACE) if face_px else longer_side
    return FaceDetector(DetectorSettings(min_face=0, max_side=max(64, side)), model)


def scenes(face_px: list[int], model: Path) -> None:
    halves = split_scenes(load_scenes(SHARED / "data" / "scenes"))
    print("scenes, faces >= 48 px found (tuning half | test half):")
    for px in face_px:
        cells = []
        for half in ("tune", "test"):
            hits: dict[str, list[int]] = {}
            for sc in halves[half]:
                img = read_bgr(sc.image)
                faces = detector(px, max(img.shape[:2]), model).detect(img)
                for gt in sc.faces:
                    if gt.box[2] < MIN_FACE:
                        continue
                    h = hits.setdefault(gt.label, [0, 0])
                    h[1] += 1
                    h[0] += max((iou(gt.box, f.box) for f in faces), default=0.0) >= 0.3
            cells.append(", ".join(f"{k} {a}/{b}" for k, (a, b) in sorted(hits.items())))
        print(f"  face_px {px or 'off'}: " + "  |  ".join(cells))


def door(face_px: list[int], model: Path, split: str, reps: int, seed: int) -> None:
    images = split_files(load_bundle(), split)
    dets = {px: detector(px, 640, model) for px in face_px}
    ref = FaceDetector(DetectorSettings(min_face=0, max_side=10_000), model)
    rng = np.random.default_rng(seed)
    found: dict[tuple[str, tuple[int, int], int], list[int]] = {}
    faces_dir = SHARED / "data" / "faces"
    for label in ("with_mask", "without_mask"):
        for name in images.get(label, []):
            im = read_bgr(faces_dir / label / name)
            k = 2 if min(im.shape[:2]) < 64 else 1  # tiny crops: find the face on an enlarged copy
            ref_faces = ref.detect(cv2.resize(im, None, fx=k, fy=k) if k > 1 else im)
            if not ref_faces:
                continue
            fx, fy, fw, fh = (v / k for v in ref_faces[0].box)
            for _ in range(reps):
                size = rng.uniform(MIN_FACE, 160) * im.shape[1] / fw  # pasted width for that face width
                if size > 400:
                    continue
                src = SyntheticDoor(faces_dir, 640, 480, 10, script=[[label]], images={label: [name]},
                                    realtime=False, start_wall=0.0, face_frac=(size / 640, size / 640),
                                    seed=int(rng.integers(1 << 30)))
                src.open()
                p = src.visits_until(0)[0].people[0]
                frame = src.frame(p.start + p.enter + p.stand // 2)  # standing in the doorway
                if frame is None or not frame.truth:
                    continue
                box = frame.truth[0].box
                sc = box[2] / im.shape[1]
                if abs(box[2] - p.size) > 1:  # cut by the frame edge
                    continue
                exp = (int(box[0] + fx * sc), int(box[1] + fy * sc), int(fw * sc), int(fh * sc))
                bucket = next((b for b in BUCKETS if b[0] <= exp[2] < b[1]), None)
                if bucket is None:
                    continue
                for px, det in dets.items():
                    c = found.setdefault((label, bucket, px), [0, 0])
                    c[1] += 1
                    c[0] += any(iou(exp, f.box) >= 0.3 for f in det.detect(frame.image))
    print(f"\nheld-out {split} faces pasted into a 640x480 door, found by face width in the frame:")
    for label in ("with_mask", "without_mask"):
        for b in BUCKETS:
            row = "  ".join(f"face_px {px or 'off'} {found.get((label, b, px), [0, 0])[0]}/"
                            f"{found.get((label, b, px), [0, 0])[1]}" for px in face_px)
            print(f"  {label} {b[0]}-{b[1]} px: {row}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--face-px", default="0,36,28,24")
    ap.add_argument("--split", default="test")
    ap.add_argument("--reps", type=int, default=1, help="pastes per face image")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detector-model", type=Path, default=SHARED / "models")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    face_px = [int(x) for x in args.face_px.split(",")]
    scenes(face_px, args.detector_model)
    door(face_px, args.detector_model, args.split, args.reps, args.seed)


if __name__ == "__main__":
    main()

"""``maskgate classify IMAGE|DIR...``: detect every face in images and print each verdict."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2

from .classifier import Classifier, FaceClassifier
from .detector import PHOTO_BORDER, DetectorSettings, FaceDetector
from .errors import ImageError
from .imageio import read_image
from .second_opinion import load_second_opinion

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="detect faces in images and print mask verdicts")
    p.add_argument("paths", nargs="+", type=Path, metavar="IMAGE|DIR")
    p.add_argument("--json", action="store_true", help="one JSON line per image")
    p.add_argument("--model", type=Path, default=None, help="bundle directory (default: the shipped model)")
    p.add_argument("--detector-model", default=None, help="YuNet .onnx (default: cache or download)")
    p.add_argument("--threshold", type=float, default=DetectorSettings().score_threshold,
                   help="detector score threshold")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-second-opinion", action="store_true",
                   help="the small classifier alone (default: a larger one is asked about the faces it is unsure of)")
    p.add_argument("--second-model", type=Path, default=None,
                   help="second-opinion bundle directory (default: the shipped one)")
    p.set_defaults(func=run)


def iter_images(paths: list[Path]) -> Iterator[Path]:
    """Files to classify: the paths given, and every file under a directory (sorted)."""
    for p in paths:
        if p.is_dir():
            yield from sorted(q for q in p.rglob("*") if q.is_file())
        else:
            yield p


def classify_image(path: Path, det: FaceDetector, clf: FaceClassifier) -> list[dict[str, Any]]:
    """Every face of one image, boxes in the original image's pixels (a huge JPEG is decoded at
    reduced size and detection downscales further; boxes are mapped back)."""
    decoded = read_image(path)
    img = decoded.image
    faces: list[dict[str, Any]] = []
    for face in det.detect(img):
        v = clf.classify_face(img, face.box)
        if v.label == "no_face":
            continue
        box = decoded.to_original(face.box)
        faces.append({"box": [int(c) for c in box], "label": v.label, "score": round(v.score, 4)})
    return faces


def run(args: argparse.Namespace) -> int:
    det = FaceDetector(DetectorSettings(score_threshold=args.threshold, max_side=1280, border=PHOTO_BORDER),
                       args.detector_model)
    first = Classifier(args.model, threads=args.threads)
    clf: FaceClassifier = first if args.no_second_opinion else load_second_opinion(first, args.second_model,
                                                                                   threads=args.threads)
    n_ok = n_bad = 0
    for path in iter_images(args.paths):
        try:
            faces = classify_image(path, det, clf)
        except (ImageError, cv2.error, ValueError, MemoryError) as exc:  # one bad file, never the run
            n_bad += 1
            msg = str(exc) if isinstance(exc, ImageError) else f"{path}: {type(exc).__name__}: {exc}"
            if args.json:
                print(json.dumps({"image": str(path), "error": msg}), flush=True)
            else:
                print(f"{path}: error: {msg}", flush=True)
            continue
        n_ok += 1
        if args.json:
            print(json.dumps({"image": str(path), "faces": faces}), flush=True)
        else:
            desc = ", ".join(f"{f['label']} {f['score']:.2f} at {tuple(f['box'])}" for f in faces) or "no face"
            print(f"{path}: {desc}", flush=True)
    if n_ok == 0:
        print(f"maskgate classify: no readable image among {n_bad} file(s)", file=sys.stderr)
        return 1
    return 0

"""Training data: class folders re-cropped with the device's detector and crop rule.

Every training image goes through the same ``FaceDetector`` and ``crop_face`` the device uses, so
the model learns from what the camera will show it, not from each source's own framing.

Rule for images that are already face crops (documented in the model card):
- the image is padded by ``PAD`` of its size on every side (edge replication), because YuNet
  rarely fires on a face that fills the whole image;
- the detector runs with a low threshold (``TRAIN_THRESHOLD``);
- no face: the image is dropped and counted per source and class (dropping correlates with the
  label, so the counts are reported next to every accuracy);
- several faces: the largest box is taken (the labelled subject dominates the image) and the
  image is counted as ``several``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2

from maskgate.detector import DetectorSettings, FaceDetector
from maskgate.errors import DataError, ImageError
from maskgate.imageio import read_bgr
from maskgate.model_store import cache_dir

log = logging.getLogger(__name__)

CLASSES = ("with_mask", "without_mask", "incorrect_mask")
NO_FACE = "no_face"
PAD = 0.25
TRAIN_THRESHOLD = 0.3
LOCATE_SETTINGS = DetectorSettings(score_threshold=TRAIN_THRESHOLD, max_side=100_000)
"""The detector that locates training faces (whole image, any size); the box cache is keyed on it."""
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SOURCE_PREFIXES = {"c7": "chandrikadeb7", "fm12k": "facemask12k", "mfn": "maskedfacenet",
                   "mfn2": "maskedfacenet"}


@dataclass(frozen=True)
class Item:
    path: Path
    label: str
    source: str


@dataclass
class Located:
    item: Item
    box: tuple[int, int, int, int] | None
    """Face box in the original image (None: no face found)."""
    n_faces: int
    error: str | None = None


def source_of(path: Path) -> str:
    prefix = path.name.split("_", 1)[0]
    return SOURCE_PREFIXES.get(prefix, prefix if "_" in path.name else "unknown")


def scan_classes(root: Path, classes: tuple[str, ...] = CLASSES) -> list[Item]:
    """List the images of each class folder; a missing or empty folder is an error naming it."""
    items: list[Item] = []
    for label in classes:
        d = root / label
        if not d.is_dir():
            raise DataError(f"{d}: class folder missing (expected one folder per class: {', '.join(classes)})")
        files = sorted(p for p in d.iterdir() if p.is_file())
        if not files:
            raise DataError(f"{d}: class folder is empty")
        items.extend(Item(p, label, source_of(p)) for p in files)
    return items


_DET: FaceDetector | None = None


def _init_worker(model: str | None) -> None:
    global _DET
    cv2.setNumThreads(1)
    _DET = FaceDetector(LOCATE_SETTINGS, model)


def _locate_one(item: Item) -> Located:
    assert _DET is not None
    try:
        img = read_bgr(item.path)
    except ImageError as exc:
        return Located(item, None, 0, str(exc))
    h, w = img.shape[:2]
    px, py = int(w * PAD), int(h * PAD)
    padded = cv2.copyMakeBorder(img, py, py, px, px, cv2.BORDER_REPLICATE)
    faces = _DET.detect(padded)
    if not faces:
        return Located(item, None, 0)
    best = max(faces, key=lambda f: f.box[2] * f.box[3])
    x, y, bw, bh = best.box
    return Located(item, (x - px, y - py, bw, bh), len(faces))


def _cache_key(items: list[Item]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"pad": PAD, "detector": dataclasses.asdict(LOCATE_SETTINGS), "v": 1}).encode())
    for it in items:
        st = it.path.stat()
        h.update(f"{it.path}|{st.st_size}|{int(st.st_mtime)}|{it.label}\n".encode())
    return h.hexdigest()[:16]


def locate_faces(items: list[Item], model: str | None = None, workers: int | None = None,
                 cache: bool = True) -> list[Located]:
    """Detect the face in every training image (cached by file list and detector settings)."""
    key = _cache_key(items)
    cpath = cache_dir() / f"boxes-{key}.json"
    if cache and cpath.exists():
        raw = json.loads(cpath.read_text())
        return [Located(it, tuple(r["box"]) if r["box"] else None, r["n"], r["err"])
                for it, r in zip(items, raw, strict=True)]
    workers = workers or max(1, (os.cpu_count() or 1))
    out: list[Located] = []
    # "spawn", not fork: forking a process that already runs TensorFlow, LiteRT or OpenCV thread
    # pools can deadlock the children (seen in a long compare run).
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(model,)) as ex:
        for i, loc in enumerate(ex.map(_locate_one, items, chunksize=64)):
            out.append(loc)
            if (i + 1) % 2000 == 0:
                log.info("located faces in %d/%d images", i + 1, len(items))
    if cache:
        cpath.parent.mkdir(parents=True, exist_ok=True)
        cpath.write_text(json.dumps([{"box": loc.box, "n": loc.n_faces, "err": loc.error} for loc in out]))
    return out


def located_counts(located: list[Located]) -> dict[str, dict[str, dict[str, int]]]:
    """Counts per source and class: kept, no_face (dropped), several, unreadable."""
    c: dict[str, dict[str, Counter[str]]] = {}
    for loc in located:
        bucket = c.setdefault(loc.item.source, {}).setdefault(loc.item.label, Counter())
        if loc.error:
            bucket["unreadable"] += 1
        elif loc.box is None:
            bucket["no_face"] += 1
        else:
            bucket["kept"] += 1
            if loc.n_faces > 1:
                bucket["several"] += 1
    return {s: {lab: dict(cnt) for lab, cnt in d.items()} for s, d in c.items()}

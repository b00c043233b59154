"""One build: data -> grouped split -> train -> float + int8 TFLite -> checks -> bundle -> evaluation."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskgate.bundle import MANIFEST, SCHEMA_VERSION, TensorInfo
from maskgate.classifier import Classifier, FaceClassifier
from maskgate.crop import CropRule, InputSpec, crop_face, square_box, to_model_input
from maskgate.detector import PHOTO_BORDER, DetectorSettings, FaceDetector
from maskgate.errors import ModelError
from maskgate.imageio import read_bgr
from maskgate.model_store import sha256_file
from maskgate.scenes import Scene, iou, load_scenes, split_scenes

from . import dedup
from .architectures import ARCHS, Arch, build_model, multiply_adds
from .dataset import NO_FACE, Located, locate_faces, located_counts, scan_classes
from .metrics import door_metrics, grouped, size_bucket
from .quantize import check_integer_model, compile_edgetpu, to_float, to_int8
from .scene_review import REVIEWED_DETECTOR, unannotated_faces

log = logging.getLogger(__name__)

DATA_LICENCE = (
    "Trained on chandrikadeb7/Face-Mask-Detection (repository MIT; images scraped from the web), "
    "facemask12k (unmasked faces from CelebA: research / non-commercial use only) and "
    "MaskedFace-Net (CC BY-NC-SA 4.0). The weights inherit these terms: for evaluation and "
    "research, not commercial deployment. Retrain with maskgate-convert on data you have rights to.")
CROP_STORE = 128
SCENE_DETECTOR = DetectorSettings(border=PHOTO_BORDER)
"""The detector of the whole-pipeline scene evaluation: the device's score threshold, and the border
pass for photos (faces cut by the picture's edge; see reports/detector.md)."""


@dataclass
class BuildOptions:
    arch: str = "default"
    data: Path = Path("../shared/data/faces")
    scenes: Path | None = Path("../shared/data/scenes")
    out: Path = Path("runs/default")
    epochs: int = 30
    batch: int = 64
    limit_per_class: int | None = None
    detector_model: str | None = None
    seed: int = 1
    train_sources: tuple[str, ...] | None = None
    patience: int = 5
    peer: Path | None = None
    """AIZOO peer model to evaluate on the same scenes (skipped when None or missing)."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prepared:
    located: list[Located]
    splits: list[str]
    groups: np.ndarray
    crops: np.ndarray
    """BGR crops (N_kept, 128, 128, 3) of the located faces."""
    inside: np.ndarray
    """(N_kept, 4) float32: the part of each crop that lies inside its source image, as fractions
    (x0, y0, x1, y1) of the crop; the rest is edge-replicated padding (see :func:`inside_fraction`)."""
    kept: list[Located]
    kept_split: list[str]
    no_face: np.ndarray
    no_face_split: list[str]
    split_csv: bytes
    counts: dict[str, Any]


def _limit(items: list[Any], n: int | None) -> list[Any]:
    if not n:
        return items
    by: dict[str, list[Any]] = {}
    for it in items:
        by.setdefault(it.label, []).append(it)
    out = []
    for lab in by:
        ranked = sorted(by[lab], key=lambda it: hashlib.sha256(it.path.name.encode()).hexdigest())
        out.extend(ranked[:n])
    return out


def no_face_patches(scenes: list[Scene], det: FaceDetector, per_scene: int = 8, seed: int = 0
                    ) -> tuple[np.ndarray, list[str]]:
    """Background crops from the *tuning* half of the scenes, away from every face
    (:func:`background_boxes`), ``per_scene`` at most from each, and the scene each came from."""
    rng = np.random.default_rng(seed)
    patches: list[np.ndarray] = []
    names: list[str] = []
    for sc in scenes:
        img = read_bgr(sc.image)
        for b in background_boxes(sc, [f.box for f in det.detect(img)], img.shape[:2], per_scene, rng):
            patches.append(crop_face(img, b, CROP_STORE))
            names.append(sc.name)
    return (np.stack(patches) if patches else np.zeros((0, CROP_STORE, CROP_STORE, 3), np.uint8)), names


def background_boxes(sc: Scene, found: list[tuple[int, int, int, int]], shape: tuple[int, ...], n: int,
                     rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """Up to ``n`` boxes of one scene for the ``no_face`` class: first the detector's boxes
    (``found``, what the classifier must reject at a door) that overlap no annotated face and none
    of the faces the annotations miss (:mod:`.scene_review`), then random squares that also keep
    clear of every detector box, since the annotations miss faces the review never saw."""
    h, w = shape[:2]
    faces = [f.box for f in sc.faces] + list(unannotated_faces(sc.name))
    cands = [(b, faces) for b in found]
    for _ in range(n * 3):
        s = int(rng.integers(24, max(25, min(h, w) // 2)))
        cands.append(((int(rng.integers(0, max(1, w - s))), int(rng.integers(0, max(1, h - s))), s, s),
                      faces + found))
    out: list[tuple[int, int, int, int]] = []
    for b, avoid in cands:
        if len(out) >= n:
            break
        if all(iou(b, a) == 0.0 for a in avoid):
            out.append(b)
    return out


def inside_fraction(image_shape: tuple[int, ...], box: tuple[int, int, int, int],
                    rule: CropRule | None = None) -> tuple[float, float, float, float]:
    """The part of a face's square crop that lies inside the image, as fractions of the crop.

    Training faces are often tight crops (facemask12k's bare faces: the crop rule's square reaches
    past the image on all sides for 99% of them), so a third or more of the crop is edge-replicated
    padding whose streaks differ by source and label, while a door camera's crop is real context.
    The build knows where the padding is so augmentation can replace it (see ``_augment_fn``)."""
    x0, y0, side = square_box(box, rule or CropRule())
    h, w = image_shape[:2]
    return (float(np.clip((0 - x0) / side, 0.0, 1.0)), float(np.clip((0 - y0) / side, 0.0, 1.0)),
            float(np.clip((w - x0) / side, 0.0, 1.0)), float(np.clip((h - y0) / side, 0.0, 1.0)))


def prepare(opts: BuildOptions, classes: tuple[str, ...], want_no_face: bool) -> Prepared:
    items = _limit(scan_classes(opts.data, classes), opts.limit_per_class)
    log.info("%d images in %s", len(items), opts.data)
    located = locate_faces(items, opts.detector_model)
    hashes = dedup.image_hashes([it.path for it in items])
    groups = dedup.group_near_duplicates(hashes)
    names = [f"{it.label}/{it.path.name}" for it in items]
    splits = dedup.assign_splits(names, groups)
    rows = [(n, it.label, it.source, int(g), s, " ".join(str(int(v)) for v in loc.box) if loc.box else "")
            for n, it, g, s, loc in zip(names, items, groups, splits, located, strict=True)]
    kept_idx = [i for i, loc in enumerate(located) if loc.box is not None]
    kept = [located[i] for i in kept_idx]
    crops = np.empty((len(kept), CROP_STORE, CROP_STORE, 3), np.uint8)
    inside = np.empty((len(kept), 4), np.float32)
    for j, loc in enumerate(kept):
        assert loc.box is not None
        img = read_bgr(loc.item.path)
        crops[j] = crop_face(img, loc.box, CROP_STORE, CropRule())
        inside[j] = inside_fraction(img.shape, loc.box)
    kept_split = [splits[i] for i in kept_idx]
    nf = np.zeros((0, CROP_STORE, CROP_STORE, 3), np.uint8)
    nf_split: list[str] = []
    if want_no_face:
        if opts.scenes is None:
            raise ValueError("the no_face class needs --scenes (background patches from the tuning half)")
        tune = split_scenes(load_scenes(opts.scenes))["tune"]
        det = FaceDetector(REVIEWED_DETECTOR, opts.detector_model)
        nf, nf_names = no_face_patches(tune, det, seed=opts.seed)
        nf_split = [dedup.split_of_group("scene:" + n) for n in nf_names]
    counts = {"located": located_counts(located),
              "near_duplicate_groups": int(len(set(groups.tolist()))),
              "images_in_multi_member_groups": int(sum(c for c in np.unique(groups, return_counts=True)[1] if c > 1)),
              "signature": f"dHash {dedup.HASH_SIDE}x{dedup.HASH_SIDE} + mirror, Hamming <= {dedup.THRESHOLD}",
              "no_face_patches": len(nf),
              "unreadable": [f"{loc.item.label}/{loc.item.path.name}: {loc.error}" for loc in located if loc.error]}
    counts["padding"] = padding_counts(kept, inside)
    return Prepared(located, splits, groups, crops, inside, kept, kept_split, nf, nf_split, dedup.split_csv(rows),
                    counts)


def padding_counts(kept: list[Located], inside: np.ndarray) -> dict[str, dict[str, float]]:
    """Mean share of each crop that is padding (outside its source image), per source and class."""
    pad = 1.0 - (inside[:, 2] - inside[:, 0]) * (inside[:, 3] - inside[:, 1])
    out: dict[str, dict[str, float]] = {}
    for key in sorted({(loc.item.source, loc.item.label) for loc in kept}):
        m = np.array([(loc.item.source, loc.item.label) == key for loc in kept])
        out.setdefault(key[0], {})[key[1]] = round(float(pad[m].mean()), 3)
    return out


def model_inputs(crops: np.ndarray, spec: InputSpec) -> np.ndarray:
    out = np.empty((len(crops), *spec.shape), np.float32)
    for i, c in enumerate(crops):
        out[i] = to_model_input(c, spec)
    return out


def replace_padding(x: Any, inside: Any, background: Any) -> Any:
    """Keep the part of crop ``x`` (H, W, C, 0..255) inside its source image (``inside``: fractions
    x0, y0, x1, y1) and take the rest from ``background`` (same shape), blended over about two
    pixels so no hard seam is left. TensorFlow ops (used inside the training pipeline)."""
    import tensorflow as tf

    h, w = int(x.shape[0]), int(x.shape[1])
    ys = (tf.range(h, dtype=tf.float32) + 0.5) / h
    xs = (tf.range(w, dtype=tf.float32) + 0.5) / w
    m = tf.cast((ys[:, None] >= inside[1]) & (ys[:, None] < inside[3])
                & (xs[None, :] >= inside[0]) & (xs[None, :] < inside[2]), tf.float32)
    k = np.array([1, 4, 6, 4, 1], np.float32)
    m = tf.pad(m[None, :, :, None], [[0, 0], [2, 2], [2, 2], [0, 0]], mode="SYMMETRIC")
    m = tf.nn.conv2d(m, tf.constant((np.outer(k, k) / 256.0)[:, :, None, None]), 1, "VALID")[0]
    return x * m + tf.clip_by_value(background, 0.0, 255.0) * (1.0 - m)


FILL_P = 0.8
"""Share of training faces whose padding is replaced by other context (the rest keep the edge
replication the device itself uses where a face touches the frame's edge)."""


def _augment_fn(spec: InputSpec, backgrounds: np.ndarray | None) -> Any:
    """Door-camera augmentation: context, light, contrast, blur, low resolution, scale/shift, JPEG, mirror.

    Context first: the crop's padding (outside its source image, see :func:`inside_fraction`) is
    replaced, for :data:`FILL_P` of the faces, by a background patch from the scenes' tuning half
    (training groups only; the ``no_face`` patches) or a flat colour with noise, blended over two
    pixels. A tight training crop then looks like a face in a wider scene, as at the door, and the
    padding's streaks stop telling the label.
    """
    import tensorflow as tf

    k = np.array([1, 4, 6, 4, 1], np.float32)
    k2 = np.outer(k, k) / 256.0
    kernel = tf.constant(np.tile(k2[:, :, None, None], (1, 1, spec.channels, 1)))
    bank = tf.constant(backgrounds if backgrounds is not None and len(backgrounds)
                       else np.zeros((0, *spec.shape), np.float32))
    n_bank = int(bank.shape[0])

    def context(x: Any, inside: Any) -> Any:
        flat = tf.random.uniform([1, 1, spec.channels], 0.0, 255.0) + tf.random.normal(spec.shape, 0.0, 6.0)
        if n_bank:
            patch = tf.image.random_flip_left_right(bank[tf.random.uniform([], 0, n_bank, dtype=tf.int32)])
            bg = tf.cond(tf.random.uniform([]) < 0.75, lambda: patch, lambda: flat)
        else:
            bg = flat
        return replace_padding(x, inside, bg)

    def aug(x: Any, inside: Any, y: Any) -> Any:
        x = tf.cond(tf.random.uniform([]) < FILL_P, lambda: context(x, inside), lambda: x)
        x = tf.image.random_flip_left_right(x)
        s = tf.random.uniform([], 0.88, 1.0)
        oy = tf.random.uniform([], 0.0, 1.0 - s)
        ox = tf.random.uniform([], 0.0, 1.0 - s)
        x = tf.image.crop_and_resize(x[None], [[oy, ox, oy + s, ox + s]], [0], [spec.height, spec.width])[0]
        x = x * tf.random.uniform([], 0.75, 1.25) + tf.random.uniform([], -25.0, 25.0)
        mean = tf.reduce_mean(x)
        x = (x - mean) * tf.random.uniform([], 0.8, 1.2) + mean
        x = tf.clip_by_value(x, 0.0, 255.0)

        def blur(x: Any) -> Any:
            return tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], "SAME")[0]

        def lowres(x: Any) -> Any:
            side = tf.random.uniform([], 14, 40, dtype=tf.int32)
            small = tf.image.resize(x, tf.stack([side, side]), antialias=True)
            return tf.reshape(tf.image.resize(small, [spec.height, spec.width]), spec.shape)

        def jpeg(x: Any) -> Any:
            q = tf.random.uniform([], 40, 95, dtype=tf.int32)
            out = tf.cast(tf.image.adjust_jpeg_quality(tf.cast(x, tf.uint8), q), tf.float32)
            return tf.reshape(out, spec.shape)

        x = tf.cond(tf.random.uniform([]) < 0.2, lambda: blur(x), lambda: x)
        x = tf.cond(tf.random.uniform([]) < 0.3, lambda: lowres(x), lambda: x)
        x = tf.cond(tf.random.uniform([]) < 0.2, lambda: jpeg(x), lambda: x)
        return x, y

    return aug


def train(arch: Arch, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray,
          opts: BuildOptions, inside_tr: np.ndarray | None = None, backgrounds: np.ndarray | None = None
          ) -> tuple[Any, dict[str, list[float]]]:
    """Train ``arch``; ``inside_tr`` (see :func:`inside_fraction`; default: whole crop inside) and
    ``backgrounds`` (model inputs of background patches) feed the context augmentation."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(opts.seed)
    model = build_model(arch)
    n_cls = len(arch.labels)
    counts = np.bincount(y_tr, minlength=n_cls).astype(np.float64)
    weights = {i: float(len(y_tr) / (n_cls * max(c, 1.0))) for i, c in enumerate(counts)}
    if inside_tr is None:
        inside_tr = np.tile(np.array([0.0, 0.0, 1.0, 1.0], np.float32), (len(x_tr), 1))
    ds = tf.data.Dataset.from_tensor_slices((x_tr, inside_tr, keras.utils.to_categorical(y_tr, n_cls)))
    ds = ds.shuffle(len(x_tr), seed=opts.seed)
    if arch.augment:
        ds = ds.map(_augment_fn(arch.spec, backgrounds), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, _inside, y: (x, y))
    ds = ds.batch(opts.batch).prefetch(tf.data.AUTOTUNE)
    va = (x_va, keras.utils.to_categorical(y_va, n_cls))
    cbs = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=opts.patience, restore_best_weights=True)]
    if arch.augment:
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3))
    hist = model.fit(ds, validation_data=va, epochs=opts.epochs, class_weight=weights, callbacks=cbs,
                     verbose=2)
    return model, {k: [float(v) for v in vs] for k, vs in hist.history.items()}


def write_bundle(out: Path, tflite: bytes, arch: Arch, name: str, extra: dict[str, Any],
                 file_name: str = "model.tflite") -> Path:
    from ai_edge_litert.interpreter import Interpreter

    out.mkdir(parents=True, exist_ok=True)
    path = out / file_name
    path.write_bytes(tflite)
    it = Interpreter(model_path=str(path))
    i, o = it.get_input_details()[0], it.get_output_details()[0]

    def info(d: dict[str, Any]) -> TensorInfo:
        scale, zp = d["quantization"]
        return TensorInfo(tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]).name, float(scale), int(zp))

    inp = info(i).to_dict()
    inp["color"] = arch.spec.color
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "architecture": arch.name,
        "model_file": file_name,
        "sha256": sha256_file(path),
        "labels": list(arch.labels),
        "input": inp,
        "output": info(o).to_dict(),
        "preprocessing": "maskgate.crop.face_input: square crop by the crop rule, resize (INTER_AREA), "
                         f"{'RGB' if arch.spec.color == 'rgb' else 'grayscale'}, raw 0..255 values",
        "crop": CropRule().to_dict(),
        "detector": {"model": "face_detection_yunet_2023mar.onnx", **detector_info()},
        "licence": DATA_LICENCE,
        **extra,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    return path


def predict(clf: Classifier, x: np.ndarray) -> tuple[list[str], np.ndarray]:
    scores = np.stack([clf.scores(v) for v in x])
    return [clf.labels[i] for i in scores.argmax(1)], scores


def evaluate_scenes(clf: FaceClassifier, scenes: list[Scene], detector_model: str | None) -> dict[str, Any]:
    """Detect with the device's settings, match to annotations (IoU >= 0.3), classify, decide."""
    det = FaceDetector(SCENE_DETECTOR, detector_model)

    def faces_of(img: np.ndarray) -> list[tuple[tuple[int, int, int, int], str]]:
        return [(f.box, clf.classify_face(img, f.box).label) for f in det.detect(img)]

    return _scene_outcomes(scenes, faces_of)


def evaluate_peer_scenes(peer_model: Path, scenes: list[Scene]) -> dict[str, Any]:
    """The AIZOO peer on the same scenes and the same matching rule, decoded as its authors do."""
    from maskgate.peer_aizoo import AizooDetector

    peer = AizooDetector(peer_model)
    return _scene_outcomes(scenes, lambda img: [(f.box, f.label) for f in peer.detect(img)])


def _scene_outcomes(scenes: list[Scene], faces_of: Any) -> dict[str, Any]:
    truth: list[str] = []
    pred: list[str] = []
    sizes: list[str] = []
    for sc in scenes:
        img = read_bgr(sc.image)
        faces = faces_of(img)
        for gt in sc.faces:
            best, bi = 0.0, -1
            for j, (box, _) in enumerate(faces):
                v = iou(gt.box, box)
                if v > best:
                    best, bi = v, j
            truth.append(gt.label)
            sizes.append(">=48px" if gt.box[2] >= 48 else "<48px")
            pred.append("missed" if best < 0.3 else faces[bi][1])
    labels = ["with_mask", "without_mask", "incorrect_mask", NO_FACE, "missed"]
    out: dict[str, Any] = {}
    t, p, s = np.array(truth), np.array(pred), np.array(sizes)
    for key in (">=48px", "<48px", "all"):
        m = np.ones(len(t), bool) if key == "all" else s == key
        tm, pm = t[m], p[m]
        allow_t = tm == "with_mask"
        right = np.where(allow_t, pm == "with_mask", (pm != "with_mask") & (pm != "missed") & (pm != NO_FACE))
        out[key] = {
            "faces": int(m.sum()),
            "detected": int((pm != "missed").sum()),
            "detected_masked": [int(((pm != "missed") & allow_t).sum()), int(allow_t.sum())],
            "right_decision": int(right.sum()),
            "door": door_metrics(tm.tolist(), pm.tolist(), labels),
        }
    return out



def latencies_ms(paths: list[Path], rounds: int = 10, runs: int = 10) -> list[float]:
    """Median latency of each model (ms per inference, ai-edge-litert, 1 thread), timed in turns: each of
    ``rounds`` rounds runs every model ``runs`` times, so all of them see the same machine load."""
    from ai_edge_litert.interpreter import Interpreter

    models = []
    for path in paths:
        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        x = np.zeros(d["shape"], d["dtype"])
        for _ in range(5):
            it.set_tensor(d["index"], x)
            it.invoke()
        models.append((it, d["index"], x))
    times: list[list[float]] = [[] for _ in paths]
    for _ in range(rounds):
        for (it, index, x), ts in zip(models, times, strict=True):
            for _ in range(runs):
                t0 = time.perf_counter()
                it.set_tensor(index, x)
                it.invoke()
                ts.append(time.perf_counter() - t0)
    return [float(np.median(ts) * 1000) for ts in times]


def source_commit(where: Path = Path(__file__).parent) -> str:
    """The git commit the code runs from, with ``+dirty`` when tracked files differ from it ("" outside git).

    A report or bundle built from uncommitted code names the commit it started from and says so."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False, cwd=where).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(commit) and bool(git("status", "--porcelain", "--untracked-files=no"))
    except OSError:
        return ""
    return commit + ("+dirty" if dirty else "")


def _environment() -> dict[str, Any]:
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "commit": source_commit()}


def run_build(opts: BuildOptions) -> dict[str, Any]:
    """Train one architecture and write its bundle, float model, metrics and history to ``opts.out``."""
    t_start = time.time()
    arch = ARCHS[opts.arch]
    face_classes = tuple(lab for lab in arch.labels if lab != NO_FACE)
    prep = prepare(opts, face_classes, NO_FACE in arch.labels)
    lab_index = {lab: i for i, lab in enumerate(arch.labels)}
    y_all = np.array([lab_index[loc.item.label] for loc in prep.kept])
    split = np.array(prep.kept_split)
    sources = np.array([loc.item.source for loc in prep.kept])
    x_all = model_inputs(prep.crops, arch.spec)
    inside_all = prep.inside
    if len(prep.no_face):
        x_all = np.concatenate([x_all, model_inputs(prep.no_face, arch.spec)])
        inside_all = np.concatenate([inside_all, np.tile(np.array([0.0, 0.0, 1.0, 1.0], np.float32),
                                                         (len(prep.no_face), 1))])
        y_all = np.concatenate([y_all, np.full(len(prep.no_face), lab_index[NO_FACE])])
        split = np.concatenate([split, np.array(prep.no_face_split)])
        sources = np.concatenate([sources, np.full(len(prep.no_face), "scenes-background")])
    train_mask = split == "train"
    val_mask = split == "val"
    if opts.train_sources:
        src_ok = np.isin(sources, list(opts.train_sources)) | (sources == "scenes-background")
        train_mask &= src_ok
        val_mask &= src_ok
    log.info("train %d, val %d, test %d", train_mask.sum(), val_mask.sum(), (split == "test").sum())
    backgrounds = x_all[train_mask & (y_all == lab_index[NO_FACE])] if NO_FACE in arch.labels else None
    model, history = train(arch, x_all[train_mask], y_all[train_mask], x_all[val_mask], y_all[val_mask], opts,
                           inside_all[train_mask], backgrounds)
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(opts.seed)
    rep_idx = rng.choice(np.nonzero(train_mask)[0], size=min(300, int(train_mask.sum())), replace=False)
    int8 = to_int8(model, x_all[rep_idx])
    split_bytes = prep.split_csv
    (out / "split.csv").write_bytes(split_bytes)
    test_mask = split == "test"
    extra = {
        "split": {"file": "split.csv", "sha256": hashlib.sha256(split_bytes).hexdigest(),
                  "rule": "near-duplicate groups, sha256 of the group's first file: 80/10/10"},
        "data": prep.counts,
    }
    bundle_dir = out / "bundle"
    write_bundle(bundle_dir, int8, arch, opts.arch, extra)
    (bundle_dir / "split.csv").write_bytes(split_bytes)
    float_dir = out / "float"
    write_bundle(float_dir, to_float(model), arch, opts.arch + "-float", extra, "model_float.tflite")
    checks = check_integer_model(bundle_dir / "model.tflite")
    checks["edgetpu"] = compile_edgetpu(bundle_dir / "model.tflite")
    clf_i8 = Classifier(bundle_dir)
    clf_f = Classifier(float_dir)
    lat_i8, lat_f = latencies_ms([bundle_dir / "model.tflite", float_dir / "model_float.tflite"])
    x_te, y_te = x_all[test_mask], y_all[test_mask]
    truth = [arch.labels[i] for i in y_te]
    pred_i8, s_i8 = predict(clf_i8, x_te)
    pred_f, s_f = predict(clf_f, x_te)
    te_sources = sources[test_mask].tolist()
    kept_sizes = [size_bucket(loc.box[2]) if loc.box else "?" for loc in prep.kept]
    te_sizes = (np.array(kept_sizes + ["background"] * len(prep.no_face))[test_mask]).tolist()
    face_m = np.array([t != NO_FACE for t in truth])
    tf_ = np.array(truth)
    metrics: dict[str, Any] = {
        "architecture": opts.arch,
        "labels": list(arch.labels),
        "params": int(model.count_params()),
        "multiply_adds": multiply_adds(model),
        "int8_bytes": len(int8),
        "epochs_run": len(history["loss"]),
        "train_seconds": round(time.time() - t_start, 1),
        "int8_float_agreement": float(np.mean(np.array(pred_i8) == np.array(pred_f))),
        "int8_float_agreement_faces": (float(np.mean((np.array(pred_i8) == np.array(pred_f))[face_m]))
                                       if face_m.any() else None),
        "checks": checks,
        "test": {
            "int8": door_metrics(tf_[face_m].tolist(), np.array(pred_i8)[face_m].tolist(), arch.labels),
            "float": door_metrics(tf_[face_m].tolist(), np.array(pred_f)[face_m].tolist(), arch.labels),
            "int8_by_source": grouped(truth, pred_i8, te_sources, arch.labels),
            "int8_by_size": grouped(tf_[face_m].tolist(), np.array(pred_i8)[face_m].tolist(),
                                    np.array(te_sizes)[face_m].tolist(), arch.labels),
        },
        "latency_ms_int8_1thread": lat_i8,
        "latency_ms_float_1thread": lat_f,
        "environment": _environment(),
        "options": {"epochs": opts.epochs, "batch": opts.batch, "limit_per_class": opts.limit_per_class,
                    "seed": opts.seed, "train_sources": opts.train_sources, "patience": opts.patience},
        "train_sizes": {"train": int(train_mask.sum()), "val": int(val_mask.sum()), "test": int(test_mask.sum())},
    }
    # the numbers a model is chosen on (with the scene tuning half), next to the test split's
    va_truth = np.array([arch.labels[i] for i in y_all[val_mask]])
    va_pred = np.array(predict(clf_i8, x_all[val_mask])[0])
    va_face = va_truth != NO_FACE
    metrics["validation_int8"] = door_metrics(va_truth[va_face].tolist(), va_pred[va_face].tolist(), arch.labels)
    if NO_FACE in arch.labels and (~face_m).any():
        metrics["test"]["no_face_recall_int8"] = float(np.mean(np.array(pred_i8)[~face_m] == NO_FACE))
    if opts.scenes is not None:
        test_scenes = split_scenes(load_scenes(opts.scenes))["test"]
        metrics["scenes_test_half"] = {"int8": evaluate_scenes(clf_i8, test_scenes, opts.detector_model),
                                       "float": evaluate_scenes(clf_f, test_scenes, opts.detector_model)}
        if opts.peer is not None and opts.peer.exists():
            metrics["peer_aizoo_scenes_test_half"] = evaluate_peer_scenes(opts.peer, test_scenes)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=_json_default))
    add_manifest_metrics(bundle_dir, manifest_metrics(metrics))
    model.save(out / "model.keras")
    log.info("build %s done in %.0f s", opts.arch, time.time() - t_start)
    return metrics


def manifest_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers a bundle carries in its manifest (the full set stays in metrics.json)."""
    def pct(v: Any) -> float | None:
        return None if v is None else round(float(v), 4)

    t8, tf_ = m["test"]["int8"], m["test"]["float"]
    out: dict[str, Any] = {
        "test_split": {
            "faces": t8["n"],
            "balanced_accuracy_allow_deny": {"int8": pct(t8["balanced_accuracy_allow_deny"]),
                                             "float": pct(tf_["balanced_accuracy_allow_deny"])},
            "recall_int8": {lab: pct(r["value"]) for lab, r in t8["per_class_recall"].items()},
            "wrong_allows_int8": t8["wrong_allow"],
            "int8_float_agreement": pct(m.get("int8_float_agreement_faces")),
        },
        "latency_ms_1thread": {"int8": round(m["latency_ms_int8_1thread"], 3),
                               "float": round(m["latency_ms_float_1thread"], 3)},
        "epochs_run": m["epochs_run"],
        "environment": m["environment"],
    }
    scenes = m.get("scenes_test_half", {}).get("int8")
    if scenes:
        out["scenes_test_half_int8"] = scene_headline(scenes)
    return out


def add_manifest_metrics(bundle_dir: Path, metrics: dict[str, Any]) -> None:
    """Write the headline metrics into the bundle's manifest (the model file, and so its sha256,
    is unchanged)."""
    path = bundle_dir / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["metrics"] = metrics
    path.write_text(json.dumps(manifest, indent=1, sort_keys=False, default=_json_default) + "\n")


def detector_info() -> dict[str, Any]:
    """The scene evaluation's detector settings, as the manifest records them."""
    return {"score_threshold": SCENE_DETECTOR.score_threshold, "nms_threshold": SCENE_DETECTOR.nms_threshold,
            "border": SCENE_DETECTOR.border, "top_k": SCENE_DETECTOR.top_k}


def scene_headline(scenes: dict[str, Any]) -> dict[str, Any]:
    return {k: {"faces": v["faces"], "right_decision": v["right_decision"]} for k, v in scenes.items()}


def rescore_bundle(bundle_dir: Path, scenes_dir: Path, detector_model: str | None) -> dict[str, Any]:
    """Re-measure a bundle's scene numbers (int8, scene test half) with the device's current detector
    settings, and write them and those settings into its manifest.

    For when the device's detector changes after a bundle was built: the model file and its sha256
    stay, and so do the test-split numbers (the training faces are located with the build's own
    threshold, not the device's). Returns the new scene numbers."""
    path = bundle_dir / MANIFEST
    manifest = json.loads(path.read_text())
    if "metrics" not in manifest:
        raise ModelError(f"{path}: no metrics to update (built before bundles carried them; retrain it)")
    test_scenes = split_scenes(load_scenes(scenes_dir))["test"]
    scenes = scene_headline(evaluate_scenes(Classifier(bundle_dir), test_scenes, detector_model))
    manifest["metrics"]["scenes_test_half_int8"] = scenes
    manifest["detector"] = {**manifest.get("detector", {}), **detector_info()}
    manifest["metrics"]["scenes_rescored"] = (f"scene numbers re-measured with the detector at score threshold "
                                              f"{SCENE_DETECTOR.score_threshold}, border pass "
                                              f"{SCENE_DETECTOR.border}, {SCENE_DETECTOR.top_k} candidates before NMS "
                                              "(maskgate-convert rescore)")
    path.write_text(json.dumps(manifest, indent=1, default=_json_default) + "\n")
    return scenes


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o))

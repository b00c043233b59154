"""``maskgate-convert second-opinion``: the larger classifier the device asks about unsure faces.

1. The same faces, boxes and grouped split as ``train`` (:func:`maskgate_convert.build.prepare`),
   each cropped by the device's crop rule at 150x150 RGB.
2. The pretrained trunk (:mod:`.descriptor`, dlib's ResNet face descriptor) is cut in two: a frozen
   front, whose activations are computed once per crop (and once per mirrored training crop), and a
   tail of its last ``tail_blocks`` residual blocks. A head (dense 256 ReLU, dropout, softmax over
   the three face labels) is trained on the tail's pooled features of the training split,
   early-stopped on the validation loss; then tail and head are trained together at a low learning
   rate on the training crops and their mirror images, early-stopped on the validation loss again
   (``tail_blocks`` 0: the head alone, the trunk frozen).
3. Front, tail and head become one Keras model, converted to full-integer int8 like the first
   model (representative set: 300 training crops) and checked the same way (integer tensors, Edge
   TPU ops).
4. The band of the first model's ``with_mask`` score inside which the device asks the second
   model (:class:`maskgate.second_opinion.Band`) is chosen on the validation faces only: the
   highest balanced accuracy whose wrong allows are not above the first model's alone, the
   narrowest band on a tie. The test split and the scene test half are measured once, after.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskgate.bundle import load_bundle
from maskgate.classifier import Classifier, Verdict
from maskgate.crop import CropRule, InputSpec, face_input
from maskgate.imageio import read_bgr
from maskgate.model_store import cache_dir
from maskgate.scenes import load_scenes, split_scenes
from maskgate.second_opinion import ALLOW, Band, SecondOpinion, combine

from . import descriptor
from .architectures import Arch
from .build import BuildOptions, _environment, evaluate_scenes, latencies_ms, prepare, write_bundle
from .dataset import CLASSES
from .metrics import door_metrics
from .quantize import check_integer_model, compile_edgetpu, to_float, to_int8

log = logging.getLogger(__name__)

SPEC = InputSpec(descriptor.SIDE, descriptor.SIDE, "rgb")
ARCH = Arch("second-opinion", SPEC, CLASSES, 1e-3, False)
BANDS = ((0.2, 0.8), (0.1, 0.9), (0.05, 0.95), (0.02, 0.98), (0.01, 0.99))
"""Candidate bands, narrowest first."""


@dataclass
class SecondOptions:
    data: Path = Path("../shared/data/faces")
    scenes: Path | None = Path("../shared/data/scenes")
    out: Path = Path("runs/second-opinion")
    first: Path | None = None
    """The first model's bundle (default: the shipped one): the band is chosen for it."""
    weights: Path | None = None
    """The face-api npm tarball (default: downloaded once into the cache and checked)."""
    detector_model: str | None = None
    epochs: int = 40
    patience: int = 5
    tail_blocks: int = 1
    """The trunk's last residual blocks trained with the head (0: the trunk stays frozen)."""
    tune_epochs: int = 12
    tune_patience: int = 3
    tune_learning_rate: float = 1e-4
    seed: int = 0
    limit_per_class: int | None = None
    report: Path | None = None
    """Write the Markdown report here (e.g. reports/second-opinion.md)."""
    commands: str = ""


def crops_and_activations(front: Any, paths: list[Path], boxes: list[tuple[int, int, int, int]],
                          batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """uint8 150x150 RGB crops (the device's ``face_input``) and the frozen front's activations of each."""
    crops = np.empty((len(paths), *SPEC.shape), np.uint8)
    for i in range(len(paths)):
        crops[i] = np.round(face_input(read_bgr(paths[i]), boxes[i], SPEC, CropRule()))
    return crops, activations(front, crops, batch)


def activations(front: Any, crops: np.ndarray, batch: int = 256) -> np.ndarray:
    out = np.empty((len(crops), *front.output.shape[1:]), np.float32)
    t0 = time.time()
    for start in range(0, len(crops), batch):
        stop = min(start + batch, len(crops))
        out[start:stop] = front.predict(crops[start:stop].astype(np.float32), verbose=0)
        log.info("trunk front %d/%d (%.0f s)", stop, len(crops), time.time() - t0)
    return out


def _class_weights(y: np.ndarray) -> dict[int, float]:
    n = len(CLASSES)
    counts = np.bincount(y, minlength=n).astype(np.float64)
    return {i: float(len(y) / (n * max(c, 1.0))) for i, c in enumerate(counts)}


def train_head(f_tr: np.ndarray, y_tr: np.ndarray, f_va: np.ndarray, y_va: np.ndarray, opts: SecondOptions
               ) -> tuple[Any, dict[str, list[float]]]:
    import keras
    from keras import layers

    keras.utils.set_random_seed(opts.seed)
    n = len(CLASSES)
    # the pooled features differ in scale by orders of magnitude: standardized by the training
    # split's statistics (a layer of the model, folded into the first dense layer's arithmetic)
    norm = layers.Normalization(mean=f_tr.mean(0), variance=f_tr.var(0) + 1e-6)
    head = keras.Sequential([keras.Input((f_tr.shape[1],)), norm, layers.Dropout(0.2),
                             layers.Dense(256, activation="relu"),
                             layers.Dropout(0.3),
                             layers.Dense(n, activation="softmax", kernel_regularizer=keras.regularizers.l2(1e-3))],
                            name="head")
    head.compile(keras.optimizers.Adam(ARCH.learning_rate), "categorical_crossentropy", metrics=["accuracy"])
    cb = keras.callbacks.EarlyStopping(monitor="val_loss", patience=opts.patience, restore_best_weights=True)
    onehot = keras.utils.to_categorical
    hist = head.fit(f_tr, onehot(y_tr, n), validation_data=(f_va, onehot(y_va, n)), epochs=opts.epochs,
                    batch_size=128, class_weight=_class_weights(y_tr), callbacks=[cb], verbose=2)
    return head, {k: [float(v) for v in vs] for k, vs in hist.history.items()}


def tune_tail(tail: Any, head: Any, a_tr: np.ndarray, y_tr: np.ndarray, a_va: np.ndarray, y_va: np.ndarray,
              opts: SecondOptions) -> dict[str, list[float]]:
    """Train the trunk's tail and the head together (in place) on the front's activations of the
    training crops (given with their mirror images), early-stopped on the validation loss."""
    import keras

    n = len(CLASSES)
    inp = keras.Input(a_tr.shape[1:])
    model = keras.Model(inp, head(tail(inp)))
    model.compile(keras.optimizers.Adam(opts.tune_learning_rate), "categorical_crossentropy", metrics=["accuracy"])
    cb = keras.callbacks.EarlyStopping(monitor="val_loss", patience=opts.tune_patience, restore_best_weights=True)
    onehot = keras.utils.to_categorical
    hist = model.fit(a_tr, onehot(y_tr, n), validation_data=(a_va, onehot(y_va, n)), epochs=opts.tune_epochs,
                     batch_size=64, class_weight=_class_weights(y_tr), callbacks=[cb], shuffle=True, verbose=2)
    return {k: [float(v) for v in vs] for k, vs in hist.history.items()}


def _allow_deny(truth: list[str], verdicts: list[Verdict]) -> dict[str, Any]:
    return door_metrics(truth, [v.label for v in verdicts], (*CLASSES, "no_face"))


def _asked(band: Band, first: list[Verdict]) -> list[bool]:
    """Which faces the device would ask the second model about."""
    return [band.holds(v.scores.get(ALLOW, 0.0)) for v in first]


def _cascade(band: Band, first: list[Verdict], second: list[Verdict]) -> list[Verdict]:
    """The device's verdicts: the first model's, averaged with the second's inside ``band``."""
    return [combine(v, w) if a else v for v, w, a in zip(first, second, _asked(band, first), strict=True)]


def choose_band(truth: list[str], first: list[Verdict], second: list[Verdict]) -> tuple[Band, list[dict[str, Any]]]:
    """The band by the rule in the module doc, and every candidate's validation numbers."""
    base = _allow_deny(truth, first)
    rows = []
    best: tuple[float, Band] | None = None
    for lo, hi in BANDS:
        band = Band(lo, hi)
        asked = _asked(band, first)
        out = _cascade(band, first, second)
        m = _allow_deny(truth, out)
        rows.append({"band": [lo, hi], "asked": float(np.mean(asked)), "wrong_allow": m["wrong_allow"],
                     "balanced_accuracy_allow_deny": m["balanced_accuracy_allow_deny"]})
        if m["wrong_allow"] <= base["wrong_allow"] and (best is None or m["balanced_accuracy_allow_deny"] > best[0]):
            best = (m["balanced_accuracy_allow_deny"], band)
    if best is None:
        raise ValueError("no band keeps the first model's wrong allows on the validation faces")
    return best[1], rows


def run_second_opinion(opts: SecondOptions) -> dict[str, Any]:
    t_start = time.time()
    tarball = opts.weights or descriptor.fetch_tarball(cache_dir())
    weights = descriptor.load_weights(tarball)
    front, tail = descriptor.trunk_parts(weights, opts.tail_blocks)
    prep = prepare(BuildOptions(data=opts.data, scenes=None, detector_model=opts.detector_model,
                                limit_per_class=opts.limit_per_class), CLASSES, want_no_face=False)
    kept = prep.kept
    split = np.array(prep.kept_split)
    truth = [loc.item.label for loc in kept]
    y = np.array([CLASSES.index(t) for t in truth])
    crops, acts = crops_and_activations(front, [loc.item.path for loc in kept],
                                        [loc.box for loc in kept])  # type: ignore[misc]
    tr, va, te = split == "train", split == "val", split == "test"

    def features(a: np.ndarray) -> np.ndarray:
        return np.asarray(tail.predict(a, batch_size=256, verbose=0))

    head, history = train_head(features(acts[tr]), y[tr], features(acts[va]), y[va], opts)
    tuned: dict[str, list[float]] = {}
    if opts.tail_blocks:
        mirrored = activations(front, crops[tr][:, :, ::-1])
        tuned = tune_tail(tail, head, np.concatenate([acts[tr], mirrored]), np.concatenate([y[tr], y[tr]]),
                          acts[va], y[va], opts)
        del mirrored
    del acts

    import keras

    inp = keras.Input(SPEC.shape)
    model = keras.Model(inp, head(tail(front(inp))), name="second_opinion")
    rng = np.random.default_rng(opts.seed)
    rep = crops[rng.choice(np.nonzero(tr)[0], size=min(300, int(tr.sum())), replace=False)].astype(np.float32)
    int8 = to_int8(model, rep)
    out = opts.out
    extra = {"second_opinion_of": "maskgate default classifier", "pretrained": descriptor.LICENCE,
             "weights_source": {"url": descriptor.NPM_URL, "sha256": descriptor.NPM_SHA256}}
    bundle_dir = out / "bundle"
    write_bundle(bundle_dir, int8, ARCH, ARCH.name, extra)
    float_dir = out / "float"
    write_bundle(float_dir, to_float(model), ARCH, ARCH.name + "-float", extra, "model_float.tflite")
    checks = check_integer_model(bundle_dir / "model.tflite")
    checks["edgetpu"] = compile_edgetpu(bundle_dir / "model.tflite")

    first = Classifier(load_bundle(opts.first))
    second = Classifier(bundle_dir)
    second_f = Classifier(float_dir)

    def verdicts(clf: Classifier, mask: np.ndarray) -> list[Verdict]:
        return [clf.classify(c.astype(np.float32)) for c in crops[mask]]

    def first_verdicts(mask: np.ndarray) -> list[Verdict]:
        return [first.classify_face(read_bgr(loc.item.path), loc.box)  # type: ignore[arg-type]
                for loc, m in zip(kept, mask, strict=True) if m]

    t_va = [t for t, m in zip(truth, va, strict=True) if m]
    t_te = [t for t, m in zip(truth, te, strict=True) if m]
    f_va, s_va = first_verdicts(va), verdicts(second, va)
    band, band_rows = choose_band(t_va, f_va, s_va)
    log.info("band chosen on the validation faces: %s", band)
    f_te, s_te, sf_te = first_verdicts(te), verdicts(second, te), verdicts(second_f, te)
    cascade_te, cascade_va = _cascade(band, f_te, s_te), _cascade(band, f_va, s_va)
    lat = latencies_ms([bundle_dir / "model.tflite", first.bundle.model_path])
    metrics: dict[str, Any] = {
        "architecture": ARCH.name,
        "labels": list(CLASSES),
        "params": int(model.count_params()),
        "int8_bytes": len(int8),
        "epochs_run": len(history["loss"]),
        "tail_blocks": opts.tail_blocks,
        "tune_epochs_run": len(tuned.get("loss", [])),
        "train_seconds": round(time.time() - t_start, 1),
        "checks": checks,
        "band": [band.low, band.high],
        "band_candidates_validation": band_rows,
        "first": {"bundle": str(first.bundle.directory), "sha256": first.bundle.manifest.get("sha256")},
        "validation_int8": {"first": _allow_deny(t_va, f_va), "second": _allow_deny(t_va, s_va),
                            "cascade": _allow_deny(t_va, cascade_va),
                            "asked": float(np.mean(_asked(band, f_va)))},
        "test": {"first": _allow_deny(t_te, f_te), "second_int8": _allow_deny(t_te, s_te),
                 "second_float": _allow_deny(t_te, sf_te), "cascade_int8": _allow_deny(t_te, cascade_te),
                 "asked": float(np.mean(_asked(band, f_te))),
                 "int8_float_agreement": float(np.mean([a.label == b.label
                                                        for a, b in zip(s_te, sf_te, strict=True)]))},
        "latency_ms_int8_1thread": {"second": lat[0], "first": lat[1]},
        "environment": _environment(),
        "options": {"epochs": opts.epochs, "patience": opts.patience, "seed": opts.seed,
                    "limit_per_class": opts.limit_per_class, "tail_blocks": opts.tail_blocks,
                    "tune_epochs": opts.tune_epochs, "tune_patience": opts.tune_patience,
                    "tune_learning_rate": opts.tune_learning_rate},
    }
    if opts.scenes is not None:
        halves = split_scenes(load_scenes(opts.scenes))
        cascade = SecondOpinion(first, second, band)
        metrics["scenes"] = {
            half: {"first": evaluate_scenes(first, halves[half], opts.detector_model),
                   "cascade": evaluate_scenes(cascade, halves[half], opts.detector_model)}
            for half in ("tune", "test")}
    manifest_path = bundle_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["band"] = [band.low, band.high]
    manifest["first_sha256"] = first.bundle.manifest.get("sha256")
    manifest["metrics"] = {"validation_int8": metrics["validation_int8"]["cascade"]["balanced_accuracy_allow_deny"],
                           "test_int8_cascade": metrics["test"]["cascade_int8"]["balanced_accuracy_allow_deny"]}
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    (out / "history.json").write_text(json.dumps({"head": history, "tail_and_head": tuned}, indent=1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    if opts.report is not None:
        opts.report.parent.mkdir(parents=True, exist_ok=True)
        opts.report.write_text(report(metrics, opts.commands))
    return metrics


def _pct(m: dict[str, Any]) -> str:
    return f"{100 * m['balanced_accuracy_allow_deny']:.2f}%"


def _tail_text(m: dict[str, Any]) -> str:
    n = m.get("tail_blocks", 0)
    if not n:
        return "the trunk frozen"
    blocks = "its last residual block" if n == 1 else f"its last {n} residual blocks"
    return f"{blocks} trained with the head on the training faces and their mirror images, the rest frozen"


def _recalls(m: dict[str, Any]) -> str:
    r = m["per_class_recall"]
    return " / ".join(f"{r[k]['k']}/{r[k]['n']}" if k in r else "-" for k in CLASSES)


def report(m: dict[str, Any], commands: str = "") -> str:
    """The second opinion's report (Markdown) from a run's ``metrics.json``."""
    env = m["environment"]
    v, t = m["validation_int8"], m["test"]
    lines = [
        "# The second opinion: a pretrained face network asked about unsure faces",
        "",
        "Generated by `maskgate-convert second-opinion` (`maskgate_convert.second_opinion`). The device asks "
        "this model only when the small classifier's `with_mask` score lies inside the band, and averages the "
        "two (`maskgate.second_opinion`).",
        "",
        f"- Model: dlib's ResNet face descriptor (29 convolutions, pretrained) and a trained head; "
        f"{_tail_text(m)}; "
        f"{m['params']:,} parameters; int8 file {m['int8_bytes']:,} bytes; all tensors integer: "
        f"{m['checks']['all_integer']}; ops not on the Edge TPU list: "
        f"{m['checks']['ops_not_on_edgetpu_list'] or 'none'}",
        f"- Latency, int8, 1 thread, {env['machine']}: second {m['latency_ms_int8_1thread']['second']:.2f} ms, "
        f"first {m['latency_ms_int8_1thread']['first']:.3f} ms per face",
        f"- Head: {m['epochs_run']} epochs, then tail and head: {m.get('tune_epochs_run', 0)} epochs (each "
        "with early stopping on the validation loss); int8 and float agree on "
        f"{100 * t['int8_float_agreement']:.1f}% of the test faces",
        f"- Versions: TensorFlow {env['tensorflow']}, OpenCV {env['opencv']}, NumPy {env['numpy']}, Python "
        f"{env['python']}; commit {env['commit']}; first model sha256 {m['first']['sha256']}",
        "",
    ]
    if commands:
        lines += ["```", commands.strip(), "```", ""]
    lines += [
        "## The band, chosen on the validation faces",
        "",
        "Rule: the highest allow/deny balanced accuracy whose wrong allows are not above the first model's "
        f"alone ({v['first']['wrong_allow']}), the narrowest band on a tie.",
        "",
        "| band of the first model's with_mask score | faces asked | balanced accuracy | wrong allows |",
        "| --- | ---: | --- | ---: |",
        f"| none (the first model alone) | 0% | {_pct(v['first'])} | {v['first']['wrong_allow']} |",
    ]
    for r in m["band_candidates_validation"]:
        mark = " (chosen)" if r["band"] == m["band"] else ""
        lines.append(f"| {r['band'][0]}-{r['band'][1]}{mark} | {100 * r['asked']:.1f}% | "
                     f"{100 * r['balanced_accuracy_allow_deny']:.2f}% | {r['wrong_allow']} |")
    lines += [
        "",
        "## Faces (int8)",
        "",
        "| | validation: balanced accuracy | wrong allows | test split: balanced accuracy | wrong allows | "
        "test recall with / without / incorrect mask |",
        "| --- | --- | ---: | --- | ---: | --- |",
        f"| first model alone | {_pct(v['first'])} | {v['first']['wrong_allow']} | {_pct(t['first'])} | "
        f"{t['first']['wrong_allow']} | {_recalls(t['first'])} |",
        f"| second model alone | {_pct(v['second'])} | {v['second']['wrong_allow']} | {_pct(t['second_int8'])} | "
        f"{t['second_int8']['wrong_allow']} | {_recalls(t['second_int8'])} |",
        f"| first, and second inside the band | {_pct(v['cascade'])} | {v['cascade']['wrong_allow']} | "
        f"{_pct(t['cascade_int8'])} | {t['cascade_int8']['wrong_allow']} | {_recalls(t['cascade_int8'])} |",
        "",
        f"Faces asked: {100 * v['asked']:.1f}% of the validation faces, {100 * t['asked']:.1f}% of the test faces. "
        f"The second model alone, float: test {_pct(t['second_float'])}. The first model is run here as on the "
        "device, from the source image and the box, so its numbers can differ by a face from the model card's "
        "(which classifies the build's stored 128 px crops).",
        "",
    ]
    if "scenes" in m:
        lines += [
            "## Whole pipeline on the street scenes (detector + classifier)",
            "",
            "Faces matched to annotations at IoU >= 0.3; right means a masked face allowed, or a bare or wrongly "
            "masked face called so (a missed face or `no_face` is wrong). The tuning half is selection data; the "
            "test half was measured once, after the band was chosen.",
            "",
            "| half | faces | first model alone: right (wrong allows) | "
            "with the second opinion: right (wrong allows) |",
            "| --- | --- | --- | --- |",
        ]
        for half in ("tune", "test"):
            for size in (">=48px", "<48px", "all"):
                a, b = m["scenes"][half]["first"][size], m["scenes"][half]["cascade"][size]
                lines.append(f"| {half} | {size} ({a['faces']}) | {a['right_decision']} ({a['door']['wrong_allow']}) | "
                             f"{b['right_decision']} ({b['door']['wrong_allow']}) |")
        lines.append("")
    return "\n".join(lines)

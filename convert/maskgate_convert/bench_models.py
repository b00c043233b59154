"""Classifiers a user might pick instead of maskgate's, written as ``.tflite`` bundles for ``maskgate bench --compare``.

The folder holds one bundle per model (``NAME/model.tflite`` + ``NAME/manifest.json``, the same
contract the device loads) and an index, ``manifest.json``, saying what each file is. Models built
from an architecture without training have random weights: they are for speed comparisons only
(weights do not change how long inference takes) and the index says so. A Pi needs no TensorFlow:
build the folder on a PC and copy it over.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskgate.model_store import sha256_file

from .architectures import ARCHS, build_model, multiply_adds
from .build import write_bundle
from .quantize import to_float, to_int8

log = logging.getLogger(__name__)

INDEX = "manifest.json"
INDEX_KIND = "maskgate-bench-models"
INDEX_VERSION = 1
UNTRAINED = ("untrained: random weights, no training data; for speed comparisons only "
             "(weights do not change inference time)")


@dataclass(frozen=True)
class BenchModel:
    name: str
    arch: str
    dtype: str
    """``float32`` (the converter's default output) or ``int8`` (full-integer, like maskgate's)."""
    description: str


BENCH_MODELS = (
    BenchModel("default-float", "default", "float32",
               "maskgate's own architecture as a float32 model: what int8 quantization saves"),
    BenchModel("seed-float", "seed", "float32",
               "the product brief's reference CNN (grayscale 100x100, two 3x3 conv layers of 200 and 100 "
               "filters), float32 as Keras converts it by default"),
    BenchModel("seed-int8", "seed", "int8", "the product brief's reference CNN, full-integer int8"),
    BenchModel("mobilenetv2-float", "mobilenetv2", "float32",
               "MobileNetV2 (alpha 1.0, 224x224 RGB) with a 2-class head, like the most popular open "
               "mask detector's classifier, float32"),
    BenchModel("mobilenetv2-int8", "mobilenetv2", "int8", "the same MobileNetV2 classifier, full-integer int8"),
)


def _representative(shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    """Random 0..255 images: enough to set int8 ranges for an untrained model's speed test."""
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype(np.float32)


def _trained_model(run: Path, arch_name: str) -> Any:
    import keras

    path = run / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained Keras model in this run (maskgate-convert train writes it)")
    model = keras.models.load_model(path)
    got = tuple(int(v) for v in model.input_shape[1:])
    want = ARCHS[arch_name].spec.shape
    if got != want:
        raise ValueError(f"{path}: input {got} is not the {arch_name} architecture's {want}")
    return model


def write_bench_models(out: Path, names: list[str] | None = None, run: Path | None = None,
                       seed: int = 0) -> dict[str, Any]:
    """Write the chosen bench models (default: all) into ``out`` and return the index written there.

    ``run``: a ``maskgate-convert train --arch default`` run folder; its ``model.keras`` gives
    ``default-float`` real weights, so the bench can also measure its accuracy.
    """
    import keras

    chosen = list(BENCH_MODELS) if not names else [m for m in BENCH_MODELS if m.name in names]
    unknown = sorted(set(names or ()) - {m.name for m in BENCH_MODELS})
    if unknown:
        raise ValueError(f"unknown bench model(s) {unknown}; choose from {[m.name for m in BENCH_MODELS]}")
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    built: dict[str, Any] = {}
    for m in chosen:
        t0 = time.perf_counter()
        arch = ARCHS[m.arch]
        trained = run is not None and m.arch == "default"
        model = built.get(m.arch)
        if model is None:
            if trained:
                assert run is not None
                model = _trained_model(run, m.arch)
            else:
                keras.utils.set_random_seed(seed)
                model = build_model(arch)
            built = {m.arch: model}  # models come grouped by architecture: keep one at a time
        if m.dtype == "int8":
            flat = to_int8(model, _representative(arch.spec.shape, 4, seed))
        else:
            flat = to_float(model)
        terms = f"weights from {run / 'model.keras'}" if trained and run else UNTRAINED
        extra = {"bench": {"description": m.description, "trained": trained, "speed_only": not trained},
                 "licence": terms if not trained else
                 "trained weights: the training data's terms apply (see the run's model card)"}
        path = write_bundle(out / m.name, flat, arch, m.name, extra)
        entries.append({
            "name": m.name, "dir": m.name, "file": f"{m.name}/{path.name}", "architecture": m.arch,
            "dtype": m.dtype, "input": list(arch.spec.shape), "color": arch.spec.color,
            "labels": list(arch.labels), "trained": trained, "speed_only": not trained,
            "weights": terms, "description": m.description, "bytes": path.stat().st_size,
            "sha256": sha256_file(path), "params": int(model.count_params()),
            "multiply_adds": multiply_adds(model),
        })
        log.info("bench model %s: %d bytes in %.1f s", m.name, path.stat().st_size, time.perf_counter() - t0)
    index = {
        "kind": INDEX_KIND, "schema_version": INDEX_VERSION, "created_by": "maskgate-convert bench-models",
        "note": "Read by `maskgate bench --compare --models DIR`. Each NAME/ folder is a bundle the device "
                "loads. speed_only models have random weights: their accuracy means nothing.",
        "keras": keras.__version__, "models": entries,
    }
    (out / INDEX).write_text(json.dumps(index, indent=1) + "\n")
    return index

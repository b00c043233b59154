"""The mask classifier: a small adapter over one TFLite interpreter (pycoral-style).

``classify(x)`` takes the model input from ``crop.face_input`` (HxWxC float 0..255), quantizes it
with the input tensor's parameters, invokes, and dequantizes the scores once, here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .bundle import Bundle, TensorInfo, load_bundle
from .crop import CropRule, InputSpec, face_input
from .errors import ModelError
from .runtime import load_interpreter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    label: str
    score: float
    scores: dict[str, float]


class FaceClassifier(Protocol):
    """What the gate, ``maskgate classify`` and the build's evaluation need of a classifier: one
    :class:`Classifier`, or one with a second opinion (:class:`~maskgate.second_opinion.SecondOpinion`)."""

    @property
    def bundle(self) -> Bundle: ...
    @property
    def labels(self) -> tuple[str, ...]: ...
    @property
    def input_spec(self) -> InputSpec: ...
    @property
    def crop_rule(self) -> CropRule: ...
    @property
    def runtime(self) -> str: ...
    @property
    def delegate(self) -> str: ...

    def classify(self, x: np.ndarray, frame: np.ndarray | None = None,
                 box: tuple[int, int, int, int] | None = None) -> Verdict: ...

    def classify_face(self, frame_bgr: np.ndarray, box: tuple[int, int, int, int]) -> Verdict: ...


def _check(bundle: Bundle, what: str, actual: dict, expected: TensorInfo) -> None:
    shape = tuple(int(v) for v in actual["shape"])
    dtype = np.dtype(actual["dtype"]).name
    scale, zp = actual.get("quantization", (0.0, 0))
    problems = []
    if shape != expected.shape:
        problems.append(f"shape {shape} != manifest {expected.shape}")
    if dtype != expected.dtype:
        problems.append(f"dtype {dtype} != manifest {expected.dtype}")
    if expected.dtype in ("int8", "uint8") and (abs(float(scale) - expected.scale) > 1e-6 * max(1.0, expected.scale)
                                                or int(zp) != expected.zero_point):
        problems.append(f"quantization ({scale}, {zp}) != manifest ({expected.scale}, {expected.zero_point})")
    if problems:
        raise ModelError(f"{bundle.model_path}: {what} tensor does not match the manifest: " + "; ".join(problems))


class Classifier:
    """Loads a bundle once and classifies face inputs."""

    def __init__(self, bundle: str | Path | Bundle | None = None, threads: int = 1,
                 delegate: str = "cpu", xnnpack: bool = True) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        loaded = load_interpreter(self.bundle.model_path, threads, delegate, self.bundle.edgetpu_model(), xnnpack)
        self.runtime = loaded.runtime
        self.delegate = loaded.delegate
        self._interp = loaded.interpreter
        inp = self._interp.get_input_details()
        out = self._interp.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ModelError(f"{self.bundle.model_path}: expected one input and one output tensor")
        _check(self.bundle, "input", inp[0], self.bundle.input)
        _check(self.bundle, "output", out[0], self.bundle.output)
        self._in_index = inp[0]["index"]
        self._out_index = out[0]["index"]
        self.labels = self.bundle.labels
        self.input_spec = self.bundle.input_spec
        self.crop_rule = self.bundle.crop_rule
        self._in_dtype = np.dtype(inp[0]["dtype"])
        self._in_q = self.bundle.input
        self._out_q = self.bundle.output

    def __repr__(self) -> str:
        return (f"<Classifier {self.bundle.name} labels={list(self.labels)} runtime={self.runtime} "
                f"delegate={self.delegate}>")

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Dequantized class scores for one model input (HxWxC float32 0..255)."""
        if x.shape != self.input_spec.shape:
            raise ValueError(f"input shape {x.shape} != model input {self.input_spec.shape}")
        q = self._in_q
        if self._in_dtype.kind in "iu":
            info = np.iinfo(self._in_dtype)
            t = np.clip(np.round(x / q.scale) + q.zero_point, info.min, info.max).astype(self._in_dtype)
        else:
            t = x.astype(self._in_dtype)
        self._interp.set_tensor(self._in_index, t[None])
        self._interp.invoke()
        raw = self._interp.get_tensor(self._out_index)[0]
        if self._out_q.dtype in ("int8", "uint8"):
            return (raw.astype(np.float32) - self._out_q.zero_point) * self._out_q.scale
        return raw.astype(np.float32)

    def classify(self, x: np.ndarray, frame: np.ndarray | None = None,
                 box: tuple[int, int, int, int] | None = None) -> Verdict:
        """Classify one model input. ``frame`` and ``box`` (where ``x`` came from) are for a
        classifier that needs its own crop (:class:`~maskgate.second_opinion.SecondOpinion`); one
        model ignores them."""
        s = self.scores(x)
        i = int(np.argmax(s))
        return Verdict(self.labels[i], float(s[i]), {lab: float(v) for lab, v in zip(self.labels, s, strict=True)})

    def classify_face(self, frame_bgr: np.ndarray, box: tuple[int, int, int, int]) -> Verdict:
        """Crop ``box`` from the frame by the bundle's crop rule and classify it."""
        return self.classify(face_input(frame_bgr, box, self.input_spec, self.crop_rule))

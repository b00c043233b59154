"""A second opinion on the faces the small classifier is unsure of (a two-model cascade).

The shipped classifier is tiny (2.9 M multiply-adds) and right on almost every face; a larger one
built on a pretrained face network (dlib's ResNet face descriptor with a head trained by
``maskgate-convert second-opinion``; 17 ms per face on one x86 core on TFLite's own kernels, 8.5 ms
with XNNPACK, 60-120 times the small one) errs on other faces. When it is asked
(:attr:`SecondOpinion.when`): ``unsure``, when the small one's ``with_mask`` score lies inside a band
(:attr:`SecondOpinion.band`; ``maskgate classify``); ``deny``, when the gate is about to sound the
alarm; ``door``, that and on masked votes too weak to count, where it takes the second model's score
if it is sure of a mask (both: :meth:`maskgate.finder.FaceFinder.second_looks`). Where the two answers
are combined, they are averaged:

    combined[c] = (first[c] + second[c] * (1 - first[no_face])) / 2   for each face label c
    combined[no_face] = first[no_face]

The second model has no ``no_face`` class, so the first model's belief that the box is not a face
is kept as it is, and the face labels share the rest. The scores still sum to 1.

:class:`SecondOpinion` has the classifier's interface (``labels``, ``input_spec``, ``crop_rule``,
``classify``, ``classify_face``), so the gate, ``maskgate classify`` and the build's evaluation use
it wherever they would use one :class:`~maskgate.classifier.Classifier`. ``classify(x)`` alone
(without the frame and the box) cannot crop the second model's input and answers with the first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import Bundle, load_bundle
from .classifier import Classifier, Verdict
from .crop import CropRule, InputSpec, face_input
from .errors import ModelError

log = logging.getLogger(__name__)

ALLOW = "with_mask"
NO_FACE = "no_face"
UNSURE = "unsure"
DENY = "deny"
DOOR = "door"
SECOND_DIR = "second_opinion"
"""The shipped second-opinion bundle's folder, inside the shipped bundle's folder."""


def default_second_dir() -> Path:
    from .bundle import default_bundle_dir

    return default_bundle_dir() / SECOND_DIR


def combine(first: Verdict, second: Verdict) -> Verdict:
    """The average of two verdicts, keeping the first's ``no_face`` score (see the module doc)."""
    nf = first.scores.get(NO_FACE, 0.0)
    scores = dict(first.scores)
    for label, v in second.scores.items():
        if label in scores:
            scores[label] = (first.scores[label] + v * (1.0 - nf)) / 2.0
    label = max(scores, key=lambda k: scores[k])
    return Verdict(label, scores[label], scores)


@dataclass(frozen=True)
class Band:
    """The first model's ``with_mask`` scores (open interval) on which the second model is asked."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.low <= self.high <= 1.0:
            raise ValueError(f"second-opinion band must be 0 <= low <= high <= 1 (got {self.low}, {self.high})")

    def holds(self, allow_score: float) -> bool:
        return self.low < allow_score < self.high


class SecondOpinion:
    """The first classifier, and a second one asked about some faces (:attr:`when`)."""

    def __init__(self, first: Classifier, second: Classifier, band: Band, when: str = UNSURE) -> None:
        extra = [lab for lab in second.labels if lab not in first.labels or lab == NO_FACE]
        if extra or ALLOW not in second.labels:
            raise ModelError(f"{second.bundle.model_path}: second-opinion labels {list(second.labels)} must be face "
                             f"labels of the first model {list(first.labels)}, with {ALLOW!r}")
        if when not in (UNSURE, DENY, DOOR):
            raise ValueError(f"second opinion: when must be {UNSURE!r}, {DENY!r} or {DOOR!r} (got {when!r})")
        self.first = first
        self.second = second
        self.band = band
        self.when = when
        """``unsure``: :meth:`classify` asks about the faces inside the band; ``deny`` and ``door``: it
        never asks, and the gate asks through :meth:`second_verdict` before a vote that would sound the
        alarm (and with ``door`` on weak masked votes)."""
        self.asked = 0
        """How many faces the second model was asked about."""

    # the classifier's interface
    @property
    def bundle(self) -> Bundle:
        return self.first.bundle

    @property
    def labels(self) -> tuple[str, ...]:
        return self.first.labels

    @property
    def input_spec(self) -> InputSpec:
        return self.first.input_spec

    @property
    def crop_rule(self) -> CropRule:
        return self.first.crop_rule

    @property
    def runtime(self) -> str:
        return self.first.runtime

    @property
    def delegate(self) -> str:
        return self.first.delegate

    def __repr__(self) -> str:
        return (f"<SecondOpinion {self.first.bundle.name} + {self.second.bundle.name} "
                f"band=({self.band.low}, {self.band.high}) asked={self.asked}>")

    def classify(self, x: np.ndarray, frame: np.ndarray | None = None,
                 box: tuple[int, int, int, int] | None = None) -> Verdict:
        """The first model's verdict on ``x``; with the ``frame`` and ``box`` it came from, and a
        ``with_mask`` score inside the band, the average with the second model's verdict."""
        v = self.first.classify(x)
        if self.when != UNSURE or frame is None or box is None or not self.band.holds(v.scores.get(ALLOW, 0.0)):
            return v
        return self.second_look(v, frame, box)

    def second_look(self, first: Verdict, frame: np.ndarray, box: tuple[int, int, int, int]) -> Verdict:
        """The first model's verdict ``first`` on ``box`` averaged with the second model's."""
        return combine(first, self.second_verdict(frame, box))

    def second_verdict(self, frame: np.ndarray, box: tuple[int, int, int, int]) -> Verdict:
        """The second model's own verdict on ``box`` (counted in :attr:`asked`)."""
        self.asked += 1
        return self.second.classify(face_input(frame, box, self.second.input_spec, self.second.crop_rule))

    def classify_face(self, frame_bgr: np.ndarray, box: tuple[int, int, int, int]) -> Verdict:
        return self.classify(face_input(frame_bgr, box, self.input_spec, self.crop_rule), frame_bgr, box)


def load_second_opinion(first: Classifier, directory: str | Path | None = None, band: Band | None = None,
                        threads: int = 1, delegate: str = "cpu", when: str = UNSURE) -> SecondOpinion:
    """``first`` with the second-opinion bundle at ``directory`` (default: the shipped one), asked
    inside ``band`` (default: the band in its manifest, chosen by the build for one first model)."""
    d = Path(directory) if directory else default_second_dir()
    # TFLite's own kernels: XNNPACK would keep a repacked copy of the 5.6 M weights (about 8 MB more
    # resident memory) to make a rarely asked model about twice as fast
    second = Classifier(load_bundle(d), threads=threads, delegate=delegate, xnnpack=False)
    if band is None:
        raw = second.bundle.manifest.get("band")
        try:
            band = Band(float(raw[0]), float(raw[1]))  # type: ignore[index]
        except (TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"{d / 'manifest.json'}: no valid second-opinion band (got {raw!r}): {exc}") from exc
    chosen_for = second.bundle.manifest.get("first_sha256")
    if chosen_for and chosen_for != first.bundle.manifest.get("sha256"):
        log.warning("the second opinion's band was chosen for another first model (sha256 %s..., this one %s...); "
                    "build one for it with `maskgate-convert second-opinion --first BUNDLE`",
                    str(chosen_for)[:12], str(first.bundle.manifest.get("sha256"))[:12])
    log.info("second opinion %s (band %s-%s): runtime %s, delegate %s", second.bundle.name, band.low, band.high,
             second.runtime, second.delegate)
    return SecondOpinion(first, second, band, when)

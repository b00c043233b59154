"""One measured pipeline, in its own process (``python -m maskgate.bench_worker``), so its memory is its own.

The bench's main process pickles a :class:`Job` and its frames to this process's standard input;
this process builds the pipeline, runs the warm-up frames, then every measured frame through a
fresh pipeline (same models, clean tracker), and writes the raw per-frame numbers as one JSON
object to standard output. Stray native-library prints are sent to standard error so that output
stays clean.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
from gpiozero.pins.mock import MockFactory

from .bench_frames import EncodedFrame, EncodedSource
from .classifier import Classifier, FaceClassifier, Verdict
from .config import Settings
from .decider import Decider, plan
from .detector import FaceDetector
from .events import FaceEvent, FrameResult
from .finder import in_roi, roi_pixels
from .outputs import Outputs
from .pipeline import Pipeline, build_classifier, build_detector, detector_settings
from .sources import orient
from .stats import Stats
from .tracker import Observation, Tracker

log = logging.getLogger(__name__)

DETECTORS = ("yunet", "haar", "aizoo")


@dataclass(frozen=True)
class Job:
    """What to measure: a configured gate (YuNet or Haar + a classifier bundle) or the AIZOO one-stage detector."""

    name: str
    settings: Settings
    """The gate's settings; ``classifier.threads`` is also OpenCV's thread count."""
    detector: str = "yunet"
    aizoo: str = ""
    """AIZOO model path (detector ``aizoo``)."""


class FrameStages(Stats):
    """Stats that also keep the current frame's stage times, so each frame's breakdown can be taken."""

    def __init__(self) -> None:
        super().__init__()
        self.current: dict[str, float] = {}

    def stage(self, name: str, seconds: float) -> None:
        super().stage(name, seconds)
        self.current[name] = self.current.get(name, 0.0) + seconds

    def take(self) -> dict[str, float]:
        out, self.current = self.current, {}
        return out


class CountingClassifier(Classifier):
    """The classifier, counting the faces it classifies (for the per-face cost)."""

    calls = 0

    def classify(self, x: np.ndarray, frame: np.ndarray | None = None,
                 box: tuple[int, int, int, int] | None = None) -> Verdict:
        self.calls += 1
        return super().classify(x, frame, box)


class OneStageGate:
    """The AIZOO detector (faces and mask labels in one pass) feeding the gate's own tracker, decider
    and outputs, timed in the same stages as :class:`Pipeline` (its whole network is ``detect``)."""

    def __init__(self, settings: Settings, source: EncodedSource, model: Path, outputs: Outputs,
                 stats: Stats, observer: Callable[[FrameResult], None]) -> None:
        from .peer_aizoo import AizooDetector

        self.settings = settings
        self.source = source
        self.peer = AizooDetector(model, threads=settings.classifier.threads)
        self.outputs = outputs
        self.stats = stats
        self.observer = observer
        d = settings.decision
        self.tracker = Tracker(d.track_iou, d.track_timeout, d.window)
        self.decider = Decider(d, settings.schedule)
        self.outputs.mode = d.mode
        self.faces = 0
        self.runtime = "ai-edge-litert" if _version("ai-edge-litert") else "tflite-runtime"

    def step(self) -> bool:
        s = self.settings
        t = time.perf_counter()
        frame = self.source.read()
        self.stats.stage("capture", time.perf_counter() - t)
        if frame is None:
            return False
        img = orient(frame.image, s.source.rotation, s.source.flip)
        h, w = img.shape[:2]
        t = time.perf_counter()
        x = self.peer.preprocess(img)
        self.stats.stage("preprocess", time.perf_counter() - t)
        t = time.perf_counter()
        found = self.peer.decode(*self.peer.infer(x), w, h)
        r = roi_pixels(s.detector.roi, w, h)
        obs = [Observation(f.box, f.label, f.score) for f in found
               if f.box[2] >= s.detector.min_face and in_roi(f.box, r)]
        self.stats.stage("detect", time.perf_counter() - t)
        self.faces += len(obs)
        t = time.perf_counter()
        tracks = self.tracker.update(frame.ts, obs)
        decision = self.decider.decide(frame.ts, tracks, frame.ts)
        self.stats.stage("decide", time.perf_counter() - t)
        t = time.perf_counter()
        self.outputs.apply(plan(decision, s.outputs.buzzer_mute))
        snapshot = self.outputs.snapshot()
        self.stats.stage("output", time.perf_counter() - t)
        faces = tuple(FaceEvent(tr.box, tr.label, tr.score, tr.id) for tr in tracks if tr.last_ts == frame.ts)
        self.stats.frame_done(len(faces), decision.state, decision.trigger)
        self.observer(FrameResult(frame.index, frame.ts, faces, decision, snapshot))
        return True


def _classified(p: Pipeline | OneStageGate, classifier: CountingClassifier | None) -> int:
    """Faces classified so far (a one-stage detector classifies every face it keeps)."""
    return p.faces if isinstance(p, OneStageGate) else (classifier.calls if classifier else 0)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def _rss_mb(key: str = "VmHWM") -> float:
    """Resident memory of this process: ``VmHWM`` (peak) or ``VmRSS`` (now), MiB.

    Read from /proc/self/status, which starts afresh at exec; ``ru_maxrss`` would carry over the
    parent's peak from the fork. Elsewhere, ``ru_maxrss`` is the best there is.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_job(job: Job, warmup: Sequence[EncodedFrame], frames: Sequence[EncodedFrame]) -> dict[str, Any]:
    """Warm up, then measure every frame; raw per-frame numbers (ms) and what ran."""
    s = job.settings
    threads = s.classifier.threads
    cv2.setNumThreads(threads)
    base_rss = _rss_mb("VmRSS")
    classifier: CountingClassifier | None = None
    judge: FaceClassifier | None = None
    detector: Any = None
    if job.detector != "aizoo":
        classifier = CountingClassifier(s.classifier.model or None, threads=threads, delegate=s.classifier.delegate)
        judge = build_classifier(s, classifier)
        if job.detector == "haar":
            from .haar import HaarFaceDetector
            detector = HaarFaceDetector(detector_settings(s))
        else:
            detector = build_detector(s)
    results: list[FrameResult] = []

    def gate(source: EncodedSource, stats: FrameStages, outputs: Outputs) -> Pipeline | OneStageGate:
        if job.detector == "aizoo":
            return OneStageGate(s, source, Path(job.aizoo), outputs, stats, results.append)
        assert judge is not None
        return Pipeline(s, source, cast(FaceDetector, detector), judge, outputs, stats=stats,
                        observers=[results.append])

    def run(frames_: Sequence[EncodedFrame], record: bool) -> tuple[list[float], list[dict[str, float]], list[int],
                                                                       Pipeline | OneStageGate]:
        outputs = Outputs(s.outputs, MockFactory(), mode=s.decision.mode)
        stats = FrameStages()
        source = EncodedSource(frames_)
        p = gate(source, stats, outputs)
        totals: list[float] = []
        stages: list[dict[str, float]] = []
        faces: list[int] = []
        try:
            while True:
                before = _classified(p, classifier)
                t0 = time.perf_counter()
                ok = p.step()
                dt = time.perf_counter() - t0
                st = stats.take()
                if not ok:
                    break
                if record:
                    totals.append(dt * 1e3)
                    stages.append({k: v * 1e3 for k, v in st.items()})
                    faces.append(_classified(p, classifier) - before)
        finally:
            outputs.safe()
            outputs.close()
        return totals, stages, faces, p

    if warmup:
        run(warmup, False)
    results.clear()
    totals, stages, faces, p = run(frames, True)
    if len(results) != len(frames):
        raise RuntimeError(f"{job.name}: {len(results)} results for {len(frames)} frames "
                           f"(errors {p.stats.errors}, bad frames {p.stats.bad_frames})")
    if classifier is not None:
        runtime, delegate = classifier.runtime, classifier.delegate
        model = str(classifier.bundle.model_path)
    else:
        runtime, delegate, model = cast(OneStageGate, p).runtime, "cpu", job.aizoo
    return {
        "name": job.name,
        "frame_ms": totals,
        "stages_ms": stages,
        "faces_classified": faces,
        "faces": [[[list(f.box), f.label] for f in r.faces] for r in results],
        "base_rss_mb": base_rss,
        "peak_rss_mb": _rss_mb(),
        "runtime": runtime,
        "runtime_version": _version(runtime),
        "delegate": delegate,
        "model": model,
        "detector": repr(detector) if detector is not None else "aizoo",
        "opencv_threads": cv2.getNumThreads(),
        "python": platform.python_version(),
    }


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    payload = pickle.load(sys.stdin.buffer)
    out = os.dup(1)
    os.dup2(2, 1)  # native libraries print to fd 1; keep the result stream clean
    result = run_job(payload["job"], payload["warmup"], payload["frames"])
    with os.fdopen(out, "w") as fh:
        fh.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

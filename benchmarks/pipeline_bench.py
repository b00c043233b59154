"""Per-stage cost, frames/s and accuracy of the gate on 640x480 synthetic-door frames, one face, one
thread, next to the AIZOO face-mask detector (../shared/peers/aizoo) on the same frames in the same run.

Prints numbers and asserts nothing. Usage::

    python benchmarks/pipeline_bench.py [--seeds 0,1,2,3] [--visits 12] [--rounds 2]
        [--faces ../shared/data/faces] [--detector-model ../shared/models] [--aizoo PATH]

The door is built from the shipped bundle's held-out test faces only (``maskgate.bundle.split_files``),
one person per visit, masked and bare in turn, several seeds. Frames are rendered before the clock
starts; a gate's time is its whole loop (``Pipeline.run``) and AIZOO's is ``detect`` per frame, both
in CPU time of this process (``time.process_time``: everything runs on one thread, and on a shared
machine CPU time is far steadier than wall time). Variants run round-robin, ``--rounds`` times per
seed, and the best round per variant and seed counts; only ratios within one run mean anything.
Per-stage numbers are the pipeline's own wall-clock stage timers (``Stats``), so they include waiting
for the CPU on a busy machine.

Accuracy is per frame, on the frames ``maskgate.synthetic.judged_label`` judges (one person, fully in
view, >= 48 px wide, centred in the middle 60% of the width): masked vs not masked (AIZOO has two
classes). A gate's verdict for a frame is the label of its face whose box centre lies on the person
(the highest-scoring such face); AIZOO's is the same for its boxes. 95% intervals come from a
bootstrap over visits (frames of one visit are not independent). Losses are split into: no box on
the person (for the gate: the detector finds no face there even on the whole frame, the classifier
rejects it as ``no_face``, or the gate did not look / lost the track) and a wrong label. The gate's
decision is scored too (allow for masked, deny for bare; ``checking`` is voting lag).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from gpiozero.pins.mock import MockFactory

from maskgate.bundle import load_bundle, split_files
from maskgate.classifier import Classifier
from maskgate.config import Settings, replace
from maskgate.detector import FaceDetector
from maskgate.events import FrameResult
from maskgate.outputs import Outputs
from maskgate.peer_aizoo import AizooDetector, PeerFace
from maskgate.pipeline import Pipeline, detector_settings
from maskgate.sources import Frame
from maskgate.synthetic import SyntheticDoor, judged_label

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKGATE_SHARED") or REPO.parent / "shared")
W, H, FPS = 640, 480, 10

OLD_DEFAULT = {"max_side": 640, "face_px": 0, "every": 1, "motion": 0.0}
"""The detector settings that were the default before the cadence work (the whole frame at full size
on every frame); kept as the baseline row."""


class Frames:
    """Pre-rendered frames replayed as fast as the loop asks (capture cost = a list lookup)."""

    live = False

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = frames
        self.i = 0
        self.dropped = 0

    def open(self) -> None:
        self.i = 0

    def read(self) -> Frame | None:
        if self.i >= len(self.frames):
            return None
        f = self.frames[self.i]
        self.i += 1
        return f

    def close(self) -> None:
        pass


@dataclass
class Seed:
    """One seed's rendered door: frames, the visits (start, end, label) and the judged labels."""

    seed: int
    door: SyntheticDoor
    frames: list[Frame]
    judged: list[str | None]
    visits: list[tuple[int, int, str]]


def render(faces: Path, images: dict[str, list[str]], seed: int, visits: int) -> Seed:
    labels = ["with_mask", "without_mask"] * (visits // 2) + ["with_mask"] * (visits % 2)
    door = SyntheticDoor(faces, W, H, FPS, script=[[lab] for lab in labels], seed=seed, realtime=False,
                         start_wall=0.0, images=images)
    door.open()
    frames = []
    while (f := door.read()) is not None:
        frames.append(f)
    vs = [(v.start, v.end, v.people[0].label) for v in door.visits_until(0)]
    return Seed(seed, door, frames, [judged_label(f, W) for f in frames], vs)


def on_person(box: tuple[int, int, int, int], truth: tuple[int, int, int, int]) -> bool:
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return truth[0] <= cx < truth[0] + truth[2] and truth[1] <= cy < truth[1] + truth[3]


def masked(label: str) -> bool:
    return label == "with_mask"


@dataclass
class Score:
    """Per-visit counts of right frames and the reasons for the wrong ones."""

    right: Counter[int] = field(default_factory=Counter)
    total: Counter[int] = field(default_factory=Counter)
    losses: Counter[str] = field(default_factory=Counter)
    extra: Counter[str] = field(default_factory=Counter)

    def add(self, visit: int, ok: bool, why: str | None = None) -> None:
        self.total[visit] += 1
        self.right[visit] += ok
        if not ok and why:
            self.losses[why] += 1

    @property
    def n(self) -> tuple[int, int]:
        return sum(self.right.values()), sum(self.total.values())


def bootstrap(scores: Sequence[Score], visits: list[int], reps: int = 2000,
              seed: int = 1) -> list[tuple[float, float]]:
    """95% intervals of each score's accuracy and of ``scores[0] - scores[1]`` by resampling visits."""
    rng = np.random.default_rng(seed)
    r = np.array([[s.right[v] for v in visits] for s in scores], float)
    t = np.array([[s.total[v] for v in visits] for s in scores], float)
    idx = rng.integers(0, len(visits), (reps, len(visits)))
    acc = r[:, idx].sum(-1) / np.maximum(t[:, idx].sum(-1), 1)  # (scores, reps)
    out = [(float(np.percentile(a, 2.5)), float(np.percentile(a, 97.5))) for a in acc]
    if len(scores) > 1:
        d = acc[0] - acc[1]
        out.append((float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))))
    return out


@dataclass
class GateRun:
    results: list[FrameResult]
    elapsed: float
    stages: dict[str, tuple[float, int]]


def run_gate(frames: list[Frame], s: Settings, det: FaceDetector, clf: Classifier) -> GateRun:
    out = Outputs(s.outputs, MockFactory())
    results: list[FrameResult] = []
    p = Pipeline(s, Frames(frames), det, clf, out, observers=[results.append])
    t = time.process_time()
    p.run()
    elapsed = time.process_time() - t
    out.close()
    return GateRun(results, elapsed, {k: (v.total, v.count) for k, v in p.stats.stages.items()})


def score_gate(sd: Seed, results: list[FrameResult], det: FaceDetector, clf: Classifier,
               s: Settings, base: int) -> tuple[Score, Score]:
    """Per-frame label score and per-frame decision score of one gate run on one seed."""
    frames, lab, dec = sd.frames, Score(), Score()
    visit_of = {}
    for k, (a, b, _) in enumerate(sd.visits):
        for i in range(a, b):
            visit_of[i] = base + k
    for res in results:
        i = res.frame
        want = sd.judged[i]
        if want is None:
            continue
        truth = (frames[i].truth or ())[0].box
        mine = [f for f in res.faces if on_person(f.box, truth)]
        v = visit_of[i]
        if mine:
            got = max(mine, key=lambda f: f.score).label
            lab.add(v, masked(got) == masked(want), "wrong label")
        else:
            lab.add(v, False, why_missed(frames[i], truth, det, clf, s))
        state = res.decision.state
        if state in ("allow", "deny"):
            dec.add(v, (state == "allow") == masked(want), "allow for a bare face" if state == "allow"
                    else "deny for a masked face")
        else:
            dec.add(v, False, state)
    return lab, dec


def why_missed(frame: Frame, truth: tuple[int, int, int, int], det: FaceDetector, clf: Classifier,
               s: Settings) -> str:
    """Why the gate had no face on the person: look again with the whole-frame detector."""
    faces = [f for f in det.detect(frame.image) if on_person(f.box, truth)]
    if not faces:
        return "no box: detector finds no face"
    v = clf.classify_face(frame.image, faces[0].box)
    if v.label == "no_face" and v.score >= s.decision.no_face_score:
        return "no box: classifier says no_face (dropped)"
    if v.label == "no_face":
        return "no box: classifier's best guess no_face (kept, unlabelled)"
    return "no box: not searched / track lost"


def score_aizoo(sd: Seed, dets: list[list[PeerFace]], base: int) -> Score:
    sc = Score()
    for k, (a, b, _) in enumerate(sd.visits):
        for i in range(a, b):
            want = sd.judged[i]
            if want is None:
                continue
            truth = (sd.frames[i].truth or ())[0].box
            mine = [d for d in dets[i] if on_person(d.box, truth)]
            if mine:
                got = max(mine, key=lambda d: d.score).label
                sc.add(base + k, masked(got) == masked(want), "wrong label")
            else:
                sc.add(base + k, False, "no box on the person")
            sc.extra["boxes off the person"] += sum(not on_person(d.box, truth) for d in dets[i])
    return sc


def latencies(sd: Seed, results: list[FrameResult]) -> list[float | None]:
    """Frame time from a masked face fully in view (>= 48 px) to the door opening, per masked visit."""
    out: list[float | None] = []
    opens = [r.frame for r in results if r.decision.trigger == "open"]
    for a, b, label in sd.visits:
        if label != "with_mask":
            continue
        seen = [i for i in range(a, b) if any(t.box[0] > 0 and t.box[0] + t.box[2] < W and t.box[2] >= 48
                                              for t in sd.frames[i].truth or ())]
        opened = [i for i in opens if a <= i < b]
        out.append((opened[0] - seen[0]) / FPS if opened and seen else None)
    return out


def fmt_ci(right: int, total: int, ci: tuple[float, float]) -> str:
    return f"{right}/{total} = {right / max(total, 1):.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})"


def variant(**detector: Any) -> Settings:
    return replace(Settings(), detector=detector) if detector else Settings()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--faces", type=Path, default=SHARED / "data" / "faces")
    ap.add_argument("--detector-model", type=Path, default=SHARED / "models",
                    help="YuNet .onnx or the folder holding it (default $MASKGATE_SHARED/models)")
    ap.add_argument("--aizoo", type=Path, default=SHARED / "peers" / "aizoo" / "face_mask_detection.tflite")
    ap.add_argument("--visits", type=int, default=12, help="visits per seed (masked and bare in turn)")
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--rounds", type=int, default=2, help="round-robin rounds; the best per variant counts")
    ap.add_argument("--variants", default="", help="comma-separated names to run (default: all)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                    help="an extra gate variant: [detector] keys changed from the defaults, e.g. "
                         "'every 3:every=3' (repeatable)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    seeds = [int(x) for x in args.seeds.split(",") if x]

    variants: list[tuple[str, Settings]] = [
        ("old default: whole frame at 640 px, detect every frame", variant(**OLD_DEFAULT)),
        ("new default", variant()),
    ]
    for spec in args.variant:
        name, _, kv = spec.partition(":")
        changes = {k: float(v) if "." in v else int(v) for k, v in (x.split("=") for x in kv.split(",") if x)}
        variants.append((name, variant(**changes)))
    if args.variants:
        keep = args.variants.split(",")
        variants = [v for v in variants if any(k in v[0] for k in keep)]
    images = split_files(load_bundle(), "test")
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
          f"python {platform.python_version()}, opencv {cv2.__version__}; one thread; load "
          f"{os.getloadavg()[0]:.1f}")
    print(f"door: {W}x{H} at {FPS} fps, held-out test faces ({', '.join(f'{k} {len(v)}' for k, v in images.items())}),"
          f" seeds {seeds}, {args.visits} visits each, one person per visit")

    clf = Classifier(threads=1)
    dets = {name: FaceDetector(detector_settings(s), args.detector_model) for name, s in variants}
    print(f"classifier: runtime {clf.runtime}, delegate {clf.delegate}; detector {dets[variants[0][0]].model_path}")
    az = AizooDetector(args.aizoo, threads=1) if args.aizoo.is_file() else None

    gate: dict[str, dict[str, Any]] = {name: {"elapsed": 0.0, "frames": 0, "stages": Counter(),
                                              "calls": Counter(), "lab": [], "dec": [], "lat": [],
                                              "triggers": Counter()} for name, _ in variants}
    peer: dict[str, Any] = {"elapsed": 0.0, "frames": 0, "score": []}
    all_visits: list[int] = []
    n_frames = n_judged = 0
    for si, seed in enumerate(seeds):
        sd = render(args.faces, images, seed, args.visits)
        base = si * 1000
        all_visits += [base + k for k in range(len(sd.visits))]
        n_frames += len(sd.frames)
        n_judged += sum(j is not None for j in sd.judged)
        best: dict[str, GateRun] = {}
        best_az: tuple[float, list[list[PeerFace]]] | None = None
        for _ in range(args.rounds):
            for name, s in variants:
                gr = run_gate(sd.frames, s, dets[name], clf)
                if name not in best or gr.elapsed < best[name].elapsed:
                    best[name] = gr
            if az is not None:
                t = time.process_time()
                found = [az.detect(f.image) for f in sd.frames]
                el = time.process_time() - t
                if best_az is None or el < best_az[0]:
                    best_az = (el, found)
        for name, s in variants:
            g, gr = gate[name], best[name]
            g["elapsed"] += gr.elapsed
            g["frames"] += len(gr.results)
            for k, (tot, cnt) in gr.stages.items():
                g["stages"][k] += tot
                g["calls"][k] += cnt
            lab, dec = score_gate(sd, gr.results, dets[name], clf, s, base)
            g["lab"].append(lab)
            g["dec"].append(dec)
            g["lat"] += latencies(sd, gr.results)
            g["triggers"].update(r.decision.trigger for r in gr.results if r.decision.trigger)
        if best_az is not None:
            peer["elapsed"] += best_az[0]
            peer["frames"] += len(sd.frames)
            peer["score"].append(score_aizoo(sd, best_az[1], base))
        print(f"  seed {seed}: {len(sd.frames)} frames, {len(sd.visits)} visits done", flush=True)

    print(f"frames: {n_frames} ({n_judged} judged), visits: {len(all_visits)}")

    def merged(parts: list[Score]) -> Score:
        out = Score()
        for p in parts:
            out.right.update(p.right)
            out.total.update(p.total)
            out.losses.update(p.losses)
            out.extra.update(p.extra)
        return out

    az_score = merged(peer["score"]) if az is not None else None
    az_fps = peer["frames"] / peer["elapsed"] if az is not None else None
    rows = []
    for name, _ in variants:
        g = gate[name]
        fps = g["frames"] / g["elapsed"]
        lab, dec = merged(g["lab"]), merged(g["dec"])
        pair = [lab, az_score] if az_score is not None else [lab]
        cis = bootstrap(pair, all_visits)
        dci = bootstrap([dec], all_visits)[0]
        n = g["frames"]
        stages = "  ".join(f"{k} {g['stages'][k] / n * 1e3:.2f} ({g['calls'][k] / n:.0%} of frames, "
                           f"{g['stages'][k] / g['calls'][k] * 1e3:.2f}/call)"
                           for k in g["stages"] if g["calls"][k])
        print(f"\n{name}: {fps:.1f} frames/s, {1e3 / fps:.2f} ms/frame (CPU)"
              + (f", {fps / az_fps:.2f}x AIZOO" if az_fps else ""))
        print(f"  ms per frame by stage (share of frames the stage ran, ms per run): {stages}")
        print(f"  per-frame label accuracy: {fmt_ci(*lab.n, cis[0])}; losses {dict(lab.losses)}")
        if len(cis) > 2:
            print(f"  minus AIZOO: {lab.n[0] / lab.n[1] - az_score.n[0] / az_score.n[1]:+.3f} "  # type: ignore[union-attr]
                  f"(95% CI {cis[2][0]:+.3f} to {cis[2][1]:+.3f})")
        print(f"  per-frame decision accuracy (allow masked / deny bare): {fmt_ci(*dec.n, dci)}; "
              f"other states {dict(dec.losses)}")
        lat = g["lat"]
        opened = sorted(x for x in lat if x is not None)
        print(f"  masked face fully in view -> relay on (frame time): opened {len(opened)}/{len(lat)} masked visits"
              + (f", median {np.median(opened):.1f} s, max {max(opened):.1f} s" if opened else "")
              + f"; triggers {dict(g['triggers'])}")
        rows.append((name, fps, lab))
    if az_score is not None and az_fps is not None:
        ci = bootstrap([az_score], all_visits)[0]
        print(f"\nAIZOO peer (SSD 260x260 float32, detection + 2 classes): {az_fps:.1f} frames/s, "
              f"{1e3 / az_fps:.2f} ms/frame (CPU)")
        print(f"  per-frame label accuracy: {fmt_ci(*az_score.n, ci)}; losses {dict(az_score.losses)}; "
              f"{dict(az_score.extra)}")
        print("\nsummary (frames/s ratio to AIZOO, accuracy):")
        for name, fps, lab in rows:
            print(f"  {name}: {fps / az_fps:.2f}x, {lab.n[0] / lab.n[1]:.3f}")
    else:
        print(f"\nAIZOO peer not found at {args.aizoo}; skipped")


if __name__ == "__main__":
    main()

"""Per-stage cost, frames/s and accuracy of the gate on 640x480 synthetic-door frames, one face, one
thread, next to the AIZOO face-mask detector (../shared/peers/aizoo) on the same frames in the same run.

Prints numbers and asserts nothing. Usage::

    python benchmarks/pipeline_bench.py [--seeds 0,1,2,3,4,5] [--visits 12] [--rounds 2]
        [--faces ../shared/data/faces] [--detector-model ../shared/models] [--aizoo PATH]
        [--variant 'NAME:every=10,face_px=0' ...] [--details] [--bundle DIR] [--whole-images]

The door is built from the bundle's held-out test faces only (``maskgate.bundle.split_heads``;
``--split val`` for tuning on the validation faces instead). Each head is the crop rule's square
around the face the build's detector located in the image, so a whole-body photo, a drawing or a
picture of masks alone is not pasted as a head (``--whole-images`` pastes every image whole, as this
benchmark did before; a bundle whose split file has no face boxes is always pasted whole),
one person per visit, masked and bare in turn, several seeds. Frames are rendered before the clock
starts. Time is CPU time of this one-threaded process (``time.process_time``; the gate's stage timers
are switched to this thread's CPU clock too): on a machine shared with other jobs, CPU time is far
steadier than wall time, and the gate and AIZOO are measured the same way. A gate's time is its whole
loop (``Pipeline.run``); AIZOO's is ``detect`` per frame. Variants run round-robin, ``--rounds`` times
per seed, and the best round per variant and seed counts; only ratios within one run mean anything.

Accuracy is per frame, on the frames ``maskgate.synthetic.judged_label`` judges (one person, fully in
view, >= 48 px wide, centred in the middle 60% of the width): masked vs not masked (AIZOO has two
classes). A gate's verdict for a frame is the label of its face whose box centre lies on the person
(the highest-scoring such face); AIZOO's is the same for its boxes. 95% intervals come from a
bootstrap over visits (frames of one visit are not independent: they show the same face image).
The gate's losses are split into: no box on the person (the whole-frame detector finds no face there,
the classifier rejects it as ``no_face`` or only guesses ``no_face``, or the gate did not search / lost
the track on that frame) and a wrong label. Its decision is scored per frame too (allow for masked,
deny for bare; ``checking`` is voting lag, ``uncertain`` the band that neither opens nor alarms), and
per visit (did the door open for the masked, alarm for the bare, open for the bare?). AIZOO's boxes
are also fed through the gate's own tracker and decider for the same per-visit outcomes.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import types
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from gpiozero.pins.mock import MockFactory

import maskgate.pipeline
from maskgate.bundle import load_bundle, split_files, split_heads
from maskgate.classifier import Classifier, FaceClassifier
from maskgate.config import Settings, replace
from maskgate.decider import Decider
from maskgate.detector import FaceDetector
from maskgate.events import FrameResult
from maskgate.outputs import Outputs
from maskgate.peer_aizoo import AizooDetector, PeerFace
from maskgate.pipeline import Pipeline, build_classifier, detector_settings
from maskgate.sources import Frame, FrameList
from maskgate.synthetic import SyntheticDoor, judged_label
from maskgate.tracker import Observation, Tracker

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKGATE_SHARED") or REPO.parent / "shared")
W, H, FPS = 640, 480, 10

OLD_DEFAULT = {"max_side": 640, "face_px": 0, "every": 1, "motion": 0.0, "refine_unsure": False}
"""The detector settings that were the default before the cadence work (the whole frame at full size
on every frame, no second look at unsure faces); kept as the baseline row."""


@dataclass
class Seed:
    """One seed's rendered door: frames, the visits (start, end, label, face image) and judged labels."""

    seed: int
    frames: list[Frame]
    judged: list[str | None]
    visits: list[tuple[int, int, str, str]]


def render(faces: Path, heads: dict[str, dict[str, tuple[int, int, int, int] | None]], seed: int,
           visits: int) -> Seed:
    labels = ["with_mask", "without_mask"] * (visits // 2) + ["with_mask"] * (visits % 2)
    door = SyntheticDoor(faces, W, H, FPS, script=[[lab] for lab in labels], seed=seed, realtime=False,
                         start_wall=0.0, heads=heads)
    door.open()
    frames = []
    while (f := door.read()) is not None:
        frames.append(f)
    vs = [(v.start, v.end, v.people[0].label, v.people[0].image.name) for v in door.visits_until(0)]
    return Seed(seed, frames, [judged_label(f, W) for f in frames], vs)


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

    def add(self, visit: int, ok: bool, why: str | None = None) -> None:
        self.total[visit] += 1
        self.right[visit] += ok
        if not ok and why:
            self.losses[why] += 1

    def merge(self, other: Score) -> None:
        self.right.update(other.right)
        self.total.update(other.total)
        self.losses.update(other.losses)

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


class CpuClock(types.ModuleType):
    """``time`` for maskgate.pipeline with ``perf_counter`` reading this thread's CPU clock."""

    def __init__(self) -> None:
        super().__init__("time")
        self.__dict__.update({k: getattr(time, k) for k in dir(time) if not k.startswith("__")})
        self.perf_counter = time.thread_time


@dataclass
class GateRun:
    results: list[FrameResult]
    elapsed: float
    stages: dict[str, tuple[float, int]]


def run_gate(frames: list[Frame], s: Settings, det: FaceDetector, clf: FaceClassifier) -> GateRun:
    out = Outputs(s.outputs, MockFactory())
    results: list[FrameResult] = []
    p = Pipeline(s, FrameList(frames), det, clf, out, observers=[results.append])
    t = time.process_time()
    p.run()
    elapsed = time.process_time() - t
    out.close()
    return GateRun(results, elapsed, {k: (v.total, v.count) for k, v in p.stats.stages.items()})


@dataclass
class Outcomes:
    """Door actions per visit: opened for masked, alarmed for bare, and the wrong ones."""

    counts: Counter[str] = field(default_factory=Counter)
    latencies: list[float | None] = field(default_factory=list)

    def line(self) -> str:
        c = self.counts
        return (f"masked visits opened {c['masked opened']}/{c['masked']} (alarmed {c['masked alarmed']}), "
                f"bare visits alarmed {c['bare alarmed']}/{c['bare']} (opened {c['bare opened']})")


def outcomes(sd: Seed, triggers: dict[int, str | None], into: Outcomes) -> list[str]:
    """Add one seed's visits to ``into``; return a short outcome per visit (for --details)."""
    out = []
    for a, b, label, _ in sd.visits:
        trig = {triggers.get(i) for i in range(a, b)}
        kind = "masked" if masked(label) else "bare"
        into.counts[kind] += 1
        into.counts[f"{kind} opened"] += "open" in trig
        into.counts[f"{kind} alarmed"] += "alarm" in trig
        out.append("+".join(sorted(t for t in trig if t)) or "-")
        if kind == "masked":
            seen = [i for i in range(a, b) if any(t.box[0] > 0 and t.box[0] + t.box[2] < W and t.box[2] >= 48
                                                  for t in sd.frames[i].truth or ())]
            opened = [i for i in range(a, b) if triggers.get(i) == "open"]
            into.latencies.append((opened[0] - seen[0]) / FPS if opened and seen else None)
            if into.latencies[-1] is not None:
                out[-1] += f" {into.latencies[-1]:.1f}s"
    return out


def score_gate(sd: Seed, results: list[FrameResult], det: FaceDetector, clf: FaceClassifier,
               s: Settings, base: int) -> tuple[Score, Score]:
    """Per-frame label score and per-frame decision score of one gate run on one seed."""
    lab, dec = Score(), Score()
    for k, (a, b, _, _) in enumerate(sd.visits):
        for i in range(a, b):
            want = sd.judged[i]
            if want is None:
                continue
            res = results[i]
            truth = (sd.frames[i].truth or ())[0].box
            mine = [f for f in res.faces if on_person(f.box, truth)]
            if mine:
                got = max(mine, key=lambda f: f.score).label
                lab.add(base + k, masked(got) == masked(want), "wrong label")
            else:
                lab.add(base + k, False, why_missed(sd.frames[i], truth, det, clf, s))
            state = res.decision.state
            if state in ("allow", "deny"):
                dec.add(base + k, (state == "allow") == masked(want),
                        "allow for a bare face" if state == "allow" else "deny for a masked face")
            else:
                dec.add(base + k, False, state)
    return lab, dec


def why_missed(frame: Frame, truth: tuple[int, int, int, int], det: FaceDetector, clf: FaceClassifier,
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
    for k, (a, b, _, _) in enumerate(sd.visits):
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
    return sc


def aizoo_door(sd: Seed, dets: list[list[PeerFace]]) -> dict[int, str | None]:
    """AIZOO's boxes through the gate's tracker and decider (same votes and thresholds): triggers per frame."""
    s = Settings().decision
    tracker, decider = Tracker(s.track_iou, s.track_timeout, s.window), Decider(s)
    out = {}
    for f, d in zip(sd.frames, dets, strict=True):
        tracks = tracker.update(f.ts, [Observation(x.box, x.label, x.score) for x in d if x.box[2] >= 48])
        out[f.index] = decider.decide(f.ts, tracks, 0.0).trigger
    return out


TARGET_LATENCY = 0.5
"""The daemon issue's target from a masked face in view to the relay on, in seconds of frame time."""


def fmt_ci(right: int, total: int, ci: tuple[float, float]) -> str:
    return f"{right}/{total} = {right / max(total, 1):.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})"


def fmt_latency(lat: list[float | None]) -> str:
    opened = sorted(x for x in lat if x is not None)
    if not opened:
        return "never opened"
    quick = sum(x <= TARGET_LATENCY + 1e-9 for x in opened)
    return (f"median {np.median(opened):.1f} s, 90th percentile {np.percentile(opened, 90):.1f} s, "
            f"max {max(opened):.1f} s over {len(opened)} opened masked visits; within {TARGET_LATENCY} s: "
            f"{quick}/{len(opened)}")


def _value(text: str) -> bool | int | float | str:
    """A --variant value: true/false, an integer, a decimal number, or else the word itself."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text


def variant(**changes: Any) -> Settings:
    """The default settings with some keys changed: a plain key is a [detector] key, ``section.key``
    a key of any other section (``decision.mask_score``)."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        sections.setdefault(section or "detector", {})[name] = value
    return replace(Settings(), **sections) if sections else Settings()


@dataclass
class Tally:
    """Everything one gate variant accumulates over the seeds."""

    elapsed: float = 0.0
    frames: int = 0
    stages: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    lab: Score = field(default_factory=Score)
    dec: Score = field(default_factory=Score)
    door: Outcomes = field(default_factory=Outcomes)
    visits: list[str] = field(default_factory=list)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--faces", type=Path, default=SHARED / "data" / "faces")
    ap.add_argument("--detector-model", type=Path, default=SHARED / "models",
                    help="YuNet .onnx or the folder holding it (default $MASKGATE_SHARED/models)")
    ap.add_argument("--aizoo", type=Path, default=SHARED / "peers" / "aizoo" / "face_mask_detection.tflite")
    ap.add_argument("--visits", type=int, default=12, help="visits per seed (masked and bare in turn)")
    ap.add_argument("--seeds", default="0,1,2,3,4,5")
    ap.add_argument("--rounds", type=int, default=2, help="round-robin rounds; the best per variant counts")
    ap.add_argument("--only", default="", help="comma-separated name parts: run only matching variants")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                    help="an extra gate variant: keys changed from the defaults, [detector] keys by name, "
                         "others as section.key, e.g. 'every 3:every=3' or 'allow at 0.85:decision.mask_score=0.85' "
                         "(repeatable)")
    ap.add_argument("--details", action="store_true", help="print one line per visit")
    ap.add_argument("--split", default="test", help="which held-out faces: test (report) or val (tuning)")
    ap.add_argument("--whole-images", action="store_true",
                    help="paste each face image whole as the head (the door before heads were cut around "
                         "the face the build located)")
    ap.add_argument("--bundle", type=Path, default=None,
                    help="classifier bundle folder (default: the one the package ships)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    maskgate.pipeline.time = CpuClock()  # type: ignore[attr-defined]
    seeds = [int(x) for x in args.seeds.split(",") if x]

    variants: list[tuple[str, Settings]] = [
        ("old default (whole frame at 640 px, searched every frame)", variant(**OLD_DEFAULT)),
        ("new default", variant()),
    ]
    for spec in args.variant:
        name, _, kv = spec.partition(":")
        changes = {k: _value(v) for k, v in (x.split("=") for x in kv.split(",") if x)}
        variants.append((name, variant(**changes)))
    if args.only:
        keep = args.only.split(",")
        variants = [v for v in variants if any(k in v[0] for k in keep)]
    bundle = load_bundle(args.bundle)
    heads = ({lab: dict.fromkeys(v) for lab, v in split_files(bundle, args.split).items()} if args.whole_images
             else split_heads(bundle, args.split))
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
          f"python {platform.python_version()}, opencv {cv2.__version__}; one thread; load "
          f"{os.getloadavg()[0]:.1f}")
    counts = ", ".join(f"{k} {len(v)}" for k, v in heads.items())
    how = ("whole images pasted as heads" if all(b is None for v in heads.values() for b in v.values()) else
           "heads cut around the face the build's detector located (images where it found none left out)")
    print(f"door: {W}x{H} at {FPS} fps, held-out {args.split} faces ({counts}; {how}), seeds {seeds}, "
          f"{args.visits} visits each, one person per visit")
    d = Settings().detector
    print(f"new default [detector]: face_px {d.face_px}, every {d.every}, moving_every {d.moving_every}, "
          f"idle_every {d.idle_every}, motion {d.motion}")

    first = Classifier(args.bundle, threads=1)
    clfs = {name: build_classifier(s, first) for name, s in variants}
    dets = {name: FaceDetector(detector_settings(s), args.detector_model) for name, s in variants}
    print(f"classifier: runtime {first.runtime}, delegate {first.delegate}; detector "
          f"{dets[variants[0][0]].model_path}; " + "; ".join(f"{name}: {clfs[name]!r}" for name, _ in variants))
    az = AizooDetector(args.aizoo, threads=1) if args.aizoo.is_file() else None

    gate = {name: Tally() for name, _ in variants}
    peer = Tally()
    all_visits: list[int] = []
    details: list[list[str]] = []
    n_frames = n_judged = 0
    for si, seed in enumerate(seeds):
        t = time.process_time()
        sd = render(args.faces, heads, seed, args.visits)
        if si == 0:
            jpeg = [cv2.imencode(".jpg", f.image)[1] for f in sd.frames[:50]]
            t_render = (time.process_time() - t) / len(sd.frames)
            t = time.process_time()
            for buf in jpeg:
                cv2.imdecode(buf, cv2.IMREAD_COLOR)
            print(f"not in the gate's numbers: synthetic render {t_render * 1e3:.2f} ms/frame; JPEG decode of a "
                  f"640x480 frame {(time.process_time() - t) / len(jpeg) * 1e3:.2f} ms (a camera or replay pays it)")
        base = si * 1000
        all_visits += [base + k for k in range(len(sd.visits))]
        n_frames += len(sd.frames)
        n_judged += sum(j is not None for j in sd.judged)
        best: dict[str, GateRun] = {}
        best_az: tuple[float, list[list[PeerFace]], Counter[str]] | None = None
        for _ in range(args.rounds):
            for name, s in variants:
                gr = run_gate(sd.frames, s, dets[name], clfs[name])
                if name not in best or gr.elapsed < best[name].elapsed:
                    best[name] = gr
            if az is not None:
                found, parts = [], Counter[str]()
                t = time.process_time()
                for f in sd.frames:
                    t0 = time.thread_time()
                    x = az.preprocess(f.image)
                    t1 = time.thread_time()
                    loc, cls = az.infer(x)
                    t2 = time.thread_time()
                    found.append(az.decode(loc, cls, W, H))
                    parts.update({"preprocess": t1 - t0, "infer": t2 - t1, "decode": time.thread_time() - t2})
                el = time.process_time() - t
                if best_az is None or el < best_az[0]:
                    best_az = (el, found, parts)
        rows = [[f"{seed}/{k}", lab[:7], img] for k, (_, _, lab, img) in enumerate(sd.visits)]
        for name, s in variants:
            g, gr = gate[name], best[name]
            g.elapsed += gr.elapsed
            g.frames += len(gr.results)
            for k, (tot, cnt) in gr.stages.items():
                g.stages[k] += tot
                g.calls[k] += cnt
            lab_s, dec_s = score_gate(sd, gr.results, dets[name], clfs[name], s, base)
            g.lab.merge(lab_s)
            g.dec.merge(dec_s)
            acts = outcomes(sd, {r.frame: r.decision.trigger for r in gr.results}, g.door)
            for k, row in enumerate(rows):
                row.append(f"{lab_s.right[base + k]}/{lab_s.total[base + k]} {acts[k]}")
        if best_az is not None:
            peer.elapsed += best_az[0]
            peer.frames += len(sd.frames)
            peer.stages.update(best_az[2])
            az_s = score_aizoo(sd, best_az[1], base)
            peer.lab.merge(az_s)
            acts = outcomes(sd, aizoo_door(sd, best_az[1]), peer.door)
            for k, row in enumerate(rows):
                row.append(f"{az_s.right[base + k]}/{az_s.total[base + k]} {acts[k]}")
        details += rows
        print(f"  seed {seed}: {len(sd.frames)} frames, {len(sd.visits)} visits done", flush=True)

    print(f"frames: {n_frames} ({n_judged} judged), visits: {len(all_visits)}")
    az_fps = peer.frames / peer.elapsed if az is not None else None
    for name, _ in variants:
        g = gate[name]
        fps = g.frames / g.elapsed
        pair = [g.lab, peer.lab] if az is not None else [g.lab]
        cis = bootstrap(pair, all_visits)
        dci = bootstrap([g.dec], all_visits)[0]
        n = g.frames
        stages = "  ".join(f"{k} {g.stages[k] / n * 1e3:.2f} "
                           f"({g.calls[k] / n:.0%} x {g.stages[k] / g.calls[k] * 1e3:.2f})"
                           for k in g.stages if g.calls[k])
        print(f"\n{name}: {fps:.1f} frames/s, {1e3 / fps:.2f} ms/frame"
              + (f", {fps / az_fps:.2f}x AIZOO" if az_fps else ""))
        print(f"  CPU ms per frame by stage (share of frames x ms per run): {stages}")
        print(f"  per-frame label accuracy: {fmt_ci(*g.lab.n, cis[0])}")
        print(f"    losses: {dict(g.lab.losses)}")
        if az is not None:
            diff = g.lab.n[0] / g.lab.n[1] - peer.lab.n[0] / peer.lab.n[1]
            print(f"    minus AIZOO: {diff:+.3f} (95% CI {cis[2][0]:+.3f} to {cis[2][1]:+.3f})")
        print(f"  per-frame decision accuracy (allow masked / deny bare): {fmt_ci(*g.dec.n, dci)}")
        print(f"    other states: {dict(g.dec.losses)}")
        print(f"  door per visit: {g.door.line()}")
        print(f"  masked face fully in view -> relay on (frame time): {fmt_latency(g.door.latencies)}")
    if az is not None and az_fps is not None:
        ci = bootstrap([peer.lab], all_visits)[0]
        n = peer.frames
        stages = "  ".join(f"{k} {v / n * 1e3:.2f}" for k, v in peer.stages.items())
        print(f"\nAIZOO peer (SSD 260x260 float32, detection + 2 classes): {az_fps:.1f} frames/s, "
              f"{1e3 / az_fps:.2f} ms/frame; CPU ms per frame: {stages}")
        print(f"  per-frame label accuracy: {fmt_ci(*peer.lab.n, ci)}; losses {dict(peer.lab.losses)}")
        print(f"  through the gate's tracker and decider, door per visit: {peer.door.line()}")
        print(f"  masked face fully in view -> relay on (frame time): {fmt_latency(peer.door.latencies)}")
        print("\nsummary: frames/s ratio to AIZOO, per-frame label accuracy")
        for name, _ in variants:
            g = gate[name]
            print(f"  {name}: {g.frames / g.elapsed / az_fps:.2f}x, {g.lab.n[0] / g.lab.n[1]:.3f}")
        print(f"  AIZOO: 1.00x, {peer.lab.n[0] / peer.lab.n[1]:.3f}")
    else:
        print(f"\nAIZOO peer not found at {args.aizoo}; skipped")
    if args.details:
        print("\nper visit: seed/visit, label, face image, then per variant (and AIZOO) right/judged frames "
              "and door actions")
        for row in details:
            print("  " + "  |  ".join(row))


if __name__ == "__main__":
    main()

"""Groups at the door: 1 to 3 people per visit, walking in a little apart, through the whole gate.

The pipeline benchmark has one person per visit; this one checks what a newcomer beside a followed
person changes. For each gate variant, on the same synthetic-door frames (held-out faces of the
shipped bundle, heads cut around the face the build located), it prints:

- visits with masked people only, and how many opened the door;
- visits with a bare or wrongly masked person, how many sounded the alarm and how many opened the
  door at some point (it may open for a masked person before the other walks in);
- frames on which the door opened while a bare or wrongly masked face >= 60 px was in view (inside
  the frame, and at least 80% of the head in sight past the people in front of it);
- the share of person-frames (faces >= 60 px in view, as above) with a face box on the person;
- CPU ms per frame of the gate (the door's rendering excluded).

    python benchmarks/groups_bench.py --split val --seeds 0-29 --variant "previous:every_around=false"
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory
from pipeline_bench import SHARED, _value, variant

from maskgate.bundle import load_bundle, split_heads
from maskgate.classifier import Classifier
from maskgate.config import Settings
from maskgate.detector import FaceDetector
from maskgate.events import FrameResult
from maskgate.outputs import Outputs
from maskgate.pipeline import Pipeline, detector_settings
from maskgate.synthetic import SyntheticDoor

W, H = 640, 480
VISIBLE = 0.8
"""A head counts as in view when at least this share of it is not hidden by people in front."""


def seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi) + 1)) if hi else [int(v) for v in text.split(",")]


def run(s: Settings, door: SyntheticDoor, det: FaceDetector, clf: Classifier) -> tuple[list[FrameResult], float]:
    results: list[FrameResult] = []
    out = Outputs(s.outputs, MockFactory(), mode=s.decision.mode)
    p = Pipeline(s, door, det, clf, out, observers=[results.append])
    t = time.process_time()
    try:
        p.run()
    finally:
        out.close()
    return results, time.process_time() - t


def score(door: SyntheticDoor, results: list[FrameResult], into: dict[str, float]) -> None:
    for r in results:
        f = door.frame(r.frame)
        truth = [t for t in (f.truth or ()) if t.box[2] >= 60 and t.box[0] > 0 and t.box[0] + t.box[2] < W
                 and t.visible >= VISIBLE] if f else []
        for t in truth:
            x, y, w, h = t.box
            into["person-frames"] += 1
            into["seen"] += any(x <= b.box[0] + b.box[2] / 2 < x + w and y <= b.box[1] + b.box[3] / 2 < y + h
                                for b in r.faces)
        if r.decision.trigger == "open" and any(t.label != "with_mask" for t in truth):
            into["opened beside a bare face (frames)"] += 1
    for v in door.visits_until(0):
        trig = [r.decision.trigger for r in results if v.start <= r.frame < v.end and r.decision.trigger]
        if all(p.label == "with_mask" for p in v.people):
            into["masked-only visits"] += 1
            into["opened"] += "open" in trig
        else:
            into["visits with a bare face"] += 1
            into["alarmed"] += "alarm" in trig
            into["opened at some point"] += "open" in trig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=Path, default=SHARED / "data" / "faces")
    ap.add_argument("--detector-model", type=Path, default=SHARED / "models",
                    help="YuNet .onnx or the folder holding it (default $MASKGATE_SHARED/models)")
    ap.add_argument("--split", default="test", help="which held-out faces: test (report) or val (tuning)")
    ap.add_argument("--seeds", default="0-29", help="'0-29' or '1,5,7'")
    ap.add_argument("--visits", type=int, default=8, help="visits per seed")
    ap.add_argument("--people", type=int, default=3, help="at most this many people per visit")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...")
    args = ap.parse_args()
    heads = split_heads(load_bundle(None), args.split)
    variants: list[tuple[str, Settings]] = [("default", variant())]
    for spec in args.variant:  # the pipeline benchmark's form: plain keys are [detector] keys
        name, _, kv = spec.partition(":")
        variants.append((name, variant(**{k: _value(v) for k, v in (x.split("=") for x in kv.split(",") if x)})))
    # a detector per variant: some [detector] keys (thresholds, sizes) live in the detector itself
    dets = {name: FaceDetector(detector_settings(s), args.detector_model) for name, s in variants}
    clf = Classifier()
    keys = ["masked-only visits", "opened", "visits with a bare face", "alarmed", "opened at some point",
            "opened beside a bare face (frames)", "person-frames", "seen"]
    totals = {name: dict.fromkeys(keys, 0.0) | {"cpu": 0.0, "frames": 0.0} for name, _ in variants}
    for seed in seeds(args.seeds):
        for name, settings in variants:
            door = SyntheticDoor(args.faces, W, H, 10, people=args.people, seed=seed, visits=args.visits,
                                 realtime=False, start_wall=0.0, heads=heads)
            door.open()
            try:
                results, cpu = run(settings, door, dets[name], clf)
                score(door, results, totals[name])
            finally:
                door.close()
            totals[name]["cpu"] += cpu
            totals[name]["frames"] += len(results)
        print(f"  seed {seed} done", flush=True)
    print(f"{args.split} faces, seeds {args.seeds}, {args.visits} visits each, 1 to {args.people} people per visit, "
          f"{W}x{H} at 10 fps")
    for name, t in totals.items():
        print(f"{name}: {1000 * t['cpu'] / max(t['frames'], 1):.2f} ms/frame; masked-only visits opened "
              f"{t['opened']:.0f}/{t['masked-only visits']:.0f}; visits with a bare face alarmed "
              f"{t['alarmed']:.0f}/{t['visits with a bare face']:.0f} (opened at some point "
              f"{t['opened at some point']:.0f}); opened beside a bare face in view: "
              f"{t['opened beside a bare face (frames)']:.0f} frames; people in view with a box: "
              f"{t['seen']:.0f}/{t['person-frames']:.0f} = {t['seen'] / max(t['person-frames'], 1):.3f}")


if __name__ == "__main__":
    main()

"""Soak: the synthetic door for 100,000 frames with faults injected at random (seeded).

Prints numbers and asserts nothing. Usage::

    python benchmarks/soak.py [--frames 100000] [--seed 0] [--fault-every 30] [--jobs 2] [--details]

Two passes over the same door (same seed, held-out faces of the bundle's test split, heads cut around
the face the build located: ``maskgate.bundle.split_heads``): one without
faults, one with a seeded random schedule of camera, model and output faults (maskgate.faults).
Both run on a virtual clock in frame time, faster than real time: the camera delivers frame ``i``
at ``i / fps``, waits (reopen backoff, a 10x slower inference) move the clock, and processing
itself is assumed to keep up with the frame rate. A "10x slower" detection or classification
costs 10x an assumed Pi cost per call (:data:`DEVICE_COST`).

Reported: frames processed, faults survived by kind and what they did, the longest relay on-time
and the longest a pulse outlived its last request (monotonic clock, from the relay pin's
history), resident memory at start, after warm-up and at the end, and decisions lost. Every
masked visitor should end in ``allow`` and every bare or wrongly masked one in ``deny``; a wrong
ending in the faulty pass is counted as

- covered by a fault, when the faults left the gate too little of the visit (:data:`COVERED_RULE`,
  printed with the counts): no stretch of the visit clear of every stopping fault's reach held the
  judgeable frames (fully in view, at least 48 px wide) the gate needs, ``decision.window`` (5) or,
  for a visitor it got right without faults, as many as it needed then if more. A stopping fault
  (camera down or hung, bad frames, detection or inference failing) reaches from its start to its
  end, plus up to ``source.reopen_max_delay`` of reopen backoff for a camera fault, plus 2 s to
  decide again (the issue's allowance). The frames are the fault-free pass's, which processes every
  frame: what the camera showed, not what the gate made of it. Slow faults cover nobody;
- the model's or detector's own mistake (wrong without faults too);
- lost to a fault (right without faults, and a fault's reach overlapped the visit): the gate had
  the frames and still got it wrong, a recovery problem to look into;
- other (right without faults, no fault near it): should be zero.

``--details`` lists every visitor right without faults and wrong with them: the faults near the
visit, the judgeable frames of each clear stretch against those needed, when the gate processed
frames again, and a frame-by-frame timeline of their track's state with and without faults.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import resource
import sys
import textwrap
import time
import typing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from groups_bench import VISIBLE  # the same rule for a head hidden by people in front

from maskgate.bundle import load_bundle, split_heads
from maskgate.classifier import Classifier
from maskgate.config import Settings
from maskgate.detector import FaceDetector
from maskgate.events import FrameResult
from maskgate.faults import (
    FaultyClassifier,
    FaultyDetector,
    FaultyPin,
    FaultyPinFactory,
    Injector,
    ScheduledFault,
    SimCamera,
    VirtualClock,
    random_schedule,
)
from maskgate.health import Health
from maskgate.outputs import Outputs
from maskgate.pipeline import Pipeline, build_classifier, detector_settings
from maskgate.scenes import iou
from maskgate.sources import Frame, TruthFace
from maskgate.synthetic import SyntheticDoor

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKGATE_SHARED") or REPO.parent / "shared")

DEVICE_COST = {"detect": 0.05, "classify": 0.005}
"""Assumed seconds per call on a Raspberry Pi 4 (YuNet on 640x480, the int8 classifier): the base of
the 10x-slower faults in frame time."""

CAMERA_FAULTS = ("camera_down", "camera_hang", "bad_frame")
STOPPING = (*CAMERA_FAULTS, "detect_error", "inference_error")
"""Fault kinds during which the gate decides nothing (the slow ones only thin the frames out)."""
RESUME_S = 2.0
"""Seconds the gate may take to decide again once frames return (issue 6: "decisions resume within 2 s
of frames returning")."""
MIN_FACE = 48
COVERED_RULE = (
    "covered by a fault: no stretch of the visit clear of every stopping fault's reach held the judgeable "
    "frames (fully in view, >= 48 px wide, at least 80% of the head not hidden by people in front) the gate "
    "needs: `decision.window` (5), or, for a visitor it got "
    "right without faults, as many as it took then if that was more. A stopping fault (camera down or hung, "
    "bad frames, detection or inference failing) reaches from its start to its end, plus up to "
    "`source.reopen_max_delay` of reopen backoff for a camera fault, plus 2 s to decide again. Slow faults "
    "cover nobody.")


def judgeable(t: TruthFace, width: int, min_face: int = MIN_FACE) -> bool:
    """A visitor's face any gate could judge in a frame: fully in view, at least ``min_face`` wide and
    not hidden by people in front (:data:`VISIBLE`)."""
    x, _, w, _ = t.box
    return x > 0 and x + w < width and w >= min_face and t.visible >= VISIBLE


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Relay:
    """Watches the relay pin: continuous on-times and how long each pulse outlived its last request."""

    def __init__(self, pin: FaultyPin, outputs: Outputs) -> None:
        self.outputs = outputs
        self.on_at: float | None = None
        self.longest_on = 0.0
        self.longest_after_request = 0.0
        self.late: list[float] = []
        """Per pulse: seconds the relay stayed on past its deadline (last request + pulse, or the cap)."""
        self.pulses = 0
        pin.on_change.append(self.changed)

    def changed(self, t: float, level: bool) -> None:
        if level:
            self.on_at = t
            self.pulses += 1
        elif self.on_at is not None:
            self.longest_on = max(self.longest_on, t - self.on_at)
            last = self.outputs.last_pulse
            s = self.outputs.settings
            if last is not None:
                self.longest_after_request = max(self.longest_after_request, t - last)
                deadline = min(last + s.relay_pulse, self.on_at + s.relay_max_on)
                self.late.append(t - deadline)
            self.on_at = None

    def summary(self) -> dict[str, Any]:
        late = sorted(self.late)
        pick = (lambda q: round(late[min(len(late) - 1, int(q * len(late)))], 3)) if late else (lambda q: None)
        return {"pulses": self.pulses, "longest_on_s": round(self.longest_on, 3),
                "longest_after_request_s": round(self.longest_after_request, 3),
                "late_s": {"median": pick(0.5), "p99": pick(0.99), "max": pick(1.0)},
                "late_over_0_2_s": sum(x > 0.2 for x in late)}


class Outcomes:
    """Per visitor: the last allow/deny their track reached (tracks matched to ground truth by IoU);
    and safety counters over every frame result."""

    def __init__(self, cam: SimCamera, health: Health, warmup: int, width: int, name: str, fps: float) -> None:
        self.name = name
        self.fps = fps
        self.cam = cam
        self.width = width
        self.health = health
        self.warmup = warmup
        self.final: dict[int, str] = {}
        self.in_fault = False
        self.resumed: list[float] = []
        """Frame time of the first frame processed after each fault decision."""
        self.seen: dict[int, list[tuple[float, int, str]]] = {}
        """Per visitor, every processed frame they were in: (frame time, judgeable 0/1, the state of the
        track matched to them or "" when none was)."""
        self.opens = self.alarms = 0
        self.open_with_bare_face = 0
        self.relay_on_in_fault = 0
        self.unhealthy = 0
        self.frames = 0
        self.fault_reasons: Counter[str] = Counter()
        self.trend: list[tuple[int, float, float]] = []
        """(frames, resident MB, 1-minute load average) every 10,000 frames."""
        self.rss: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def __call__(self, r: FrameResult) -> None:
        d = r.decision
        if r.frame < 0:
            self.relay_on_in_fault += bool(r.outputs["relay"])
            self.fault_reasons[str(d.reason)] += 1
            self.in_fault = True
            return
        self.frames += 1
        if self.in_fault:
            self.resumed.append(round(r.frame / self.fps, 2))
            self.in_fault = False
        if self.frames % 10_000 == 0:
            self.trend.append((self.frames, round(rss_mb(), 1), round(os.getloadavg()[0], 1)))
            print(f"[{self.name}] {self.frames} frames, {rss_mb():.1f} MB, load {os.getloadavg()[0]:.1f}, "
                  f"{time.perf_counter() - self.t0:.0f} s", file=sys.stderr, flush=True)
        if self.frames == 1:
            self.rss["start"] = rss_mb()
        elif self.frames == self.warmup:
            self.rss["warm"] = rss_mb()
        if not self.health.verdict().ok:
            self.unhealthy += 1
        frame: Frame | None = self.cam.last
        truth = (frame.truth or ()) if frame is not None and frame.index == r.frame else ()
        self.opens += d.trigger == "open"
        self.alarms += d.trigger == "alarm"
        if d.trigger == "open":
            self.open_with_bare_face += any(t.label != "with_mask" and judgeable(t, self.width) for t in truth)
        matched: dict[int, str] = {}
        for tv in d.tracks:
            if not tv.in_roi or not truth:
                continue
            best = max(truth, key=lambda t: iou(tv.box, t.box))
            if iou(tv.box, best.box) >= 0.3:
                matched[best.person] = tv.state
                if tv.state in ("allow", "deny"):
                    self.final[best.person] = tv.state
        for t in truth:
            self.seen.setdefault(t.person, []).append(
                (round(r.frame / self.fps, 2), int(judgeable(t, self.width)), matched.get(t.person, "")))


def run_pass(args: argparse.Namespace, faulty: bool) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.CRITICAL,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = Settings()
    fps = s.source.fps
    duration = args.frames / fps
    bundle = load_bundle()
    door = SyntheticDoor(args.faces, args.width, args.height, fps, people=args.people, seed=args.seed,
                         heads=split_heads(bundle, "test") or None,
                         realtime=False, start_wall=time.time())
    door.open()
    clock = VirtualClock()
    schedule = random_schedule(args.seed, duration, args.fault_every) if faulty else []
    inj = Injector(clock, schedule)
    cam = SimCamera(lambda i: door.frame(i) if i < args.frames else None, clock, fps, injector=inj,
                    frame_timeout=s.source.frame_timeout, start_wall=door.start_wall or 0.0)
    det = FaultyDetector(FaceDetector(detector_settings(s), args.detector_model), inj, sleep=clock.sleep,
                         slow_base=DEVICE_COST["detect"])
    # the configured classifier (with its second opinion before alarms, the default), inference faulted
    clf = FaultyClassifier(build_classifier(s, Classifier(bundle, threads=1)), inj, sleep=clock.sleep,
                           slow_base=DEVICE_COST["classify"])
    factory = FaultyPinFactory(inj, history=16)
    outputs = Outputs(s.outputs, factory)
    pin = factory.pin(s.outputs.pins.relay)
    assert isinstance(pin, FaultyPin)
    relay = Relay(pin, outputs)
    health = Health(s.health, s.source, clock=clock)
    outcomes = Outcomes(cam, health, args.warmup, args.width, "faults" if faulty else "baseline", fps)
    p = Pipeline(s, cam, typing.cast(FaceDetector, det), typing.cast(Classifier, clf), outputs,
                 observers=[outcomes], health=health, clock=clock, wait=clock.wait)
    cam.open()
    t0 = time.perf_counter()
    try:
        p.run()
    finally:
        outputs.close()
    real = time.perf_counter() - t0
    outcomes.rss["end"] = rss_mb()
    people = [pp for v in door.visits_until(args.frames) for pp in v.people if pp.end <= args.frames]
    st = p.stats
    return {
        "faulty": faulty, "frames": st.frames, "frame_time_s": round(clock.now, 1), "real_s": round(real, 1),
        "speed_x": round(clock.now / real, 2) if real else None, "dropped": st.dropped,
        "bad_frames": st.bad_frames, "converted_frames": st.converted_frames, "errors": st.errors,
        "faults": st.faults, "reopens": st.camera_reconnects, "fault_reasons": dict(outcomes.fault_reasons),
        "write_errors": outputs.write_errors, "injected_hits": dict(inj.hits),
        "schedule": [(f.kind, f.start, f.end, f.params) for f in schedule],
        "relay": {**relay.summary(), "pulse_s": s.outputs.relay_pulse, "max_on_s": s.outputs.relay_max_on,
                  "on_during_fault": outcomes.relay_on_in_fault},
        "trend": outcomes.trend, "resumed": outcomes.resumed,
        "opens": outcomes.opens, "alarms": outcomes.alarms, "opens_with_bare_face": outcomes.open_with_bare_face,
        "unhealthy_frames": outcomes.unhealthy, "rss_mb": {k: round(v, 1) for k, v in outcomes.rss.items()},
        "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "people": [{"id": pp.id, "label": pp.label, "start": pp.start / fps, "end": pp.end / fps,
                    "final": outcomes.final.get(pp.id), "seen": outcomes.seen.get(pp.id, [])} for pp in people],
        "reopen_max_delay": s.source.reopen_max_delay, "window": s.decision.window,
    }


def right(person: dict[str, Any]) -> bool:
    return person["final"] == ("allow" if person["label"] == "with_mask" else "deny")


def reaches(soak: dict[str, Any]) -> list[ScheduledFault]:
    """Each stopping fault's reach: its window, the camera's way back (up to ``source.reopen_max_delay``
    of reopen backoff) and the :data:`RESUME_S` the gate may take to decide again."""
    catch_up = {k: soak["reopen_max_delay"] if k in CAMERA_FAULTS else 0.0 for k in STOPPING}
    return [ScheduledFault(k, a, b + catch_up[k] + RESUME_S) for k, a, b, _p in soak["schedule"] if k in STOPPING]


def needed(base_pp: dict[str, Any], window: int) -> int:
    """Judgeable frames the gate needs for a visitor it got right without faults: ``window``, or as many
    as it took then (from their first judgeable frame to their track's first allow or deny) if more."""
    n = 0
    for _t, j, st in base_pp["seen"]:
        n += j
        if st in ("allow", "deny"):
            break
    return max(window, n)


def clear_stretches(base_pp: dict[str, Any], reach: list[ScheduledFault]) -> list[int]:
    """Judgeable frames of the visitor in each stretch of their visit that no fault's reach touches.

    Taken from the fault-free pass, which processes every frame the camera delivers: what the camera
    showed, not what the gate made of it. Frames at the edge of the picture or under ``MIN_FACE``
    pixels are not judgeable and do not break a stretch; a frame inside a reach does."""
    out, run, broken = [], 0, True
    for t, j, _st in base_pp["seen"]:
        if any(r.start <= t < r.end for r in reach):
            if not broken:
                out.append(run)
            run, broken = 0, True
            continue
        broken = False
        run += j
    if not broken:
        out.append(run)
    return out


def compare(base: dict[str, Any], soak: dict[str, Any],
            details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Sort every visitor's ending in the faulty pass against the fault-free one (see :data:`COVERED_RULE`);
    ``details`` gets one :func:`detail` per visitor right without faults and wrong with them."""
    reach = reaches(soak)
    # what a fault may touch: a stopping fault's reach, a slow one's window plus RESUME_S; a busy
    # output pin changes what the door does, never a decision
    near = reach + [ScheduledFault(k, a, b + RESUME_S) for k, a, b, _p in soak["schedule"]
                    if k not in STOPPING and k != "gpio_busy"]
    ok_base = {pp["id"]: right(pp) for pp in base["people"]}
    by_id = {pp["id"]: pp for pp in base["people"]}
    counts: Counter[str] = Counter({"covered_by_a_fault": 0, "lost_to_a_fault": 0, "other_loss": 0})
    for pp in soak["people"]:
        label = "masked" if pp["label"] == "with_mask" else "bare"
        counts[f"{label}_total"] += 1
        if right(pp):
            counts[f"{label}_right"] += 1
            counts["gained"] += not ok_base[pp["id"]]
            continue
        bp = by_id[pp["id"]]
        stretches = clear_stretches(bp, reach)
        need = needed(bp, soak["window"]) if ok_base[pp["id"]] else soak["window"]
        if not any(n >= need for n in stretches):
            why = "covered_by_a_fault"
        elif not ok_base[pp["id"]]:
            why = "model_or_detector_wrong_without_a_fault"
        elif any(w.overlaps(pp["start"], pp["end"]) for w in near):
            why = "lost_to_a_fault"
        else:
            why = "other_loss"
        counts[why] += 1
        if details is not None and ok_base[pp["id"]]:
            details.append({"why": why, "clear_judgeable_frames": stretches, "needed": need,
                            **detail(pp, bp, soak)})
    return dict(counts)


def timeline(seen: list[Any], frames: list[Any]) -> str:
    """One character per frame the visitor was in view: the state of their track on a processed frame
    (a, d, c, u; ``-`` no track), ``.`` not processed; upper case where they were judgeable."""
    at = {t: st for t, _j, st in seen}
    out = []
    for t, j, _st in frames:
        c = (at[t] or "-")[0] if t in at else "."
        out.append(c.upper() if j else c)
    return "".join(out)


def detail(pp: dict[str, Any], base_pp: dict[str, Any], soak: dict[str, Any]) -> dict[str, Any]:
    """One visitor's visit in both passes: the faults near it (window, reopen backoff and RESUME_S
    overlapping the visit), when the gate processed frames again after the last stopping one, and a
    frame-by-frame :func:`timeline` with and without faults."""
    reach = soak["reopen_max_delay"] + RESUME_S
    faults = [(k, round(a, 2), round(b, 2)) for k, a, b, _p in soak["schedule"]
              if k != "gpio_busy" and a < pp["end"] and pp["start"] < b + reach]
    resumed = soak["resumed"]
    stop_end = max((b for k, _a, b in faults if k in STOPPING), default=None)
    after = pp["start"] if stop_end is None else stop_end
    back = None if stop_end is None else next((t for t in resumed if t >= stop_end - 0.05), None)
    return {
        "id": pp["id"], "label": pp["label"], "visit": [round(pp["start"], 2), round(pp["end"], 2)],
        "in_view_from": base_pp["seen"][0][0] if base_pp["seen"] else None,
        "faults": faults, "stopping_fault_end": stop_end, "gate_resumed_at": back,
        "processed_after_fault": sum(t >= after for t, _j, _st in pp["seen"]),
        "judgeable_processed_after_fault": sum(t >= after and j for t, j, _st in pp["seen"]),
        "final": pp["final"], "final_without_faults": base_pp["final"],
        "with_faults": timeline(pp["seen"], base_pp["seen"]),
        "without": timeline(base_pp["seen"], base_pp["seen"]),
    }


def report(result: dict[str, Any], title: str) -> None:
    r = result
    print(f"\n== {title}")
    print(f"frames processed {r['frames']} in {r['frame_time_s']} s of frame time, {r['real_s']} s real "
          f"({r['speed_x']}x real time); dropped {r['dropped']}, bad {r['bad_frames']}, converted "
          f"{r['converted_frames']}, failed {r['errors']}, fault decisions {r['faults']}, camera reopens "
          f"{r['reopens']}, pin write errors {r['write_errors']}")
    relay = r["relay"]
    print(f"relay: {relay['pulses']} pulses, longest on {relay['longest_on_s']} s (max_on {relay['max_on_s']} s), "
          f"longest after its last request {relay['longest_after_request_s']} s (pulse {relay['pulse_s']} s + 0.2 s "
          f"allowed), on during a fault decision {relay['on_during_fault']}")
    print(f"relay off after its deadline by: {relay['late_s']} s; {relay['late_over_0_2_s']} of {relay['pulses']} "
          f"pulses more than 0.2 s late")
    print("trend (frames, resident MB, load average): " + ", ".join(str(t) for t in r["trend"]))
    print(f"door: {r['opens']} opens ({r['opens_with_bare_face']} with a bare face in view), {r['alarms']} alarms; "
          f"frames judged unhealthy {r['unhealthy_frames']}")
    print(f"resident memory MB: {r['rss_mb']} (growth after warm-up "
          f"{round(r['rss_mb'].get('end', 0) - r['rss_mb'].get('warm', r['rss_mb'].get('start', 0)), 1)}), "
          f"peak {r['maxrss_mb']}")
    people = r["people"]
    masked = [pp for pp in people if pp["label"] == "with_mask"]
    bare = [pp for pp in people if pp["label"] != "with_mask"]
    print(f"visitors: masked {sum(map(right, masked))}/{len(masked)} ended in allow, bare or wrongly masked "
          f"{sum(map(right, bare))}/{len(bare)} ended in deny")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100_000, help="frames of door time (10 fps)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the door and of the fault schedule")
    ap.add_argument("--fault-every", type=float, default=30.0, help="mean seconds of frame time between faults")
    ap.add_argument("--faces", type=Path, default=SHARED / "data" / "faces")
    ap.add_argument("--detector-model", default=None, help="YuNet .onnx (default: cache or download)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--people", type=int, default=1, help="at most this many people at the door at once")
    ap.add_argument("--warmup", type=int, default=2000, help="frames before the warm resident-memory reading")
    ap.add_argument("--jobs", type=int, default=2, help="run the two passes in parallel processes (1: in turn)")
    ap.add_argument("--json", type=Path, default=None, help="also write everything measured to this file")
    ap.add_argument("--details", action="store_true",
                    help="list every visitor right without faults and wrong with them")
    ap.add_argument("-v", "--verbose", action="store_true", help="log the gate's warnings")
    args = ap.parse_args()
    if args.detector_model is None and (SHARED / "models" / "face_detection_yunet_2023mar.onnx").exists():
        args.detector_model = str(SHARED / "models" / "face_detection_yunet_2023mar.onnx")
    print(f"soak: {args.frames} frames at 10 fps, {args.width}x{args.height}, seed {args.seed}, a fault every "
          f"{args.fault_every} s on average; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores (shared, load average {os.getloadavg()[0]:.1f} at start), "
          f"python {platform.python_version()}")
    t0 = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            fb, fs = pool.submit(run_pass, args, False), pool.submit(run_pass, args, True)
            base, soak = fb.result(), fs.result()
    else:
        base, soak = run_pass(args, False), run_pass(args, True)
    report(base, "without faults (baseline)")
    report(soak, "with faults")
    kinds = Counter(k for k, *_ in soak["schedule"])
    print(f"faults survived by kind ({sum(kinds.values())} injected, the gate ran on through all): "
          + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    print("calls or frames each fault kind hit: " + json.dumps(soak["injected_hits"], sort_keys=True))
    print("fault decisions by reason (faulty pass): " + json.dumps(soak["fault_reasons"], sort_keys=True))
    details: list[dict[str, Any]] = []
    lost = compare(base, soak, details)
    print("visitor endings with faults vs without: " + json.dumps(lost, sort_keys=True))
    print(textwrap.fill(COVERED_RULE, 110))
    if base["dropped"]:
        print(f"(the fault-free pass dropped {base['dropped']} frames: the rule saw only the ones it processed)")
    if args.details:
        print("visitors right without faults and wrong with them:")
        for d in details:
            print("  " + json.dumps(d))
    print(f"total {time.perf_counter() - t0:.0f} s, load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"baseline": base, "faulty": soak, "compare": lost, "details": details,
                                         "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))


if __name__ == "__main__":
    main()

"""``maskgate bench``: what this machine does per frame, and how maskgate compares, measured in one run.

The main process builds the frames once (JPEG-encoded in memory) and runs every pipeline in its
own worker process (:mod:`maskgate.bench_worker`) on the same frames, one after another, so each
pipeline's peak memory is its own and no two measurements share the CPU. Workers return raw
per-frame times; this module summarises them into the report below (its dataclasses are the
``--json`` schema: every field carries its description, see :func:`schema_objects`).

Nothing here asserts a speed: the numbers are measurements of this machine, in this run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import platform
import subprocess
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .bench_frames import EncodedFrame, FrameSet
from .bench_worker import Job
from .config import Settings, replace
from .errors import MaskgateError
from .scenes import iou
from .sources import Frame
from .synthetic import judged_label

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STAGES = ("decode", "motion", "detect", "follow", "preprocess", "classify", "decide", "output", "other")
"""The worker's ``capture`` stage is the JPEG decode here: the source hands over encoded frames."""
MIN_FACE_JUDGED = 48
DOORWAY_ROI = (0.2, 0.0, 0.8, 1.0)
WORKER_TIMEOUT_S = 3600.0


class BenchError(MaskgateError, RuntimeError):
    """A measured pipeline could not run (its worker failed); the message says which and why."""


def _doc(doc: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass
class Spread:
    """Distribution of per-frame times after the warm-up."""

    min_ms: float = _doc("fastest frame, milliseconds")
    median_ms: float = _doc("median frame, milliseconds")
    p95_ms: float = _doc("95th percentile: 95% of frames took at most this long")
    mean_ms: float = _doc("mean frame time; the stages' mean_ms add up to it")


@dataclass
class StageResult:
    """One stage of the pipeline over the measured frames."""

    mean_ms: float = _doc("mean per measured frame, counting 0 where the stage did not run (so stages add up)")
    runs: int = _doc("frames on which the stage ran (detect is skipped between detections with detector.every > 1; "
                     "preprocess and classify run only on frames with faces)")
    min_ms: float | None = _doc("fastest run, over the frames where it ran (null if it never ran)")
    median_ms: float | None = _doc("median run, over the frames where it ran")
    p95_ms: float | None = _doc("95th percentile run, over the frames where it ran")


@dataclass
class Accuracy:
    """Right allow/deny calls on labelled frames (masked vs bare or wrongly worn)."""

    right: int = _doc("frames (synthetic) or annotated faces (scenes) rightly allowed or denied")
    total: int = _doc("frames or faces judged")
    value: float = _doc("right / total")
    basis: str = _doc("what was judged")


@dataclass
class Ratio:
    """A compared pipeline against maskgate's default (1 thread, the same frames)."""

    fps: float = _doc("its frames/s divided by maskgate's (above 1: faster)")
    fastest_frame: float = _doc("maskgate's fastest frame time divided by its fastest (above 1: faster); on a "
                                "machine busy with other work this moves less than the median")
    classify_per_face: float | None = _doc("its classify time per face divided by maskgate's (above 1: slower); "
                                           "null for a one-stage detector, whose classification is inside detect")
    peak_rss: float = _doc("its peak resident memory divided by maskgate's")


@dataclass(kw_only=True)
class PipelineResult:
    """One measured pipeline, in its own process."""

    name: str = _doc("short name")
    description: str = _doc("what it is")
    detector: str = _doc("face detector: yunet, haar or aizoo (one-stage: faces and mask labels in one network)")
    classifier: str = _doc("classifier model file (aizoo: its detector model)")
    settings: dict[str, Any] = _doc("settings that differ from the configuration under test", factory=dict)
    threads: int = _doc("TFLite interpreter threads, also OpenCV's thread count (YuNet, Haar)")
    frames: int = _doc("measured frames (after the warm-up)")
    fps: float = _doc("frames per second = 1000 / frame_ms.median_ms")
    frame_ms: Spread = _doc("whole-pipeline time per frame: decode to outputs")
    stages: dict[str, StageResult] = _doc(
        "per stage: decode (JPEG), detect, preprocess (crop, resize, colour), classify, decide (tracker and "
        "decider), output (gpiozero mock pins), other (loop overhead: orientation, events)", factory=dict)
    faces_classified: int = _doc("faces the classifier ran on (aizoo: faces it kept)")
    faces_per_frame: float = _doc("faces_classified / frames")
    classify_ms_per_face: float | None = _doc("classify stage time per classified face (null: none, or aizoo)")
    accuracy: Accuracy | None = _doc("right allow/deny on labelled frames; null when not measured "
                                     "(see accuracy_note)")
    accuracy_note: str = _doc("why accuracy is null: 'n/a (speed only)' for untrained models, "
                              "'n/a (no labels)' for unlabelled frames; empty otherwise")
    trained: bool = _doc("false for architecture-only models with random weights (speed only)")
    base_rss_mb: float = _doc("resident memory of the worker after imports, before models load (MiB)")
    peak_rss_mb: float = _doc("peak resident memory of the worker process (MiB)")
    runtime: str = _doc("TFLite runtime (ai-edge-litert or tflite-runtime)")
    runtime_version: str = _doc("its version")
    delegate: str = _doc("cpu or edgetpu")
    vs_default: Ratio | None = _doc("compare rows: ratios to maskgate's default; null elsewhere")


@dataclass
class ScalingRow:
    """The configured gate at one size of the problem (1 thread, synthetic door)."""

    axis: str = _doc("faces (people standing side by side, 1920x1080) or size (frame size, one person)")
    people: int = _doc("people in every measured frame")
    width: int = _doc("frame width, pixels")
    height: int = _doc("frame height, pixels")
    result: PipelineResult = _doc("the measurement")


@dataclass
class Missing:
    """A compared pipeline that could not run."""

    name: str = _doc("which")
    reason: str = _doc("why, and the command or flag that fixes it")


@dataclass
class Suggestion:
    """A setting derived from the measurements."""

    key: str = _doc("config key (as in maskgate.toml)")
    value: Any = _doc("suggested value")
    why: str = _doc("the measurement behind it")


@dataclass
class Machine:
    """Where the numbers were measured."""

    machine: str = _doc("CPU architecture (platform.machine)")
    cpu: str = _doc("CPU or board model (/proc/cpuinfo, /proc/device-tree/model)")
    cores: int = _doc("logical CPUs")
    memory_mb: int | None = _doc("total memory (MiB)")
    system: str = _doc("operating system (platform.platform)")
    python: str = _doc("Python version")
    opencv: str = _doc("OpenCV version")
    numpy: str = _doc("NumPy version")
    runtime: str = _doc("TFLite runtime in use")
    runtime_version: str = _doc("its version")
    delegate: str = _doc("cpu or edgetpu")
    load_start: float | None = _doc("1-minute load average when the run started (other work competing for the "
                                    "CPU makes every number slower and noisier)", None)
    load_end: float | None = _doc("1-minute load average when it ended", None)


@dataclass(kw_only=True)
class FramesInfo:
    """The frames every pipeline ran on."""

    kind: str = _doc("synthetic (the synthetic door) or folder (--frames DIR)")
    description: str = _doc("what they show")
    path: str = _doc("faces folder (synthetic) or images folder")
    count: int = _doc("measured frames")
    warmup: int = _doc("warm-up frames run first and not counted")
    sizes: list[str] = _doc("frame sizes WIDTHxHEIGHT", factory=list)
    labelled: bool = _doc("whether accuracy can be measured on them")
    held_out: bool | None = _doc("synthetic: faces only from the classifier's held-out test split")
    encoding: str = _doc("how frames are handed to each pipeline (decoded per frame)")


@dataclass(kw_only=True)
class BenchReport:
    """The top level of `maskgate bench --json`."""

    schema_version: int = _doc("this schema's version")
    command: str = _doc("the command line")
    quick: bool = _doc("--quick: few frames (a smoke run, not a measurement to quote)")
    rounds: int = _doc("--rounds: every pipeline ran this many times, round-robin; the round with the lowest "
                       "median frame time counts")
    config: str = _doc("configuration file measured, or 'built-in defaults'")
    camera_fps: float = _doc("the camera rate the verdict is judged against")
    machine: Machine = _doc("where")
    frames: FramesInfo = _doc("on what")
    threads: list[PipelineResult] = _doc("the configured gate at 1..N threads; threads[0] (1 thread) is "
                                         "maskgate's default that every ratio refers to", factory=list)
    tuning: list[PipelineResult] = _doc("the configured gate with one change each (1 thread): doorway ROI, "
                                        "detector.max_side 320, detector.every 15, all three", factory=list)
    scaling: list[ScalingRow] = _doc("cost against people in view and frame size", factory=list)
    scaling_note: str = _doc("why scaling is empty, if it is", "")
    compare: list[PipelineResult] = _doc("--compare: the alternatives, 1 thread, same frames", factory=list)
    compare_missing: list[Missing] = _doc("--compare: alternatives that could not run", factory=list)
    verdict: list[str] = _doc("plain sentences: does it keep up, how it compares", factory=list)
    suggestions: list[Suggestion] = _doc("settings derived from the measurements", factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def schema_objects(root: type = BenchReport) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    """Every object of the JSON output once, as (name, description, [(field, type, description)]), for the
    README and its test; a field whose type names another object refers to that object's table."""
    out: list[tuple[str, str, list[tuple[str, str, str]]]] = []
    todo, seen = [root], set()
    while todo:
        cls = todo.pop(0)
        if cls in seen:
            continue
        seen.add(cls)
        hints = typing.get_type_hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            rows.append((f.name, _type_label(tp), str(f.metadata.get("doc", ""))))
            inner = _dataclass_in(tp)
            if inner is not None:
                todo.append(inner)
        out.append((cls.__name__, (cls.__doc__ or "").strip().splitlines()[0], rows))
    return out


def _dataclass_in(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return typing.cast(type, tp)
    for arg in typing.get_args(tp):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


def _type_label(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return "list of " + _type_label(typing.get_args(tp)[0])
    if origin is dict:
        return "object of " + _type_label(typing.get_args(tp)[1])
    args = typing.get_args(tp)
    if args and type(None) in args:
        return " or ".join(_type_label(a) for a in args if a is not type(None)) + " or null"
    if dataclasses.is_dataclass(tp):
        return typing.cast(type, tp).__name__
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, "any")


# -- measuring ---------------------------------------------------------------------------------------


def run_worker(job: Job, frames: FrameSet) -> dict[str, Any]:
    """Run one job in a fresh Python process on ``frames``; raise BenchError with its stderr on failure."""
    payload = pickle.dumps({"job": job, "warmup": frames.warmup, "frames": frames.frames})
    cmd = [sys.executable, "-m", "maskgate.bench_worker"]
    try:
        proc = subprocess.run(cmd, input=payload, capture_output=True, timeout=WORKER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{job.name}: worker did not finish in {WORKER_TIMEOUT_S:.0f} s") from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-6:]
        raise BenchError(f"{job.name}: worker failed (exit {proc.returncode}): " + " | ".join(tail))
    try:
        return typing.cast(dict[str, Any], json.loads(proc.stdout))
    except json.JSONDecodeError as exc:
        raise BenchError(f"{job.name}: worker output is not JSON ({exc})") from exc


def _spread(values: list[float]) -> Spread:
    a = np.asarray(values, float)
    return Spread(round(float(a.min()), 3), round(float(np.median(a)), 3), round(float(np.percentile(a, 95)), 3),
                  round(float(a.mean()), 3))


def summarize(raw: dict[str, Any], frames: FrameSet, *, name: str, description: str, detector: str,
              settings: dict[str, Any], threads: int, trained: bool = True) -> PipelineResult:
    """Per-frame raw numbers from a worker -> the report's PipelineResult (accuracy included)."""
    totals = [float(v) for v in raw["frame_ms"]]
    n = len(totals)
    per_stage: dict[str, list[float | None]] = {s: [] for s in STAGES}
    for total, st in zip(totals, raw["stages_ms"], strict=True):
        st = dict(st)
        st["decode"] = st.pop("capture", 0.0)
        known = 0.0
        for s in STAGES[:-1]:
            v = st.get(s)
            per_stage[s].append(v)
            known += v or 0.0
        per_stage["other"].append(max(0.0, total - known))
    stages = {}
    for s, vals in per_stage.items():
        ran = [v for v in vals if v is not None]
        mean = sum(ran) / n if n else 0.0
        stages[s] = StageResult(round(mean, 3), len(ran),
                                round(min(ran), 3) if ran else None,
                                round(float(np.median(ran)), 3) if ran else None,
                                round(float(np.percentile(ran, 95)), 3) if ran else None)
    faces = int(sum(raw["faces_classified"]))
    classify_total = sum(v or 0.0 for v in per_stage["classify"])
    spread = _spread(totals)
    if not trained:
        acc, note = None, "n/a (speed only)"
    else:
        acc = accuracy(frames.frames, raw["faces"])
        note = "" if acc is not None else "n/a (no labels)"
    return PipelineResult(
        name=name, description=description, detector=detector, classifier=Path(raw["model"]).name,
        settings=settings, threads=threads, frames=n, fps=round(1000.0 / spread.median_ms, 2), frame_ms=spread,
        stages=stages, faces_classified=faces, faces_per_frame=round(faces / n, 3) if n else 0.0,
        classify_ms_per_face=round(classify_total / faces, 4) if faces and detector != "aizoo" else None,
        accuracy=acc, accuracy_note=note, trained=trained, base_rss_mb=raw["base_rss_mb"],
        peak_rss_mb=raw["peak_rss_mb"], runtime=raw["runtime"], runtime_version=raw["runtime_version"],
        delegate=raw["delegate"], vs_default=None)


def _match_iou(truth_box: tuple[int, int, int, int], faces: list[Any]) -> str | None:
    """Label of the reported face overlapping an annotated box best (IoU >= 0.3), else None."""
    best, label = 0.0, None
    for box, lab in faces:
        v = iou(truth_box, (int(box[0]), int(box[1]), int(box[2]), int(box[3])))
        if v > best:
            best, label = v, lab
    return label if best >= 0.3 else None


def _match_inside(truth_box: tuple[int, int, int, int], faces: list[Any]) -> str | None:
    """Label of the largest reported face centred inside a pasted crop (the crop's margins vary by source)."""
    x, y, w, h = truth_box
    inside = [(box[2] * box[3], lab) for box, lab in faces
              if x <= box[0] + box[2] / 2 < x + w and y <= box[1] + box[3] / 2 < y + h]
    return max(inside)[1] if inside else None


def accuracy(frames: list[EncodedFrame], faces: list[list[Any]]) -> Accuracy | None:
    """Allow/deny rightly: per judged synthetic frame, or per annotated scene face >= 48 px; None if unlabelled.

    A synthetic person counts as found when a reported face is centred inside their pasted crop; an
    annotated scene face when a reported box overlaps it with IoU >= 0.3. A missed face is a wrong
    call (the door neither opens for a masked person nor alarms for a bare one).
    """
    right = total = 0
    basis = ""
    for f, got in zip(frames, faces, strict=True):
        if f.truth is not None:
            want = judged_label(Frame(np.zeros((1, 1, 3), np.uint8), f.ts, f.index, f.truth), f.width)
            targets = [(f.truth[0].box, want)] if want is not None else []
            match = _match_inside
            basis = ("synthetic frames with one person fully in view, >= 48 px wide, in the middle 60% "
                     "(maskgate.synthetic.judged_label)")
        elif f.scene is not None:
            targets = [(sf.box, sf.label) for sf in f.scene if sf.box[2] >= MIN_FACE_JUDGED]
            match = _match_iou
            basis = "annotated faces >= 48 px wide (PASCAL VOC boxes; IoU >= 0.3 counts as found)"
        else:
            continue
        for box, label in targets:
            pred = match(box, got)
            total += 1
            right += pred is not None and (pred == "with_mask") == (label == "with_mask")
    if not basis or total == 0:
        return None
    return Accuracy(right, total, round(right / total, 4), basis)


def machine_info(base: PipelineResult, load_start: float | None) -> Machine:
    return Machine(machine=platform.machine(), cpu=cpu_model(), cores=os.cpu_count() or 1, memory_mb=_memory_mb(),
                   system=platform.platform(), python=platform.python_version(), opencv=cv2.__version__,
                   numpy=np.__version__, runtime=base.runtime, runtime_version=base.runtime_version,
                   delegate=base.delegate, load_start=load_start, load_end=load_average())


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def cpu_model() -> str:
    """The board (Raspberry Pi device tree) and the CPU model, as far as Linux tells."""
    parts = []
    try:
        parts.append(Path("/proc/device-tree/model").read_text().strip("\x00 \n"))
    except OSError:
        pass
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    for key in ("model name", "Model", "Hardware"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key:
                val = line.split(":", 1)[1].strip()
                if val and val not in parts:
                    parts.append(val)
                break
        if len(parts) >= 2:
            break
    return ", ".join(parts) or platform.processor() or platform.machine()


def _memory_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# -- the run -------------------------------------------------------------------------------------------


@dataclass
class CompareModel:
    """One classifier of a ``maskgate-convert bench-models`` folder."""

    name: str
    bundle: Path
    description: str
    trained: bool


@dataclass
class BenchPlan:
    """Everything one ``maskgate bench`` run measures."""

    settings: Settings
    config: str
    frames: FrameSet
    threads: list[int]
    camera_fps: float
    scaling: Callable[[int, int, int], FrameSet] | None = None
    """Builds the synthetic frames for (people, width, height); None: no scaling (reason in scaling_note)."""
    scaling_note: str = ""
    people: tuple[int, ...] = (1, 2, 4, 8)
    crowd_size: tuple[int, int] = (1920, 1080)
    """Frame size of the faces axis: eight people side by side need the width for their faces to clear
    ``detector.min_face`` (48 px); at 1280x720 they are about 45 px and ignored by design."""
    sizes: tuple[tuple[int, int], ...] = ((320, 240), (640, 480), (1280, 720))
    compare: bool = False
    models: list[CompareModel] = field(default_factory=list)
    models_missing: str = ""
    aizoo: Path | None = None
    command: str = ""
    quick: bool = False
    rounds: int = 1


def with_changes(s: Settings, changes: dict[str, Any]) -> Settings:
    """``s`` with dotted-key changes, e.g. ``{"detector.max_side": 320}`` (validated like a config file)."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        sec, name = key.split(".")
        sections.setdefault(sec, {})[name] = value
    return replace(s, **sections)


def tuning_variants(s: Settings) -> list[tuple[str, dict[str, Any]]]:
    """One change each that trades work for speed, plus all of them together (only those not already set)."""
    d = s.detector
    out: list[tuple[str, dict[str, Any]]] = []
    if tuple(d.roi) == (0.0, 0.0, 1.0, 1.0):
        out.append(("doorway ROI (middle 60% of the width)", {"detector.roi": DOORWAY_ROI}))
    if d.max_side > 320:
        out.append(("detector at 320 px", {"detector.max_side": 320}))
    if d.every < 15:
        out.append(("whole-frame search every 15th frame while following faces", {"detector.every": 15}))
    if len(out) > 1:
        allc: dict[str, Any] = {}
        for _, c in out:
            allc.update(c)
        out.append(("all of these", allc))
    return out


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class _Run:
    """One pipeline to measure, and what to call it in the report."""

    job: Job
    frames: FrameSet
    description: str
    changes: dict[str, Any]
    trained: bool = True
    raw: dict[str, Any] | None = None
    error: str = ""

    def result(self) -> PipelineResult:
        assert self.raw is not None
        return summarize(self.raw, self.frames, name=self.job.name, description=self.description,
                         detector=self.job.detector, settings=self.changes,
                         threads=self.job.settings.classifier.threads, trained=self.trained)


def execute(runs: list[_Run], rounds: int, progress: Callable[[str], None]) -> None:
    """Run every pipeline ``rounds`` times, round-robin, keeping each one's round with the lowest median frame.

    On a machine shared with other work, a burst of load then hurts one round, not the comparison.
    """
    for k in range(rounds):
        for i, r in enumerate(runs):
            if r.error:
                continue
            tag = f"round {k + 1}/{rounds}, " if rounds > 1 else ""
            progress(f"bench [{tag}{i + 1}/{len(runs)}]: {r.description} ({len(r.frames.frames)} frames, "
                     f"{r.job.settings.classifier.threads} thread(s))")
            try:
                raw = run_worker(r.job, r.frames)
            except BenchError as exc:
                r.error = str(exc)
                continue
            if r.raw is None or float(np.median(raw["frame_ms"])) < float(np.median(r.raw["frame_ms"])):
                r.raw = raw


def measure(plan: BenchPlan, progress: Callable[[str], None] = _progress) -> BenchReport:
    """Run every measurement of the plan, one worker process at a time, and return the report."""
    from .bench_report import suggestions, verdict

    s = plan.settings
    fs = plan.frames
    t_start = time.perf_counter()
    load_start = load_average()
    one = with_changes(s, {"classifier.threads": 1})
    threads = [_Run(Job(f"maskgate-{t}t", with_changes(s, {"classifier.threads": t})), fs,
                    f"maskgate as configured, {t} thread(s)", {"classifier.threads": t} if t != 1 else {})
               for t in plan.threads]
    tuning = [_Run(Job("tuning-" + "+".join(k.split(".")[1] for k in changes), with_changes(one, changes)), fs,
                   desc, changes) for desc, changes in tuning_variants(s)]
    scaling: list[tuple[str, int, int, int, _Run]] = []
    if plan.scaling is not None:
        cache: dict[tuple[int, int, int], _Run] = {}
        combos = [("faces", p, *plan.crowd_size) for p in plan.people] + [("size", 1, w, h) for w, h in plan.sizes]
        for axis, people, w, h in combos:
            if (people, w, h) not in cache:
                cache[(people, w, h)] = _Run(Job(f"scaling-{people}p-{w}x{h}", one), plan.scaling(people, w, h),
                                             f"{people} person(s) in view, {w}x{h}", {})
            scaling.append((axis, people, w, h, cache[(people, w, h)]))
    compare: list[_Run] = []
    missing: list[Missing] = []
    if plan.compare:
        for m in plan.models:
            # each alternative alone: the second opinion's band is chosen for the shipped classifier
            change: dict[str, Any] = {"classifier.model": str(m.bundle), "classifier.second_opinion": "off"}
            if not m.trained:
                # random weights give unsure verdicts on nearly every face, and the second look at them
                # would run on nearly every frame: the row would time YuNet, not the classifier
                change["detector.refine_unsure"] = False
            compare.append(_Run(Job(m.name, with_changes(one, change)), fs, f"YuNet + {m.description}", change,
                                m.trained))
        if plan.models_missing:
            missing.append(Missing("float, seed and MobileNetV2 classifiers", plan.models_missing))
        if plan.aizoo is not None and plan.aizoo.is_file():
            compare.append(_Run(Job("aizoo", one, "aizoo", str(plan.aizoo)), fs,
                                "AIZOO one-stage face + mask detector (260x260 float SSD)", {}))
        else:
            missing.append(Missing("aizoo", f"{plan.aizoo}: AIZOO model not found; pass --aizoo PATH to "
                                            "face_mask_detection.tflite"))
        compare.append(_Run(Job("haar", one, "haar"), fs, "OpenCV Haar cascade (frontal face) + maskgate's classifier",
                            {}))
    every = threads + tuning + list({id(r[4]): r[4] for r in scaling}.values()) + compare
    execute(every, plan.rounds, progress)
    for r in threads + tuning + [x[4] for x in scaling]:
        if r.error:
            raise BenchError(r.error)
    base = threads[0].result()
    runs = [base] + [r.result() for r in threads[1:]]
    compared = []
    for r in compare:
        if r.error:
            missing.append(Missing(r.job.name, r.error))
            continue
        c = r.result()
        c.vs_default = Ratio(
            round(c.fps / base.fps, 3), round(base.frame_ms.min_ms / c.frame_ms.min_ms, 3),
            round(c.classify_ms_per_face / base.classify_ms_per_face, 3)
            if c.classify_ms_per_face and base.classify_ms_per_face else None,
            round(c.peak_rss_mb / base.peak_rss_mb, 3))
        compared.append(c)
    report = BenchReport(
        schema_version=SCHEMA_VERSION, command=plan.command, quick=plan.quick, rounds=plan.rounds,
        config=plan.config, camera_fps=plan.camera_fps,
        machine=machine_info(base, load_start),
        frames=FramesInfo(kind=fs.kind, description=fs.description, path=fs.path, count=len(fs.frames),
                          warmup=len(fs.warmup), sizes=[f"{w}x{h}" for w, h in fs.sizes()], labelled=fs.labelled,
                          held_out=fs.held_out, encoding="JPEG quality 90 in memory, decoded per frame by each "
                                                        "pipeline"),
        threads=runs, tuning=[r.result() for r in tuning],
        scaling=[ScalingRow(axis, people, w, h, r.result()) for axis, people, w, h, r in scaling],
        scaling_note=plan.scaling_note, compare=compared, compare_missing=missing)
    report.verdict = verdict(report)
    report.suggestions = suggestions(report, s)
    log.info("bench finished in %.0f s", time.perf_counter() - t_start)
    return report

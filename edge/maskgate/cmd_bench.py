"""``maskgate bench``: how fast is this machine, does it keep up with the camera, and how maskgate compares."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from .bench import BenchPlan, CompareModel, measure
from .bench_frames import crowd_frames, folder_frames, held_out_faces, synthetic_frames
from .bench_report import render_text
from .bundle import load_bundle
from .config import resolve_config
from .errors import ConfigError, ModelError, SourceError

log = logging.getLogger(__name__)

MODELS_COMMAND = "maskgate-convert bench-models --out {path}"


def _shared() -> Path:
    return Path(os.environ.get("MASKGATE_SHARED") or "../shared")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure per-stage cost and frames/s on this machine; --compare with "
                                     "alternatives")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--synthetic", action="store_true",
                     help="frames of the synthetic door built from the classifier's held-out faces (default)")
    src.add_argument("--frames", type=Path, default=None, metavar="DIR",
                     help="a folder of images (labelled when VOC annotations sit in ../annotations)")
    p.add_argument("--faces", type=Path, default=None,
                   help="labelled face crops for the synthetic door (default: source.faces, else "
                        "$MASKGATE_SHARED/data/faces)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="measure 1, 2, 4 ... up to N threads (default: the cores, at most 4)")
    p.add_argument("--camera-fps", type=float, default=None,
                   help="camera rate the verdict is judged against (default: the config's source.fps)")
    p.add_argument("--config", type=Path, default=None,
                   help="config to measure (default: /etc/maskgate/maskgate.toml if present, else built-in)")
    p.add_argument("--detector-model", default=None, help="YuNet .onnx (default: detector.model, else cache)")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON (schema: the README's 'Benchmark a machine')")
    p.add_argument("--compare", action="store_true",
                   help="also measure the float, seed and MobileNetV2 classifiers, AIZOO and Haar + maskgate")
    p.add_argument("--models", type=Path, default=Path("bench-models"),
                   help="folder written by `maskgate-convert bench-models` (default: ./bench-models)")
    p.add_argument("--aizoo", type=Path, default=None,
                   help="AIZOO face_mask_detection.tflite (default: $MASKGATE_SHARED/peers/aizoo)")
    p.add_argument("--no-scaling", action="store_true", help="skip the faces/frame-size scaling tables")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every pipeline N times round-robin and keep each one's best round (a shared machine)")
    p.add_argument("--quick", action="store_true", help="few frames: a smoke run, not numbers to quote")
    p.add_argument("--seed", type=int, default=0, help="synthetic door seed")
    p.set_defaults(func=run)


def compare_models(folder: Path) -> tuple[list[CompareModel], str]:
    """The bench-models folder's classifiers, or why there are none (with the command that makes them)."""
    index = folder / "manifest.json"
    make = MODELS_COMMAND.format(path=shlex.quote(str(folder)))
    if not index.is_file():
        return [], (f"{folder}: no bench models folder; create it with `{make}` (needs TensorFlow: on a Pi, run it "
                    "on a PC and copy the folder over), then pass --models")
    try:
        data = json.loads(index.read_text())
        entries = data["models"]
        models = [CompareModel(str(e["name"]), folder / str(e["dir"]), str(e["description"]), bool(e["trained"]))
                  for e in entries]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{index}: not a bench-models index ({exc}); recreate it with `{make}`") from exc
    return models, ""


def _thread_counts(n: int) -> list[int]:
    counts = [1]
    while counts[-1] * 2 <= n:
        counts.append(counts[-1] * 2)
    if counts[-1] != n:
        counts.append(n)
    return counts


def run(args: argparse.Namespace) -> int:
    settings, path = resolve_config(args.config)
    if args.detector_model:
        import dataclasses
        settings = dataclasses.replace(settings, detector=dataclasses.replace(settings.detector,
                                                                              model=str(args.detector_model)))
    n = args.threads if args.threads is not None else min(4, os.cpu_count() or 1)
    if not 1 <= n <= 8:
        raise ConfigError(f"--threads: must be 1..8 (got {n})")
    if not 1 <= args.rounds <= 20:
        raise ConfigError(f"--rounds: must be 1..20 (got {args.rounds})")
    camera_fps = args.camera_fps or settings.source.fps
    if camera_fps <= 0:
        raise ConfigError(f"--camera-fps: must be > 0 (got {camera_fps})")
    quick = args.quick
    faces = args.faces or (Path(settings.source.faces) if settings.source.faces else _shared() / "data" / "faces")
    have_faces = faces.is_dir()
    bundle = load_bundle(settings.classifier.model or None)
    held = held_out_faces(bundle)
    if args.frames is not None:
        frames = folder_frames(args.frames, limit=12 if quick else None, warmup=2 if quick else 5,
                               fps=settings.source.fps)
    else:
        if not have_faces:
            raise SourceError(f"{faces}: the synthetic door needs labelled face crops (with_mask/, without_mask/, "
                              "incorrect_mask/): pass --faces DIR (e.g. a copy of shared/data/faces), or measure "
                              "on your own door photos with --frames DIR")
        frames = synthetic_frames(faces, held, visits=3 if quick else 6, fps=1.0 if quick else 10.0,
                                  warmup=3 if quick else 10, seed=args.seed)
    plan = BenchPlan(settings=settings, config=str(path) if path else "built-in defaults", frames=frames,
                     threads=_thread_counts(n), camera_fps=camera_fps, quick=quick, rounds=args.rounds,
                     command="maskgate " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    if args.no_scaling:
        plan.scaling_note = "--no-scaling"
    elif not have_faces:
        plan.scaling_note = f"{faces}: no face crops for the synthetic door (--faces DIR)"
    else:
        count, warm = (4, 1) if quick else (60, 5)
        plan.scaling = lambda people, w, h: crowd_frames(faces, held, people, width=w, height=h, count=count,
                                                         warmup=warm, seed=args.seed)
    if args.compare:
        plan.compare = True
        plan.models, plan.models_missing = compare_models(args.models)
        plan.aizoo = args.aizoo or _shared() / "peers" / "aizoo" / "face_mask_detection.tflite"
    report = measure(plan)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(render_text(report), end="")
    return 0

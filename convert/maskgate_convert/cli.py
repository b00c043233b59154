"""``maskgate-convert``: train, evaluate, quantize, bundle and compare mask classifiers."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from maskgate.errors import MaskgateError

from .architectures import ARCHS

log = logging.getLogger(__name__)
SHARED = Path("../shared")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=SHARED / "data" / "faces",
                   help="folder with one sub-folder per class (default: ../shared/data/faces)")
    p.add_argument("--scenes", type=Path, default=SHARED / "data" / "scenes",
                   help="PASCAL VOC scenes for background patches and whole-pipeline evaluation")
    p.add_argument("--detector-model", default=None, help="YuNet .onnx file or folder (default: cache/download)")
    p.add_argument("--limit-per-class", type=int, default=None, help="use at most N images per class")
    p.add_argument("--peer", type=Path, default=SHARED / "peers" / "aizoo" / "face_mask_detection.tflite",
                   help="AIZOO peer model evaluated on the same scenes (skipped if missing)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskgate-convert", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", help="train one architecture, quantize, bundle and evaluate it")
    t.add_argument("--arch", choices=sorted(ARCHS), default="default")
    t.add_argument("--out", type=Path, default=Path("runs/default"))
    t.add_argument("--epochs", type=int, default=40, help="maximum epochs (early stopping on val loss)")
    t.add_argument("--patience", type=int, default=5)
    t.add_argument("--train-sources", default=None,
                   help="comma-separated sources to train on (test still reports every source)")
    t.add_argument("--install", action="store_true",
                   help="copy the bundle into the maskgate package (edge/maskgate/model)")
    _add_common(t)
    t.set_defaults(func=_train)
    c = sub.add_parser("card", help="write the model card (Markdown + PNG plots) for a run")
    c.add_argument("run", type=Path)
    c.add_argument("--out", type=Path, default=Path("reports"))
    c.add_argument("--commands", default="", help="the commands that produced the run, for the card")
    c.set_defaults(func=_card)
    i = sub.add_parser("install", help="copy a run's bundle into the maskgate package")
    i.add_argument("run", type=Path)
    i.set_defaults(func=_install)
    r = sub.add_parser("rescore", help="re-measure a bundle's scene numbers with the scene evaluation's current "
                                       "detector settings and write them into its manifest (model unchanged)")
    r.add_argument("bundle", type=Path, help="bundle folder (e.g. edge/maskgate/model or runs/default/bundle)")
    r.add_argument("--scenes", type=Path, default=SHARED / "data" / "scenes")
    r.add_argument("--detector-model", default=None)
    r.set_defaults(func=_rescore)
    d = sub.add_parser("tune-detector", help="choose YuNet settings on the scene tuning half, report the test half")
    d.add_argument("--scenes", type=Path, default=SHARED / "data" / "scenes")
    d.add_argument("--detector-model", default=None)
    d.add_argument("--report", type=Path, default=Path("reports/detector.md"))
    d.set_defaults(func=_tune_detector)
    cmp_ = sub.add_parser("compare", help="train every architecture under one budget and print one table")
    cmp_.add_argument("--archs", default="seed,seed-rgb128,default")
    cmp_.add_argument("--epochs", type=int, default=5, help="the same epoch budget for every architecture")
    cmp_.add_argument("--out", type=Path, default=Path("runs/compare"))
    cmp_.add_argument("--report", type=Path, default=Path("reports/compare.md"))
    cmp_.add_argument("--shipped", type=Path, default=None,
                      help="run directory of the shipped default model, added as a labelled reference row")
    cmp_.add_argument("--resume", action="store_true",
                      help="reuse an architecture's finished run in --out instead of training it again")
    cmp_.add_argument("--cross-source", action="store_true",
                      help="also train default on each source alone and test on the others")
    _add_common(cmp_)
    cmp_.set_defaults(func=_compare)
    so = sub.add_parser("second-opinion", help="build the larger classifier the device asks about unsure faces "
                                               "(a pretrained face network and a trained head), choose its band")
    so.add_argument("--out", type=Path, default=Path("runs/second-opinion"))
    so.add_argument("--first", type=Path, default=None, help="the first model's bundle (default: the shipped one)")
    so.add_argument("--weights", type=Path, default=None,
                    help="the @vladmandic/face-api 1.7.15 npm tarball (default: download once from the npm registry)")
    so.add_argument("--epochs", type=int, default=40, help="maximum epochs of the head (early stopping on val loss)")
    so.add_argument("--patience", type=int, default=5)
    so.add_argument("--tail-blocks", type=int, default=1,
                    help="the trunk's last residual blocks trained with the head, after it (0: trunk frozen)")
    so.add_argument("--tune-epochs", type=int, default=12,
                    help="maximum epochs of the tail and head together (early stopping on val loss)")
    so.add_argument("--install", action="store_true", help="copy the bundle into the maskgate package")
    so.add_argument("--report", type=Path, default=None, help="write the Markdown report here")
    so.add_argument("--commands", default="", help="the commands that produced the run, for the report")
    so.add_argument("--data", type=Path, default=SHARED / "data" / "faces")
    so.add_argument("--scenes", type=Path, default=SHARED / "data" / "scenes")
    so.add_argument("--no-scenes", action="store_true", help="skip the whole-pipeline scene evaluation")
    so.add_argument("--detector-model", default=None)
    so.add_argument("--limit-per-class", type=int, default=None)
    so.add_argument("--seed", type=int, default=0)
    so.set_defaults(func=_second_opinion)
    bm = sub.add_parser("bench-models", help="write the classifiers `maskgate bench --compare` measures "
                                             "(float, seed CNN, MobileNetV2) as .tflite bundles")
    bm.add_argument("--out", type=Path, default=Path("bench-models"), help="folder to write (default: bench-models)")
    bm.add_argument("--only", default=None, help="comma-separated model names (default: all)")
    bm.add_argument("--run", type=Path, default=None,
                    help="a `train --arch default` run folder: default-float gets its trained weights")
    bm.set_defaults(func=_bench_models)
    return parser


def _options(args: argparse.Namespace, arch: str, out: Path, epochs: int, patience: int,
             train_sources: tuple[str, ...] | None = None) -> object:
    from .build import BuildOptions

    return BuildOptions(arch=arch, data=args.data, scenes=args.scenes, out=out, epochs=epochs, batch=args.batch,
                        limit_per_class=args.limit_per_class, detector_model=args.detector_model,
                        seed=args.seed, train_sources=train_sources, patience=patience, peer=args.peer)


def _train(args: argparse.Namespace) -> int:
    from .build import run_build

    srcs = tuple(s for s in args.train_sources.split(",") if s) if args.train_sources else None
    m = run_build(_options(args, args.arch, args.out, args.epochs, args.patience, srcs))  # type: ignore[arg-type]
    t = m["test"]["int8"]
    print(f"{args.arch}: allow/deny balanced accuracy int8 {t['balanced_accuracy_allow_deny']:.4f}, "
          f"float {m['test']['float']['balanced_accuracy_allow_deny']:.4f}; "
          f"int8/float agreement {m['int8_float_agreement_faces']:.4f}; {m['int8_bytes']} bytes; bundle in "
          f"{args.out / 'bundle'}")
    if args.install:
        _install(argparse.Namespace(run=args.out))
    return 0


def _second_opinion(args: argparse.Namespace) -> int:
    from .second_opinion import SecondOptions, run_second_opinion

    scenes = None if args.no_scenes else args.scenes
    m = run_second_opinion(SecondOptions(data=args.data, scenes=scenes, out=args.out, first=args.first,
                                         weights=args.weights, detector_model=args.detector_model,
                                         epochs=args.epochs, patience=args.patience, seed=args.seed,
                                         tail_blocks=args.tail_blocks, tune_epochs=args.tune_epochs,
                                         limit_per_class=args.limit_per_class, report=args.report,
                                         commands=args.commands))
    v, t = m["validation_int8"], m["test"]
    print(f"second opinion: band {m['band']} (chosen on the validation faces); validation balanced accuracy "
          f"{v['first']['balanced_accuracy_allow_deny']:.4f} -> {v['cascade']['balanced_accuracy_allow_deny']:.4f} "
          f"(asked on {v['asked']:.1%}); test {t['first']['balanced_accuracy_allow_deny']:.4f} -> "
          f"{t['cascade_int8']['balanced_accuracy_allow_deny']:.4f}; {m['int8_bytes']} bytes; bundle in "
          f"{args.out / 'bundle'}")
    if args.install:
        from maskgate.second_opinion import default_second_dir

        dst = Path(__file__).resolve().parents[2] / "edge" / "maskgate" / "model" / "second_opinion"
        if not dst.parent.is_dir():
            dst = default_second_dir()
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("model.tflite", "manifest.json"):
            shutil.copy2(args.out / "bundle" / f, dst / f)
        print(f"installed {args.out / 'bundle'} into {dst}")
    return 0


def _install(args: argparse.Namespace) -> int:
    from maskgate.bundle import default_bundle_dir, load_bundle

    src = args.run / "bundle"
    load_bundle(src)
    dst = Path(__file__).resolve().parents[2] / "edge" / "maskgate" / "model"
    if not (dst.parent / "__init__.py").exists():
        dst = default_bundle_dir()
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("model.tflite", "manifest.json", "split.csv"):
        shutil.copy2(src / f, dst / f)
    print(f"installed {src} into {dst}")
    return 0


def _rescore(args: argparse.Namespace) -> int:
    from .build import rescore_bundle

    scenes = rescore_bundle(args.bundle, args.scenes, args.detector_model)
    print(f"{args.bundle}: scene test half, right allow/deny (int8): "
          + ", ".join(f"{k} {v['right_decision']}/{v['faces']}" for k, v in scenes.items()))
    return 0


def _tune_detector(args: argparse.Namespace) -> int:
    from .detector_tuning import report

    print(report(args.scenes, args.detector_model, args.report))
    return 0


def _card(args: argparse.Namespace) -> int:
    from .report import model_card

    print(model_card(args.run, args.out, args.commands))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .build import latencies_ms, run_build
    from .compare import write_compare

    runs = {}
    for arch in [a for a in args.archs.split(",") if a]:
        done = args.out / arch / "metrics.json"
        if args.resume and done.exists():
            print(f"== {arch}: reusing {done}", flush=True)
            runs[arch] = json.loads(done.read_text())
            continue
        print(f"== training {arch} for {args.epochs} epochs", flush=True)
        runs[arch] = run_build(_options(args, arch, args.out / arch, args.epochs, args.epochs + 1))  # type: ignore[arg-type]
    cross = {}
    if args.cross_source:
        for src in ("chandrikadeb7", "facemask12k"):
            done = args.out / f"default-only-{src}" / "metrics.json"
            if args.resume and done.exists():
                cross[src] = json.loads(done.read_text())
                continue
            print(f"== training default on {src} only", flush=True)
            cross[src] = run_build(_options(args, "default", args.out / f"default-only-{src}", args.epochs,  # type: ignore[arg-type]
                                            args.epochs + 1, (src, "maskedfacenet")))
    shipped = json.loads((args.shipped / "metrics.json").read_text()) if args.shipped else None
    # time every int8 model again here, in turns, so the "x faster than seed" ratios come from one
    # measurement under one machine load (a reused run's own number may be from another day)
    timed = {name: args.out / name / "bundle" / "model.tflite" for name in runs}
    if shipped is not None:
        timed["shipped"] = args.shipped / "bundle" / "model.tflite"
    for name, ms in zip(timed, latencies_ms(list(timed.values()), rounds=20), strict=True):
        (shipped if name == "shipped" else runs[name])["latency_ms_int8_1thread"] = ms  # type: ignore[index]
    table = write_compare(runs, cross, args.report, args.epochs, shipped)
    print(table)
    (args.out / "compare.json").write_text(json.dumps({"runs": list(runs), "cross": list(cross)}))
    return 0


def _bench_models(args: argparse.Namespace) -> int:
    from .bench_models import write_bench_models

    names = [n for n in args.only.split(",") if n] if args.only else None
    try:
        index = write_bench_models(args.out, names, args.run)
    except (ValueError, FileNotFoundError) as exc:
        print(f"maskgate-convert bench-models: error: {exc}", file=sys.stderr)
        return 2
    for m in index["models"]:
        print(f"{args.out / m['file']}: {m['architecture']} {m['dtype']}, {m['bytes']} bytes, "
              f"{'trained' if m['trained'] else 'untrained (speed only)'}")
    print(f"copy {args.out} to the device and run: maskgate bench --compare --models {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO - 10 * min(args.verbose, 1),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except MaskgateError as exc:
        print(f"maskgate-convert: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

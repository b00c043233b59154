"""``maskgate bench``: end to end in subprocesses (JSON complete and consistent, --compare with a real
bench-models folder, --frames on annotated scenes), and the derivations behind its verdict."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from maskgate.bench import (
    STAGES,
    Accuracy,
    BenchReport,
    FramesInfo,
    Machine,
    PipelineResult,
    Spread,
    StageResult,
    _Run,
    accuracy,
    execute,
    schema_objects,
    summarize,
    with_changes,
)
from maskgate.bench_frames import EncodedFrame, EncodedSource, FrameSet, encode, folder_frames, side_by_side
from maskgate.bench_report import keeps_up, schema_markdown, suggestions, verdict
from maskgate.bench_worker import Job
from maskgate.cmd_bench import compare_models
from maskgate.config import Settings
from maskgate.errors import FrameError, ModelError
from maskgate.haar import HaarFaceDetector, find_cascade
from maskgate.scenes import SceneFace
from maskgate.sources import TruthFace

REPO = Path(__file__).resolve().parents[1]
MODELS = {"default-float", "seed-float", "seed-int8", "mobilenetv2-float", "mobilenetv2-int8"}


def _bench(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "maskgate", "bench", *args], capture_output=True, text=True,
                          env=env, timeout=900, check=False)


@pytest.fixture(scope="session")
def bench_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The alternatives' .tflite bundles, written by the real build-stage command (TensorFlow), once."""
    out = tmp_path_factory.mktemp("bench") / "bench-models"
    res = subprocess.run([sys.executable, "-m", "maskgate_convert.cli", "bench-models", "--out", str(out)],
                         capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    return out


@pytest.fixture(scope="session")
def quick_compare(bench_models: Path, shared: Path, yunet_path: Path, faces_dir: Path) -> dict[str, Any]:
    res = _bench(["--quick", "--json", "--compare", "--models", str(bench_models), "--threads", "2",
                  "--detector-model", str(yunet_path), "--faces", str(faces_dir)])
    assert res.returncode == 0, res.stderr[-3000:]
    return dict(json.loads(res.stdout))


def test_bench_models_folder_says_what_each_file_is(bench_models: Path) -> None:
    from maskgate.bundle import load_bundle

    index = json.loads((bench_models / "manifest.json").read_text())
    assert index["kind"] == "maskgate-bench-models"
    assert {m["name"] for m in index["models"]} == MODELS
    for m in index["models"]:
        assert m["speed_only"] and not m["trained"] and "speed comparisons only" in m["weights"]
        b = load_bundle(bench_models / m["dir"])  # the device's own checks: sha256, tensors, labels
        assert b.model_path == bench_models / m["file"]
        assert b.input.dtype == ("int8" if m["dtype"] == "int8" else "float32")
        assert list(b.input_spec.shape) == m["input"]
    by = {m["name"]: m for m in index["models"]}
    assert by["mobilenetv2-float"]["input"] == [224, 224, 3] and by["seed-float"]["input"] == [100, 100, 1]
    models, why = compare_models(bench_models)
    assert {m.name for m in models} == MODELS and why == ""


def _consistent(r: dict[str, Any]) -> None:
    """Stage means add up to the mean frame time; frames/s is the median frame's rate; spreads ordered."""
    assert set(r["stages"]) == set(STAGES)
    total = sum(st["mean_ms"] for st in r["stages"].values())
    assert math.isclose(total, r["frame_ms"]["mean_ms"], abs_tol=0.0005 * (len(STAGES) + 1)), r["name"]
    assert math.isclose(r["fps"], 1000.0 / r["frame_ms"]["median_ms"], rel_tol=0, abs_tol=0.006), r["name"]
    f = r["frame_ms"]
    assert 0 < f["min_ms"] <= f["median_ms"] <= f["p95_ms"]
    for name, st in r["stages"].items():
        assert 0 <= st["runs"] <= r["frames"]
        if st["runs"]:
            assert st["min_ms"] <= st["median_ms"] <= st["p95_ms"], (r["name"], name)
        else:
            assert st["median_ms"] is None and st["mean_ms"] == 0
    assert r["stages"]["decode"]["runs"] == r["frames"]
    assert r["peak_rss_mb"] >= r["base_rss_mb"] > 0
    assert r["runtime"] and r["delegate"] == "cpu"


def test_quick_json_is_complete_and_consistent(quick_compare: dict[str, Any]) -> None:
    rep = quick_compare
    assert set(rep) == {f.name for f in dataclasses.fields(BenchReport)}
    assert rep["schema_version"] == 1 and rep["quick"] and rep["rounds"] == 1
    assert all(rep["machine"][f.name] not in ("", None) for f in dataclasses.fields(Machine)
               if not f.name.startswith("load_"))
    fr = rep["frames"]
    assert fr["kind"] == "synthetic" and fr["held_out"] and fr["labelled"] and fr["count"] > 10
    assert [r["threads"] for r in rep["threads"]] == [1, 2]
    every = rep["threads"] + rep["tuning"] + [s["result"] for s in rep["scaling"]] + rep["compare"]
    for r in every:
        _consistent(r)
    for r in rep["threads"] + rep["tuning"] + rep["compare"]:
        assert r["frames"] == fr["count"], r["name"]
    base = rep["threads"][0]
    assert base["accuracy"]["total"] > 0 and base["classify_ms_per_face"] > 0
    assert {tuple(sorted(r["settings"])) for r in rep["tuning"]} == {
        ("detector.roi",), ("detector.max_side",), ("detector.every",),
        ("detector.every", "detector.max_side", "detector.roi")}
    assert [(s["axis"], s["people"]) for s in rep["scaling"] if s["axis"] == "faces"] == \
        [("faces", 1), ("faces", 2), ("faces", 4), ("faces", 8)]
    assert [(s["width"], s["height"]) for s in rep["scaling"] if s["axis"] == "size"] == \
        [(320, 240), (640, 480), (1280, 720)]
    assert rep["verdict"] and rep["verdict"][0].startswith("Quick run")
    busy = max(rep["machine"]["load_start"], rep["machine"]["load_end"]) > rep["machine"]["cores"]
    assert busy == any("busy with other work" in v for v in rep["verdict"])
    assert "classifier.threads" in {s["key"] for s in rep["suggestions"]}


def test_quick_compare_has_every_alternative_on_the_same_frames(quick_compare: dict[str, Any]) -> None:
    rep = quick_compare
    base = rep["threads"][0]
    by = {r["name"]: r for r in rep["compare"]}
    assert set(by) == MODELS | {"aizoo", "haar"}, rep["compare_missing"]
    assert rep["compare_missing"] == []
    for name, r in by.items():
        assert r["frames"] == base["frames"] and r["threads"] == 1
        assert math.isclose(r["vs_default"]["fps"], r["fps"] / base["fps"], abs_tol=0.002), name
        assert math.isclose(r["vs_default"]["fastest_frame"], base["frame_ms"]["min_ms"] / r["frame_ms"]["min_ms"],
                            abs_tol=0.002), name
        if name in MODELS:
            assert r["accuracy"] is None and r["accuracy_note"] == "n/a (speed only)" and not r["trained"]
            assert r["settings"]["classifier.model"].endswith(name)
            # random weights are unsure of every face: no second look, or the row would time YuNet
            assert r["settings"]["detector.refine_unsure"] is False
            assert r["vs_default"]["classify_per_face"] > 0
        else:
            assert r["accuracy"]["total"] == base["accuracy"]["total"] and r["trained"]
    assert by["aizoo"]["detector"] == "aizoo" and by["aizoo"]["classify_ms_per_face"] is None
    assert by["haar"]["detector"] == "haar"
    assert by["mobilenetv2-float"]["classifier"] == "model.tflite"
    # each pipeline's memory is its own: a 9 MB float MobileNetV2 needs more than maskgate's 141 KB model
    assert by["mobilenetv2-float"]["peak_rss_mb"] > base["peak_rss_mb"] + 5
    assert any("on the same frames" in v.lower() for v in rep["verdict"])


def test_scenes_folder_text_report_with_annotation_accuracy(scenes_dir: Path, yunet_path: Path) -> None:
    res = _bench(["--quick", "--frames", str(scenes_dir / "images"), "--threads", "1", "--no-scaling",
                  "--compare", "--models", "/nonexistent/bench-models", "--aizoo", "/nonexistent/aizoo.tflite",
                  "--detector-model", str(yunet_path)])
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    for heading in ("Stages, maskgate as configured", "Threads", "Tuning", "Compare", "Verdict:",
                    "Suggested settings"):
        assert heading in out
    assert "Scaling: not measured (--no-scaling)" in out
    assert "12 images from" in out and "with VOC annotations" in out
    assert "not run: float, seed and MobileNetV2 classifiers: /nonexistent/bench-models: no bench models folder; " \
           "create it with `maskgate-convert bench-models --out /nonexistent/bench-models`" in out
    assert "not run: aizoo: /nonexistent/aizoo.tflite: AIZOO model not found" in out
    assert "haar " in out and "classifier.threads = 1" in out


def test_folder_frames_carry_scene_labels(scenes_dir: Path) -> None:
    fs = folder_frames(scenes_dir, limit=3, warmup=1)
    assert len(fs.frames) == 3 and len(fs.warmup) == 1 and fs.labelled
    assert all(f.scene for f in fs.frames)
    src = EncodedSource(fs.frames)
    src.open()
    frame = src.read()
    assert frame is not None and frame.image.shape[:2] == (fs.frames[0].height, fs.frames[0].width)


def test_the_bench_door_uses_held_out_faces_cut_around_their_located_face() -> None:
    from maskgate.bench_frames import held_out_faces
    from maskgate.bundle import load_bundle, split_files

    held = held_out_faces(load_bundle())
    files = split_files(load_bundle(), "test")
    assert set(held) == set(files)
    for label, boxes in held.items():
        assert boxes and set(boxes) <= set(files[label])
        assert all(box is not None and box[2] > 0 for box in boxes.values())


def test_undecodable_frame_is_a_frame_error() -> None:
    src = EncodedSource([EncodedFrame(b"not a jpeg", 7, 0.7, 10, 10)])
    src.open()
    with pytest.raises(FrameError, match="frame 7"):
        src.read()


def _frame(truth: tuple[TruthFace, ...] | None = None, scene: tuple[SceneFace, ...] | None = None) -> EncodedFrame:
    return EncodedFrame(b"", 0, 0.0, 640, 480, truth=truth, scene=scene)


def test_accuracy_rules_for_synthetic_and_scene_frames() -> None:
    synth = _frame(truth=(TruthFace(1, "with_mask", (250, 100, 140, 140)),))
    small = _frame(truth=(TruthFace(2, "without_mask", (250, 100, 30, 30)),))  # too small to judge
    # a masked person found (centre inside the crop), then called bare, then missed
    acc = accuracy([synth, synth, synth, small], [[[[280, 130, 80, 90], "with_mask"]],
                                                  [[[280, 130, 80, 90], "without_mask"]], [], []])
    assert acc is not None and (acc.right, acc.total) == (1, 3)
    scene = _frame(scene=(SceneFace((10, 10, 60, 60), "without_mask"), SceneFace((200, 10, 20, 20), "with_mask")))
    acc = accuracy([scene], [[[[12, 12, 58, 58], "incorrect_mask"]]])  # the 20 px face is not judged
    assert acc is not None and (acc.right, acc.total) == (1, 1) and "IoU" in acc.basis
    assert accuracy([_frame()], [[]]) is None


def test_summarize_makes_stages_add_up_and_counts_faces() -> None:
    raw = {"name": "x", "model": "/m/model.tflite", "frame_ms": [10.0, 12.0, 30.0],
           "stages_ms": [{"capture": 1.0, "detect": 8.0, "decide": 0.1, "output": 0.1},
                         {"capture": 1.0, "detect": 8.0, "preprocess": 0.5, "classify": 1.0, "decide": 0.1,
                          "output": 0.1},
                         {"capture": 1.0, "preprocess": 1.0, "classify": 2.0, "decide": 0.1, "output": 0.1}],
           "faces_classified": [0, 1, 2], "faces": [[], [], []], "base_rss_mb": 50.0, "peak_rss_mb": 80.0,
           "runtime": "ai-edge-litert", "runtime_version": "2", "delegate": "cpu"}
    fs = FrameSet("folder", "", [_frame(), _frame(), _frame()])
    r = summarize(raw, fs, name="x", description="", detector="yunet", settings={}, threads=1)
    assert r.frames == 3 and r.fps == round(1000 / 12.0, 2) and r.frame_ms.median_ms == 12.0
    assert math.isclose(sum(s.mean_ms for s in r.stages.values()), r.frame_ms.mean_ms, abs_tol=0.004)
    assert r.stages["detect"].runs == 2 and r.stages["classify"].runs == 2 and r.stages["decode"].runs == 3
    assert r.stages["other"].mean_ms == round(np.mean([0.8, 1.3, 25.8]), 3)
    assert r.faces_classified == 3 and r.classify_ms_per_face == 1.0
    assert r.accuracy is None and r.accuracy_note == "n/a (no labels)"
    speed = summarize(raw, fs, name="x", description="", detector="yunet", settings={}, threads=1, trained=False)
    assert speed.accuracy_note == "n/a (speed only)"


def _result(median: float, p95: float, *, threads: int = 1, acc: float | None = 0.9,
            settings: dict[str, Any] | None = None) -> PipelineResult:
    stages = {s: StageResult(0.0, 1, 0.0, 0.0, 0.0) for s in STAGES}
    return PipelineResult(
        name="r", description="d", detector="yunet", classifier="model.tflite", settings=settings or {},
        threads=threads, frames=100, fps=round(1000 / median, 2), frame_ms=Spread(median / 2, median, p95, median),
        stages=stages, faces_classified=50, faces_per_frame=0.5, classify_ms_per_face=0.2,
        accuracy=None if acc is None else Accuracy(int(acc * 100), 100, acc, "b"), accuracy_note="",
        trained=True, base_rss_mb=50, peak_rss_mb=90, runtime="ai-edge-litert", runtime_version="2",
        delegate="cpu", vs_default=None)


def _report(threads: list[PipelineResult], tuning: list[PipelineResult]) -> BenchReport:
    return BenchReport(schema_version=1, command="", quick=False, rounds=1, config="built-in defaults",
                       camera_fps=10.0, machine=Machine("aarch64", "Raspberry Pi 4", 4, 4000, "Linux", "3.11",
                                                        "4.10", "1.26", "ai-edge-litert", "2", "cpu", 0.5, 1.2),
                       frames=FramesInfo(kind="synthetic", description="", path="", count=100, warmup=10,
                                         sizes=["640x480"], labelled=True, held_out=True, encoding="jpeg"),
                       threads=threads, tuning=tuning)


def test_fast_machine_keeps_one_thread_and_the_configured_detector() -> None:
    rep = _report([_result(20, 30), _result(15, 22, threads=2)],
                  [_result(12, 18, settings={"detector.roi": (0.2, 0.0, 0.8, 1.0)})])
    text = " ".join(verdict(rep))
    assert "keeps up with a 10 fps camera: 95% of frames take at most 30.0 ms of the 100 ms" in text
    assert "+33% frames/s against 1 thread" in text
    sg = {s.key: s for s in suggestions(rep, Settings())}
    assert sg["classifier.threads"].value == 1 and "30%" in sg["classifier.threads"].why
    assert sg["detector.max_side"].value == 640 and sg["detector.every"].value == Settings().detector.every
    assert sg["detector.roi"].value == [0.2, 0.0, 0.8, 1.0]  # faster and no less accurate


def test_slow_machine_gets_the_change_that_keeps_up_with_the_least_accuracy_lost() -> None:
    slow = _result(180, 260)
    roi = _result(150, 200, acc=0.9, settings={"detector.roi": (0.2, 0.0, 0.8, 1.0)})
    side = _result(70, 90, acc=0.85, settings={"detector.max_side": 320})
    every = _result(95, 99, acc=0.88, settings={"detector.every": 2})
    rep = _report([slow], [roi, side, every])
    assert not keeps_up(slow, 100.0)
    assert "does not keep up with a 10 fps camera: the median frame takes 180 ms" in verdict(rep)[0]
    sg = {s.key: s for s in suggestions(rep, Settings())}
    assert sg["detector.every"].value == 2 and "accuracy 88.0% vs 90.0%" in sg["detector.every"].why
    assert "detector.max_side" not in sg
    hopeless = _report([slow], [_result(150, 210, settings={"detector.every": 2})])
    sg = {s.key: s for s in suggestions(hopeless, Settings())}
    assert sg["source.fps"].value == 4  # 1000 / 210 ms


def test_scaling_sentences_use_faces_found_not_people() -> None:
    from maskgate.bench import ScalingRow
    from maskgate.bench_report import _scaling_sentences

    rows = []
    for people, found, classify in ((1, 1.0, 0.3), (8, 3.0, 0.9)):
        r = _result(40, 60)
        r.faces_per_frame = found
        r.stages["classify"] = StageResult(classify, 10, 0.1, 0.2, 0.3)
        r.stages["detect"] = StageResult(30.0, 10, 20.0, 30.0, 40.0)
        rows.append(ScalingRow("faces", people, 1280, 720, r))
    text = " ".join(_scaling_sentences(rows))
    assert "Each extra face found costs about 0.30 ms" in text  # (0.9 - 0.3) / (3 - 1)
    assert "detection's median is 30.0, 30.0 ms with 1, 8 people in view" in text
    assert "With 8 people side by side the detector found 3.0 faces per frame" in text


def test_failed_worker_names_the_pipeline_and_the_bad_model(tmp_path: Path) -> None:
    bad = tmp_path / "bundle"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    fs = FrameSet("synthetic", "", [EncodedFrame(encode(np.zeros((48, 64, 3), np.uint8)), 0, 0.0, 64, 48)])
    run = _Run(Job("broken", with_changes(Settings(), {"classifier.model": str(bad)})), fs, "d", {})
    execute([run], 1, lambda _m: None)
    assert run.raw is None and "broken: worker failed" in run.error and "manifest.json" in run.error


def test_missing_models_folder_names_the_command(tmp_path: Path) -> None:
    models, why = compare_models(tmp_path / "nothing")
    assert models == [] and f"maskgate-convert bench-models --out {tmp_path / 'nothing'}" in why
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text("[]")
    with pytest.raises(ModelError, match="not a bench-models index"):
        compare_models(tmp_path / "m")


def test_haar_finds_bare_faces_in_a_synthetic_door(faces_dir: Path) -> None:
    from maskgate.detector import DetectorSettings
    from maskgate.synthetic import SyntheticDoor

    held = {"without_mask": ["fm12k_06993.jpg", "c7_02447.jpg", "fm12k_06921.jpg"]}
    door = SyntheticDoor(faces_dir, fps=2.0, script=[["without_mask"]] * 3, images=held, realtime=False)
    door.open()
    det = HaarFaceDetector(DetectorSettings(min_face=48))
    found = judged = 0
    while (f := door.read()) is not None:
        if not f.truth or f.truth[0].box[2] < 100:
            continue
        judged += 1
        x, y, w, h = f.truth[0].box
        found += any(x <= b.box[0] + b.box[2] / 2 < x + w and y <= b.box[1] + b.box[3] / 2 < y + h
                     for b in det.detect(f.image))
    assert judged >= 5 and found >= 0.6 * judged
    assert "HaarFaceDetector" in repr(det)
    with pytest.raises(ModelError, match="no_such_cascade.xml: Haar cascade not found"):
        find_cascade("no_such_cascade.xml")


def test_side_by_side_faces_fit_their_slots() -> None:
    for n in (1, 2, 4, 8):
        lo, hi = side_by_side(n)
        assert 0 < lo <= hi <= 0.26
        assert hi / (1 + 0.15 * (n - 1)) <= 0.8 * 0.6 / n + 1e-9


def test_readme_documents_every_json_field() -> None:
    readme = (REPO / "README.md").read_text()
    assert schema_markdown() in readme, "regenerate the table: python -c 'from maskgate.bench_report import " \
                                        "schema_markdown; print(schema_markdown())'"
    objects = {name: rows for name, _doc, rows in schema_objects()}
    assert set(objects) >= {"BenchReport", "PipelineResult", "StageResult", "Spread", "ScalingRow", "Ratio"}
    assert all(doc for rows in objects.values() for _f, _t, doc in rows)


def test_bench_models_from_a_run_carry_its_weights_and_are_not_speed_only(tmp_path: Path) -> None:
    from maskgate_convert.architectures import ARCHS, build_model
    from maskgate_convert.bench_models import write_bench_models

    run = tmp_path / "run"
    run.mkdir()
    build_model(ARCHS["default"]).save(run / "model.keras")  # what `maskgate-convert train` leaves in a run
    index = write_bench_models(tmp_path / "out", ["default-float"], run)
    (m,) = index["models"]
    assert m["trained"] and not m["speed_only"] and str(run / "model.keras") in m["weights"]
    models, _ = compare_models(tmp_path / "out")
    assert [(c.name, c.trained) for c in models] == [("default-float", True)]
    with pytest.raises(ValueError, match="unknown bench model"):
        write_bench_models(tmp_path / "x", ["resnet"])

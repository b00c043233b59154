"""End to end with the real detector, the shipped classifier and gpiozero on MockFactory."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from conftest import SYNTH_FACES
from maskgate import cli
from maskgate.classifier import Classifier
from maskgate.config import DEFAULT_PINS, Settings
from maskgate.decider import VETO_DETAIL
from maskgate.detector import Face, FaceDetector
from maskgate.errors import ModelError
from maskgate.events import DecisionEvent, DecisionEvents, FrameResult
from maskgate.faults import FaultyDetector, FaultySource, Injector
from maskgate.haar import HaarFaceDetector
from maskgate.imageio import read_bgr
from maskgate.outputs import Outputs
from maskgate.pipeline import Pipeline, detector_settings
from maskgate.scenes import load_scenes
from maskgate.sources import Frame, FrameList, FrameSource, ReplaySource
from maskgate.synthetic import SyntheticDoor
from maskgate.tracker import Observation, Track, iou

# Every scene of the tuning ("dev") half whose annotated faces are all >= 48 px wide, computed once
# with maskgate.scenes.split_scenes and hard-coded so the test does not drift with the data.
DEV_SCENES = [
    "maksssksksss10", "maksssksksss125", "maksssksksss146", "maksssksksss16", "maksssksksss165",
    "maksssksksss170", "maksssksksss172", "maksssksksss193", "maksssksksss196", "maksssksksss20",
    "maksssksksss211", "maksssksksss212", "maksssksksss219", "maksssksksss23", "maksssksksss243",
    "maksssksksss25", "maksssksksss266", "maksssksksss285", "maksssksksss315", "maksssksksss332",
    "maksssksksss351", "maksssksksss355", "maksssksksss362", "maksssksksss369", "maksssksksss394",
    "maksssksksss456", "maksssksksss468", "maksssksksss48", "maksssksksss491", "maksssksksss497",
    "maksssksksss51", "maksssksksss542", "maksssksksss544", "maksssksksss553", "maksssksksss568",
    "maksssksksss591", "maksssksksss592", "maksssksksss629", "maksssksksss63", "maksssksksss632",
    "maksssksksss659", "maksssksksss663", "maksssksksss681", "maksssksksss692", "maksssksksss734",
    "maksssksksss743", "maksssksksss748", "maksssksksss757", "maksssksksss808", "maksssksksss87",
]


@pytest.fixture(scope="module")
def detector(yunet_path: Path) -> FaceDetector:
    """The detector as the default configuration builds it (min_face, face_px, max_side)."""
    return FaceDetector(detector_settings(Settings()), yunet_path)


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier()


def settings(**sections: dict[str, Any]) -> Settings:
    s = Settings()
    return dataclasses.replace(s, **{k: dataclasses.replace(getattr(s, k), **v) for k, v in sections.items()})


@dataclasses.dataclass
class Run:
    results: list[FrameResult]
    pipeline: Pipeline
    factory: MockFactory
    alive: int

    def pin(self, name: str) -> list[bool]:
        return [bool(s.state) for s in self.factory.pin(DEFAULT_PINS[name]).states]

    def triggers(self, lo: int = 0, hi: int = 1 << 30) -> list[str]:
        return [r.decision.trigger for r in self.results if lo <= r.frame < hi and r.decision.trigger]


def run(s: Settings, source: FrameSource, detector: FaceDetector, classifier: Classifier,
        before_close: Any = None, observers: tuple[Any, ...] = (), **kw: Any) -> Run:
    factory = MockFactory()
    out = Outputs(s.outputs, factory, mode=s.decision.mode)
    results: list[FrameResult] = []
    alive = [0]
    source.open()
    p = Pipeline(s, source, detector, classifier, out, observers=[results.append, *observers],
                 on_alive=lambda: alive.__setitem__(0, alive[0] + 1), **kw)
    try:
        p.run()
        if before_close:
            before_close(out)
    finally:
        out.close()
        source.close()
    return Run(results, p, factory, alive[0])


W, H = 480, 360


def door(faces_dir: Path, script: list[list[str]], **kw: Any) -> SyntheticDoor:
    """Short visits on 480x360 frames keep the suite fast; the benchmark uses 640x480."""
    return SyntheticDoor(faces_dir, W, H, 10, script=script, images=SYNTH_FACES, realtime=False,
                         start_wall=0.0, enter_s=0.8, stand_s=1.5, leave_s=0.8, gap_s=0.6, **kw)


def standing(faces_dir: Path) -> tuple[SyntheticDoor, Frame]:
    """A one-visit door (opened) and the frame of its masked person standing in the doorway."""
    src = door(faces_dir, [["with_mask"]], seed=2)
    src.open()
    p = src.visits_until(0)[0].people[0]
    frame = src.frame(p.start + p.enter + p.stand // 2)
    assert frame is not None and frame.truth
    return src, frame


def truth_at(src: SyntheticDoor, index: int) -> tuple:
    f = src.frame(index)
    return (f.truth or ()) if f is not None else ()


def visit_outcomes(src: SyntheticDoor, r: Run) -> list[tuple[list[str], list[str]]]:
    return [([p.label for p in v.people], r.triggers(v.start, v.end)) for v in src.visits_until(0)]


def test_synthetic_door_single_people(faces_dir: Path, detector: FaceDetector, classifier: Classifier) -> None:
    script = [[lab] for lab in ["with_mask", "without_mask", "with_mask", "incorrect_mask", "with_mask",
                                "without_mask", "with_mask", "incorrect_mask", "with_mask", "without_mask",
                                "with_mask", "with_mask"]]
    src = door(faces_dir, script, seed=11)
    r = run(settings(), src, detector, classifier)
    outcomes = visit_outcomes(src, r)
    masked = [trig for labels, trig in outcomes if labels == ["with_mask"]]
    bare = [trig for labels, trig in outcomes if labels != ["with_mask"]]
    assert not any("open" in trig for trig in bare), outcomes  # no wrong allow
    # Shares measured with the shipped default bundle: masked 4/7 opened, bare or wrongly masked 3/5
    # alarmed; the rest stayed uncertain or undetected, which keeps the door shut and stays quiet.
    assert sum("open" in t for t in masked) / len(masked) >= 0.5, outcomes
    assert sum("alarm" in t for t in bare) / len(bare) >= 0.6, outcomes
    # outputs follow the decisions frame by frame
    for res in r.results:
        d = res.decision
        assert res.outputs["green"] == (d.state == "allow")
        assert res.outputs["red"] == (d.state == "deny")
        if d.trigger == "open":
            assert res.outputs["relay"]
    assert r.pin("relay")[:2] == [False, True] and r.pin("relay")[-1] is False
    assert True in r.pin("green") and True in r.pin("red") and True in r.pin("buzzer")
    assert r.alive == len(r.results) and r.pipeline.stats.frames == len(r.results)


def test_decision_events_one_per_action_and_per_fault_start(faces_dir: Path, detector: FaceDetector,
                                                           classifier: Classifier) -> None:
    events: list[DecisionEvent] = []
    script = [["with_mask"], ["without_mask"], ["with_mask"], ["without_mask"]]
    r = run(settings(), door(faces_dir, script, seed=11), detector, classifier)
    rec = DecisionEvents([events.append])
    for res in r.results:
        rec(res)
    triggers = [res.decision.trigger for res in r.results if res.decision.trigger]
    assert [e.outcome for e in events] == [{"open": "allow", "alarm": "deny"}[t] for t in triggers]
    assert events and all(e.faces >= 1 and e.track is not None and e.confidence is not None for e in events)
    assert all(e.reason in ("without_mask", "incorrect_mask") for e in events if e.outcome == "deny")
    # a fault is recorded when it begins, not on every frame it lasts
    fault = dataclasses.replace(r.results[-1], frame=-1, decision=dataclasses.replace(
        r.results[-1].decision, state="fault", reason="camera", trigger=None))
    n = len(events)
    rec(fault)
    rec(fault)
    assert [e.outcome for e in events[n:]] == ["fault"] and events[-1].reason == "camera"
    js = events[0].to_json()
    assert set(js) == {"ts", "outcome", "reason", "confidence", "faces", "track", "mode", "active", "clock_synced"}
    assert js["ts"].endswith("Z")


def test_synthetic_door_groups(faces_dir: Path, detector: FaceDetector, classifier: Classifier) -> None:
    script = [["with_mask", "with_mask"], ["with_mask", "without_mask"], ["with_mask", "with_mask", "with_mask"],
              ["incorrect_mask", "with_mask"]]
    src = door(faces_dir, script, seed=5)
    r = run(settings(), src, detector, classifier)
    for res in r.results:
        if res.decision.trigger != "open":
            continue
        truth = truth_at(src, res.frame)
        # never opens while a bare or wrongly masked face is fully in view and big enough to judge
        assert not any(t.label != "with_mask" and t.box[2] >= 80 and 0 < t.box[0] and t.box[0] + t.box[2] < W
                       for t in truth), (res.frame, truth)
    outcomes = visit_outcomes(src, r)
    # the door may open for a masked person before a bare one walks in; it must alarm once they are in
    assert "alarm" in outcomes[1][1] + outcomes[3][1], outcomes


def test_dev_scenes_replayed_as_held_frames(scenes_dir: Path, detector: FaceDetector,
                                            classifier: Classifier) -> None:
    scenes = {s.name: s for s in load_scenes(scenes_dir)}
    chosen = [scenes[n] for n in DEV_SCENES]
    assert all(all(f.box[2] >= 48 for f in s.faces) for s in chosen)
    hold, gap = 8, 4
    src = ReplaySource([s.image for s in chosen], 10, hold=hold, gap=gap, realtime=False, start_wall=0.0)
    r = run(settings(decision={"track_timeout": 0.3}), src, detector, classifier)
    # photos of every size: each one is looked at (a camera's frame of another size would be skipped)
    assert len({s.image.name for s in chosen}) == len(chosen) and r.pipeline.stats.bad_frames == 0
    assert len({read_bgr(s.image).shape for s in chosen}) > 1
    wrong_allow, right = [], {"allow": [0, 0], "deny": [0, 0]}
    for k, s in enumerate(chosen):
        trig = r.triggers(k * (hold + gap), (k + 1) * (hold + gap))
        masked = all(f.label == "with_mask" for f in s.faces)
        want = "allow" if masked else "deny"
        right[want][1] += 1
        right[want][0] += ("open" if masked else "alarm") in trig
        if not masked and "open" in trig:
            wrong_allow.append(s.name)
    bare_opened = [n for n in wrong_allow if any(f.label == "without_mask" for f in scenes[n].faces)]
    assert bare_opened == [], f"door opened for bare-face scenes {bare_opened}; {right}"
    # Known model limitation (see reports/MODEL_CARD.md): the only incorrect_mask training data is
    # MaskedFace-Net's software-pasted masks, and two real photos of a mask pulled below the nose
    # (659, 748) still score with_mask >= 0.9. The test pins that number so it can only go down.
    assert sorted(wrong_allow) in ([], ["maksssksksss659"], ["maksssksksss748"],
                                   ["maksssksksss659", "maksssksksss748"]), wrong_allow
    assert right["allow"][0] / right["allow"][1] >= 0.6, right
    assert right["deny"][0] / right["deny"][1] >= 0.5, right


class HaloDetector:
    """YuNet as it sometimes is: besides each face, a weak, larger box around it (hair and neck)."""

    def __init__(self, inner: FaceDetector) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def detect(self, frame_bgr: Any, *, full_size: bool = False, keep_low: bool = False,
               narrowest: int | None = None) -> list[Face]:
        h, w = frame_bgr.shape[:2]
        out = []
        for f in self.inner.detect(frame_bgr, full_size=full_size, keep_low=keep_low, narrowest=narrowest):
            x, y, bw, bh = f.box
            x0, y0 = max(0, x - bw // 4), max(0, y - bh * 2 // 3)
            x1, y1 = min(w, x + bw + bw // 4), min(h, y + bh + bh * 2 // 3)
            out += [f, Face((x0, y0, x1 - x0, y1 - y0), 0.33)]
        return out


def test_a_weak_box_around_a_face_is_the_same_person(faces_dir: Path, detector: FaceDetector,
                                                      classifier: Classifier) -> None:
    """The larger box is judged too (no_face, or the same label at a lower score) and dropped as the
    same face: the door opens and alarms on the same frames as without it, one track per visitor
    (a second track the classifier cannot call masked held the door shut until it timed out)."""
    script = [["with_mask"], ["without_mask"], ["with_mask"]]
    plain = run(settings(), door(faces_dir, script, seed=5), detector, classifier)
    halo = run(settings(), door(faces_dir, script, seed=5), HaloDetector(detector), classifier)  # type: ignore[arg-type]
    when = [(r.frame, r.decision.trigger) for r in plain.results if r.decision.trigger]
    assert [t for _, t in when] == ["open", "alarm", "open"]
    assert [(r.frame, r.decision.trigger) for r in halo.results if r.decision.trigger] == when
    assert len({f.track for r in halo.results for f in r.faces}) == len(script)


def test_an_unsure_verdict_gets_a_second_look_at_full_size(scenes_dir: Path, detector: FaceDetector,
                                                           classifier: Classifier) -> None:
    """refine_unsure: YuNet at full size in a window around an unsure face, and the classifier on its box."""
    img = read_bgr(scenes_dir / "images" / "maksssksksss87.jpg")  # one masked face, 78x85 px
    full = detector.detect(img, full_size=True)[0].box
    x, y, w, h = full
    over_the_hair = (x - w // 4, y - h * 2 // 3, w + w // 2, h + h * 2 // 3)  # a carried box gone wrong
    factory = MockFactory()
    out = Outputs(settings().outputs, factory)
    try:
        p = Pipeline(settings(), FrameList([]), detector, classifier, out)
        unsure = Observation(over_the_hair, "with_mask", 0.6)
        [again] = p.finder.refine(img, [unsure])
        assert iou(again.box, full) > 0.8 and iou(unsure.box, full) < 0.5
        # the classifier's verdict on the new box (the shipped model says with_mask at 0.89 there)
        v = classifier.classify_face(img, again.box)
        assert again.label == v.label == "with_mask" and again.score == v.score > unsure.score
        # a verdict that votes already is left alone; so is an unsure one where no face is near it
        sure = Observation(over_the_hair, "without_mask", 0.95)
        nothing_there = Observation((0, 0, 60, 60), "with_mask", 0.6)
        assert p.finder.refine(img, [sure, nothing_there]) == [sure, nothing_there]
        # every detector the gate can be given takes the second look: the soak's fault wrapper (it
        # once failed every unsure frame with a TypeError), YuNet's odd boxes, Haar
        for other in (FaultyDetector(detector, Injector()), HaloDetector(detector),
                      HaarFaceDetector(detector_settings(settings()))):
            q = Pipeline(settings(), FrameList([]), other, classifier, out)  # type: ignore[arg-type]
            assert len(q.finder.refine(img, [unsure])) == 1
    finally:
        out.close()


def test_region_of_interest(faces_dir: Path, detector: FaceDetector, classifier: Classifier) -> None:
    script = [["with_mask"], ["without_mask"]]
    # a doorway strip at the far left edge: people stand in the middle, so nobody counts
    r = run(settings(detector={"roi": (0.0, 0.0, 0.12, 1.0)}), door(faces_dir, script, seed=2),
            detector, classifier)
    assert r.triggers() == [] and r.pin("relay") == [False]
    assert all(r_.decision.state in ("idle", "checking") for r_ in r.results)
    # the middle of the frame as the doorway: the same people count
    r2 = run(settings(detector={"roi": (0.25, 0.1, 0.75, 0.9)}), door(faces_dir, script, seed=2),
             detector, classifier)
    assert "open" in r2.triggers() and "alarm" in r2.triggers()


def test_advisory_mode_never_drives_the_relay(faces_dir: Path, detector: FaceDetector,
                                              classifier: Classifier) -> None:
    script = [["with_mask"], ["without_mask"], ["with_mask"]]
    r = run(settings(decision={"mode": "advisory"}), door(faces_dir, script, seed=3), detector, classifier)
    assert "open" in r.triggers() and "alarm" in r.triggers()
    assert r.pin("relay") == [False]
    assert True in r.pin("green") and True in r.pin("red") and True in r.pin("buzzer")


def test_off_mode_drives_nothing(faces_dir: Path, detector: FaceDetector, classifier: Classifier) -> None:
    r = run(settings(decision={"mode": "off"}), door(faces_dir, [["with_mask"], ["without_mask"]], seed=3),
            detector, classifier)
    assert r.triggers() == []
    for name in ("relay", "green", "red", "buzzer"):
        assert r.pin(name) == [False], name


def test_staff_button_opens_the_door(tmp_path: Path, detector: FaceDetector, classifier: Classifier) -> None:
    import cv2
    import numpy as np
    img = tmp_path / "empty.png"
    cv2.imwrite(str(img), np.full((240, 320, 3), 120, np.uint8))
    src = ReplaySource([img], 10, hold=30, realtime=False)
    pressed: list[int] = []

    s = settings(outputs={"button": True})
    factory = MockFactory()
    out = Outputs(s.outputs, factory, mode="enforce")
    results: list[FrameResult] = []

    def press(res: FrameResult) -> None:
        results.append(res)
        if res.frame == 5:
            factory.pin(DEFAULT_PINS["button"]).drive_low()
            pressed.append(res.frame)
        if res.frame == 6:
            factory.pin(DEFAULT_PINS["button"]).drive_high()

    src.open()
    p = Pipeline(s, src, detector, classifier, out, observers=[press])
    try:
        p.run()
    finally:
        out.close()
    assert pressed == [5]
    assert [r.outputs["relay"] for r in results[:5]] == [False] * 5
    assert all(r.outputs["relay"] for r in results[6:])
    assert [bool(x.state) for x in factory.pin(DEFAULT_PINS["relay"]).states] == [False, True, False]
    assert out.button_presses == 1 and p.stats.button_presses == 1


def test_corrupt_frames_are_skipped_and_counted(faces_dir: Path, detector: FaceDetector,
                                                classifier: Classifier) -> None:
    inner = door(faces_dir, [["with_mask"]], seed=1)
    src = FaultySource(inner, corrupt=[3, 10, 11])
    r = run(settings(), src, detector, classifier)
    st = r.pipeline.stats
    assert st.bad_frames == 3 and st.faults == 0
    assert st.frames == len(r.results) == (inner.total_frames or 0) - 3
    assert "open" in r.triggers()
    assert r.alive == st.frames + st.bad_frames


def test_a_run_of_bad_frames_faults_with_the_relay_off(faces_dir: Path, detector: FaceDetector,
                                                       classifier: Classifier) -> None:
    inner = door(faces_dir, [["with_mask"], ["with_mask"]], seed=1)
    inner.open()
    total = inner.total_frames or 0
    s = settings(source={"max_bad_frames": 5})
    src = FaultySource(inner, corrupt=range(total // 2, total // 2 + 8))
    r = run(s, src, detector, classifier)
    faults = [x for x in r.results if x.decision.state == "fault"]
    assert faults and faults[0].decision.reason == "frames"
    assert all(not x.outputs["relay"] for x in faults)
    assert r.pipeline.stats.bad_frames == 8


def test_source_failure_mid_stream_faults_and_ends(faces_dir: Path, detector: FaceDetector,
                                                   classifier: Classifier) -> None:
    src = FaultySource(door(faces_dir, [["with_mask"]], seed=1), fail_at=20)
    r = run(settings(), src, detector, classifier)
    assert r.pipeline.failure == "camera"
    assert r.results[-1].decision.state == "fault" and r.results[-1].decision.reason == "camera"
    assert r.results[-1].outputs["relay"] is False
    assert r.pin("relay")[-1] is False


def test_reload_between_frames(faces_dir: Path, detector: FaceDetector, classifier: Classifier) -> None:
    s = settings()
    advisory = settings(decision={"mode": "advisory"})

    class Flip:
        def __init__(self) -> None:
            self.p: Pipeline | None = None

        def __call__(self, res: FrameResult) -> None:
            if res.frame == 0 and self.p:
                self.p.reloader = lambda: advisory
                self.p.request_reload()

    flip = Flip()
    factory = MockFactory()
    out = Outputs(s.outputs, factory)
    src = door(faces_dir, [["with_mask"]], seed=1)
    src.open()
    p = Pipeline(s, src, detector, classifier, out, observers=[flip])
    flip.p = p
    try:
        p.run()
    finally:
        out.close()
    assert p.settings.decision.mode == "advisory" and p.stats.reloads == 1
    assert [bool(x.state) for x in factory.pin(DEFAULT_PINS["relay"]).states] == [False]


def test_missing_and_corrupt_model(tmp_path: Path, faces_dir: Path) -> None:
    with pytest.raises(ModelError, match="manifest not found"):
        Classifier(tmp_path / "nothing")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shipped = Classifier().bundle
    (bundle / "manifest.json").write_text((shipped.directory / "manifest.json").read_text())
    (bundle / "model.tflite").write_bytes(b"\x00" * 1000)
    with pytest.raises(ModelError):
        Classifier(bundle)
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'[classifier]\nmodel = "{bundle}"\n[source]\nfaces = "{faces_dir}"\n')
    assert cli.main(["demo", "--config", str(cfg), "--fast", "--visits", "1"]) == 2


def test_demo_takes_the_detector_model_from_the_command_line(tmp_path: Path, faces_dir: Path, yunet_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # an empty cache and no network: README's offline advice, "--detector-model PATH", must work for the demo
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    def no_download(*_a: object, **_k: object) -> Path:
        raise AssertionError("the demo tried to download the detector")
    monkeypatch.setattr("maskgate.model_store.fetch_yunet", no_download)
    args = ["demo", "--source", "synthetic", "--faces", str(faces_dir), "--fast", "--frames", "20", "--seed", "3"]
    assert cli.main(args + ["--detector-model", str(yunet_path.parent)]) == 0  # a folder holding it, as classify
    assert json.loads(capsys.readouterr().err.split("demo summary: ")[1])["frames"] == 20
    assert cli.main(args + ["--detector-model", str(yunet_path)]) == 0  # or the file itself
    capsys.readouterr()
    assert cli.main(args + ["--detector-model", str(tmp_path / "nope.onnx")]) == 2
    assert "nope.onnx: detector model not found" in capsys.readouterr().err


def test_demo_cli_events_and_source_that_fails_to_open(tmp_path: Path, faces_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--source", str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["demo", "--source", str(tmp_path / "empty")]) == 2
    assert "no images" in capsys.readouterr().err
    events = tmp_path / "ev.jsonl"
    rc = cli.main(["demo", "--source", "synthetic", "--faces", str(faces_dir), "--fast", "--frames", "25",
                   "--seed", "3", "--events", str(events), "--save-annotated", str(tmp_path / "ann")])
    assert rc == 0
    out = capsys.readouterr()
    assert "frame" in out.out and "demo summary" in out.err
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert len(lines) == 25 and [x["frame"] for x in lines] == list(range(25))
    for x in lines:
        assert set(x) == {"ts", "frame", "faces", "decision", "reason", "outputs"}
        assert x["ts"].endswith("Z") and set(x["outputs"]) == {"green", "red", "buzzer", "relay"}
        for f in x["faces"]:
            assert set(f) == {"box", "label", "score", "track"} and len(f["box"]) == 4
    assert any(x["faces"] for x in lines)
    assert len(list((tmp_path / "ann").glob("*.jpg"))) == 25


def test_a_malformed_frame_from_a_source_is_converted_or_skipped(tmp_path: Path, detector: FaceDetector,
                                                                 classifier: Classifier) -> None:
    import numpy as np

    from maskgate.sources import Frame

    class Odd:
        live = False
        dropped = 0

        def __init__(self) -> None:
            self.i = 0

        def open(self) -> None:
            pass

        def read(self) -> Frame | None:
            self.i += 1
            if self.i > 5:
                return None
            img = {2: np.zeros((60, 80), np.float32),  # a float gray frame: converted to BGR
                   4: np.zeros((0, 80, 3), np.uint8)}.get(self.i)  # an empty one: skipped
            if img is None:
                img = np.full((60, 80, 3), 90, np.uint8)
            return Frame(img, self.i / 10, self.i)

        def close(self) -> None:
            pass

    r = run(settings(), Odd(), detector, classifier)
    st = r.pipeline.stats
    assert st.bad_frames == 1 and st.converted_frames == 1 and st.frames == 4 and st.errors == 0


class Searches:
    """The detector, counting whole-frame searches per processed frame (an observer reads them)."""

    def __init__(self, det: FaceDetector) -> None:
        self.det = det
        self.calls = 0
        self.per_frame: list[int] = []
        self.sizes: list[tuple[tuple[int, int], bool]] = []
        """Each search: the (height, width) searched and whether at full size."""
        self.frame_sizes: list[list[tuple[int, int]]] = []
        """Per processed frame: the (height, width) of each search."""
        self._current: list[tuple[int, int]] = []

    def detect(self, img: Any, *, full_size: bool = False, keep_low: bool = False, narrowest: int | None = None) -> Any:
        self.calls += 1
        self.sizes.append((img.shape[:2], full_size))
        self._current.append(img.shape[:2])
        return self.det.detect(img, full_size=full_size, keep_low=keep_low, narrowest=narrowest)

    def __call__(self, res: FrameResult) -> None:
        self.per_frame.append(self.calls)
        self.frame_sizes.append(self._current)
        self.calls, self._current = 0, []


def test_cadence_follows_and_classifies_faces_between_searches(faces_dir: Path, detector: FaceDetector,
                                                              classifier: Classifier) -> None:
    s = settings()
    assert s.detector.every > 1  # the default follows faces between whole-frame searches
    src = door(faces_dir, [["with_mask"], ["without_mask"], ["with_mask"], ["incorrect_mask"]], seed=2)
    searches = Searches(detector)
    r = run(s, src, searches, classifier, observers=(searches,))  # type: ignore[arg-type]
    assert len(searches.per_frame) == len(r.results)
    in_view = followed = seen = 0
    for res, n in zip(r.results, searches.per_frame, strict=True):
        truth = [t for t in truth_at(src, res.frame) if t.box[2] >= 60 and 0 < t.box[0] and t.box[0] + t.box[2] < W]
        if not truth:
            continue
        in_view += 1
        t = truth[0].box
        on = [f for f in res.faces if t[0] <= f.box[0] + f.box[2] / 2 < t[0] + t[2]]
        seen += bool(on)
        followed += bool(on) and n == 0  # labelled on a frame the detector did not search
    # the face is found and freshly classified on most frames it is in view, mostly without a search
    assert seen >= 0.8 * in_view, (seen, in_view)
    assert followed >= 0.5 * seen, (followed, seen)
    assert sum(searches.per_frame) < 0.5 * len(r.results)
    # the same door actions as searching every frame (measured: open, alarm, open, alarm)
    assert [trig for _, trig in visit_outcomes(src, r)] == [["open"], ["alarm"], ["open"], ["alarm"]]


def test_motion_gate_skips_searching_a_static_empty_doorway(tmp_path: Path, detector: FaceDetector,
                                                            classifier: Classifier) -> None:
    import cv2
    import numpy as np
    img = tmp_path / "empty.png"
    cv2.imwrite(str(img), np.full((360, 480, 3), 120, np.uint8))
    s = settings()
    searches = Searches(detector)
    run(s, ReplaySource([img], 10, hold=30, realtime=False), searches, classifier,  # type: ignore[arg-type]
        observers=(searches,))
    assert searches.per_frame == [1 if i % s.detector.idle_every == 0 else 0 for i in range(30)]
    # with the shortcuts off, every frame is searched (the behaviour before the cadence)
    searches = Searches(detector)
    run(settings(detector={"every": 1, "motion": 0.0}), ReplaySource([img], 10, hold=30, realtime=False),
        searches, classifier, observers=(searches,))  # type: ignore[arg-type]
    assert searches.per_frame == [1] * 30


def test_a_tracked_face_one_search_misses_is_still_followed_on_the_next_frame(
        tmp_path: Path, faces_dir: Path, detector: FaceDetector, classifier: Classifier) -> None:
    """A person standing still, whose face the every-Nth search misses once (its score dipped): the
    next frame follows the face by its template. Before, nothing was followed after such a search,
    and the motion gate left a still picture unsearched until ``idle_every``: the face went unseen
    and unjudged for a second."""
    import cv2

    class Blind(Searches):
        def __init__(self, det: FaceDetector, frames: set[int]) -> None:
            super().__init__(det)
            self.blind = frames

        def detect(self, img: Any, **kw: Any) -> Any:
            found = super().detect(img, **kw)
            return [] if len(self.per_frame) in self.blind else found

    _, frame = standing(faces_dir)
    path = tmp_path / "standing.png"
    cv2.imwrite(str(path), frame.image)
    s = settings()
    frames = 3 * s.detector.every

    def replay(blind: set[int]) -> tuple[Run, Blind]:
        searches = Blind(detector, blind)
        r = run(s, ReplaySource([path], 10, hold=frames, realtime=False), searches, classifier,  # type: ignore[arg-type]
                observers=(searches,))
        return r, searches

    _, seeing = replay(set())
    k = next(i for i, n in enumerate(seeing.per_frame) if i > 3 and n)  # an every-Nth search while followed
    r, searches = replay({k})
    assert searches.per_frame[k] >= 1 and not r.results[k].faces  # the search that missed
    assert searches.per_frame[k + 1] == 0  # followed, not searched
    assert all(len(res.faces) == 1 for res in r.results[k + 1:]), [len(res.faces) for res in r.results]
    assert len({res.faces[0].track for res in r.results if res.faces}) == 1  # the same person throughout


def test_a_standing_person_is_followed_on_every_frame(tmp_path: Path, faces_dir: Path, detector: FaceDetector,
                                                      classifier: Classifier) -> None:
    import cv2
    _, frame = standing(faces_dir)
    img = tmp_path / "standing.png"
    cv2.imwrite(str(img), frame.image)
    s = settings()
    searches = Searches(detector)
    r = run(s, ReplaySource([img], 10, hold=40, realtime=False), searches, classifier,  # type: ignore[arg-type]
            observers=(searches,))
    # nothing moves, but a face is tracked: the gate never skips, and searches only on its beat
    assert all(len(res.faces) == 1 for res in r.results), [len(res.faces) for res in r.results]
    assert searches.per_frame[0] == 1 and sum(searches.per_frame) <= 40 // s.detector.every + 2
    assert r.triggers() == ["open"] and r.pin("relay")[:2] == [False, True]


def test_every_around_searches_around_a_standing_person_and_still_finds_newcomers(
        tmp_path: Path, faces_dir: Path, detector: FaceDetector, classifier: Classifier) -> None:
    import cv2
    _, frame = standing(faces_dir)
    x, y, w, h = frame.truth[0].box
    img = tmp_path / "standing.png"
    cv2.imwrite(str(img), frame.image)
    s = settings()
    assert s.detector.every_around  # the default since it measured 21% less CPU per frame on the validation door
    searches = Searches(detector)
    r = run(s, ReplaySource([img], 10, hold=40, realtime=False), searches, classifier,  # type: ignore[arg-type]
            observers=(searches,))
    assert all(len(res.faces) == 1 for res in r.results), [len(res.faces) for res in r.results]
    assert r.triggers() == ["open"]
    opened = next(i for i, res in enumerate(r.results) if res.decision.trigger)
    assert searches.frame_sizes[opened] == [(H, W)]  # the door opens only on a search of the whole doorway
    # after the first searches of the whole doorway, the beat's searches cover a window about twice the
    # face's size, at full size
    windows = [(hw, full) for hw, full in searches.sizes if hw != (H, W)]
    assert len(windows) >= 2 and all(full and hw[0] <= 2.2 * h and hw[1] <= 2.2 * w for hw, full in windows), (
        windows, (w, h))
    # a search of the windows is never taken for a search of the whole doorway
    src = door(faces_dir, [["with_mask"], ["with_mask"]], seed=2)
    src.open()
    pipe = Pipeline(s, src, detector, classifier, Outputs(s.outputs, MockFactory()))
    seen: list[tuple[bool, bool]] = []
    decide = pipe.decider.decide

    def spy(*a: Any, **k: Any) -> Any:
        seen.append((bool(pipe.cadence.windows), k["searched"]))
        return decide(*a, **k)

    pipe.decider.decide = spy  # type: ignore[method-assign]
    try:
        pipe.run()
    finally:
        pipe.outputs.close()
        src.close()
    assert (True, False) in seen and (True, True) not in seen
    # people walking in beside someone followed are still found: the same door actions as without it
    script = [["with_mask", "with_mask"], ["with_mask", "without_mask"], ["incorrect_mask", "with_mask"]]
    outcomes = []
    for on in (False, True):
        src = door(faces_dir, script, seed=5)
        res = run(settings(detector={"every_around": on}), src, detector, classifier)
        outcomes.append(visit_outcomes(src, res))
    assert outcomes[1] == outcomes[0], outcomes
    assert "alarm" in outcomes[1][1][1], outcomes


def test_a_verdict_that_turns_a_face_round_gets_a_second_look(scenes_dir: Path, detector: FaceDetector,
                                                              classifier: Classifier) -> None:
    """refine_flips: a verdict that votes against its face's last vote is looked at again at full size.
    Measured on the validation door: a bare face denied for a second was then called masked at 0.95 on
    a larger box from a search at the face_px scale, the follower carried that box, and the door opened;
    the full-size box says bare."""
    img = read_bgr(scenes_dir / "images" / "maksssksksss87.jpg")  # one masked face, 78x85 px
    full = detector.detect(img, full_size=True)[0].box
    out = Outputs(settings().outputs, MockFactory())
    try:
        p = Pipeline(settings(), FrameList([]), detector, classifier, out)
        track = Track(1, full, 0.0, 0.0, 5)
        track.add(Observation(full, "with_mask", 0.97), 0.0)
        track.add(Observation(full, "with_mask", 0.7), 0.1)  # unsure votes do not count either way
        bare = Observation(full, "without_mask", 0.95)
        assert p.finder.flips(bare, [track], 0.2)
        assert not p.finder.flips(Observation(full, "with_mask", 0.95), [track], 0.2)  # agrees
        assert not p.finder.flips(Observation(full, "without_mask", 0.5), [track], 0.2)  # unsure: refine_unsure's
        assert not p.finder.flips(Observation((0, 0, 40, 40), "without_mask", 0.95), [track], 0.2)  # another face
        assert not p.finder.flips(bare, [], 0.2)  # a new face has nothing to turn round
        [again] = p.finder.refine(img, [bare], [True])
        assert iou(again.box, full) > 0.8
        v = classifier.classify_face(img, again.box)
        assert again.label == v.label == "with_mask" and again.score == v.score
    finally:
        out.close()


def test_a_search_after_motion_covers_only_where_the_frame_changed(faces_dir: Path, detector: FaceDetector,
                                                                   classifier: Classifier) -> None:
    src, frame = standing(faces_dir)
    x, y, w, h = frame.truth[0].box
    searches = Searches(detector)
    pipe = Pipeline(settings(), src, searches, classifier, Outputs(Settings().outputs, MockFactory()))  # type: ignore[arg-type]
    try:
        assert len(pipe.finder.detect(frame.image)) == 1
        assert len(pipe.finder.detect(frame.image, (x + w // 3, y + h // 3, x + w // 2, y + h // 2))) == 1
        assert pipe.finder.detect(frame.image, (0, H - 8, 8, H)) == []  # a change far from the face
        # the whole doorway at the face_px scale; around a change at full size (moving_full_size)
        (whole, whole_full), (part, part_full), _ = searches.sizes
        assert whole == (H, W) and not whole_full
        assert part[0] < H and part[1] < W and part_full
    finally:
        pipe.outputs.close()
    searches = Searches(detector)
    off = settings(detector={"moving_full_size": False})
    pipe = Pipeline(off, src, searches, classifier, Outputs(off.outputs, MockFactory()))  # type: ignore[arg-type]
    try:
        assert len(pipe.finder.detect(frame.image, (x + w // 3, y + h // 3, x + w // 2, y + h // 2))) == 1
        assert [full for _, full in searches.sizes] == [False]
    finally:
        pipe.outputs.close()


def test_a_face_walking_in_is_searched_for_at_full_size_on_every_changed_frame(
        faces_dir: Path, detector: FaceDetector, classifier: Classifier) -> None:
    """While nobody is tracked, every frame that changed is searched around the change at full size
    (defaults moving_every 1, moving_full_size): on the validation door this opened 265 of 275 masked
    visits within 0.5 s against 253 of 272 at every 2nd frame and the face_px scale."""
    s = settings(decision={"mode": "advisory"})
    assert s.detector.moving_every == 1 and s.detector.moving_full_size
    src = door(faces_dir, [["with_mask"]], seed=2)
    searches = Searches(detector)
    r = run(s, src, searches, classifier, observers=(searches,))  # type: ignore[arg-type]
    enters = next(i for i in range(1, len(r.results)) if truth_at(src, i))
    first = next(res.frame for res in r.results if res.faces)
    # from the frame the walker steps into the picture until the face is found: searched every frame,
    # at full size on a part of the frame
    walking = searches.per_frame[enters:first]
    assert walking and all(n == 1 for n in walking), (enters, first, searches.per_frame[:first + 1])
    partial = [(hw, full) for hw, full in searches.sizes if hw != (H, W)]
    assert partial and all(full for _, full in partial), partial


def test_the_detector_drops_a_box_decoded_to_infinity(faces_dir: Path, yunet_path: Path) -> None:
    """YuNet sometimes decodes a box to infinite coordinates on a small window (seen on a window at the
    frame's edge under load); the detector drops that row instead of failing the frame."""
    import numpy as np
    det = FaceDetector(detector_settings(Settings()), yunet_path)
    img = read_bgr(faces_dir / "with_mask" / "fm12k_03454.jpg")
    found = det.detect(img, full_size=True)
    assert len(found) >= 1
    real = det._run
    bad = np.full((1, 15), np.inf, np.float32)
    bad[0, 14] = 0.99
    det._run = lambda frame: np.vstack([real(frame), bad])  # type: ignore[method-assign]
    assert det.detect(img, full_size=True) == found


def test_a_tracked_face_is_kept_when_its_detector_score_dips_and_a_weak_box_starts_nothing(
        tmp_path: Path, faces_dir: Path, yunet_path: Path, classifier: Classifier) -> None:
    """``detector.track_threshold``: under ``score_threshold``, a box counts only where it overlaps a
    face the gate tracks. The same masked face, clear and then grainy (sensor noise, as in dim light:
    YuNet's score falls under the threshold, the classifier still sees the mask), replayed with a
    search of the whole frame at full size on every frame."""
    import cv2
    import numpy as np
    _, frame = standing(faces_dir)
    x, y, w, h = frame.truth[0].box
    clear = frame.image
    noisy = clear.astype(np.float32)
    noisy[y:y + h, x:x + w] += np.random.default_rng(0).normal(0, 30, (h, w, 3))
    grainy = noisy.clip(0, 255).astype(np.uint8)
    probe = FaceDetector(dataclasses.replace(detector_settings(Settings()), track_threshold=0.01), yunet_path)

    def score(img: Any) -> float:
        return max((f.score for f in probe.detect(img, keep_low=True, full_size=True)
                    if iou(f.box, (x, y, w, h)) > 0.2), default=0.0)

    s0 = Settings().detector.score_threshold
    assert score(clear) > s0 + 0.2 and 0.15 < score(grainy) < s0, (score(clear), score(grainy))
    paths = []
    for name, img in (("clear", clear), ("grainy", grainy)):
        paths.append(tmp_path / f"{name}.png")
        cv2.imwrite(str(paths[-1]), img)

    def replay(images: list[Path], hold: int, track_threshold: float) -> Run:
        s = settings(detector={"every": 1, "every_around": False, "face_px": 0, "motion": 0.0,
                               "track_threshold": track_threshold})
        return run(s, ReplaySource(images, 10, hold=hold, realtime=False),
                   FaceDetector(detector_settings(s), yunet_path), classifier)

    kept = replay(paths, 10, 0.1)
    assert all(len(r.faces) == 1 and r.faces[0].label == "with_mask" for r in kept.results), [
        [(f.label, f.score) for f in r.faces] for r in kept.results]
    assert len({r.faces[0].track for r in kept.results}) == 1  # one person, followed throughout
    off = replay(paths, 10, s0)  # track_threshold = score_threshold: off
    assert [len(r.faces) for r in off.results] == [1] * 10 + [0] * 10
    alone = replay(paths[1:], 20, 0.1)  # the grainy face alone: a weak box never starts a track
    assert all(not r.faces and r.decision.state == "idle" for r in alone.results)


def test_a_bare_face_under_min_face_beside_a_masked_one_keeps_the_door_shut(
        tmp_path: Path, faces_dir: Path, yunet_path: Path, classifier: Classifier) -> None:
    """``detector.veto_face``: a bare face narrower than ``min_face`` (a step behind, a child, or a
    loosely framed face) beside a masked person at the door. With the defaults the door waits (no
    relay, no alarm: the small face is not tracked, only judged on the searched frames); with the
    key off the small face is ignored and the door opens, as it did before the key."""
    import cv2
    _, frame = standing(faces_dir)
    img = frame.image.copy()
    bare = cv2.resize(read_bgr(faces_dir / "without_mask" / "fm12k_09973.jpg"), (50, 50),
                      interpolation=cv2.INTER_AREA)
    img[120:170, 330:380] = bare
    s = Settings()
    probe = FaceDetector(detector_settings(s), yunet_path)
    small = [f for f in probe.detect(img, narrowest=s.detector.veto_face) if f.box[0] > 300]
    assert len(small) == 1 and s.detector.veto_face <= small[0].width < s.detector.min_face, small
    assert classifier.classify_face(img, small[0].box).label == "without_mask"
    assert not [f for f in probe.detect(img) if f.box[0] > 300]  # min_face alone drops it
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), img)

    def replay(veto_face: int) -> Run:
        s = settings(detector={"veto_face": veto_face})
        return run(s, ReplaySource([path], 10, hold=30, realtime=False),
                   FaceDetector(detector_settings(s), yunet_path), classifier)

    shut = replay(s.detector.veto_face)
    assert not shut.triggers() and not any(shut.pin("relay")) and not any(shut.pin("buzzer"))
    assert all(r.decision.state == "checking" and r.decision.detail == VETO_DETAIL for r in shut.results[5:])
    assert all(len(r.faces) == 1 and r.faces[0].label == "with_mask" for r in shut.results[5:])  # not tracked
    assert shut.pipeline.stats.vetoes >= 20
    opened = replay(s.detector.min_face)  # veto_face = min_face: off
    assert opened.triggers() == ["open"] and any(opened.pin("relay"))
    assert opened.pipeline.stats.vetoes == 0


def test_overlapping_search_windows_keep_the_higher_scoring_box_of_a_face_found_twice(
        detector: FaceDetector, classifier: Classifier) -> None:
    """Two people side by side get two windows that overlap; a window that cuts the face finds it with a
    worse box and a lower score, and whichever window is searched first, the better box is kept."""
    face = (200, 100, 80, 90)

    class WindowView:
        """The face as a detector sees it through each window: whole (score 0.9) or cut (its visible
        part, score 0.5), at the window's coordinates."""

        settings = detector.settings
        offsets: list[tuple[int, int]] = []

        def detect(self, img: Any, **_kw: Any) -> list[Face]:
            ox, oy = self.offsets.pop(0)
            x0, y0 = max(face[0], ox), max(face[1], oy)
            x1 = min(face[0] + face[2], ox + img.shape[1])
            y1 = min(face[1] + face[3], oy + img.shape[0])
            if x1 <= x0 or y1 <= y0:
                return []
            whole = (x0, y0, x1, y1) == (face[0], face[1], face[0] + face[2], face[1] + face[3])
            return [Face((x0 - ox, y0 - oy, x1 - x0, y1 - y0), 0.9 if whole else 0.5)]

    view = WindowView()
    frame = np.zeros((H, W, 3), np.uint8)
    s = settings()
    p = Pipeline(s, FrameList([]), view, classifier, Outputs(s.outputs, MockFactory(), mode=s.decision.mode))  # type: ignore[arg-type]
    try:
        whole, cut = (150, 50, 330, 250), (215, 50, 400, 250)  # the second cuts 15 px off the face's left
        for windows in ([cut, whole], [whole, cut]):
            view.offsets = [(w[0], w[1]) for w in windows]
            found = p.finder.detect_windows(frame, windows)
            assert [(f.box, f.score) for f in found] == [(face, 0.9)], windows
    finally:
        p.outputs.close()


def test_a_masked_visitor_first_seen_cut_off_by_the_edge_keeps_one_track_and_opens_in_time(
        faces_dir: Path, detector: FaceDetector, classifier: Classifier) -> None:
    """The benchmark's test door, seed 0 (held-out test faces at 640x480): the fifth visitor
    (fm12k_02242) is first found cut off by the frame's right edge. The whole face's box, a frame
    later, used to start a second track, and the first one, left with one vote, kept the door waiting
    for its 1 s timeout (opened 1.1 s after the face was fully in view). Now the face keeps one track
    (similar heights), and the door opens within the 0.5 s target."""
    from maskgate.bundle import load_bundle, split_heads

    w, h = 640, 480
    labels = ["with_mask", "without_mask"] * 2 + ["with_mask"]
    src = SyntheticDoor(faces_dir, w, h, 10, script=[[lab] for lab in labels], seed=0, realtime=False,
                        start_wall=0.0, heads=split_heads(load_bundle(None), "test"))
    r = run(Settings(), src, detector, classifier)
    visit = src.visits_until(0)[4]
    assert visit.people[0].image.name == "fm12k_02242.jpg"
    in_view = next(i for i in range(visit.start, visit.end) if any(
        t.box[0] > 0 and t.box[0] + t.box[2] < w and t.box[2] >= 48 for t in truth_at(src, i)))
    opened = [res.frame for res in r.results if visit.start <= res.frame < visit.end and res.decision.trigger == "open"]
    tracks = {v.id for res in r.results if visit.start <= res.frame < visit.end for v in res.decision.tracks}
    first = next(t for i in range(visit.start, visit.end) for t in truth_at(src, i))
    assert first.box[0] + first.box[2] >= w  # it did come in across the right edge
    assert len(tracks) == 1  # the cut-off first box and the whole face: one person, one track
    assert opened and (opened[0] - in_view) / 10 <= 0.5, (in_view, opened)
    assert r.pin("relay").count(True) >= 1


def test_a_person_standing_at_the_door_opens_it_once(faces_dir: Path, detector: FaceDetector,
                                                      classifier: Classifier) -> None:
    """The status page's standing visitor: walking in, the face gets two tracks (its first, smaller box
    and the whole face); the first, left out once a search no longer found it, is found again after
    the door opened. It opened with the door: one opening, not a second pulse for the same person."""
    from http_gate import standing_door

    s = settings(decision={"cooldown": 3600.0})
    src = standing_door(faces_dir, seconds=8, realtime=False)
    r = run(s, src, detector, classifier, max_frames=60)
    tracks = {v.id for res in r.results for v in res.decision.tracks}
    assert len(tracks) >= 2  # the situation this test is about
    assert r.triggers() == ["open"]
    assert [res.decision.state for res in r.results][-20:] == ["allow"] * 20

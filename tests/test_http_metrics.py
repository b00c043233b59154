"""/metrics parsed with prometheus_client's own parser, every value checked against what the gate did:
Stats, the relay pin's history, the classifier's verdicts. Also the Stats histograms and counters."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory
from prometheus_client.parser import text_string_to_metric_families

from http_gate import request, settings, visitors_door
from maskgate.classifier import Verdict
from maskgate.config import DEFAULT_PINS, OutputSettings
from maskgate.httpd import start_http
from maskgate.metrics import CONTENT_TYPE
from maskgate.outputs import Outputs
from maskgate.pipeline import Pipeline, build_classifier, build_detector
from maskgate.stats import LATENCY_BUCKETS, SCORE_BUCKETS, STAGES, Histogram, Stats


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return m[(name, tuple(sorted(labels.items())))]


def test_metrics_match_what_the_gate_did(yunet_path: Path, faces_dir: Path) -> None:
    s = settings(yunet=yunet_path, http={"enabled": True, "port": 0}, outputs={"relay_pulse": 0.2},
                 decision={"cooldown": 1.0})
    stats = Stats()
    server = start_http(s, stats)
    factory = MockFactory()
    outputs = Outputs(s.outputs, factory)
    classifier = build_classifier(s)
    verdicts: list[Verdict] = []
    classify = classifier.classify

    def counted(x: Any, *where: Any) -> Verdict:
        v = classify(x, *where)
        verdicts.append(v)
        return v

    classifier.classify = counted  # type: ignore[method-assign]
    src = visitors_door(faces_dir, 4)
    src.open()
    p = Pipeline(s, src, build_detector(s), classifier, outputs, stats=stats, observers=server.board.observers())
    server.board.attach(p)
    try:
        p.run()
        outputs.safe()
        r = request(server.address, path="/metrics")
    finally:
        outputs.close()
        server.close()
    assert r.status == 200 and r.headers["content-type"] == CONTENT_TYPE
    m = samples(r.text)
    snap = stats.snapshot()

    assert value(m, "maskgate_frames_total") == snap["frames"] == src.total_frames
    assert value(m, "maskgate_frames_dropped_total") == 0 and value(m, "maskgate_frames_bad_total") == 0
    relay = [bool(x.state) for x in factory.pin(DEFAULT_PINS["relay"]).states]
    rises = sum(1 for a, b in zip(relay, relay[1:], strict=False) if b and not a)
    assert rises >= 1 and value(m, "maskgate_relay_pulses_total") == rises == snap["relay_pulses"]
    assert value(m, "maskgate_camera_reconnects_total") == 0
    # decisions by outcome and reason = the actions the gate fired
    assert value(m, "maskgate_decisions_total", outcome="allow", reason="") == stats.triggers["open"]
    denies = sum(value(m, "maskgate_decisions_total", outcome="deny", reason=why)
                 for why in ("without_mask", "incorrect_mask"))
    assert denies == stats.triggers["alarm"] and denies >= 1
    assert value(m, "maskgate_decisions_total", outcome="fault", reason="camera") == 0
    per_state = {d: value(m, "maskgate_frame_decisions_total", decision=d) for d in snap["decisions"]}
    assert per_state == snap["decisions"] and sum(per_state.values()) == snap["frames"]
    # the current state is one-hot
    assert sum(v for (name, _), v in m.items() if name == "maskgate_decision_state") == 1
    # per-stage latency histograms: cumulative, ending in +Inf = count, one observation per timed stage
    for stage in STAGES:
        buckets = [value(m, "maskgate_stage_latency_seconds_bucket", stage=stage, le=str(b))
                   for b in LATENCY_BUCKETS] + [value(m, "maskgate_stage_latency_seconds_bucket", stage=stage,
                                                      le="+Inf")]
        assert buckets == sorted(buckets)
        assert buckets[-1] == value(m, "maskgate_stage_latency_seconds_count", stage=stage) \
            == stats.stages[stage].count > 0
        assert math.isclose(value(m, "maskgate_stage_latency_seconds_sum", stage=stage), stats.stages[stage].total,
                            rel_tol=1e-9)
    # every read is timed, the last one too (it found the end of the door)
    assert value(m, "maskgate_stage_latency_seconds_count", stage="capture") == snap["frames"] + 1
    # classifier score histograms: exactly the verdicts the classifier returned, per label
    by_label = Counter(v.label for v in verdicts)
    assert by_label["with_mask"] >= 1 and by_label["without_mask"] >= 1
    for label in ("with_mask", "without_mask", "incorrect_mask", *by_label):
        assert value(m, "maskgate_classifier_score_count", label=label) == by_label[label]
        for b in SCORE_BUCKETS:
            want = sum(1 for v in verdicts if v.label == label and v.score <= b)
            assert value(m, "maskgate_classifier_score_bucket", label=label, le=str(b)) == want, (label, b)
    info = [dict(lab) for (name, lab), v in m.items() if name == "maskgate_info" and v == 1]
    assert len(info) == 1
    assert info[0]["runtime"] == classifier.runtime and info[0]["delegate"] == "cpu"
    assert info[0]["model_sha256"] == classifier.bundle.manifest["sha256"] and info[0]["model"] == "default"


def test_histogram_buckets_and_counters() -> None:
    h = Histogram((0.1, 0.5, 1.0))
    for v in (0.05, 0.1, 0.3, 0.99, 1.0, 7.0):
        h.observe(v)
    assert h.cumulative() == [(0.1, 2), (0.5, 3), (1.0, 5), (math.inf, 6)]
    assert h.count == 6 and math.isclose(h.sum, 9.44)
    st = Stats()
    st.stage("detect", 0.003)
    st.stage("detect", 0.2)
    st.score("with_mask", 0.97)
    st.count("camera_reconnects")
    stages, scores = st.histograms()
    assert stages["detect"].cumulative()[3] == (0.005, 1) and stages["detect"].count == 2
    assert scores["with_mask"].counts[SCORE_BUCKETS.index(0.99)] == 1
    snap = st.snapshot()
    assert snap["camera_reconnects"] == 1 and snap["scores"]["with_mask"] == {"count": 1, "mean": 0.97}
    stages["detect"].observe(1.0)  # a copy: the live histogram is untouched
    assert st.histograms()[0]["detect"].count == 2


def test_relay_pulses_are_counted_when_a_pulse_starts() -> None:
    factory = MockFactory()
    out = Outputs(OutputSettings(relay_pulse=5.0), factory)
    seen: list[int] = []
    out.on_pulse.append(lambda: seen.append(out.pulses))
    try:
        out.pulse()
        out.pulse()  # extends the open pulse: not a new one
        out.relay_off()
        out.pulse()
    finally:
        out.close()
    assert out.pulses == 2 and seen == [1, 2]
    assert [bool(s.state) for s in factory.pin(DEFAULT_PINS["relay"]).states] == [False, True, False, True, False]

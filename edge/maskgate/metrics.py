"""``/metrics``: the gate's counters and histograms in the Prometheus text format 0.0.4, written here
(no prometheus_client at run time). Every value comes from one ``Stats`` copy taken under its lock."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .config import DECISIONS, LABELS
from .stats import SCORE_BUCKETS, Histogram

if TYPE_CHECKING:
    from .status import StatusBoard

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

KNOWN_OUTCOMES = (("allow", ""), ("deny", "without_mask"), ("deny", "incorrect_mask"), ("fault", "camera"),
                  ("fault", "model"), ("fault", "frames"))
"""Series written even at zero, so rate() works from the first scrape; other reasons appear when seen."""


def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _num(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return repr(float(v))


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items()) + "}"


class Exposition:
    """Builds the text: ``# HELP``/``# TYPE`` once per family, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, doc: str,
               samples: Iterable[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(doc)}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_num(value)}")

    def histogram(self, name: str, doc: str, label: str, hists: dict[str, Histogram]) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(doc)}")
        self.lines.append(f"# TYPE {name} histogram")
        for key, h in hists.items():
            for bound, n in h.cumulative():
                le = "+Inf" if math.isinf(bound) else repr(float(bound))
                self.lines.append(f"{name}_bucket{_labels({label: key, 'le': le})} {n}")
            self.lines.append(f"{name}_sum{_labels({label: key})} {_num(h.sum)}")
            self.lines.append(f"{name}_count{_labels({label: key})} {h.count}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(board: StatusBoard) -> str:
    """The whole /metrics page."""
    stats = board.stats
    snap = stats.snapshot()
    stage_hists, score_hists = stats.histograms()
    for label in LABELS:
        score_hists.setdefault(label, Histogram(SCORE_BUCKETS))
    ok, _ = board.health()
    latest = board.latest()
    state = latest.decision.state if latest is not None else None
    e = Exposition()
    e.family("maskgate_info", "gauge", "maskgate version, classifier model, runtime and delegate",
             [(board.info(), 1)])
    e.family("maskgate_healthy", "gauge", "1 when frames flow and the models are loaded (as /healthz)",
             [({}, ok)])
    e.family("maskgate_uptime_seconds", "gauge", "seconds since the gate started", [({}, snap["uptime_s"])])
    e.family("maskgate_frames_per_second", "gauge", "frames processed per second over the last frames",
             [({}, snap["recent_fps"])])
    age = snap["since_last_frame_s"]
    e.family("maskgate_last_frame_age_seconds", "gauge", "seconds since the last processed frame "
             "(-1 before the first)", [({}, -1.0 if age is None else age)])
    e.family("maskgate_decision_state", "gauge", "the current decision (1 for the current state)",
             [({"state": d}, d == state) for d in DECISIONS])
    counters = [
        ("maskgate_frames_total", "frames processed", snap["frames"]),
        ("maskgate_frames_dropped_total", "frames the camera delivered that the loop skipped (stale)",
         snap["dropped"]),
        ("maskgate_frames_bad_total", "unreadable frames skipped", snap["bad_frames"]),
        ("maskgate_frame_errors_total", "frames whose processing failed (skipped)", snap["errors"]),
        ("maskgate_faces_total", "faces in the doorway, summed over frames", snap["faces"]),
        ("maskgate_faults_total", "fault reports (camera, model, frames); relay forced off", snap["faults"]),
        ("maskgate_frames_colourless_total", "frames without colour (mono or night mode) or too dark to see "
         "anyone; a long run is a camera fault", snap["colourless_frames"]),
        ("maskgate_frame_size_changes_total", "times the camera's frame size changed and the gate followed it",
         snap["size_changes"]),
        ("maskgate_door_vetoes_total", "searched frames on which the door would have opened but waited: a face "
         "narrower than detector.min_face in the doorway was judged bare or wrongly masked", snap["vetoes"]),
        ("maskgate_second_looks_total", "faces the second opinion looked at: before a vote that would sound the "
         "alarm, and (classifier.second_opinion = door) on masked votes too weak to count", snap["second_looks"]),
        ("maskgate_alarms_held_total", "votes that would have sounded the alarm which the second opinion turned "
         "uncertain (it saw a mask)", snap["alarms_held"]),
        ("maskgate_masks_confirmed_total", "masked votes too weak to count which the second opinion confirmed "
         "(it is sure of a mask too): they counted as masked", snap["masks_confirmed"]),
        ("maskgate_relay_pulses_total", "door relay pulses started (door opened)", snap["relay_pulses"]),
        ("maskgate_camera_reconnects_total", "times the frame source was reopened after failing",
         snap["camera_reconnects"]),
        ("maskgate_config_reloads_total", "successful configuration reloads (SIGHUP)", snap["reloads"]),
        ("maskgate_staff_button_presses_total", "staff button presses", snap["button_presses"]),
    ]
    for name, doc, value in counters:
        e.family(name, "counter", doc, [({}, value)])
    per_state = dict(snap["decisions"])
    e.family("maskgate_frame_decisions_total", "counter", "frames by decision state",
             [({"decision": d}, per_state.get(d, 0)) for d in (*DECISIONS, *sorted(set(per_state) - set(DECISIONS)))])
    outcomes = {(o["outcome"], o["reason"] or ""): o["count"] for o in snap["outcomes"]}
    keys = list(KNOWN_OUTCOMES) + sorted(set(outcomes) - set(KNOWN_OUTCOMES))
    e.family("maskgate_decisions_total", "counter", "door decisions (allow: door opened, deny: buzzer) and "
             "fault starts, by outcome and reason",
             [({"outcome": o, "reason": r}, outcomes.get((o, r), 0)) for o, r in keys])
    e.histogram("maskgate_stage_latency_seconds", "time per frame in each pipeline stage", "stage", stage_hists)
    e.histogram("maskgate_classifier_score", "classifier verdict scores by predicted label (drift shows as "
                "a shift to lower scores)", "label", dict(sorted(score_hists.items())))
    return e.text()

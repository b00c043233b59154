"""The bench's conclusions and its printed report: a plain verdict, settings derived from the
measurements, tables for a terminal, and the Markdown table of the ``--json`` fields."""

from __future__ import annotations

import math
from typing import Any

from .bench import DOORWAY_ROI, BenchReport, PipelineResult, ScalingRow, Suggestion, schema_objects
from .config import Settings

HEADROOM = 2.0
"""A frame budget used at most half (p95) leaves room for a busy moment, the camera and the OS."""


def _interval_ms(report: BenchReport) -> float:
    return 1000.0 / report.camera_fps


def keeps_up(r: PipelineResult, interval_ms: float) -> bool:
    """95% of frames are done before the next camera frame arrives."""
    return r.frame_ms.p95_ms <= interval_ms


def _acc(r: PipelineResult) -> str:
    if r.accuracy is None:
        return r.accuracy_note or "n/a"
    return f"{r.accuracy.value:.1%} ({r.accuracy.right}/{r.accuracy.total})"


def _keeping_up(r: PipelineResult, fps: float, interval: float) -> str:
    """Whether the gate keeps up with the camera, and the numbers that say so."""
    p95, med = r.frame_ms.p95_ms, r.frame_ms.median_ms
    if p95 <= interval:
        return (f"keeps up with a {fps:g} fps camera: 95% of frames take at most {p95:.1f} ms of the {interval:.0f} ms "
                f"between frames (median {r.fps:.0f} frames/s; enough for a camera of up to about "
                f"{1000.0 / p95:.0f} fps)")
    if med <= interval:
        return (f"keeps up with a {fps:g} fps camera on most frames: the median frame takes {med:.1f} ms, but 5% take "
                f"longer than {p95:.0f} ms, more than the {interval:.0f} ms between frames, so now and then a frame "
                "is dropped (the gate always takes the newest)")
    return (f"does not keep up with a {fps:g} fps camera: the median frame takes {med:.0f} ms, more than the "
            f"{interval:.0f} ms between frames, so the gate analyses about {min(1.0, r.fps / fps):.0%} of the "
            "camera's frames (always the newest; the rest are dropped)")


def verdict(report: BenchReport) -> list[str]:
    """Plain sentences from the numbers: does this machine keep up, what threads buy, how the others compare."""
    out: list[str] = []
    interval = _interval_ms(report)
    base = report.threads[0]
    m = report.machine
    if report.quick:
        out.append("Quick run (few frames): the numbers are indicative only; run without --quick to quote them.")
    load = max((v for v in (m.load_start, m.load_end) if v is not None), default=None)
    if load is not None and load > m.cores:
        out.append(f"The machine was busy with other work (load average up to {load:.1f} on {m.cores} cores): every "
                   "number is slower and noisier than on an idle machine; rerun when it is idle, or with --rounds.")
    out.append(f"With 1 thread, this {m.machine} machine ({m.cpu}, {m.cores} cores) "
               + _keeping_up(base, report.camera_fps, interval) + ".")
    for r in report.threads[1:]:
        gain = r.fps / base.fps - 1.0
        out.append(f"With {r.threads} threads it {_keeping_up(r, report.camera_fps, interval)}; "
                   f"{gain:+.0%} frames/s against 1 thread.")
    if report.compare:
        parts = []
        for r in report.compare:
            assert r.vs_default is not None
            acc = "" if r.accuracy is None else f", {r.accuracy.value:.0%} right vs maskgate's {_acc(base)}"
            parts.append(f"{r.name} {r.vs_default.fps:.2f}x the frames/s (fastest frame "
                         f"{r.vs_default.fastest_frame:.2f}x){acc}")
        out.append("On the same frames with 1 thread, against maskgate's default: " + "; ".join(parts) + ".")
    out.extend(_scaling_sentences(report.scaling))
    return out


def _per_face_ms(r: PipelineResult) -> float:
    """The part of a frame's cost that grows with faces: crop, classify, tracking and decision."""
    return r.stages["preprocess"].mean_ms + r.stages["classify"].mean_ms + r.stages["decide"].mean_ms


def _classify_ms(r: PipelineResult) -> float:
    return r.stages["preprocess"].mean_ms + r.stages["classify"].mean_ms


def _scaling_sentences(rows: list[ScalingRow]) -> list[str]:
    out = []
    faces = [s.result for s in rows if s.axis == "faces"]
    if len(faces) >= 2 and faces[-1].faces_per_frame > faces[0].faces_per_frame:
        a, b = faces[0], faces[-1]
        per_face = (_per_face_ms(b) - _per_face_ms(a)) / (b.faces_per_frame - a.faces_per_frame)
        detect = ", ".join(f"{r.stages['detect'].median_ms or 0:.1f}" for r in faces)
        out.append(f"Each extra face found costs about {per_face:.2f} ms per frame in crop, classify and decide "
                   f"({a.faces_per_frame:.1f} faces: {_per_face_ms(a):.2f} ms; {b.faces_per_frame:.1f} faces: "
                   f"{_per_face_ms(b):.2f} ms); detection's median is {detect} ms with "
                   f"{', '.join(str(r.people) for r in rows if r.axis == 'faces')} people in view.")
        people = [s for s in rows if s.axis == "faces"][-1].people
        if b.faces_per_frame < 0.75 * people:
            out.append(f"With {people} people side by side the detector found {b.faces_per_frame:.1f} faces per "
                       "frame: small masked faces are missed (a higher detector.max_side finds more, at a cost).")
    sizes = [s for s in rows if s.axis == "size"]
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        diffs = {k: hi.result.stages[k].mean_ms - lo.result.stages[k].mean_ms for k in hi.result.stages}
        top = max(diffs, key=lambda k: diffs[k])
        out.append(f"A {hi.width}x{hi.height} frame costs {hi.result.frame_ms.median_ms:.1f} ms against "
                   f"{lo.result.frame_ms.median_ms:.1f} ms at {lo.width}x{lo.height} (median); most of the difference "
                   f"is {top} (+{diffs[top]:.1f} ms).")
    return out


def suggestions(report: BenchReport, s: Settings) -> list[Suggestion]:
    """Threads, detector.max_side, detector.every and ROI, each with the measurement behind it."""
    interval = _interval_ms(report)
    base = report.threads[0]
    out: list[Suggestion] = []
    best = max(report.threads, key=lambda r: r.fps)
    if base.frame_ms.p95_ms * HEADROOM <= interval:
        extra = (f"; {best.threads} threads add {best.fps / base.fps - 1:+.0%}" if best is not base else "")
        out.append(Suggestion("classifier.threads", 1,
                              f"1 thread uses {base.frame_ms.p95_ms / interval:.0%} of the frame budget (p95) at "
                              f"{report.camera_fps:g} fps, leaving the other cores to the camera and the system"
                              + extra))
        chosen = base
    elif best.fps >= 1.1 * base.fps:
        out.append(Suggestion("classifier.threads", best.threads,
                              f"{best.fps / base.fps - 1:+.0%} frames/s against 1 thread "
                              f"({best.fps:.0f} vs {base.fps:.0f})"))
        chosen = best
    else:
        others = ", ".join(f"{r.threads} threads {r.fps / base.fps - 1:+.0%}" for r in report.threads[1:])
        out.append(Suggestion("classifier.threads", 1, f"more threads did not pay: frames/s against 1 thread: "
                                                       f"{others or 'only 1 thread measured'}"))
        chosen = base
    slow = not keeps_up(chosen, interval)
    # Tuning rows were measured with 1 thread; scale them by what the chosen thread count gained.
    factor = chosen.frame_ms.p95_ms / base.frame_ms.p95_ms
    rows = {tuple(sorted(r.settings)): r for r in report.tuning}

    def row(*keys: str) -> PipelineResult | None:
        return rows.get(tuple(sorted(keys)))

    def trade(r: PipelineResult) -> str:
        acc = "" if r.accuracy is None or base.accuracy is None else \
            f", accuracy {r.accuracy.value:.1%} vs {base.accuracy.value:.1%}"
        return (f"{r.frame_ms.median_ms:.1f} ms vs {base.frame_ms.median_ms:.1f} ms per frame "
                f"({r.fps / base.fps - 1:+.0%} frames/s){acc}, 1 thread")

    if not slow:
        for key, current in (("detector.max_side", s.detector.max_side), ("detector.every", s.detector.every)):
            r = row(key)
            why = f"keeps up as it is at {report.camera_fps:g} fps"
            out.append(Suggestion(key, current, why + (f"; the alternative measured {trade(r)}" if r else "")))
        roi = row("detector.roi")
        if roi is not None and roi.fps > 1.05 * base.fps and not _worse(roi, base):
            out.append(Suggestion("detector.roi", list(DOORWAY_ROI),
                                  f"if the doorway is the middle 60% of the picture: {trade(roi)}; faces outside "
                                  "it (passers-by) are ignored"))
        else:
            out.append(Suggestion("detector.roi", list(s.detector.roi),
                                  "the doorway ROI measured " + trade(roi) if roi else "already restricted"))
        return out
    # Too slow: the change that keeps up with the least accuracy lost, else the fastest.
    fits = [r for r in report.tuning if r.frame_ms.p95_ms * factor <= interval]
    if fits:
        pick = max(fits, key=lambda r: (r.accuracy.value if r.accuracy else 0.0, -len(r.settings), r.fps))
        why = f"needed to keep up with {report.camera_fps:g} fps: {trade(pick)}"
    elif report.tuning:
        pick = max(report.tuning, key=lambda r: r.fps)
        cam = max(1, math.floor(1000.0 / (pick.frame_ms.p95_ms * factor)))
        why = (f"the fastest measured setting ({trade(pick)}) still does not keep up with {report.camera_fps:g} fps; "
               f"it keeps up with about {cam} fps")
        out.append(Suggestion("source.fps", cam, f"the camera rate this machine keeps up with: {why}"))
    else:
        return out
    for key, value in pick.settings.items():
        out.append(Suggestion(key, list(value) if isinstance(value, tuple) else value, why))
    return out


def _worse(r: PipelineResult, base: PipelineResult) -> bool:
    return r.accuracy is not None and base.accuracy is not None and r.accuracy.value < base.accuracy.value - 0.01


# -- text ----------------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return ["  " + fmt.format(*header)] + ["  " + fmt.format(*r) for r in rows]


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def render_text(report: BenchReport) -> str:
    m, f = report.machine, report.frames
    base = report.threads[0]
    lines = [f"maskgate bench on {m.machine}: {m.cpu}, {m.cores} cores, {m.memory_mb or '?'} MiB; Python {m.python}, "
             f"OpenCV {m.opencv}, {m.runtime} {m.runtime_version} ({m.delegate})",
             f"frames: {f.description}; {f.count} measured after {f.warmup} warm-up, {f.encoding}",
             f"load average {m.load_start} at the start, {m.load_end} at the end",
             f"config: {report.config}; camera {report.camera_fps:g} fps (a frame every "
             f"{_interval_ms(report):.0f} ms)", "",
             "Stages, maskgate as configured, 1 thread (ms; mean per frame counts 0 where a stage did not run):"]
    rows = [[k, _ms(v.mean_ms), _ms(v.median_ms), _ms(v.p95_ms), _ms(v.min_ms), str(v.runs)]
            for k, v in base.stages.items()]
    fr = base.frame_ms
    rows.append(["frame", _ms(fr.mean_ms), _ms(fr.median_ms), _ms(fr.p95_ms), _ms(fr.min_ms), str(base.frames)])
    lines += _table(["stage", "mean", "median", "p95", "min", "runs"], rows)
    lines += ["", f"Threads ({base.faces_per_frame:.2f} faces per frame; accuracy {_acc(base)}):"]
    lines += _table(["threads", "frames/s", "median ms", "p95 ms", "classify ms/face", "peak MiB"],
                    [[str(r.threads), f"{r.fps:.1f}", _ms(r.frame_ms.median_ms), _ms(r.frame_ms.p95_ms),
                      _ms(r.classify_ms_per_face), f"{r.peak_rss_mb:.0f}"] for r in report.threads])
    if report.tuning:
        lines += ["", "Tuning (1 thread, one change each):"]
        lines += _table(["change", "frames/s", "median ms", "p95 ms", "accuracy"],
                        [["as configured", f"{base.fps:.1f}", _ms(base.frame_ms.median_ms),
                          _ms(base.frame_ms.p95_ms), _acc(base)]]
                        + [[r.description, f"{r.fps:.1f}", _ms(r.frame_ms.median_ms), _ms(r.frame_ms.p95_ms), _acc(r)]
                           for r in report.tuning])
    if report.scaling:
        lines += ["", "Scaling (1 thread, synthetic door):"]
        lines += _table(["people", "size", "faces/frame", "frames/s", "median ms", "p95 ms", "decode", "detect",
                         "crop+classify", "ms/face"],
                        [[str(s.people), f"{s.width}x{s.height}", f"{s.result.faces_per_frame:.2f}",
                          f"{s.result.fps:.1f}", _ms(s.result.frame_ms.median_ms), _ms(s.result.frame_ms.p95_ms),
                          _ms(s.result.stages["decode"].mean_ms), _ms(s.result.stages["detect"].mean_ms),
                          _ms(_classify_ms(s.result)), _ms(s.result.classify_ms_per_face)]
                         for s in report.scaling])
    elif report.scaling_note:
        lines += ["", f"Scaling: not measured ({report.scaling_note})."]
    if report.compare or report.compare_missing:
        lines += ["", "Compare (1 thread, same frames; ratios to maskgate's default):"]
        rows = [["maskgate (default)", f"{base.fps:.1f}", "1.00", _ms(base.frame_ms.min_ms), "1.00",
                 _ms(base.classify_ms_per_face), "1.00", f"{base.peak_rss_mb:.0f}", _acc(base)]]
        for r in report.compare:
            v = r.vs_default
            assert v is not None
            rows.append([r.name, f"{r.fps:.1f}", f"{v.fps:.2f}", _ms(r.frame_ms.min_ms), f"{v.fastest_frame:.2f}",
                         _ms(r.classify_ms_per_face), _ratio(v.classify_per_face), f"{r.peak_rss_mb:.0f}", _acc(r)])
        lines += _table(["pipeline", "frames/s", "x fps", "fastest ms", "x fastest", "classify ms/face", "x per face",
                         "peak MiB", "accuracy"], rows)
        for r in report.compare:
            lines.append(f"  {r.name}: {r.description}")
        for miss in report.compare_missing:
            lines.append(f"  not run: {miss.name}: {miss.reason}")
    lines += ["", "Verdict:"] + [f"  {v}" for v in report.verdict]
    lines += ["", "Suggested settings (maskgate.toml):"]
    for sg in report.suggestions:
        lines.append(f"  {sg.key} = {_toml(sg.value)}    # {sg.why}")
    return "\n".join(lines) + "\n"


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


def schema_markdown() -> str:
    """The ``--json`` fields, one table per object (kept in the README by a test)."""
    lines = []
    for name, doc, rows in schema_objects():
        lines += [f"`{name}`: {doc}", "", "| field | type | meaning |", "| --- | --- | --- |"]
        lines += [f"| `{field}` | {tp} | {desc} |" for field, tp, desc in rows]
        lines.append("")
    return "\n".join(lines).rstrip()

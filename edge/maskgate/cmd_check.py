"""``maskgate check``: a self-test for the installer, with the fix for every failure.

Lights each LED, beeps, clicks the relay only with ``--relay``, reads the staff button, grabs a
frame from the configured camera, and runs detection and classification on it. Prints a pass/fail
table; the exit status is 1 if anything failed.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import DEFAULT_CONFIG_PATH, Settings, resolve_config
from .errors import MaskgateError
from .outputs import Outputs
from .sources import FrameSource, make_source, source_settings_for

if TYPE_CHECKING:
    from .detector import Face

log = logging.getLogger(__name__)

PASS, FAIL, SKIP = "pass", "FAIL", "skip"


@dataclass(frozen=True)
class CheckResult:
    name: str
    result: str
    detail: str
    fix: str = ""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="self-test: LEDs, buzzer, relay (--relay), button, camera, models")
    p.add_argument("--config", type=Path, default=None, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    p.add_argument("--relay", action="store_true", help="also click the door relay (the door unlocks briefly)")
    p.add_argument("--source", default=None, help="test this source instead of the configured one")
    p.add_argument("--button-wait", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for a press of the staff button")
    p.set_defaults(func=run)


def _blink(name: str, device: Any, seconds: float) -> CheckResult:
    device.on()
    on = bool(device.value)
    time.sleep(seconds)
    device.off()
    off = not device.value
    if on and off:
        return CheckResult(name, PASS, f"on for {seconds:.1f} s, then off: did you see/hear it?",
                           "if not: check the wiring against hardware/pinmap.csv and the part's polarity")
    return CheckResult(name, FAIL, "the pin did not follow", "check outputs.pins and that nothing else uses the pin")


def check_outputs(out: Outputs, relay: bool, button_wait: float, seconds: float = 0.5) -> list[CheckResult]:
    res = [_blink("green LED", out.green, seconds), _blink("red LED", out.red, seconds),
           _blink("buzzer", out.buzzer, min(seconds, 0.2))]
    if relay:
        out.pulse(seconds)
        opened = out.relay_on
        deadline = time.monotonic() + seconds + 2.0
        while out.relay_on and time.monotonic() < deadline:
            time.sleep(0.02)
        closed = not out.relay_on
        out.relay_off()
        if opened and closed:
            res.append(CheckResult("door relay", PASS, f"clicked for {seconds:.1f} s and released",
                                   "no click or the strike did not move: see hardware/README.md (relay, "
                                   "active-low boards: outputs.relay_active_high = false)"))
        else:
            res.append(CheckResult("door relay", FAIL, "the relay did not switch on and off",
                                   "check outputs.pins.relay and outputs.relay_active_high"))
    else:
        res.append(CheckResult("door relay", SKIP, "not clicked", "run with --relay to test the door strike"))
    if out.button is None:
        res.append(CheckResult("staff button", SKIP, "outputs.button = false", ""))
    elif button_wait > 0:
        pressed = out.button.wait_for_press(timeout=button_wait)
        res.append(CheckResult("staff button", PASS if pressed else FAIL,
                               "press seen" if pressed else f"no press within {button_wait:.0f} s",
                               "" if pressed else "button between the pin and GND (internal pull-up)?"))
    elif out.button.is_pressed:
        res.append(CheckResult("staff button", FAIL, "reads pressed while nobody presses it",
                               "a button to 3.3 V instead of GND, or a short: see hardware/README.md"))
    else:
        res.append(CheckResult("staff button", PASS, "reads released", "use --button-wait 10 to test a press"))
    return res


def check_pipeline(settings: Settings, source: FrameSource | None = None) -> list[CheckResult]:
    from .pipeline import build_classifier, build_detector
    from .second_opinion import DENY, DOOR, SecondOpinion

    res: list[CheckResult] = []
    src = source
    frame = None
    try:
        src = src or make_source(settings.source, realtime=False, visits=1)
        src.open()
        got = src.read()
        if got is None:
            raise MaskgateError("the source delivered no frame")
        frame = got.image
        res.append(CheckResult("camera", PASS, f"{settings.source.type}: one {frame.shape[1]}x{frame.shape[0]} frame"))
    except Exception as exc:  # every camera backend fails its own way; the table must still print
        res.append(CheckResult("camera", FAIL, str(exc),
                               "Pi camera: `rpicam-hello --list-cameras`, ribbon cable, user in group video; "
                               "USB: source.type = \"opencv\", source.device = \"0\""))
    finally:
        if src is not None:
            src.close()
    try:
        detector = build_detector(settings)
        # at full size and down to CHECK_NARROWEST px, so a face the gate would ignore is reported, not unseen
        faces = sorted(detector.detect(frame, full_size=True, narrowest=CHECK_NARROWEST) if frame is not None
                       else [], key=lambda f: f.box[0])
        seen = describe_faces(faces, settings, frame.shape) if frame is not None else "loaded (no frame to search)"
        res.append(CheckResult("face detector", PASS, f"{detector.model_path.name}: {seen}"))
        if frame is not None:
            faces = [f for f in faces if ignored_because(f, settings, frame.shape) is None]
    except MaskgateError as exc:
        return [*res, CheckResult("face detector", FAIL, str(exc), "run `maskgate models fetch` (needs internet once)")]
    try:
        clf = build_classifier(settings)
        verdicts = [clf.classify_face(frame, f.box) for f in faces] if frame is not None else []
        seen = ", ".join(f"{v.label} {v.score:.2f}" for v in verdicts) or "no face to judge"
        what = f"{clf.bundle.name} on {clf.runtime}/{clf.delegate}"
        if isinstance(clf, SecondOpinion):
            when = {DENY: "before an alarm", DOOR: "before an alarm and on weak masked votes"}.get(
                clf.when, f"between scores {clf.band.low} and {clf.band.high}")
            what += f", second opinion {clf.second.bundle.name} on {clf.second.runtime}/{clf.second.delegate} {when}"
        res.append(CheckResult("classifier", PASS, f"{what}: {seen}"))
    except MaskgateError as exc:
        res.append(CheckResult("classifier", FAIL, str(exc), "reinstall maskgate or fix classifier.model"))
    return res


CHECK_NARROWEST = 16
"""The check looks for faces down to this width (px), to say which ones the gate would ignore as too small."""


def ignored_because(face: Face, settings: Settings, shape: tuple[int, ...]) -> str | None:
    """Why the gate would ignore this face of a frame of ``shape`` (too small, outside the doorway
    region), or None when it would judge it."""
    from .finder import in_roi, roi_pixels

    d = settings.detector
    if face.width < d.min_face:
        return f"too small (detector.min_face {d.min_face})"
    if not in_roi(face.box, roi_pixels(d.roi, shape[1], shape[0])):
        return "outside the doorway region (detector.roi)"
    return None


def describe_faces(faces: list[Face], settings: Settings, shape: tuple[int, ...]) -> str:
    """Each face of the check's frame, left to right, as the gate would take it: its width, and whether
    it is judged. When faces are seen but none would be judged, says what to change: an installer aims
    the camera by this line."""
    if not faces:
        return "no face in the frame (stand where customers stop to see what the gate sees)"
    why = [ignored_because(f, settings, shape) for f in faces]
    parts = [f"{f.width} px, " + (f"{w}: ignored" if w else "judged") for f, w in zip(faces, why, strict=True)]
    text = f"{len(faces)} face(s) in the frame, left to right: " + "; ".join(parts)
    if all(why):
        fixes = []
        if any(w and w.startswith("too small") for w in why):
            fixes.append(f"a face must be at least detector.min_face ({settings.detector.min_face}) px wide "
                         "where customers stop: move the camera closer or raise the source resolution")
        if any(w and w.startswith("outside") for w in why):
            fixes.append("its centre must lie inside detector.roi: widen the region or re-aim the camera")
        text += ". The gate would ignore every face here: " + "; ".join(fixes)
    return text


def format_table(results: list[CheckResult]) -> str:
    w = max(len(r.name) for r in results)
    lines = [f"{'check'.ljust(w)}  result  detail"]
    for r in results:
        lines.append(f"{r.name.ljust(w)}  {r.result.ljust(6)}  {r.detail}")
        if r.fix and r.result != PASS:
            lines.append(f"{''.ljust(w)}          fix: {r.fix}")
    return "\n".join(lines)


def run_checks(settings: Settings, *, relay: bool = False, button_wait: float = 0.0, pin_factory: Any = None,
               source: FrameSource | None = None, blink: float = 0.5) -> list[CheckResult]:
    results: list[CheckResult] = []
    try:
        # "advisory" unless the relay may click: then a staff-button press in the test opens nothing.
        out = Outputs(settings.outputs, pin_factory, mode="enforce" if relay else "advisory")
    except MaskgateError as exc:
        results.append(CheckResult("GPIO", FAIL, str(exc), "on a Pi: apt install python3-lgpio; user in group gpio"))
    else:
        try:
            factory = type(out.factory or out.relay.pin_factory).__name__
            results.append(CheckResult("GPIO", PASS, f"pin factory {factory}"))
            results += check_outputs(out, relay, button_wait, blink)
        finally:
            out.close()
    return results + check_pipeline(settings, source)


def run(args: argparse.Namespace) -> int:
    try:
        settings, path = resolve_config(args.config)
    except MaskgateError as exc:
        print(format_table([CheckResult("config", FAIL, str(exc), "fix the file; `maskgate config check` lists "
                                        "every problem")]))
        return 1
    if args.source:
        import dataclasses
        settings = dataclasses.replace(settings, source=source_settings_for(args.source, settings.source))
    results = [CheckResult("config", PASS, str(path) if path else "no config file: built-in defaults"), *run_checks(
        settings, relay=args.relay, button_wait=args.button_wait)]
    print(format_table(results))
    return 1 if any(r.result == FAIL for r in results) else 0

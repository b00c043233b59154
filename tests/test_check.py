"""`maskgate check`: the installer's self-test on mock pins and a replay source."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from maskgate.cmd_check import FAIL, PASS, SKIP, run_checks
from maskgate.config import DEFAULT_PINS, Settings, replace


def _states(factory: MockFactory, pin: int) -> list[bool]:
    return [bool(s.state) for s in factory.pin(pin).states]


def _settings(scenes_dir: Path) -> Settings:
    image = scenes_dir / "images" / "maksssksksss0.jpg"
    return replace(Settings(), source={"type": "replay", "device": str(image)}, outputs={"button": True})


def test_check_lights_beeps_and_leaves_the_relay_alone(scenes_dir: Path) -> None:
    factory = MockFactory()
    res = {r.name: r for r in run_checks(_settings(scenes_dir), pin_factory=factory, blink=0.05)}
    assert [res[n].result for n in ("GPIO", "green LED", "red LED", "buzzer", "staff button", "camera",
                                    "face detector", "classifier")] == [PASS] * 8
    assert res["door relay"].result == SKIP and "--relay" in res["door relay"].fix
    for name in ("green", "red", "buzzer"):
        assert _states(factory, DEFAULT_PINS[name]) == [False, True, False], name
    assert _states(factory, DEFAULT_PINS["relay"]) == [False]
    assert "face(s)" in res["face detector"].detail and "default on" in res["classifier"].detail


def test_check_relay_clicks_only_when_asked_and_waits_for_the_button(scenes_dir: Path) -> None:
    factory = MockFactory()
    press = threading.Timer(0.3, lambda: factory.pin(DEFAULT_PINS["button"]).drive_low())
    press.start()
    res = {r.name: r for r in run_checks(_settings(scenes_dir), pin_factory=factory, blink=0.05, button_wait=10.0)}
    press.join()
    assert res["staff button"].result == PASS and res["staff button"].detail == "press seen"
    assert _states(factory, DEFAULT_PINS["relay"]) == [False]  # without --relay the press opens nothing
    factory = MockFactory()
    res = {r.name: r for r in run_checks(_settings(scenes_dir), pin_factory=factory, relay=True, blink=0.05)}
    assert res["door relay"].result == PASS
    assert _states(factory, DEFAULT_PINS["relay"]) == [False, True, False]
    res2 = {r.name: r for r in run_checks(_settings(scenes_dir), pin_factory=MockFactory(), blink=0.05,
                                          button_wait=0.2)}
    assert res2["staff button"].result == FAIL and "GND" in res2["staff button"].fix


def test_check_cli_reports_a_missing_camera_with_the_fix(tmp_path: Path) -> None:
    cfg = tmp_path / "maskgate.toml"
    cfg.write_text(f'[source]\ntype = "replay"\ndevice = "{tmp_path / "no-such-video.mp4"}"\n'
                   '[outputs]\npin_factory = "mock"\n')
    res = subprocess.run([sys.executable, "-m", "maskgate", "check", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    cam = next(i for i, line in enumerate(lines) if line.startswith("camera"))
    assert FAIL in lines[cam] and "fix:" in lines[cam + 1]
    assert any(line.startswith("green LED") and PASS in line for line in lines)
    assert any(line.startswith("door relay") and SKIP in line for line in lines)


def test_check_says_which_faces_the_gate_would_judge_and_how_to_fix_a_camera_too_far(scenes_dir: Path) -> None:
    """maksssksksss15: a masked face about 66 px wide and one about 36 px (annotations), read as a camera frame.
    The installer sees both, with why the small one would be ignored; only the judged one is classified."""
    image = scenes_dir / "images" / "maksssksksss15.jpg"
    s = replace(Settings(), source={"type": "replay", "device": str(image)})
    res = {r.name: r for r in run_checks(s, pin_factory=MockFactory(), blink=0.01)}
    det, clf = res["face detector"], res["classifier"]
    assert det.result == PASS and "2 face(s) in the frame, left to right" in det.detail, det.detail
    assert det.detail.count("judged") == 1 and det.detail.count("too small (detector.min_face 48): ignored") == 1
    assert "ignore every face" not in det.detail
    assert clf.result == PASS and clf.detail.count("with_mask") == 1, clf.detail  # the judged face only
    # the doorway region drawn on the small face's side only: nobody would be judged, and the line says why
    left = replace(s, detector={"roi": [0.0, 0.0, 0.3, 1.0]})
    det = {r.name: r for r in run_checks(left, pin_factory=MockFactory(), blink=0.01)}["face detector"]
    assert "judged" not in det.detail and "outside the doorway region (detector.roi): ignored" in det.detail
    assert "The gate would ignore every face here" in det.detail
    assert "move the camera closer" in det.detail and "widen the region or re-aim the camera" in det.detail

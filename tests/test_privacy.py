"""Privacy by default: the real daemon (``maskgate run`` in a subprocess) with the default config,
plus only what it needs to run here (a replay of street scenes, mock pins, the detector model's
path), with HOME, TMPDIR, the working directory and the state directory confined to one temporary
root. Every file written anywhere under that root is scanned for images (JPEG, PNG signatures),
frame-sized raw buffers and base64 blobs. With snapshot-on-deny enabled, blurred JPEGs appear only
in the snapshot folder and the retention limit holds."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from maskgate.config import Settings
from maskgate.scenes import SceneFace, read_voc
from maskgate.snapshots import blur_detector, pixelate

# Street scenes where the gate (detector + classifier) denies (bare faces), and one where it opens,
# chosen once by replaying each scene. A blank frame between two scenes (held 1 s, longer than the
# 1 s track timeout) makes each scene a new person, as at a real door; without it the tracker
# would follow one face from photo to photo and the cooldown would hold back the next deny.
DENY_SCENES = ["maksssksksss125", "maksssksksss172", "maksssksksss48", "maksssksksss544", "maksssksksss757"]
ALLOW_SCENE = "maksssksksss146"
FPS, HOLD = 6, 6


def annotated(scenes_dir: Path, name: str) -> tuple[SceneFace, ...]:
    """The scene's annotated faces (ground truth, independent of the detector that blurs)."""
    return read_voc(scenes_dir / "annotations" / f"{name}.xml", scenes_dir / "images").faces

JPEG = b"\xff\xd8\xff"
PNG = b"\x89PNG\r\n\x1a\n"
BASE64 = re.compile(rb"[A-Za-z0-9+/]{256,}={0,2}")


def scene_folder(scenes_dir: Path, dest: Path) -> tuple[Path, int]:
    """The replay folder (outside the confined root): deny scenes with blanks between, then an allow
    scene; returns the folder and the smallest frame's size in bytes (width * height * 3)."""
    dest.mkdir()
    smallest = 1 << 62
    order: list[Path | None] = []
    for name in DENY_SCENES:
        order += [next((scenes_dir / "images").glob(f"{name}.*")), None]
    order.append(next((scenes_dir / "images").glob(f"{ALLOW_SCENE}.*")))
    for i, src in enumerate(order):
        if src is None:
            cv2.imwrite(str(dest / f"{i:02d}_blank.png"), np.full((301, 400, 3), 128, np.uint8))
            continue
        shutil.copy(src, dest / f"{i:02d}_{src.name}")
        img = cv2.imread(str(src))
        smallest = min(smallest, img.shape[0] * img.shape[1] * 3)
    return dest, smallest


def confined_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for d in ("home", "tmp", "work", "state"):
        (root / d).mkdir(parents=True, exist_ok=True)
    return root


def run_daemon(root: Path, scenes: Path, yunet: Path, extra: str = "") -> str:
    """``maskgate run`` with HOME, TMPDIR, the working directory and $STATE_DIRECTORY inside ``root``."""
    cfg = root.parent / "maskgate.toml"  # outside the root: written by the test, not the daemon
    cfg.write_text(f'[source]\ntype = "replay"\ndevice = "{scenes}"\nfps = {FPS}\nhold = {HOLD}\n'
                   f'[detector]\nmodel = "{yunet}"\n[outputs]\npin_factory = "mock"\n{extra}')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "STATE_DIRECTORY", "CREDENTIALS_"))}
    env.update(HOME=str(root / "home"), TMPDIR=str(root / "tmp"), STATE_DIRECTORY=str(root / "state"))
    proc = subprocess.run([sys.executable, "-m", "maskgate", "-v", "run", "--config", str(cfg)], cwd=root / "work",
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def scan(root: Path, frame_bytes: int) -> dict[str, list[str]]:
    """Every file under ``root`` that holds something image-like, by kind."""
    found: dict[str, list[str]] = {"jpeg": [], "png": [], "base64": [], "frame-sized": [], "all": []}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.is_symlink():
                continue
            data = p.read_bytes()
            rel = str(p.relative_to(root))
            found["all"].append(rel)
            if JPEG in data:
                found["jpeg"].append(rel)
            if PNG in data:
                found["png"].append(rel)
            if BASE64.search(data):
                found["base64"].append(rel)
            if len(data) >= frame_bytes:
                found["frame-sized"].append(rel)
    return found


def deny_lines(root: Path) -> list[dict]:
    lines = (root / "state" / "events" / "events.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["outcome"] == "deny"]


def test_default_config_writes_nothing_identifiable(tmp_path: Path, scenes_dir: Path, yunet_path: Path) -> None:
    scenes, frame_bytes = scene_folder(scenes_dir, tmp_path / "scenes")
    root = confined_root(tmp_path)
    stderr = run_daemon(root, scenes, yunet_path)
    found = scan(root, frame_bytes)
    # the daemon did decide, and wrote its decisions: the only file is the event log
    assert len(deny_lines(root)) >= 3, stderr[-2000:]
    assert found["all"] == ["state/events/events.jsonl"], found["all"]
    assert not found["jpeg"] and not found["png"] and not found["base64"] and not found["frame-sized"], found
    # and the event log holds decisions only: no box, no image, no file name
    for line in (root / "state" / "events" / "events.jsonl").read_text().splitlines():
        assert set(json.loads(line)) == {"ts", "outcome", "reason", "confidence", "faces", "track", "mode",
                                         "active", "clock_synced"}


def test_snapshots_are_blurred_confined_and_retained(tmp_path: Path, scenes_dir: Path, yunet_path: Path) -> None:
    scenes, frame_bytes = scene_folder(scenes_dir, tmp_path / "scenes")
    root = confined_root(tmp_path)
    snaps = root / "state" / "snapshots"
    snaps.mkdir()
    old = snaps / "deny-20200101T000000000Z-f1.jpg"  # a month-old snapshot: retention removes it at start
    old.write_bytes(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    month_ago = time.time() - 30 * 86400
    os.utime(old, (month_ago, month_ago))
    (snaps / "notes.txt").write_text("not a snapshot: left alone")
    stderr = run_daemon(root, scenes, yunet_path, "[snapshots]\nenabled = true\nkeep_count = 3\nkeep_days = 7\n")
    assert len(deny_lines(root)) >= 4, stderr[-2000:]
    kept = sorted(p.name for p in snaps.glob("deny-*.jpg"))
    assert len(kept) == 3 and old.name not in kept  # retention: by count and by age
    assert "snapshots: removed" in stderr and (snaps / "notes.txt").exists()
    # images only in the snapshot folder, and nothing else image-like anywhere
    found = scan(root, frame_bytes)
    assert sorted(found["jpeg"]) == [f"state/snapshots/{n}" for n in kept], found
    assert not found["png"] and not found["base64"], found
    assert all(f.startswith("state/snapshots/") for f in found["frame-sized"]), found
    # blurred: every annotated face of the scene in a kept snapshot lost its detail
    images = sorted(scenes.iterdir())
    for name in kept:
        frame = int(re.search(r"-f(\d+)\.jpg$", name).group(1))  # type: ignore[union-attr]
        scene = images[frame // HOLD]
        assert "_maks" in scene.name, (name, scene)
        snap, orig = cv2.imread(str(snaps / name)), cv2.imread(str(scene))
        assert snap.shape == orig.shape
        faces = [f.box for f in annotated(scenes_dir, scene.name.split("_", 1)[1].rsplit(".", 1)[0]) if f.box[2] >= 24]
        assert faces and all(detail(snap, box) < 0.3 * detail(orig, box) for box in faces), name


def detail(img: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Mean absolute Laplacian of a box: the fine detail a face is recognised by."""
    x, y, w, h = box
    return float(np.abs(cv2.Laplacian(cv2.cvtColor(img[y:y + h, x:x + w], cv2.COLOR_BGR2GRAY), cv2.CV_32F)).mean())


def test_pixelate_removes_the_detail_of_every_face_found(scenes_dir: Path, yunet_path: Path) -> None:
    """The snapshot blur on the annotated deny scenes: each annotated face loses most of its detail."""
    detector = blur_detector(dataclasses.replace(Settings(), detector=dataclasses.replace(
        Settings().detector, model=str(yunet_path))))
    for name in DENY_SCENES:
        img = cv2.imread(str(next((scenes_dir / "images").glob(f"{name}.*"))))
        blurred = pixelate(img, [f.box for f in detector.detect(img)])
        for f in annotated(scenes_dir, name):
            assert detail(blurred, f.box) < 0.3 * detail(img, f.box), name


def test_retention_is_enforced_periodically_while_running(tmp_path: Path) -> None:
    """Between snapshots too: every ``prune_every`` seconds of the loop's life, old ones go."""
    from maskgate.config import SnapshotSettings
    from maskgate.decider import Decision
    from maskgate.events import FrameResult
    from maskgate.snapshots import SnapshotSaver

    now, mono = [1_000_000.0], [0.0]
    saver = SnapshotSaver(SnapshotSettings(enabled=True, blur_faces=False, keep_days=1.0, keep_count=10),
                          tmp_path / "snaps", now=lambda: now[0], monotonic=lambda: mono[0], prune_every=600.0)
    img = np.full((120, 160, 3), 90, np.uint8)
    deny = FrameResult(7, now[0], (), Decision(0.0, "deny", "without_mask", (), "alarm"), {}, img)
    saver(deny)
    path = next((tmp_path / "snaps").glob("deny-*.jpg"))
    os.utime(path, (now[0], now[0]))
    idle = FrameResult(8, now[0], (), Decision(0.0, "idle"), {}, img)
    now[0] += 2 * 86400  # two days later, and no deny since
    mono[0] = 599.0
    saver(idle)
    assert path.exists()  # not yet time to look
    mono[0] = 601.0
    saver(idle)
    assert not path.exists() and saver.removed == 1 and saver.saved == 1
    assert "blur=False saved=1" in repr(saver)

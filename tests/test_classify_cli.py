"""`maskgate classify`: verdicts per face, JSON lines, and bad files reported while the rest go on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maskgate", "classify", *args], capture_output=True, text=True,
                          check=False, timeout=300)


def test_classify_json_mixed_directory(tmp_path: Path, scenes_dir: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(scenes_dir / "images" / "maksssksksss0.jpg", d / "a_scene.jpg")
    (d / "b_empty.jpg").write_bytes(b"")
    (d / "c_notes.txt").write_text("not an image")
    img = cv2.imread(str(scenes_dir / "images" / "maksssksksss0.jpg"))
    bgra = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    cv2.imwrite(str(d / "d_alpha.png"), bgra)
    res = _run("--json", str(d))
    assert res.returncode == 0, res.stderr
    lines = [json.loads(s) for s in res.stdout.splitlines()]
    by = {Path(x["image"]).name: x for x in lines}
    assert set(by) == {"a_scene.jpg", "b_empty.jpg", "c_notes.txt", "d_alpha.png"}
    assert "empty file" in by["b_empty.jpg"]["error"]
    assert "not a readable image" in by["c_notes.txt"]["error"]
    faces = by["a_scene.jpg"]["faces"]
    assert len(faces) >= 2
    for f in faces:
        assert f["label"] in ("with_mask", "without_mask", "incorrect_mask")
        assert all(isinstance(v, int) for v in f["box"]) and 0 <= f["score"] <= 1
    assert len(by["d_alpha.png"]["faces"]) == len(faces)


def test_classify_all_unreadable_exits_nonzero(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    res = _run(str(tmp_path / "x.jpg"))
    assert res.returncode == 1
    assert "x.jpg: error:" in res.stdout and "no readable image" in res.stderr

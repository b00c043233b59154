"""`maskgate classify` at the edges: a 12,000 x 12,000 photo (decoded at reduced size, boxes mapped
back to its own pixels, memory bounded), and a folder of bad files: a clear line for each, the rest
processed. Every image is made at test time."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np

from maskgate.detector import DetectorSettings, FaceDetector
from maskgate.scenes import iou, load_scenes

SCENE = "maksssksksss146"  # two masked faces, 65 and 59 px wide, in a 400 x 267 street photo

# Runs `maskgate classify --json` on each argument in turn in one process, and after each run
# reports the process's peak resident memory so far (KiB) on stderr.
_CHILD = ("import resource, sys; from maskgate.cli import main\n"
          "rc = 0\n"
          "for path in sys.argv[1:]:\n"
          "    rc |= main(['classify', '--json', path])\n"
          "    print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr, flush=True)\n"
          "sys.exit(rc)")


def classify(*paths: str) -> tuple[int, list[dict], list[int], str]:
    res = subprocess.run([sys.executable, "-c", _CHILD, *paths], capture_output=True, text=True, timeout=300,
                         check=False)
    rss = [int(line.split()[1]) for line in res.stderr.splitlines() if line.startswith("MAXRSS")]
    return res.returncode, [json.loads(line) for line in res.stdout.splitlines()], rss, res.stderr


def test_a_huge_jpeg_is_decoded_reduced_its_boxes_map_back_and_memory_stays_bounded(
        tmp_path: Path, scenes_dir: Path, yunet_path: Path) -> None:
    scene = next(s for s in load_scenes(scenes_dir) if s.name == SCENE)
    small = cv2.imread(str(scene.image))
    h, w = small.shape[:2]
    side, k = 12_000, 12_000 // w
    assert w * k == side
    oy = (side - h * k) // 2
    canvas = np.empty((side, side, 3), np.uint8)  # gray bands above and below the upscaled photo
    canvas[:oy] = 128
    canvas[oy + h * k:] = 128
    cv2.resize(small, (side, h * k), dst=canvas[oy:oy + h * k], interpolation=cv2.INTER_NEAREST)
    assert cv2.imwrite(str(tmp_path / "huge.jpg"), canvas, [cv2.IMWRITE_JPEG_QUALITY, 85])
    del canvas  # 432 MB: what a full decode of the photo would need
    cv2.imwrite(str(tmp_path / "small.png"), small)

    rc, out, (rss_small, rss_huge), err = classify(str(tmp_path / "small.png"), str(tmp_path / "huge.jpg"))
    assert rc == 0, err
    small_out, huge_out = out[:1], out[1:]

    def scaled(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        return box[0] * k, box[1] * k + oy, box[2] * k, box[3] * k

    found = [tuple(f["box"]) for f in huge_out[0]["faces"]]
    # exactly the detector's boxes on the 1/4-size decode, times 4: mapped to the photo's own pixels
    quarter = cv2.imread(str(tmp_path / "huge.jpg"), cv2.IMREAD_REDUCED_COLOR_4 | cv2.IMREAD_IGNORE_ORIENTATION)
    assert quarter.shape[:2] == (side // 4, side // 4)
    det = FaceDetector(DetectorSettings(max_side=1280), yunet_path)
    expect = {tuple(4 * v for v in f.box) for f in det.detect(quarter)}
    assert found and set(found) <= expect, (found, expect)
    # and on the faces: every annotated face, scaled, sits in a box (the detector sees a blurry 30x
    # upscale here, so its boxes differ from the native photo's by more than rounding)
    assert len(found) == len(small_out[0]["faces"]) >= len(scene.faces) == 2
    for face in scene.faces:
        t = scaled(face.box)
        cx, cy = t[0] + t[2] / 2, t[1] + t[3] / 2
        assert any(b[0] <= cx <= b[0] + b[2] and b[1] <= cy <= b[1] + b[3] and iou(b, t) > 0.35 for b in found)
    for f in small_out[0]["faces"]:
        assert max(iou(scaled(tuple(f["box"])), b) for b in found) > 0.45, (f, found)
    assert {f["label"] for f in huge_out[0]["faces"]} == {f["label"] for f in small_out[0]["faces"]}
    # peak memory: the reduced decode (1/4 per side, 27 MB) instead of the full 432 MB raster
    assert (rss_huge - rss_small) / 1024 < 150, (rss_small, rss_huge)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (and holds one row of data)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 61))
                     + chunk(b"IEND", b""))


def test_bad_files_get_a_clear_line_each_and_the_rest_are_processed(tmp_path: Path, scenes_dir: Path) -> None:
    scene = next(s for s in load_scenes(scenes_dir) if s.name == SCENE)
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    shutil.copy(scene.image, d / "a_good.jpg")
    img = cv2.imread(str(scene.image))
    h, w = img.shape[:2]
    bgra = np.zeros((h + 80, w + 80, 4), np.uint8)  # transparent border, the photo opaque inside
    bgra[40:40 + h, 40:40 + w, :3] = img
    bgra[40:40 + h, 40:40 + w, 3] = 255
    cv2.imwrite(str(d / "b_alpha.png"), bgra)
    (d / "c_empty.jpg").write_bytes(b"")
    (d / "d_notes.txt").write_text("not an image")
    data = (d / "a_good.jpg").read_bytes()
    (d / "sub" / "e_cut.jpg").write_bytes(data[: len(data) // 2])  # a download cut off halfway
    (d / "f_garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    _png_header_only(d / "g_huge.png", 20_000, 20_000)
    rc, out, _rss, err = classify(str(d))
    assert rc == 0, err
    by = {Path(x["image"]).name: x for x in out}
    assert sorted(by) == ["a_good.jpg", "b_alpha.png", "c_empty.jpg", "d_notes.txt", "e_cut.jpg",
                          "f_garbage.png", "g_huge.png"]  # one line per file
    assert "empty file" in by["c_empty.jpg"]["error"]
    assert "not a readable image" in by["d_notes.txt"]["error"]
    assert "not a readable image" in by["f_garbage.png"]["error"]
    assert "20000x20000 PNG is too large to decode safely" in by["g_huge.png"]["error"]
    for name in ("c_empty.jpg", "d_notes.txt", "e_cut.jpg", "f_garbage.png", "g_huge.png"):
        assert by[name]["error"].startswith(str(d)), by[name]  # each error names its file
    good = by["a_good.jpg"]["faces"]
    assert len(good) >= 2
    # alpha flattened onto white: the same faces, shifted by the border
    alpha = [(x - 40, y - 40, bw, bh) for x, y, bw, bh in (f["box"] for f in by["b_alpha.png"]["faces"])]
    assert len(alpha) == len(good)
    for f in good:
        assert max(iou(tuple(f["box"]), b) for b in alpha) > 0.8, (f, alpha)
    assert "not a readable image" in by["e_cut.jpg"]["error"]  # OpenCV refuses a JPEG cut off halfway

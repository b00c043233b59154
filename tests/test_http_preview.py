"""/preview.mjpg on a real running gate: a multipart stream of JPEGs with the face box and the doorway
region drawn, encoded only while someone watches and at most at the preview fps; off by default."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from http_gate import TOKEN, H, W, basic, live_gate, settings, standing_door, wait_until
from maskgate.decider import Decision
from maskgate.events import COLORS, ROI_COLOR, FaceEvent, FrameResult, annotate
from maskgate.preview import BOUNDARY, CONTENT_TYPE

ROI = (0.1, 0.05, 0.9, 0.95)


def near(img: np.ndarray, bgr: tuple[int, int, int], tol: int = 45) -> np.ndarray:
    return np.all(np.abs(img.astype(np.int16) - np.array(bgr, np.int16)) <= tol, axis=2)


class Stream:
    """A viewer of /preview.mjpg that splits the multipart body into its parts."""

    def __init__(self, address: tuple[str, int], headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection(*address, timeout=20)
        self.conn.request("GET", "/preview.mjpg", headers=headers or {})
        self.response = self.conn.getresponse()
        self._buf = b""

    def parts(self, n: int) -> list[tuple[dict[str, str], bytes, float]]:
        out: list[tuple[dict[str, str], bytes, float]] = []
        marker = f"--{BOUNDARY}\r\n".encode()
        while len(out) < n:
            i = self._buf.find(marker)
            j = self._buf.find(b"\r\n\r\n", i) if i >= 0 else -1
            if j >= 0:
                head = dict(line.split(": ", 1) for line in self._buf[i + len(marker):j].decode().split("\r\n"))
                end = j + 4 + int(head["Content-Length"])
                if len(self._buf) >= end + 2:
                    assert self._buf[end:end + 2] == b"\r\n"
                    out.append((head, self._buf[j + 4:end], time.monotonic()))
                    self._buf = self._buf[end + 2:]
                    continue
            chunk = self.response.read1(65536)
            assert chunk, "the stream ended"
            self._buf += chunk
        return out

    def close(self) -> None:
        self.response.close()
        self.conn.close()


def test_preview_streams_annotated_jpegs_only_while_watched(yunet_path: Path, faces_dir: Path) -> None:
    door = standing_door(faces_dir)
    s = settings(yunet=yunet_path, http={"enabled": True, "port": 0, "preview": True, "preview_fps": 5.0},
                 detector={"roi": ROI})
    with live_gate(s, door) as gate:
        wait_until(lambda: gate.stats.faces >= 3, what="the visitor's face")
        preview = gate.server.preview
        assert preview is not None and preview.encoded == 0  # nobody watches: nothing encoded
        viewer = Stream(gate.address)
        try:
            assert viewer.response.status == 200
            assert viewer.response.getheader("Content-Type") == CONTENT_TYPE
            parts = viewer.parts(4)
        finally:
            viewer.close()
        # at most preview_fps: 4 frames take at least 3 intervals of 0.2 s
        assert parts[-1][2] - parts[0][2] >= 0.5
        assert preview.encoded <= 6
        truth = door.frame(30).truth  # the visitor stands still from frame 3 on
        assert truth
        x, y, w, h = truth[0].box
        green = 0
        for head, jpeg, _ in parts:
            assert head["Content-Type"] == "image/jpeg"
            assert jpeg[:3] == b"\xff\xd8\xff" and jpeg[-2:] == b"\xff\xd9"
            img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            assert img is not None and img.shape == (H, W, 3)
            # the doorway region's outline on its left edge
            x0 = int(ROI[0] * W)
            assert near(img[H // 4:3 * H // 4, x0 - 1:x0 + 2], ROI_COLOR).mean() > 0.5
            # the masked face's green box, where the face is
            box = near(img, COLORS["with_mask"], 60)
            inside = box[max(0, y - 25):y + h + 25, max(0, x - 25):x + w + 25].sum()
            outside = box.sum() - inside
            green += inside >= 80 and outside < inside / 4
        raw = door.frame(30).image
        assert near(raw, COLORS["with_mask"], 60).sum() < 20  # the green comes from the drawn box
        assert green >= 2, green
        # the viewer left: its slot is freed, and encoding stops
        wait_until(lambda: preview.clients == 0, 10, "the viewer's slot to be freed")
        n = preview.encoded
        time.sleep(0.5)
        assert preview.encoded == n


def test_preview_off_by_default_and_viewer_limit(yunet_path: Path, faces_dir: Path) -> None:
    s = settings(yunet=yunet_path, http={"enabled": True, "port": 0})
    with live_gate(s, standing_door(faces_dir)) as gate:
        r = gate.get("/preview.mjpg")
        assert r.status == 404 and "preview = true" in r.text and "[http]" in r.text
        assert gate.server.board.keep_images is False
        wait_until(lambda: gate.stats.frames > 2, what="frames")
        latest = gate.server.board.latest()
        assert latest is not None and latest.image is None  # the loop hands over no frame at all
    s = settings(yunet=yunet_path, http={"enabled": True, "port": 0, "preview": True, "preview_clients": 1,
                                         "token": TOKEN})
    with live_gate(s, standing_door(faces_dir)) as gate:
        assert gate.get("/preview.mjpg").status == 401
        first = Stream(gate.address, basic(TOKEN))
        try:
            assert first.response.status == 200 and len(first.parts(1)) == 1
            r = gate.get("/preview.mjpg", headers=basic(TOKEN))
            assert r.status == 503 and "http.preview_clients" in r.text
        finally:
            first.close()


@pytest.mark.parametrize("roi", [(0.0, 0.0, 1.0, 1.0), ROI])
def test_annotate_draws_boxes_decision_and_region_on_a_copy(roi: tuple[float, ...]) -> None:
    img = np.full((240, 320, 3), 90, np.uint8)
    result = FrameResult(7, 0.0, (FaceEvent((100, 60, 80, 90), "without_mask", 0.93, 4),),
                         Decision(0.0, "deny", "without_mask"), {}, img)
    out = annotate(img, result, roi)
    assert (img == 90).all()  # the frame itself is untouched
    assert near(out[60:151, 100:102], COLORS["without_mask"], 10).mean() > 0.9
    assert near(out, ROI_COLOR, 10).any() == (roi != (0.0, 0.0, 1.0, 1.0))
    assert (out[5:30, 5:200] > 200).any()  # the decision text

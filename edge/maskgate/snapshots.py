"""Snapshot-on-deny (opt-in, ``[snapshots] enabled = true``): a JPEG of each frame that sounded the
buzzer, every face pixelated by default, kept within a retention limit (days and count).

Faces to blur are the gate's own tracked faces plus a second, more sensitive YuNet pass over the
whole frame (threshold 0.3, no minimum size, also searched at 2x), so people outside the
doorway region and small faces in the background are blurred too. When blurring is on and that
pass fails, the snapshot is not written. Retention is enforced by the daemon itself: when it starts,
after each snapshot, and every 10 minutes.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from .config import Settings, SnapshotSettings
from .detector import PHOTO_BORDER, DetectorSettings, Face, FaceDetector
from .eventlog import state_dir
from .events import FrameResult

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^deny-\d{8}T\d{9}Z-f-?\d+\.jpg(\.part)?$")
PRUNE_EVERY_S = 600.0


def snapshots_dir(settings: SnapshotSettings) -> Path:
    return Path(settings.dir) if settings.dir else state_dir() / "snapshots"


def blur_detector(settings: Settings) -> FaceDetector:
    """A more sensitive YuNet for finding every face to blur (not the gate's decision detector)."""
    d = settings.detector
    return FaceDetector(DetectorSettings(score_threshold=0.3, nms_threshold=d.nms_threshold,
                                         max_side=d.max_side, upscale=2.0 if d.max_side <= 640 else 1.0,
                                         border=PHOTO_BORDER, min_face=0), d.model or None)


def pixelate(img: np.ndarray, boxes: Iterable[tuple[int, int, int, int]], *, margin: float = 0.25,
             blocks: int = 6) -> np.ndarray:
    """A copy of ``img`` with each box (grown by ``margin`` of its size on every side) reduced to
    ``blocks`` coarse blocks across and smoothed: not recognisable, and not reversible."""
    out = img.copy()
    h, w = out.shape[:2]
    for x, y, bw, bh in boxes:
        mx, my = int(bw * margin), int(bh * margin)
        x0, y0, x1, y1 = max(0, x - mx), max(0, y - my), min(w, x + bw + mx), min(h, y + bh + my)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        region = out[y0:y1, x0:x1]
        across = max(1, min(blocks, x1 - x0))
        down = max(1, round(across * (y1 - y0) / (x1 - x0)))
        small = cv2.resize(region, (across, down), interpolation=cv2.INTER_AREA)
        coarse = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
        k = max(3, ((x1 - x0) // across) | 1)
        out[y0:y1, x0:x1] = cv2.GaussianBlur(coarse, (k, k), 0)
    return out


class SnapshotSaver:
    """An observer: saves ``deny-<UTC time>-f<frame>.jpg`` when a deny fires (trigger ``alarm``
    while the gate is active). Needs the loop to keep images (``Pipeline(keep_images=True)``).

    A failed write is logged once, counted in ``errors`` and never stops the loop."""

    def __init__(self, settings: SnapshotSettings, directory: str | Path | None = None, *,
                 detect: Callable[[np.ndarray], list[Face]] | None = None,
                 now: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 prune_every: float = PRUNE_EVERY_S) -> None:
        self.settings = settings
        self.directory = Path(directory) if directory is not None else snapshots_dir(settings)
        self.detect = detect
        self._now = now
        self._monotonic = monotonic
        self.prune_every = prune_every
        self.saved = 0
        self.errors = 0
        self.removed = 0
        self._failing = False
        self._closed = False
        if settings.blur_faces and detect is None:
            raise ValueError("blurring snapshots needs a face detector (detect=)")
        if not settings.blur_faces:
            log.warning("snapshots.blur_faces = false: deny snapshots in %s keep faces recognisable; "
                        "they are personal data (say so in the privacy notice)", self.directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as exc:
            log.error("snapshots: cannot create %s (%s)", self.directory, exc.strerror or exc)
        self._pruned_at = self._monotonic()
        self.prune()

    def __repr__(self) -> str:
        s = self.settings
        return (f"<SnapshotSaver {self.directory} blur={s.blur_faces} saved={self.saved} errors={self.errors} "
                f"removed={self.removed} keep {s.keep_count} / {s.keep_days} days>")

    def __call__(self, result: FrameResult) -> None:
        if self._closed:
            return
        d = result.decision
        if d.trigger == "alarm" and d.active and result.image is not None:
            self.save(result)
        if self._monotonic() - self._pruned_at >= self.prune_every:
            self._pruned_at = self._monotonic()
            self.prune()

    def save(self, result: FrameResult) -> Path | None:
        assert result.image is not None
        img = result.image
        if self.settings.blur_faces:
            assert self.detect is not None
            boxes = [f.box for f in result.faces]
            try:
                boxes += [f.box for f in self.detect(img)]
            except Exception:
                log.exception("snapshots: face detection for blurring failed; snapshot not saved")
                self.errors += 1
                return None
            img = pixelate(img, boxes)
        stamp = datetime.fromtimestamp(result.wall, UTC).strftime("%Y%m%dT%H%M%S%f")[:-3]
        path = self.directory / f"deny-{stamp}Z-f{result.frame}.jpg"
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.settings.quality])
        if not ok:
            self.errors += 1
            log.error("snapshots: JPEG encoding failed for frame %d", result.frame)
            return None
        part = path.with_name(path.name + ".part")
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
            try:
                data = memoryview(buf.tobytes())
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
            os.replace(part, path)
        except OSError as exc:
            self.errors += 1
            if not self._failing:
                self._failing = True
                log.error("snapshots: cannot write %s (%s); counting failures until it works again", path,
                          exc.strerror or exc)
            try:
                part.unlink()
            except OSError:
                pass
            return None
        if self._failing:
            self._failing = False
            log.warning("snapshots: writing again (%d failure(s) so far)", self.errors)
        self.saved += 1
        log.info("snapshot saved: %s", path)
        self.prune()
        return path

    def files(self) -> list[Path]:
        """Snapshot files (and leftover ``.part`` files), oldest first."""
        out = []
        try:
            entries = list(self.directory.iterdir())
        except OSError:
            return []
        for p in entries:
            if _NAME_RE.match(p.name):
                try:
                    out.append((p.stat().st_mtime, p.name, p))
                except OSError:
                    continue
        return [p for _, _, p in sorted(out)]

    def prune(self) -> list[Path]:
        """Delete snapshots older than ``keep_days`` and the oldest beyond ``keep_count``."""
        files = self.files()
        cutoff = self._now() - self.settings.keep_days * 86400.0
        doomed: list[Path] = []
        keep: list[Path] = []
        for p in files:
            try:
                old = p.stat().st_mtime < cutoff
            except OSError:
                continue
            (doomed if old or p.name.endswith(".part") else keep).append(p)
        excess = len(keep) - self.settings.keep_count
        if excess > 0:
            doomed += keep[:excess]
        removed = []
        for p in doomed:
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("snapshots: cannot delete %s (%s)", p, exc.strerror or exc)
        if removed:
            self.removed += len(removed)
            log.info("snapshots: removed %d past the retention limit (%d files, %g days)", len(removed),
                     self.settings.keep_count, self.settings.keep_days)
        return removed

    def close(self) -> None:
        self._closed = True

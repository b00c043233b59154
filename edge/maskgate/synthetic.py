"""A synthetic door: real face crops composited onto frames, people walking up, standing, leaving.

There is no door video to test with, so tests, benchmarks and soaks use this. A sequence is a list
of visits; in each visit 1 to ``people`` persons walk in from a side while growing (approaching the
camera), stand in the doorway, and walk out. Every frame carries its ground truth (person id,
label, pasted box). The same seed gives the same frames.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .config import LABELS
from .crop import CropRule, square_box
from .errors import ImageError, SourceError
from .imageio import read_bgr
from .sources import Frame, Pacer, TruthFace

log = logging.getLogger(__name__)

DEFAULT_MIX = {"with_mask": 0.5, "without_mask": 0.35, "incorrect_mask": 0.15}


@dataclass(frozen=True)
class Person:
    id: int
    label: str
    image: Path
    start: int
    """Frame index the person appears at."""
    enter: int
    stand: int
    leave: int
    side: int
    """-1 enters from the left, +1 from the right."""
    stand_x: float
    """Centre x where the person stands, as a fraction of the frame width."""
    size: int
    """Face width in pixels while standing."""
    body: tuple[int, int, int]

    @property
    def end(self) -> int:
        return self.start + self.enter + self.stand + self.leave


@dataclass(frozen=True)
class Visit:
    start: int
    end: int
    people: tuple[Person, ...]


class SyntheticDoor:
    """A frame source of people at a door, with ground truth per frame."""

    live = False

    def __init__(self, faces_dir: str | Path, width: int = 640, height: int = 480, fps: float = 10.0, *,
                 people: int = 1, seed: int = 0, visits: int | None = None,
                 script: Sequence[Sequence[str]] | None = None, mix: dict[str, float] | None = None,
                 enter_s: float = 1.0, stand_s: float = 2.5, leave_s: float = 1.0, gap_s: float = 1.0,
                 face_frac: tuple[float, float] = (0.17, 0.26), loop: bool = False,
                 realtime: bool = True, start_wall: float | None = None,
                 images: Mapping[str, Sequence[str]] | None = None,
                 heads: Mapping[str, Mapping[str, tuple[int, int, int, int] | None]] | None = None) -> None:
        self.start_wall = start_wall
        self.images = {lab: list(v) for lab, v in heads.items()} if heads is not None else images
        """Optional file names per label (inside ``faces_dir/label``) instead of every .jpg there."""
        self.heads = heads
        """Optional face box per label and file (e.g. :func:`maskgate.bundle.split_faces`), instead of
        ``images``: the door then pastes the crop rule's square around that face as the head, not the
        whole image (a whole-body photo pasted as a head shows a face far smaller than the head); a
        file whose box is None is pasted whole."""
        self.faces_dir = Path(faces_dir) if faces_dir else Path()
        self.width, self.height, self.fps = width, height, fps
        self.max_people = max(1, min(8, people))
        self.seed = seed
        self.script = [list(v) for v in script] if script is not None else None
        self.n_visits = len(self.script) if self.script is not None else visits
        self.loop = loop
        self.mix = mix or DEFAULT_MIX
        self.enter_s, self.stand_s, self.leave_s, self.gap_s = enter_s, stand_s, leave_s, gap_s
        self.face_frac = face_frac
        self.realtime = realtime
        self.dropped = 0
        self._paths: dict[str, list[Path]] = {}
        self._boxes: dict[Path, tuple[int, int, int, int]] = {
            self.faces_dir / lab / name: box for lab, files in (heads or {}).items() for name, box in files.items()
            if box is not None}
        self._visits: list[Visit] = []
        self._next_person = 0
        self._rng = np.random.default_rng(seed)
        self._pacer = Pacer(fps, realtime)
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._background = self._make_background()

    def __repr__(self) -> str:
        return (f"<SyntheticDoor {self.width}x{self.height} fps={self.fps} people<={self.max_people} "
                f"seed={self.seed} visits={len(self._visits)}>")

    # -- source interface ------------------------------------------------------------------------
    def open(self) -> None:
        if not self.faces_dir.is_dir():
            raise SourceError(f"{self.faces_dir}: synthetic door needs a faces folder with "
                              f"{', '.join(LABELS)} subfolders (source.faces)")
        needed = {lab for v in self.script for lab in v} if self.script is not None else \
            {lab for lab, w in self.mix.items() if w > 0}
        for label in sorted(needed):
            if label not in LABELS:
                raise SourceError(f"synthetic door: unknown label {label!r}")
            if self.images is not None:
                paths = [self.faces_dir / label / name for name in self.images.get(label, ())]
                missing = [p for p in paths if not p.is_file()]
                if missing:
                    raise SourceError(f"{missing[0]}: face crop not found")
            else:
                paths = sorted((self.faces_dir / label).glob("*.jpg"))
            if not paths:
                raise SourceError(f"{self.faces_dir / label}: no .jpg face crops")
            self._paths[label] = paths
        self._pacer = Pacer(self.fps, self.realtime)
        self.start_wall = time.time() if self.start_wall is None else self.start_wall

    def read(self) -> Frame | None:
        i, skipped = self._pacer.next_index()
        self.dropped += skipped
        return self.frame(i)

    def close(self) -> None:
        self._cache.clear()

    # -- sequence --------------------------------------------------------------------------------
    def visits_until(self, index: int) -> list[Visit]:
        """Generate visits until one covers frame ``index`` (or the sequence ends)."""
        while (not self._visits or self._visits[-1].end <= index) and not self._finished():
            self._visits.append(self._new_visit())
        return self._visits

    def _finished(self) -> bool:
        return self.n_visits is not None and len(self._visits) >= self.n_visits

    @property
    def total_frames(self) -> int | None:
        if self.n_visits is None:
            return None
        self.visits_until(1 << 60)
        return self._visits[-1].end if self._visits else 0

    def _new_visit(self) -> Visit:
        rng = self._rng
        start = self._visits[-1].end if self._visits else 0
        k = len(self._visits)
        if self.script is not None:
            labels = list(self.script[k])
        else:
            n = int(rng.integers(1, self.max_people + 1))
            names = list(self.mix)
            w = np.array([self.mix[x] for x in names], float)
            labels = [names[int(j)] for j in rng.choice(len(names), size=n, p=w / w.sum())]
        n = max(1, len(labels))
        slots = (np.arange(n) + 0.5) / n
        people = []
        f = self.fps
        for j, label in enumerate(labels):
            delay = int(rng.integers(0, max(1, int(0.6 * f)))) if j else 0
            stand_x = float(0.2 + 0.6 * slots[j] + rng.uniform(-0.04, 0.04)) if n > 1 else \
                float(rng.uniform(0.42, 0.58))
            lo, hi = self.face_frac
            size = int(self.width * rng.uniform(lo, hi) / (1.0 + 0.15 * (n - 1)))
            people.append(Person(
                id=self._next_person, label=label,
                image=self._paths[label][int(rng.integers(len(self._paths[label])))],
                start=start + delay, enter=max(1, round(self.enter_s * f)),
                stand=max(1, round(self.stand_s * f * rng.uniform(0.9, 1.1))),
                leave=max(1, round(self.leave_s * f)), side=-1 if rng.random() < 0.5 else 1,
                stand_x=stand_x, size=max(24, size),
                body=(int(rng.integers(30, 200)), int(rng.integers(30, 200)), int(rng.integers(30, 200)))))
            self._next_person += 1
        end = max(p.end for p in people) + round(self.gap_s * f)
        return Visit(start, end, tuple(people))

    # -- rendering -------------------------------------------------------------------------------
    def _make_background(self) -> np.ndarray:
        h, w = self.height, self.width
        rng = np.random.default_rng(self.seed + 7919)
        y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        top = rng.uniform(150, 220, 3).astype(np.float32)
        bottom = rng.uniform(60, 120, 3).astype(np.float32)
        bg = np.broadcast_to(top * (1 - y) + bottom * y, (h, w, 3)).copy()
        bg += rng.normal(0, 4, (h, w, 3)).astype(np.float32)
        out = np.clip(bg, 0, 255).astype(np.uint8)
        x0, x1 = int(w * 0.12), int(w * 0.88)
        cv2.rectangle(out, (x0, int(h * 0.04)), (x1, h), (70, 60, 50), max(2, w // 60))
        cv2.line(out, (0, int(h * 0.85)), (w, int(h * 0.85)), (90, 90, 90), 2)
        return out

    def _face(self, path: Path) -> np.ndarray:
        img = self._cache.get(path)
        if img is None:
            try:
                img = read_bgr(path)
            except ImageError as exc:
                raise SourceError(f"synthetic door: {exc}") from exc
            box = self._boxes.get(path)
            if box is not None:
                img = _head(img, box)
            self._cache[path] = img
            if len(self._cache) > 32:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(path)
        return img

    def _place(self, p: Person, i: int) -> tuple[float, float, int] | None:
        """Centre x, y and face width of person ``p`` at frame ``i``, or None when absent."""
        t = i - p.start
        if t < 0 or i >= p.end:
            return None
        w, h = self.width, self.height
        edge_in = 0.5 + p.side * 0.5 + p.side * 0.25
        edge_out = 0.5 - p.side * 0.75
        if t < p.enter:
            a = t / p.enter
            x = edge_in + (p.stand_x - edge_in) * a
            size = p.size * (0.55 + 0.45 * a)
        elif t < p.enter + p.stand:
            x = p.stand_x + 0.004 * np.sin(t * 0.7 + p.id)
            size = p.size
        else:
            a = (t - p.enter - p.stand) / p.leave
            x = p.stand_x + (edge_out - p.stand_x) * a
            size = p.size
        cy = h * 0.40 + (h * 0.05 * (1.0 - size / max(p.size, 1)))
        return x * w, cy, max(12, int(size))

    def frame(self, i: int) -> Frame | None:
        """Render frame ``i`` with its ground truth (None past the end of a finite sequence)."""
        visits = self.visits_until(i)
        if not visits or i >= visits[-1].end:
            if not self.loop or not visits:
                return None
            i_eff = i % visits[-1].end
        else:
            i_eff = i
        img = self._background.copy()
        truth = []
        active = [p for v in visits if v.start <= i_eff < v.end for p in v.people]
        active.sort(key=lambda p: p.size)
        # who is on top at each pixel, to tell how much of each head the people in front leave in sight
        owner = np.full(img.shape[:2], -1, np.int16) if len(active) > 1 else None
        heads: list[tuple[int, Person, tuple[int, int, int, int], np.ndarray | None]] = []
        for k, p in enumerate(active):
            pos = self._place(p, i_eff)
            if pos is None:
                continue
            cx, cy, size = pos
            pasted = self._paste(img, p, cx, cy, size, owner, k)
            if pasted is not None:
                heads.append((k, p, *pasted))
        for k, p, box, head in heads:
            visible = 1.0
            if owner is not None and head is not None and head.any():
                x, y, w, h = box
                visible = float((owner[y:y + h, x:x + w][head] == k).mean())
            truth.append(TruthFace(p.id, p.label, box, round(visible, 3)))
        return Frame(img, i / self.fps, i, tuple(truth), name="synthetic",
                     wall=(self.start_wall or 0.0) + i / self.fps)

    def _paste(self, img: np.ndarray, p: Person, cx: float, cy: float, size: int, owner: np.ndarray | None = None,
               k: int = 0) -> tuple[tuple[int, int, int, int], np.ndarray | None] | None:
        """Draw person ``p`` (head, neck, shoulders, body); the head's box in frame pixels and, with
        ``owner`` (who is on top at each pixel, updated with ``k``), the head's pixels in that box."""
        face = self._face(p.image)
        fh, fw = face.shape[:2]
        tw, th = size, max(1, round(size * fh / fw))
        H, W = img.shape[:2]
        # A neck, then shoulders. The neck takes the colour of the forehead: shoulders drawn right
        # under the chin read as a mask pulled down onto it (incorrect_mask) to any mask classifier.
        chin = cy + th * 0.5
        skin = _forehead(face)
        shoulders = int(chin + size * 0.95)
        cv2.rectangle(img, (int(cx - size * 0.21), int(chin - size * 0.1)), (int(cx + size * 0.21), shoulders),
                      skin, -1)
        cv2.ellipse(img, (int(cx), shoulders), (int(size * 0.9), int(size * 0.6)), 0, 180, 360, p.body, -1)
        cv2.rectangle(img, (int(cx - size * 0.9), shoulders), (int(cx + size * 0.9), H), p.body, -1)
        if owner is not None:
            cv2.rectangle(owner, (int(cx - size * 0.21), int(chin - size * 0.1)), (int(cx + size * 0.21), shoulders),
                          k, -1)
            cv2.ellipse(owner, (int(cx), shoulders), (int(size * 0.9), int(size * 0.6)), 0, 180, 360, k, -1)
            cv2.rectangle(owner, (int(cx - size * 0.9), shoulders), (int(cx + size * 0.9), H), k, -1)
        x0, y0 = int(round(cx - tw / 2)), int(round(cy - th / 2))
        x1, y1 = x0 + tw, y0 + th
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
        if cx1 - cx0 < 2 or cy1 - cy0 < 2:
            return None
        interp = cv2.INTER_AREA if tw < fw else cv2.INTER_LINEAR
        scaled = cv2.resize(face, (tw, th), interpolation=interp)
        alpha = _head_mask(tw, th)[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        patch = scaled[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0].astype(np.float32)
        if patch.shape[2] == 4:  # a head cut around a face: outside its photo, the door shows through
            alpha = alpha * (patch[:, :, 3:] / 255.0)
            patch = patch[:, :, :3]
        region = img[cy0:cy1, cx0:cx1].astype(np.float32)
        img[cy0:cy1, cx0:cx1] = (patch * alpha + region * (1.0 - alpha)).astype(np.uint8)
        head = None
        if owner is not None:
            head = alpha[:, :, 0] > 0.5
            owner[cy0:cy1, cx0:cx1][head] = k
        return (cx0, cy0, cx1 - cx0, cy1 - cy0), head


def _forehead(face: np.ndarray) -> tuple[int, ...]:
    """The median colour of the forehead (the middle third of the width, 15-30% down) of a pasted face
    image. Only pixels of the photo count: a head cut around a face (BGRA) is transparent, and black
    in its colour planes, where its square leaves the photo, and a neck drawn black under the chin
    reads as a mask. When that window is all outside the photo, the whole photo's median is used."""
    fh, fw = face.shape[:2]
    win = face[int(fh * 0.15):max(int(fh * 0.3), int(fh * 0.15) + 1),
               int(fw * 0.35):max(int(fw * 0.65), int(fw * 0.35) + 1)]
    px = win[:, :, :3].reshape(-1, 3)
    if face.shape[2] == 4:
        px = px[win[:, :, 3].reshape(-1) > 0]
        if not len(px):
            px = face[:, :, :3].reshape(-1, 3)[face[:, :, 3].reshape(-1) > 0]
    return tuple(int(v) for v in np.median(px, axis=0)) if len(px) else (128, 128, 128)


def _head(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The crop rule's square around a face box as BGRA: alpha 0 where the square leaves the photo
    (pasted, the door's own background shows there, not padding a camera would never see)."""
    x0, y0, side = square_box(box, CropRule())
    h, w = img.shape[:2]
    head = np.zeros((side, side, 4), np.uint8)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if cx1 > cx0 and cy1 > cy0:
        head[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0, :3] = img[cy0:cy1, cx0:cx1]
        head[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0, 3] = 255
    return head


def judged_label(frame: Frame, width: int, roi: tuple[float, float] = (0.2, 0.8), min_face: int = 48) -> str | None:
    """The truth label of a frame whose one person can be judged, else None.

    Judged means: exactly one person in the frame, fully in view, at least ``min_face`` pixels wide
    and centred in the doorway (the middle 60% of the width by default). Benchmarks score a gate's
    per-frame verdict (and a peer's) on these frames only, so partly visible or tiny faces at the
    frame edge do not count for or against anyone.
    """
    truth = frame.truth or ()
    if len(truth) != 1:
        return None
    t = truth[0]
    x, _, w, _ = t.box
    centre = (x + w / 2) / width
    return t.label if x > 0 and x + w < width and w >= min_face and roi[0] <= centre <= roi[1] else None


_MASKS: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()


def _head_mask(w: int, h: int) -> np.ndarray:
    """A feathered ellipse: the crop blends into the scene like a head, without a photo's straight edges."""
    key = (w, h)
    m = _MASKS.get(key)
    if m is None:
        m = np.zeros((h, w), np.float32)
        cv2.ellipse(m, (w // 2, h // 2), (max(1, int(w * 0.47)), max(1, int(h * 0.49))), 0, 0, 360, 1.0, -1)
        k = max(3, (min(w, h) // 10) | 1)
        m = cv2.GaussianBlur(m, (k, k), 0)[:, :, None]
        _MASKS[key] = m
        if len(_MASKS) > 64:
            _MASKS.popitem(last=False)
    return m

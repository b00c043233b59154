"""The frames ``maskgate bench`` measures on, JPEG-encoded in memory so every pipeline pays a real decode.

A frame set is built once in the bench's main process and handed to every measured pipeline, so
all of them see the same frames. Frames come from the synthetic door (faces of the classifier's
held-out test split, each head cut around the face the build located in its image, with the
truth of every frame) or from a folder of images (labelled when
PASCAL VOC annotations sit beside them, as in ``scenes/images`` + ``scenes/annotations``).
Nothing is written to disk.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .bundle import Bundle, split_heads
from .errors import FrameError, ImageError, SourceError
from .imageio import read_bgr
from .scenes import SceneFace, read_voc
from .sources import IMAGE_SUFFIXES, Frame, TruthFace
from .synthetic import SyntheticDoor

log = logging.getLogger(__name__)

JPEG_QUALITY = 90
LABEL_CYCLE = ("with_mask", "without_mask", "incorrect_mask")


@dataclass(frozen=True)
class EncodedFrame:
    jpeg: bytes
    index: int
    ts: float
    width: int
    height: int
    name: str = ""
    truth: tuple[TruthFace, ...] | None = None
    """Synthetic door truth (person, label, box)."""
    scene: tuple[SceneFace, ...] | None = None
    """Annotated faces of a labelled image."""


@dataclass
class FrameSet:
    """Frames for one measurement, with what they are."""

    kind: str
    """``synthetic`` or ``folder``."""
    description: str
    frames: list[EncodedFrame]
    warmup: list[EncodedFrame] = field(default_factory=list)
    """Run before measuring (not counted); the measured frames start from a fresh pipeline."""
    path: str = ""
    held_out: bool | None = None
    """Synthetic: faces come only from the classifier's held-out test split."""

    @property
    def labelled(self) -> bool:
        return any(f.truth is not None or f.scene is not None for f in self.frames)

    def sizes(self) -> list[tuple[int, int]]:
        return sorted({(f.width, f.height) for f in self.frames})


def encode(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ImageError("JPEG encoding failed")
    return buf.tobytes()


def _encoded(f: Frame, ts: float | None = None) -> EncodedFrame:
    h, w = f.image.shape[:2]
    return EncodedFrame(encode(f.image), f.index, f.ts if ts is None else ts, w, h, f.name, f.truth)


class EncodedSource:
    """A FrameSource over encoded frames: ``read()`` decodes the next JPEG (the bench's decode stage)."""

    live = False
    mixed_sizes = True  # a folder of photos, or synthetic frames

    def __init__(self, frames: Sequence[EncodedFrame]) -> None:
        self.frames = frames
        self.dropped = 0
        self._i = 0

    def __repr__(self) -> str:
        return f"<EncodedSource {self._i}/{len(self.frames)} frames>"

    def open(self) -> None:
        self._i = 0

    def read(self) -> Frame | None:
        if self._i >= len(self.frames):
            return None
        f = self.frames[self._i]
        self._i += 1
        img = cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise FrameError(f"frame {f.index}: JPEG does not decode")
        return Frame(img, f.ts, f.index, f.truth, f.name, wall=f.ts)

    def close(self) -> None:
        self._i = 0


HeldOut = dict[str, dict[str, tuple[int, int, int, int] | None]]
"""Per label, file name -> the face box the build located in it (None: not recorded)."""


def held_out_faces(bundle: Bundle) -> HeldOut:
    """The classifier's test-split files per label with their located face (:func:`split_heads`)."""
    return split_heads(bundle, "test")


def synthetic_door(faces: Path, held_out: HeldOut, *, width: int = 640, height: int = 480,
                   fps: float = 10.0, visits: int = 6, people: int = 1, seed: int = 0,
                   face_frac: tuple[float, float] = (0.17, 0.26)) -> SyntheticDoor:
    """A finite synthetic door cycling with / without / incorrect mask, ``people`` persons per visit."""
    labels = [LABEL_CYCLE[(i + j) % len(LABEL_CYCLE)] for i in range(visits) for j in range(people)]
    script = [labels[i * people:(i + 1) * people] for i in range(visits)]
    heads = {lab: files for lab, files in held_out.items() if files} or None
    door = SyntheticDoor(faces, width, height, fps, people=people, seed=seed, script=script, realtime=False,
                         start_wall=0.0, heads=heads, face_frac=face_frac)
    door.open()
    return door


def synthetic_frames(faces: Path, held_out: HeldOut, *, width: int = 640, height: int = 480,
                     fps: float = 10.0, visits: int = 6, warmup: int = 10, seed: int = 0) -> FrameSet:
    """Every frame of a one-person-per-visit synthetic door; warm-up frames come from another seed."""
    door = synthetic_door(faces, held_out, width=width, height=height, fps=fps, visits=visits, seed=seed)
    frames = []
    while (f := door.read()) is not None:
        frames.append(_encoded(f))
    door.close()
    warm = _warmup(faces, held_out, width, height, fps, warmup, seed)
    desc = (f"synthetic door {width}x{height}, {visits} visits of one person "
            f"({', '.join(LABEL_CYCLE)} in turn), {fps:g} fps frame time")
    return FrameSet("synthetic", desc, frames, warm, str(faces), held_out=bool(held_out))


def _warmup(faces: Path, held_out: HeldOut, width: int, height: int, fps: float, n: int,
            seed: int) -> list[EncodedFrame]:
    if n <= 0:
        return []
    door = synthetic_door(faces, held_out, width=width, height=height, fps=fps, visits=1, seed=seed + 1000)
    out: list[EncodedFrame] = []
    while len(out) < n and (f := door.read()) is not None:
        out.append(_encoded(f))
    door.close()
    return out


def side_by_side(people: int, fill: float = 0.8) -> tuple[float, float]:
    """Face width fractions at which ``people`` persons stand side by side without overlapping.

    The synthetic door spreads a visit's people over the middle 60% of the width and shrinks each
    face by ``1 + 0.15 (people - 1)``; a face takes at most ``fill`` of its slot here.
    """
    hi = min(0.26, fill * 0.6 / people * (1 + 0.15 * (people - 1)))
    return (min(0.17, 0.85 * hi), hi)


def crowd_frames(faces: Path, held_out: HeldOut, people: int, *, width: int = 640,
                 height: int = 480, fps: float = 2.0, count: int = 40, warmup: int = 5, seed: int = 0) -> FrameSet:
    """Frames of a synthetic door where ``people`` persons stand side by side in view (for scaling rows).

    Only frames where every person of the visit is standing (not walking in or out) are kept; at
    the default 2 fps of frame time that is about 5 frames per visit, so many faces take part.
    """
    door = synthetic_door(faces, held_out, width=width, height=height, fps=fps, visits=(count + warmup) // 4 + 2,
                          people=people, seed=seed, face_frac=side_by_side(people))
    frames: list[EncodedFrame] = []
    warm: list[EncodedFrame] = []
    while len(frames) < count and (f := door.read()) is not None:
        visit = next(v for v in door.visits_until(f.index) if v.start <= f.index < v.end)
        standing = all(p.start + p.enter <= f.index < p.start + p.enter + p.stand for p in visit.people)
        if not standing or len(f.truth or ()) != people:
            continue
        (warm if len(warm) < warmup else frames).append(_encoded(f))
    door.close()
    if not frames:
        raise SourceError(f"synthetic door: no frame with {people} person(s) standing in view")
    desc = f"synthetic door {width}x{height}, {people} person(s) standing in view"
    return FrameSet("synthetic", desc, frames, warm, str(faces), held_out=bool(held_out))


def folder_frames(path: Path, *, limit: int | None = None, warmup: int = 5, fps: float = 10.0) -> FrameSet:
    """Images of a folder (or of ``path/images`` with ``path/annotations``), labelled where VOC files exist.

    Each image is one frame, re-encoded as JPEG; unreadable files are skipped with a warning.
    """
    images_dir = path / "images" if (path / "images").is_dir() else path
    ann_dir = images_dir.parent / "annotations"
    paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
        if images_dir.is_dir() else []
    if not paths:
        raise SourceError(f"{path}: no images to benchmark on ({', '.join(sorted(IMAGE_SUFFIXES))})")
    frames: list[EncodedFrame] = []
    labelled = 0
    for p in paths:
        if limit is not None and len(frames) >= limit + warmup:
            break
        try:
            img = read_bgr(p)
        except ImageError as exc:
            log.warning("skipping %s", exc)
            continue
        scene = None
        xml = ann_dir / (p.stem + ".xml")
        if xml.is_file():
            scene = read_voc(xml, images_dir).faces
            labelled += 1
        h, w = img.shape[:2]
        i = len(frames)
        frames.append(EncodedFrame(encode(img), i, i / fps, w, h, p.name, None, scene))
    if len(frames) <= warmup:
        raise SourceError(f"{path}: {len(frames)} readable image(s); the bench needs more than {warmup}")
    warm, measured = frames[:warmup], frames[warmup:]
    desc = f"{len(measured)} images from {images_dir}" + (f", {labelled} with VOC annotations" if labelled else "")
    return FrameSet("folder", desc, measured, warm, str(images_dir))

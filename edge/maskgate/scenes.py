"""PASCAL VOC scene annotations and the fixed tuning/test split of the evaluation scenes."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

VOC_LABELS = {
    "with_mask": "with_mask",
    "without_mask": "without_mask",
    "mask_weared_incorrect": "incorrect_mask",
    "incorrect_mask": "incorrect_mask",
}


@dataclass(frozen=True)
class SceneFace:
    box: tuple[int, int, int, int]
    """x, y, w, h in image pixels."""
    label: str


@dataclass(frozen=True)
class Scene:
    image: Path
    faces: tuple[SceneFace, ...]

    @property
    def name(self) -> str:
        return self.image.stem


def read_voc(xml_path: Path, images_dir: Path) -> Scene:
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"{xml_path}: not a readable PASCAL VOC file ({exc})") from exc
    faces = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_LABELS:
            raise DataError(f"{xml_path}: unknown label {name!r}")
        bb = obj.find("bndbox")
        if bb is None:
            raise DataError(f"{xml_path}: object without bndbox")
        x0, y0, x1, y1 = (int(float(bb.findtext(k) or 0)) for k in ("xmin", "ymin", "xmax", "ymax"))
        faces.append(SceneFace((x0, y0, x1 - x0, y1 - y0), VOC_LABELS[name]))
    image = images_dir / (xml_path.stem + ".jpg")
    if not image.exists():
        fname = root.findtext("filename") or ""
        alt = images_dir / fname
        image = alt if fname and alt.exists() else image
    return Scene(image, tuple(faces))


def load_scenes(scenes_dir: Path) -> list[Scene]:
    """All scenes under ``scenes_dir`` (``annotations/*.xml`` + ``images/``), sorted by name."""
    ann = scenes_dir / "annotations"
    if not ann.is_dir():
        raise DataError(f"{ann}: no annotations folder")
    return [read_voc(p, scenes_dir / "images") for p in sorted(ann.glob("*.xml"))]


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter + 1e-9)


def scene_half(name: str) -> str:
    """Fixed split by image name: ``tune`` or ``test`` (sha256 of the stem, even/odd)."""
    return "tune" if hashlib.sha256(name.encode()).digest()[0] % 2 == 0 else "test"


def split_scenes(scenes: list[Scene]) -> dict[str, list[Scene]]:
    out: dict[str, list[Scene]] = {"tune": [], "test": []}
    for s in scenes:
        out[scene_half(s.name)].append(s)
    return out

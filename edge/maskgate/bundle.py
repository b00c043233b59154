"""The model bundle: ``model.tflite`` + ``manifest.json``, the one contract between build and device.

The device checks the manifest against the file (sha256) and against the interpreter's tensors at
load, and refuses any mismatch with the path and the reason.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .crop import CropRule, InputSpec
from .errors import ModelError
from .model_store import sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype,
                "quantization": {"scale": self.scale, "zero_point": self.zero_point}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorInfo:
        q = d.get("quantization") or {"scale": 0.0, "zero_point": 0}
        return cls(tuple(int(v) for v in d["shape"]), str(d["dtype"]), float(q["scale"]),
                   int(q["zero_point"]))


@dataclass(frozen=True)
class Bundle:
    """A loaded, sha-checked manifest and the path of its model file."""

    directory: Path
    model_path: Path
    manifest: dict[str, Any]
    labels: tuple[str, ...]
    input_spec: InputSpec
    crop_rule: CropRule
    input: TensorInfo
    output: TensorInfo

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", "model"))

    def edgetpu_model(self) -> Path | None:
        p = self.model_path.with_name(self.model_path.stem + "_edgetpu.tflite")
        return p if p.exists() else None


def default_bundle_dir() -> Path:
    """The trained default bundle shipped inside the package."""
    return Path(str(resources.files("maskgate") / "model"))


def load_bundle(directory: str | Path | None = None) -> Bundle:
    """Read and check a bundle directory (default: the shipped one)."""
    d = Path(directory) if directory else default_bundle_dir()
    if d.is_file() and d.suffix == ".tflite":
        d = d.parent
    mpath = d / MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"{mpath}: manifest not found (a bundle is model.tflite + manifest.json)") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{mpath}: manifest is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ModelError(f"{mpath}: manifest must be a JSON object")
    schema = manifest.get("schema_version")
    if schema != SCHEMA_VERSION:
        raise ModelError(f"{mpath}: schema_version {schema!r} is not supported (this maskgate reads "
                         f"{SCHEMA_VERSION}); rebuild the bundle with maskgate-convert")
    try:
        model_path = d / manifest["model_file"]
        labels = tuple(str(v) for v in manifest["labels"])
        inp = TensorInfo.from_dict(manifest["input"])
        out = TensorInfo.from_dict(manifest["output"])
        spec = InputSpec(int(inp.shape[1]), int(inp.shape[2]), str(manifest["input"]["color"]))
        rule = CropRule.from_dict(manifest["crop"])
        expected_sha = str(manifest["sha256"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelError(f"{mpath}: manifest is missing or has a bad field ({exc!r})") from exc
    if not model_path.exists():
        raise ModelError(f"{model_path}: model file named by the manifest is missing")
    digest = sha256_file(model_path)
    if digest != expected_sha:
        raise ModelError(f"{model_path}: sha256 {digest} does not match the manifest's {expected_sha} "
                         "(corrupt or replaced model)")
    if out.shape[-1] != len(labels):
        raise ModelError(f"{mpath}: {len(labels)} labels but the output has {out.shape[-1]} values")
    return Bundle(d, model_path, manifest, labels, spec, rule, inp, out)


def _split_rows(bundle: Bundle, split: str) -> list[dict[str, str]]:
    info = bundle.manifest.get("split") or {}
    name = info.get("file") if isinstance(info, dict) else None
    if not name:
        return []
    path = bundle.directory / str(name)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return [row for row in csv.DictReader(fh)
                    if row.get("split") == split and "/" in (row.get("file") or "")]
    except (OSError, csv.Error) as exc:
        raise ModelError(f"{path}: cannot read the bundle's split file ({exc})") from exc


def split_files(bundle: Bundle, split: str = "test") -> dict[str, list[str]]:
    """File names (inside each class folder) of one split recorded with the bundle, per label.

    The test split was never used for training or tuning, so benchmarks and synthetic doors built
    from it measure the model honestly. A bundle without a split file gives an empty mapping.
    """
    out: dict[str, list[str]] = {}
    for row in _split_rows(bundle, split):
        label, file = row["file"].split("/", 1)
        out.setdefault(label, []).append(file)
    return out


def split_faces(bundle: Bundle, split: str = "test") -> dict[str, dict[str, tuple[int, int, int, int]]]:
    """Like :func:`split_files`, with the face box (x, y, w, h) the build's detector located in each
    image, per label and file; images where it found no face are left out. Empty for a split file
    written before the build recorded boxes (its ``face`` column)."""
    out: dict[str, dict[str, tuple[int, int, int, int]]] = {}
    for row in _split_rows(bundle, split):
        parts = (row.get("face") or "").split()
        if len(parts) != 4:
            continue
        label, file = row["file"].split("/", 1)
        x, y, w, h = (int(v) for v in parts)
        out.setdefault(label, {})[file] = (x, y, w, h)
    return out


def split_heads(bundle: Bundle, split: str = "test") -> dict[str, dict[str, tuple[int, int, int, int] | None]]:
    """What a synthetic door built from one split pastes as heads, per label and file: the located
    face box of each image (:func:`split_faces`), or, for a split file without boxes, every file with
    None (pasted whole). Empty when the bundle records no split."""
    faces: dict[str, dict[str, tuple[int, int, int, int] | None]] = {
        lab: dict(v) for lab, v in split_faces(bundle, split).items()}
    return faces or {lab: dict.fromkeys(names) for lab, names in split_files(bundle, split).items()}

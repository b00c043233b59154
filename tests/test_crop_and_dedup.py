from __future__ import annotations

import numpy as np

from maskgate.crop import CropRule, InputSpec, crop_face, face_input, square_box
from maskgate_convert import dedup


def test_square_box_is_centred_and_enlarged() -> None:
    x0, y0, side = square_box((100, 100, 40, 50), CropRule(margin=0.25, shift_y=0.0))
    assert side == 75
    assert abs((x0 + side / 2) - 120) <= 1 and abs((y0 + side / 2) - 125) <= 1


def test_crop_at_frame_edge_is_padded_not_shrunk() -> None:
    frame = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_face(frame, (-10, -10, 40, 40), 32)
    assert crop.shape == (32, 32, 3)
    assert (crop == 200).all()


def test_face_input_matches_spec() -> None:
    frame = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    x = face_input(frame, (50, 50, 60, 60), InputSpec(64, 64, "rgb"))
    assert x.shape == (64, 64, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 255
    g = face_input(frame, (50, 50, 60, 60), InputSpec(100, 100, "gray"))
    assert g.shape == (100, 100, 1)


def test_near_duplicates_share_a_group_and_a_split() -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    noisy = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    other = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    h = np.stack([np.stack([dedup.dhash(g), dedup.dhash(g[:, ::-1])]) for g in (base, noisy, other, base[:, ::-1])])
    groups = dedup.group_near_duplicates(h)
    assert groups[0] == groups[1] == groups[3]
    assert groups[2] != groups[0]
    splits = dedup.assign_splits(["a", "b", "c", "d"], groups)
    assert splits[0] == splits[1] == splits[3]
    assert splits == dedup.assign_splits(["a", "b", "c", "d"], groups)

"""Near-duplicate groups and the deterministic grouped train/val/test split.

Signature: a 256-bit difference hash (dHash: 17x16 grayscale, left > right) of each image and of
its mirror. Two images are near-duplicates when the Hamming distance between their hashes (either
orientation) is at most ``THRESHOLD`` bits (12.5%); groups are the connected components
(union-find), so a chain of re-encoded or augmented copies stays in one split. A 64-bit dHash was
tried first and rejected: aligned CelebA faces all look alike to it and chained into one group of
3,000+ images at 6 bits. At 32/256 bits the largest group has 6 images; at 40 bits aligned faces
start to chain again (a group of 584), so 32 is the threshold.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from maskgate.errors import ImageError
from maskgate.imageio import read_bgr

THRESHOLD = 32
HASH_SIDE = 16
SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))


def dhash(gray: np.ndarray) -> np.ndarray:
    """256-bit dHash as 4 uint64 words."""
    small = cv2.resize(gray, (HASH_SIDE + 1, HASH_SIDE), interpolation=cv2.INTER_AREA)
    bits = (small[:, 1:] > small[:, :-1]).reshape(-1)
    return np.packbits(bits).view(">u8").astype(np.uint64)


def image_hashes(paths: Sequence[Path]) -> np.ndarray:
    """(N, 2, 4) uint64: dHash of each image and of its mirror (zeros for an unreadable image)."""
    out = np.zeros((len(paths), 2, HASH_SIDE * HASH_SIDE // 64), np.uint64)
    for i, p in enumerate(paths):
        try:
            g = cv2.cvtColor(read_bgr(p), cv2.COLOR_BGR2GRAY)
        except ImageError:
            continue
        out[i, 0] = dhash(g)
        out[i, 1] = dhash(g[:, ::-1])
    return out


def group_near_duplicates(hashes: np.ndarray, threshold: int = THRESHOLD, chunk: int = 256) -> np.ndarray:
    """Group id (the smallest member index) for each row of ``hashes``."""
    n = len(hashes)
    parent = np.arange(n)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = int(parent[a])
        return a

    h0 = hashes[:, 0, :]
    h1 = hashes[:, 1, :]
    for start in range(0, n, chunk):
        block = h0[start:start + chunk, None, :]
        d = np.minimum(np.bitwise_count(block ^ h0[None, :, :]).sum(-1),
                       np.bitwise_count(block ^ h1[None, :, :]).sum(-1))
        ii, jj = np.nonzero(d <= threshold)
        for i, j in zip(ii + start, jj, strict=True):
            if j > i:
                ri, rj = find(int(i)), find(int(j))
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)])


def split_of_group(key: str) -> str:
    """Deterministic split for a group, from the sha256 of its key (its first file name)."""
    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    acc = 0.0
    for name, frac in SPLITS:
        acc += frac
        if u < acc:
            return name
    return SPLITS[-1][0]


def assign_splits(names: Sequence[str], groups: np.ndarray) -> list[str]:
    first: dict[int, str] = {}
    for name, g in zip(names, groups, strict=True):
        first.setdefault(int(g), name)
    return [split_of_group(first[int(g)]) for g in groups]


def split_csv(rows: Sequence[tuple[str, str, str, int, str, str]]) -> bytes:
    """CSV bytes of (file, label, source, group, split, face): ``face`` is the box the build's
    detector located in the image ("x y w h" in its pixels; empty when it found none)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "label", "source", "group", "split", "face"])
    w.writerows(rows)
    return buf.getvalue().encode()

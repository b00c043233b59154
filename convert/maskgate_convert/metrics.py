"""Classification metrics with Wilson confidence intervals, on the door's question and per class."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

ALLOW = "with_mask"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for k successes in n trials."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "value": (k / n) if n else None, "ci95": [lo, hi]}


def door_metrics(truth: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Per-class recall, confusion matrix, and allow/deny balanced accuracy.

    The door allows only on ``with_mask``; anything else (a bare face, a wrong mask, or ``no_face``
    for a real face) keeps it shut.
    """
    t = np.asarray(truth)
    p = np.asarray(pred)
    present = [lab for lab in labels if (t == lab).any()]
    recall = {lab: rate(int(((t == lab) & (p == lab)).sum()), int((t == lab).sum())) for lab in present}
    cm = [[int(((t == a) & (p == b)).sum()) for b in labels] for a in labels]
    allow_t = t == ALLOW
    allow_p = p == ALLOW
    allow_r = rate(int((allow_t & allow_p).sum()), int(allow_t.sum()))
    deny_r = rate(int((~allow_t & ~allow_p).sum()), int((~allow_t).sum()))
    vals = [r["value"] for r in (allow_r, deny_r) if r["value"] is not None]
    bal = float(np.mean(vals)) if vals else None
    per_class_vals = [r["value"] for r in recall.values() if r["value"] is not None]
    return {
        "n": len(t),
        "balanced_accuracy_allow_deny": bal,
        "allow_recall": allow_r,
        "deny_recall": deny_r,
        "bare_face_recall": recall.get("without_mask"),
        "per_class_recall": recall,
        "balanced_accuracy_classes": float(np.mean(per_class_vals)) if per_class_vals else None,
        "confusion": {"labels": list(labels), "matrix": cm},
        "wrong_allow": int((~allow_t & allow_p).sum()),
    }


SIZE_BUCKETS = ((0, 48), (48, 96), (96, 192), (192, 100_000))


def size_bucket(w: int) -> str:
    for lo, hi in SIZE_BUCKETS:
        if lo <= w < hi:
            return f"{lo}-{hi}px" if hi < 100_000 else f">={lo}px"
    return "?"


def grouped(truth: Sequence[str], pred: Sequence[str], keys: Sequence[str], labels: Sequence[str]
            ) -> dict[str, Any]:
    out = {}
    t, p, k = np.asarray(truth), np.asarray(pred), np.asarray(keys)
    for key in sorted(set(keys)):
        m = k == key
        out[key] = door_metrics(t[m].tolist(), p[m].tolist(), labels)
    return out

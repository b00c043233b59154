"""The compare report: one table, training compute per run, and what the epoch budget means."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maskgate_convert.compare import training_macs, write_compare


def run(bal: float, epochs: int, macs: int, train: int = 1000) -> dict[str, Any]:
    door = {"balanced_accuracy_allow_deny": bal, "bare_face_recall": {"value": 0.9}}
    return {"labels": ["with_mask", "without_mask"], "params": 10, "int8_bytes": 100, "multiply_adds": macs,
            "latency_ms_int8_1thread": 1.0, "epochs_run": epochs, "train_sizes": {"train": train},
            "test": {"int8": door, "float": door}, "options": {"epochs": epochs},
            "environment": {"processor": "x86_64", "machine": "x86_64", "python": "3.11", "tensorflow": "2.21"}}


def test_report_has_training_compute_and_says_who_wins_on_which_budget(tmp_path: Path) -> None:
    seed, default, shipped = run(0.95, 3, 400_000_000), run(0.91, 3, 3_000_000), run(0.984, 44, 3_000_000, 2000)
    assert training_macs(seed) == 3 * 1000 * 400_000_000 * 3
    report = tmp_path / "compare.md"
    table = write_compare({"seed": seed, "default": default}, {}, report, 3, shipped)
    text = report.read_text()
    assert "training compute" in table and "3.6 T MAC" in table
    assert "the seed wins on epochs" in text
    assert "4.5x less training compute" in text and "98.4%, above the seed's 95.0%" in text
    # a run reused with --resume keeps the commit it was trained from, and the report says so
    seed["environment"]["commit"], default["environment"]["commit"] = "aaa", "bbb"
    shipped["environment"]["commit"] = "aaa"
    write_compare({"seed": seed, "default": default}, {}, report, 3, shipped)
    assert "trained from commit aaa (seed, shipped); commit bbb (default)." in report.read_text()

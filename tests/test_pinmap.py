"""hardware/pinmap.csv, hardware/README.md and the config's default pins agree."""

from __future__ import annotations

import csv
import dataclasses
import re

from conftest import REPO
from maskgate.config import DEFAULT_PINS, PinSettings

# The Raspberry Pi 40-pin header: BCM GPIO number -> physical pin (same on every 40-pin model).
BCM_TO_PHYSICAL = {
    2: 3, 3: 5, 4: 7, 14: 8, 15: 10, 17: 11, 18: 12, 27: 13, 22: 15, 23: 16, 24: 18, 10: 19, 9: 21,
    25: 22, 11: 23, 8: 24, 7: 26, 0: 27, 1: 28, 5: 29, 6: 31, 12: 32, 13: 33, 19: 35, 16: 36, 26: 37,
    20: 38, 21: 40,
}


def _rows() -> list[dict[str, str]]:
    with open(REPO / "hardware" / "pinmap.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_pinmap_matches_config_defaults() -> None:
    rows = _rows()
    assert {r["config_key"] for r in rows} == set(DEFAULT_PINS)
    defaults = dataclasses.asdict(PinSettings())
    assert defaults == DEFAULT_PINS
    for r in rows:
        bcm = int(r["bcm"])
        assert bcm == DEFAULT_PINS[r["config_key"]], r
        assert int(r["physical"]) == BCM_TO_PHYSICAL[bcm], r
        assert r["direction"] == ("input" if r["config_key"] == "button" else "output"), r
    assert len({r["bcm"] for r in rows}) == len(rows)


def test_fixed_pins_of_this_build() -> None:
    assert {r["config_key"]: (int(r["bcm"]), int(r["physical"])) for r in _rows()} == {
        "green": (17, 11), "red": (27, 13), "buzzer": (18, 12), "relay": (22, 15), "button": (23, 16)}


def test_readme_table_and_example_config_agree() -> None:
    readme = (REPO / "hardware" / "README.md").read_text()
    for r in _rows():
        assert re.search(rf"\|[^|\n]*\| {r['bcm']} \| {r['physical']} \|", readme), r["function"]
    example = (REPO / "edge" / "maskgate" / "data" / "maskgate.example.toml").read_text()
    section = example.split("[outputs.pins]", 1)[1]
    for key, bcm in DEFAULT_PINS.items():
        assert re.search(rf"^{key} = {bcm}$", section, re.M), key

"""Shared fixtures: where ../shared is, and the rule that CI never skips a data test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Face crops the tests' synthetic doors use: chosen once as crops where YuNet finds exactly one face
# at least half the crop wide (a detector criterion, independent of the classifier).
SYNTH_FACES = {
    "with_mask": ["c7_00441.jpg", "fm12k_03454.jpg", "c7_01888.jpg", "fm12k_05717.jpg", "c7_00079.jpg",
                  "c7_00166.jpg", "fm12k_02635.jpg", "fm12k_01098.jpg", "mfn_00053.jpg", "fm12k_03490.jpg"],
    "without_mask": ["fm12k_06993.jpg", "c7_02447.jpg", "fm12k_06921.jpg", "fm12k_10876.jpg",
                     "fm12k_09973.jpg", "fm12k_09384.jpg", "fm12k_06671.jpg", "c7_03277.jpg"],
    "incorrect_mask": ["mfn2_00463.jpg", "mfn2_00623.jpg", "mfn2_00562.jpg", "mfn2_00260.jpg",
                       "mfn2_00443.jpg", "mfn_00437.jpg"],
}


def shared_dir() -> Path:
    return Path(os.environ.get("MASKGATE_SHARED") or REPO.parent / "shared").resolve()


def require_data() -> bool:
    return os.environ.get("MASKGATE_REQUIRE_DATA", "") not in ("", "0")


def need(path: Path, what: str) -> Path:
    """Return ``path``, or skip (fail under MASKGATE_REQUIRE_DATA=1) when it is missing."""
    if not path.exists():
        msg = f"{what} not found at {path} (set MASKGATE_SHARED to the shared folder)"
        if require_data():
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return need(shared_dir(), "shared data folder")


@pytest.fixture(scope="session")
def yunet_path(shared: Path) -> Path:
    return need(shared / "models" / "face_detection_yunet_2023mar.onnx", "YuNet model")


@pytest.fixture(scope="session")
def scenes_dir(shared: Path) -> Path:
    return need(shared / "data" / "scenes", "annotated scenes")


@pytest.fixture(scope="session")
def faces_dir(shared: Path) -> Path:
    return need(shared / "data" / "faces", "labelled faces")


@pytest.fixture(autouse=True)
def _yunet_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the model cache at a temp dir holding the shared YuNet, so no test downloads."""
    cache = tmp_path_factory.getbasetemp() / "xdg-cache"
    target = cache / "maskgate" / "face_detection_yunet_2023mar.onnx"
    src = shared_dir() / "models" / "face_detection_yunet_2023mar.onnx"
    if not target.exists() and src.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(src.read_bytes())
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    # `maskgate run` writes its event log to the state directory: never the real one in a test
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-state"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if require_data() and not shared_dir().exists():
        raise pytest.UsageError(f"MASKGATE_REQUIRE_DATA=1 but {shared_dir()} does not exist")

"""YuNet lookup, verification and download (download tested against a loopback HTTP server)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from maskgate import cli
from maskgate.detector import FaceDetector
from maskgate.errors import DownloadError, ModelError
from maskgate.imageio import read_bgr
from maskgate.model_store import YUNET_FILE, fetch_yunet, find_yunet, verify


@pytest.fixture
def http_models(shared: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shared / "models"))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_download_from_loopback_and_verify(http_models: str, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / YUNET_FILE
    assert fetch_yunet(url=f"{http_models}/{YUNET_FILE}", dest=dest) == dest
    assert verify(dest) == dest
    assert not list(dest.parent.glob("*.part"))


def test_download_of_wrong_file_is_refused_and_nothing_left(http_models: str, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / YUNET_FILE
    with pytest.raises(DownloadError, match="sha256"):
        fetch_yunet(url=f"{http_models}/LICENSE.yunet", dest=dest)
    assert not dest.exists() and not list(dest.parent.glob("*"))


def test_offline_error_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="Offline\\? Copy") as err:
        fetch_yunet(url="http://127.0.0.1:9/nothing.onnx", dest=tmp_path / "cache" / "maskgate" / YUNET_FILE,
                    timeout=2)
    assert "--detector-model PATH" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # the cache folders it made for the download are gone again


def test_models_fetch_copies_a_local_file_into_the_cache_after_checking_it(
        yunet_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "cache" / YUNET_FILE
    assert cli.main(["models", "fetch", "--url", yunet_path.as_uri(), "--dest", str(dest)]) == 0
    assert verify(dest) == dest and f"face detector ready: {dest}" in capsys.readouterr().out
    wrong = tmp_path / "wrong.onnx"
    wrong.write_bytes(b"\x08\x01" * 100)
    assert cli.main(["models", "fetch", "--url", wrong.as_uri(), "--dest", str(tmp_path / "other.onnx")]) == 2
    assert "sha256" in capsys.readouterr().err and not (tmp_path / "other.onnx").exists()


def test_lfs_pointer_and_wrong_file_refused(tmp_path: Path) -> None:
    lfs = tmp_path / "lfs.onnx"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:8f23\nsize 232589\n")
    with pytest.raises(ModelError, match="Git LFS pointer"):
        find_yunet(lfs)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01" * 100)
    with pytest.raises(ModelError, match="does not match"):
        find_yunet(bad)
    with pytest.raises(ModelError, match="not found"):
        find_yunet(tmp_path / "missing.onnx")


def test_cache_is_used_without_download(yunet_path: Path) -> None:
    # conftest put the shared model into $XDG_CACHE_HOME/maskgate
    p = find_yunet(None, download=False)
    assert p.name == YUNET_FILE and verify(p) == p


def test_detector_finds_annotated_faces(scenes_dir: Path) -> None:
    det = FaceDetector()
    img = read_bgr(scenes_dir / "images" / "maksssksksss0.jpg")
    faces = det.detect(img)
    assert len(faces) >= 2
    assert all(0 <= f.box[0] and f.box[0] + f.box[2] <= img.shape[1] for f in faces)


def test_the_installed_services_copy_is_used_before_downloading(
        yunet_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sudo -u maskgate maskgate check` on a Pi: no $STATE_DIRECTORY outside systemd, so the user's cache
    is empty; the copy install.sh fetched into the service's state directory is found, not downloaded again."""
    service = tmp_path / "var-lib-maskgate" / "models"
    service.mkdir(parents=True)
    (service / YUNET_FILE).write_bytes(yunet_path.read_bytes())
    monkeypatch.setattr("maskgate.model_store.SERVICE_MODELS", service)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))

    def no_download(*_a: object, **_k: object) -> Path:
        raise AssertionError("downloaded although the service's copy is there")
    monkeypatch.setattr("maskgate.model_store.fetch_yunet", no_download)
    assert find_yunet() == service / YUNET_FILE
    (service / YUNET_FILE).write_bytes(b"\x08\x01" * 100)  # a damaged copy is refused, never used
    with pytest.raises(ModelError, match="does not match"):
        find_yunet()

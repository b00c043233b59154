"""Find, download and verify the YuNet face-detector model.

Order: the configured path, then the cache (``$XDG_CACHE_HOME/maskgate`` or, under systemd,
``$STATE_DIRECTORY``), then the installed service's copy (:data:`SERVICE_MODELS`, read only: so
``maskgate check`` or ``classify`` run by hand on a Pi use the file the installer fetched), then a
one-time download from OpenCV Zoo at a pinned revision. Every file is checked against its sha256; a
Git LFS pointer or any other wrong file is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path

from .errors import DownloadError, ModelError

log = logging.getLogger(__name__)

YUNET_FILE = "face_detection_yunet_2023mar.onnx"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
YUNET_REVISION = "fef72f8fa7c52eaf116d3df358d24e6e959ada0e"
YUNET_URL = (f"https://github.com/opencv/opencv_zoo/raw/{YUNET_REVISION}/models/"
             f"face_detection_yunet/{YUNET_FILE}")
_LFS_MAGIC = b"version https://git-lfs"
SERVICE_MODELS = Path("/var/lib/maskgate/models")
"""The service's state directory's models (``systemd/install.sh`` fetches the detector there); outside
systemd, where ``$STATE_DIRECTORY`` is unset, it is looked in before downloading."""


def cache_dir() -> Path:
    """Where downloaded models live: the service's state directory, else the XDG cache."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0]) / "models"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "maskgate"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, sha256: str = YUNET_SHA256) -> Path:
    """Return ``path`` if it holds the expected bytes, else raise ModelError saying why."""
    try:
        head = path.open("rb").read(64)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read detector model ({exc.strerror or exc})") from exc
    if head.startswith(_LFS_MAGIC):
        raise ModelError(f"{path}: is a Git LFS pointer, not the model; run `git lfs pull` or "
                         "`maskgate models fetch`")
    digest = sha256_file(path)
    if digest != sha256:
        raise ModelError(f"{path}: sha256 {digest} does not match the expected {sha256}; "
                         "delete it and run `maskgate models fetch`")
    return path


def find_yunet(configured: str | Path | None = None, *, download: bool = True,
               url: str = YUNET_URL) -> Path:
    """Locate the verified YuNet model, downloading it once if allowed."""
    if configured:
        p = Path(configured).expanduser()
        if p.is_dir():
            p = p / YUNET_FILE
        if p.exists():
            return verify(p)
        raise ModelError(f"{p}: detector model not found (configured path); fix the path or "
                         "remove it to use the cache")
    cached = cache_dir() / YUNET_FILE
    if cached.exists():
        return verify(cached)
    installed = SERVICE_MODELS / YUNET_FILE
    if installed != cached and os.access(installed, os.R_OK):
        return verify(installed)
    if not download:
        raise ModelError(f"{cached}: detector model not in the cache; run `maskgate models fetch`")
    return fetch_yunet(url=url, dest=cached)


def fetch_yunet(url: str = YUNET_URL, dest: Path | None = None, timeout: float = 30.0) -> Path:
    """Download the YuNet model to ``dest`` (default: the cache), verify it, and return its path."""
    import urllib.error  # here, not at the top: the daemon with a cached model never loads urllib or ssl
    import urllib.request

    dest = dest or cache_dir() / YUNET_FILE
    if dest.exists():
        try:
            return verify(dest)
        except ModelError:
            log.warning("%s: cached file is wrong, downloading again", dest)
    made = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]  # deepest first
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, dest)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".yunet-", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 16):
                out.write(chunk)
        try:
            verify(tmp)
        except ModelError as exc:
            raise DownloadError(f"downloaded {url} but it is wrong: {exc}") from exc
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(
            f"cannot download the face detector from {url} ({exc}). Offline? Copy {YUNET_FILE} "
            f"(sha256 {YUNET_SHA256}) to {dest}, set detector.model in the config, or pass "
            "--detector-model PATH (classify, demo, bench)") from exc
    finally:
        tmp.unlink(missing_ok=True)
        if not dest.exists():  # a failed download leaves no empty cache folders behind
            for d in made:
                with contextlib.suppress(OSError):
                    d.rmdir()
    return dest

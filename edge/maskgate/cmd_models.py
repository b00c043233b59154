"""``maskgate models fetch``: download and verify the face-detector model ahead of time."""

from __future__ import annotations

import argparse
from pathlib import Path

from .model_store import YUNET_URL, fetch_yunet


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="manage the downloaded face-detector model")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    f = msub.add_parser("fetch", help="download the YuNet detector once and check its sha256")
    f.add_argument("--url", default=YUNET_URL, help="where to download from (default: OpenCV Zoo, pinned)")
    f.add_argument("--dest", type=Path, default=None, help="file to write (default: the cache)")
    f.set_defaults(func=_fetch)


def _fetch(args: argparse.Namespace) -> int:
    path = fetch_yunet(url=args.url, dest=args.dest)
    print(f"face detector ready: {path}")
    return 0

"""Does the HTTP side slow the frame loop? Frames/s of the gate on pre-rendered 640x480 synthetic-door
frames (held-out faces, one thread) in three set-ups, interleaved over several rounds of one run:

- ``base``: no HTTP server;
- ``idle``: the server and its observers wired as ``maskgate run`` does, nobody connected;
- ``watched``: the same with the preview on and clients busy: /api/status and /metrics each fetched
  every 0.1 s (10x the status page's rate, far above a Prometheus scrape) and one preview viewer.

Prints frames/s and process CPU time per frame (all threads: the loop and the HTTP side; steadier
than frames/s on a shared machine), each as a ratio to ``base``, and request latencies; asserts
nothing. Usage::

    python benchmarks/http_bench.py [--faces ../shared/data/faces] [--frames 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from maskgate.bundle import load_bundle, split_heads
from maskgate.classifier import Classifier
from maskgate.config import Settings
from maskgate.detector import FaceDetector
from maskgate.httpd import HttpServer, start_http
from maskgate.outputs import Outputs
from maskgate.pipeline import Pipeline, detector_settings
from maskgate.sources import Frame, FrameList
from maskgate.stats import Stats
from maskgate.synthetic import SyntheticDoor

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKGATE_SHARED") or REPO.parent / "shared")


class Clients:
    """Polls /api/status and /metrics every ``period`` s and watches /preview.mjpg, in threads."""

    def __init__(self, server: HttpServer, period: float = 0.1) -> None:
        self.server = server
        self.period = period
        self.stop = threading.Event()
        self.latency: dict[str, list[float]] = {"/api/status": [], "/metrics": []}
        self.preview_bytes = 0
        self.threads = [threading.Thread(target=self._poll, args=(p,), daemon=True) for p in self.latency]
        self.threads.append(threading.Thread(target=self._watch, daemon=True))

    def _poll(self, path: str) -> None:
        host, port = self.server.address
        while not self.stop.is_set():
            t = time.perf_counter()
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            conn.close()
            assert r.status == 200, (path, r.status)
            self.latency[path].append(time.perf_counter() - t)
            self.stop.wait(self.period)

    def _watch(self) -> None:
        host, port = self.server.address
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", "/preview.mjpg")
        r = conn.getresponse()
        while not self.stop.is_set():
            self.preview_bytes += len(r.read1(65536))
        r.close()
        conn.close()

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)


def run_once(mode: str, s: Settings, frames: list[Frame], detector: FaceDetector, classifier: Classifier
             ) -> dict[str, Any]:
    stats = Stats()
    out = Outputs(s.outputs, MockFactory())
    server = None
    observers: list[Any] = []
    if mode != "base":
        http = dataclasses.replace(s.http, enabled=True, port=0, preview=mode == "watched")
        s = dataclasses.replace(s, http=http)
        server = start_http(s, stats)
        observers = server.board.observers()
    p = Pipeline(s, FrameList(frames), detector, classifier, out, stats=stats, observers=observers,
                 keep_images=server is not None and server.board.keep_images)
    if server is not None:
        server.board.attach(p)
    clients = Clients(server) if mode == "watched" and server is not None else None
    try:
        if clients is not None:
            clients.__enter__()
            time.sleep(0.3)  # the viewer is connected before frames start
        t, cpu = time.perf_counter(), time.process_time()
        p.run()
        elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    finally:
        if clients is not None:
            clients.__exit__()
        out.close()
        if server is not None:
            server.close()
    row: dict[str, Any] = {"fps": stats.frames / elapsed, "cpu_ms": cpu / stats.frames * 1e3}
    if clients is not None and server is not None and server.preview is not None:
        row["status_ms"] = [x * 1e3 for x in clients.latency["/api/status"]]
        row["metrics_ms"] = [x * 1e3 for x in clients.latency["/metrics"]]
        row["encoded"] = server.preview.encoded
        row["frames"] = stats.frames
        row["preview_kb"] = clients.preview_bytes / 1024
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=Path, default=SHARED / "data" / "faces")
    ap.add_argument("--detector-model", type=Path, default=SHARED / "models" / "face_detection_yunet_2023mar.onnx")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    s = Settings()
    door = SyntheticDoor(args.faces, 640, 480, 10, seed=1, realtime=False, start_wall=0.0,
                         heads=split_heads(load_bundle(), "test") or None)
    door.open()
    frames = [f for i in range(args.frames) if (f := door.frame(i)) is not None]
    detector = FaceDetector(detector_settings(s), args.detector_model)
    classifier = Classifier(threads=1)
    print(f"{len(frames)} frames 640x480, {os.cpu_count()} CPUs, classifier {classifier.runtime}; "
          f"{args.rounds} rounds, modes interleaved")
    rows: dict[str, list[dict[str, Any]]] = {"base": [], "idle": [], "watched": []}
    run_once("base", s, frames[:30], detector, classifier)  # warm-up
    for _ in range(args.rounds):
        for mode in rows:
            rows[mode].append(run_once(mode, s, frames, detector, classifier))
    base = statistics.median(r["fps"] for r in rows["base"])
    base_cpu = statistics.median(r["cpu_ms"] for r in rows["base"])
    for mode, rs in rows.items():
        fps = statistics.median(r["fps"] for r in rs)
        per_round = ", ".join(f"{r['fps']:.1f}" for r in rs)
        cpu = statistics.median(r["cpu_ms"] for r in rs)
        print(f"{mode:8s} {fps:7.1f} frames/s (median; rounds {per_round})  ratio to base {fps / base:.3f}; "
              f"process CPU {cpu:.1f} ms/frame, ratio {cpu / base_cpu:.3f}")
    w = rows["watched"]
    status = [x for r in w for x in r["status_ms"]]
    mets = [x for r in w for x in r["metrics_ms"]]
    q = statistics.quantiles
    print(f"watched: /api/status {len(status)} requests, median {statistics.median(status):.1f} ms, "
          f"p95 {q(status, n=20)[-1]:.1f} ms; /metrics {len(mets)} requests, median "
          f"{statistics.median(mets):.1f} ms, p95 {q(mets, n=20)[-1]:.1f} ms")
    enc = sum(r["encoded"] for r in w)
    n = sum(r["frames"] for r in w)
    secs = sum(r["frames"] / r["fps"] for r in w)
    print(f"watched: preview encoded {enc} JPEGs for {n} frames in {secs:.1f} s "
          f"({enc / secs:.1f}/s, limit 5/s), {sum(r['preview_kb'] for r in w) / secs:.0f} KiB/s to the viewer")


if __name__ == "__main__":
    main()

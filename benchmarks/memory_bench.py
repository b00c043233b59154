"""Resident memory of the gate over a long run: ``maskgate demo --source synthetic --fast --frames N`` in a
subprocess, its RSS sampled from /proc while it runs.

Prints numbers and asserts nothing (issue 3's target: at most 150 MB resident, no growth over 10,000
frames). Usage::

    python benchmarks/memory_bench.py [--frames 10000] [--people 1] [--interval 0.1] [--replay N]
        [--faces ../shared/data/faces] [--detector-model ../shared/models/face_detection_yunet_2023mar.onnx]

``--replay N`` measures the gate as a camera feeds it: N frames of the synthetic door are first
recorded (by this script, not the measured process) to a temporary MJPEG video, which the demo then
replays in a loop (``source.loop``), decoding each frame as a USB camera's stream would be. The
synthetic door's renderer and face cache, which a camera does not need, are then not in the numbers.

The demo runs the whole pipeline with the default configuration (only the detector model path and the
faces folder are set, in a temporary config file) on gpiozero's mock pins. Progress comes from the
frame numbers of the demo's decision lines. "start" is the RSS once ``--warmup`` frames were processed
(models loaded, caches filled), "end" the last sample, "peak" the kernel's high-water mark (VmHWM);
growth is end minus start, and the slope a least-squares fit of RSS against frames after the warm-up.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKGATE_SHARED") or REPO.parent / "shared")
FRAME_RE = re.compile(r" frame +(\d+) ")


def status_kb(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def record(video: Path, frames: int, faces: Path, people: int, seed: int) -> None:
    """Write ``frames`` frames of the synthetic door (640x480, 10 fps) to an MJPEG video."""
    import cv2

    from maskgate.synthetic import SyntheticDoor

    door = SyntheticDoor(faces, 640, 480, 10, people=people, seed=seed, realtime=False)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    door.open()
    try:
        for _ in range(frames):
            f = door.read()
            if f is None:
                break
            writer.write(f.image)
    finally:
        writer.release()
        door.close()
    print(f"recorded {frames} synthetic frames to {video.name} ({video.stat().st_size / 2**20:.0f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--people", type=int, default=1, help="synthetic: at most this many people at once")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between RSS samples")
    ap.add_argument("--warmup", type=int, default=500, help="frames before 'start' is taken")
    ap.add_argument("--faces", type=Path, default=SHARED / "data" / "faces")
    ap.add_argument("--config-extra", default="", help="more TOML appended to the temporary config, e.g. "
                                                        "'[classifier]\\nsecond_opinion = \"deny\"'")
    ap.add_argument("--replay", type=int, default=0, metavar="N",
                    help="record N synthetic frames to a video first and measure the demo replaying it (looped)")
    ap.add_argument("--detector-model", type=Path,
                    default=SHARED / "models" / "face_detection_yunet_2023mar.onnx")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "maskgate.toml"
        extra = args.config_extra.encode().decode("unicode_escape")
        if args.replay:
            video = Path(tmp) / "door.avi"
            record(video, args.replay, args.faces, args.people, args.seed)
            cfg.write_text(f'[detector]\nmodel = "{args.detector_model}"\n[source]\nloop = true\n{extra}\n')
            source = [str(video)]
        else:
            cfg.write_text(f'[detector]\nmodel = "{args.detector_model}"\n[source]\nfaces = "{args.faces}"\n{extra}\n')
            source = ["synthetic", "--people", str(args.people), "--seed", str(args.seed)]
        cmd = [sys.executable, "-m", "maskgate", "demo", "--config", str(cfg), "--source", *source,
               "--fast", "--frames", str(args.frames)]
        print("command: " + " ".join(cmd))
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        last = [-1]

        def follow() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                m = FRAME_RE.search(line)
                if m:
                    last[0] = int(m.group(1))

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        samples: list[tuple[float, int, int]] = []  # (seconds, frame, RSS kB)
        peak = 0
        while proc.poll() is None:
            rss = status_kb(proc.pid, "VmRSS")
            hwm = status_kb(proc.pid, "VmHWM")
            if rss is not None:
                samples.append((time.monotonic() - t0, last[0], rss))
            if hwm is not None:
                peak = max(peak, hwm)
            time.sleep(args.interval)
        reader.join(timeout=5)
        err = proc.stderr.read() if proc.stderr else ""
    elapsed = time.monotonic() - t0
    summary = [line for line in err.splitlines() if "demo summary" in line]
    if proc.returncode != 0 or not samples:
        print(f"demo failed (exit {proc.returncode}):\n{err[-2000:]}")
        sys.exit(1)

    mb = 1 / 1024
    running = [s for s in samples if s[1] >= 0]
    after = [s for s in running if s[1] >= args.warmup]
    start = after[0] if after else running[0]
    end = samples[-1]
    print(f"{args.frames} frames in {elapsed:.0f} s ({len(samples)} samples); last frame seen {last[0]}")
    if summary:
        print(summary[-1].strip())
    # RSS moves up and down by several MB as buffers are freed and taken again, so compare tenths of
    # the run (by frame) rather than two single samples
    tenths: list[list[float]] = [[] for _ in range(10)]
    for _, frame, rss in running:
        tenths[min(9, frame * 10 // max(1, args.frames))].append(rss * mb)
    print("RSS by tenth of the run, median (max) MB: " + "  ".join(
        f"{np.median(t):.1f} ({max(t):.1f})" if t else "-" for t in tenths))
    print(f"first frame: {running[0][2] * mb:.1f} MB" if running else "no frame seen")
    print(f"start (after {args.warmup} frames): {start[2] * mb:.1f} MB at frame {start[1]}")
    print(f"peak (VmHWM): {peak * mb:.1f} MB")
    print(f"end: {end[2] * mb:.1f} MB at frame {end[1]}")
    print(f"growth end - start: {(end[2] - start[2]) * mb:+.1f} MB over {end[1] - start[1]} frames")
    full = [t for t in tenths[1:] if t]
    if len(full) >= 2:
        print(f"growth, last tenth against the second (medians): {np.median(full[-1]) - np.median(full[0]):+.1f} MB; "
              f"(maxima): {max(full[-1]) - max(full[0]):+.1f} MB")
    if len(after) >= 3:
        f = np.array([s[1] for s in after], float)
        r = np.array([s[2] for s in after], float) * mb
        slope = np.polyfit(f, r, 1)[0] * 1000
        print(f"slope after warm-up (least squares): {slope:+.3f} MB per 1000 frames")

if __name__ == "__main__":
    main()

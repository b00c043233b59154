"""What MQTT costs the frame loop, with the broker up and with it gone, against MQTT off in the
same run: the time of one sink call (what the loop pays per decision) and the gate's frames/s on
a synthetic door replayed as fast as it goes. Starts its own mosquitto on loopback (Debian
``mosquitto``); "down" is a port nobody listens on. Prints numbers and asserts nothing. Usage::

    python benchmarks/mqtt_bench.py [--faces ../shared/data/faces] [--visits 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from maskgate.config import MqttSettings, Settings
from maskgate.daemon import run_gate
from maskgate.events import DecisionEvent
from maskgate.mqtt import MqttPublisher
from maskgate.stats import Stats
from maskgate.synthetic import SyntheticDoor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser {getpass.getuser()}\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


def mqtt(port: int) -> MqttSettings:
    return dataclasses.replace(MqttSettings(), enabled=True, host="127.0.0.1", port=port, queue_size=100_000,
                               client_id=f"bench-{port}-{os.getpid()}")


def sink_calls(port: int, n: int = 5000) -> list[float]:
    pub = MqttPublisher(mqtt(port)).start()
    time.sleep(1.0)
    event = DecisionEvent(time.time(), "deny", "without_mask", 0.9, 1, 1, "enforce", True)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        pub(event)
        times.append(time.perf_counter() - t)
    pub.close()
    return times


def gate_fps(settings: Settings, faces: Path, visits: int) -> float:
    door = SyntheticDoor(faces, 640, 480, 10, visits=visits, realtime=False, start_wall=0.0, seed=2)
    stats = Stats()
    t = time.perf_counter()
    run_gate(settings, pin_factory=MockFactory(), source=door, stats=stats)
    return stats.frames / (time.perf_counter() - t)


def main() -> None:
    shared = Path(os.environ.get("MASKGATE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, default=shared / "data" / "faces")
    ap.add_argument("--detector-model", default=str(shared / "models" / "face_detection_yunet_2023mar.onnx"))
    ap.add_argument("--visits", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker, up = start_broker(Path(tmp))
        down = free_port()
        try:
            for name, port in (("broker up", up), ("broker down", down)):
                us = sorted(t * 1e6 for t in sink_calls(port))
                print(f"sink call, {name}: median {us[len(us) // 2]:.1f} us, p99 {us[int(len(us) * 0.99)]:.1f} us, "
                      f"max {us[-1]:.1f} us ({len(us)} calls)")
            base = Settings()
            base = dataclasses.replace(base, events=dataclasses.replace(base.events, enabled=False),
                                       detector=dataclasses.replace(base.detector, model=args.detector_model))
            variants = {"off": base, "broker down": dataclasses.replace(base, mqtt=mqtt(down)),
                        "broker up": dataclasses.replace(base, mqtt=mqtt(up))}
            fps: dict[str, list[float]] = {k: [] for k in variants}
            for _ in range(args.rounds):  # interleaved, so load changes hit every variant alike
                for k, s in variants.items():
                    fps[k].append(gate_fps(s, args.faces, args.visits))
            ref = statistics.median(fps["off"])
            for k, v in fps.items():
                print(f"gate frames/s, MQTT {k}: median {statistics.median(v):.1f}, ratio to off "
                      f"{statistics.median(v) / ref:.2f} (rounds {[round(x, 1) for x in v]})")
        finally:
            broker.terminate()
            broker.wait()


if __name__ == "__main__":
    main()

"""``maskgate run`` as a process: SIGHUP reloads (a bad file keeps the old settings), SIGTERM stops
cleanly with the relay off first."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from maskgate.config import DEFAULT_PINS, OutputSettings
from maskgate.daemon import signal_handlers
from maskgate.outputs import Outputs


class Log:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stderr is not None
        stream = proc.stderr

        def pump() -> None:
            for line in stream:
                self.lines.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} not in log:\n" + "".join(self.seen[-40:]))


def config(path: Path, faces: Path, mode: str) -> None:
    path.write_text(f'[source]\ntype = "synthetic"\nfaces = "{faces}"\nfps = 10\nwidth = 320\nheight = 240\n'
                    f'[decision]\nmode = "{mode}"\n[outputs]\npin_factory = "mock"\n')


def test_run_reloads_on_sighup_and_stops_on_sigterm(tmp_path: Path, faces_dir: Path) -> None:
    cfg = tmp_path / "maskgate.toml"
    config(cfg, faces_dir, "enforce")
    proc = subprocess.Popen([sys.executable, "-m", "maskgate", "-v", "run", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    log = Log(proc)
    try:
        log.wait_for("gate running: mode enforce")
        config(cfg, faces_dir, "advisory")
        proc.send_signal(signal.SIGHUP)
        log.wait_for("configuration reloaded: mode advisory")
        cfg.write_text('[decision]\nmode = "lockdown"\n')
        proc.send_signal(signal.SIGHUP)
        line = log.wait_for("reload failed, keeping the running configuration")
        assert "decision.mode" in line or "problem" in line
        proc.send_signal(signal.SIGTERM)
        log.wait_for("SIGTERM: stopping")
        assert proc.wait(timeout=30) == 0
        log.wait_for("gate stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_turns_the_relay_off_before_the_loop_stops() -> None:
    factory = MockFactory()
    out = Outputs(OutputSettings(), factory)

    class FakePipeline:
        outputs = out
        stopped_with_relay: bool | None = None

        def stop(self) -> None:
            self.stopped_with_relay = out.relay_on

        def request_reload(self) -> None:
            pass

    fake = FakePipeline()
    before = signal.getsignal(signal.SIGTERM)
    try:
        out.pulse()
        with signal_handlers(fake):  # type: ignore[arg-type]
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        assert fake.stopped_with_relay is False
        assert [bool(s.state) for s in factory.pin(DEFAULT_PINS["relay"]).states] == [False, True, False]
    finally:
        out.close()
    assert signal.getsignal(signal.SIGTERM) == before


def test_run_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[outputs]\nrelay_pulse = 0\n")
    proc = subprocess.run([sys.executable, "-m", "maskgate", "run", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "outputs.relay_pulse: must be >= 0.1 (got 0.0)" in proc.stderr


@pytest.mark.parametrize("missing", ["nope.toml"])
def test_run_with_a_missing_config_file_exits_2(tmp_path: Path, missing: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "maskgate", "run", "--config", str(tmp_path / missing)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "(file): not found" in proc.stderr


def test_run_speaks_the_notify_protocol(tmp_path: Path, faces_dir: Path) -> None:
    """Under systemd (a real Unix datagram socket here): READY, WATCHDOG from the loop, STOPPING."""
    import socket

    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    cfg = tmp_path / "maskgate.toml"
    config(cfg, faces_dir, "enforce")
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="400000")
    proc = subprocess.Popen([sys.executable, "-m", "maskgate", "run", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, env=env)
    got: list[str] = []
    try:
        while not any(m.startswith("READY=1") for m in got):
            got.append(sock.recv(4096).decode())
        n_watchdog = 0
        while n_watchdog < 2:
            msg = sock.recv(4096).decode()
            got.append(msg)
            n_watchdog += msg.strip() == "WATCHDOG=1"
        proc.send_signal(signal.SIGTERM)
        while not any(m.startswith("STOPPING=1") for m in got):
            got.append(sock.recv(4096).decode())
        assert proc.wait(timeout=30) == 0
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ready = next(m for m in got if m.startswith("READY=1"))
    assert "STATUS=mode enforce" in ready

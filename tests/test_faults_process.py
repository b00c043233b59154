"""The daemon as a process: SIGTERM during an unlock pulse, SIGKILL and a restart (seen through the
journal pin backend, which outlives the process), a broken config on SIGHUP, broken models, a full
disk under the event stream, and a wall clock that was never set."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from fault_helpers import FACES, RELAY, Gate, door, make_models, settings
from maskgate import cli
from maskgate.classifier import Classifier
from maskgate.decider import Decision
from maskgate.errors import ModelError
from maskgate.events import EventWriter, FrameResult
from maskgate.faults import BUNDLE_FAULTS, JOURNAL_ENV, broken_bundle, read_journal


class Proc:
    """``maskgate -v run`` in a subprocess with its log lines timestamped as they arrive."""

    def __init__(self, cfg: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "maskgate", "-v", "run", "--config", str(cfg)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        stream = self.proc.stderr
        assert stream is not None
        threading.Thread(target=lambda: [self.lines.put(line) for line in stream], daemon=True).start()

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} not in log:\n" + "".join(self.seen[-30:]))

    def drain(self) -> list[str]:
        while True:
            try:
                self.seen.append(self.lines.get(timeout=0.5))
            except queue.Empty:
                return self.seen

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def log_time(line: str) -> float:
    """Epoch seconds of a log line (`%(asctime)s`: local time, millisecond resolution)."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def masked_only(faces_dir: Path, dest: Path) -> Path:
    """A faces folder where everyone wears a mask (every label folder holds the masked crops), so
    the synthetic door opens for every visitor."""
    for label in FACES:
        (dest / label).mkdir(parents=True)
        for name in FACES["with_mask"]:
            (dest / label / name).symlink_to(faces_dir / "with_mask" / name)
    return dest


def write_config(path: Path, faces: Path, *, pulse: float = 5.0, extra: str = "") -> Path:
    # 30 fps: visitors walk up three times faster, so the door opens sooner after start
    path.write_text(f'[source]\ntype = "synthetic"\nfaces = "{faces}"\nfps = 30\nwidth = 320\nheight = 240\n'
                    f'[outputs]\npin_factory = "journal"\nrelay_pulse = {pulse}\n{extra}')
    return path


def relay_lines(journal: Path, after: float = 0.0) -> list[tuple[float, str]]:
    return [(t, v) for t, pin, v in read_journal(journal) if pin == RELAY and t >= after]


def wait_relay(journal: Path, value: str, after: float = 0.0, timeout: float = 90.0) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for t, v in relay_lines(journal, after):
            if v == value:
                return t
        time.sleep(0.005)
    raise AssertionError(f"relay never went {value}: {relay_lines(journal)}")


@pytest.fixture
def gate_env(tmp_path: Path, faces_dir: Path) -> tuple[Path, Path, dict[str, str]]:
    journal = tmp_path / "pins.journal"
    cfg = write_config(tmp_path / "maskgate.toml", masked_only(faces_dir, tmp_path / "faces"))
    env = dict(os.environ, **{JOURNAL_ENV: str(journal)})
    env.pop("NOTIFY_SOCKET", None)
    return cfg, journal, env


def test_after_sigkill_a_restarted_daemon_drives_the_relay_off_before_loading_anything(
        gate_env: tuple[Path, Path, dict[str, str]]) -> None:
    cfg, journal, env = gate_env
    first = Proc(cfg, env)
    try:
        wait_relay(journal, "1")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=30)
    finally:
        first.kill()
    t_kill = time.time()
    # the process is gone and the relay was on: the journal's last word on it is "1" (on the Pi the
    # external pull-down now holds the relay off; a mock pin keeps what it was told)
    assert relay_lines(journal)[-1][1] == "1"
    second = Proc(cfg, env)  # what systemd's Restart=on-failure does next
    try:
        running = second.wait_for("gate running")
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(timeout=30) == 0
    finally:
        second.kill()
    log = second.drain()
    t_first_write, value = relay_lines(journal, t_kill)[0]
    assert value == "0"  # the new daemon's first relay write: off
    loading = next(line for line in log if "outputs up, relay off; loading the models" in line)
    model = next(line for line in log if "maskgate.runtime: runtime" in line)  # the classifier loaded
    assert t_first_write <= log_time(loading) + 0.001 <= log_time(model) + 0.001 <= log_time(running) + 0.001
    order = [i for i, line in enumerate(log) if "outputs on JournalFactory" in line or "maskgate.runtime" in line
             or "gate running" in line]
    # outputs first, then the models (the classifier and its second opinion), then the loop
    assert len(order) >= 3 and "outputs on JournalFactory" in log[order[0]] and "gate running" in log[order[-1]]
    assert all("maskgate.runtime" in log[i] for i in order[1:-1])


def test_broken_config_on_sighup_is_reported_and_sigterm_in_a_pulse_turns_the_relay_off_within_0_2_s(
        gate_env: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    """Under a notify socket (systemd's side is a real Unix datagram socket here): a broken config on
    SIGHUP keeps the running one and says so (log, RELOADING=1 then READY=1 with STATUS); then a
    SIGTERM during an unlock pulse turns the relay off within 0.2 s and the process exits 0."""
    cfg, journal, env = gate_env
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    env = dict(env, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="2000000")
    good = cfg.read_text()
    p = Proc(cfg, env)

    def until(prefix: str) -> str:
        while True:
            msg = sock.recv(4096).decode()
            if msg.startswith(prefix):
                return msg

    try:
        until("READY=1")
        cfg.write_text(good + "relay_max_on = 0\n")  # invalid: below the minimum
        p.proc.send_signal(signal.SIGHUP)
        assert until("RELOADING=1").startswith("RELOADING=1\nMONOTONIC_USEC=")
        ready = until("READY=1")
        assert "STATUS=reload failed, running configuration kept:" in ready and "outputs.relay_max_on" in ready
        p.wait_for("reload failed, keeping the running configuration")
        assert any("outputs.relay_max_on: must be >= 0.1 (got 0.0)" in line for line in p.drain())
        until("WATCHDOG=1")  # still running, still healthy
        t_on = wait_relay(journal, "1")  # the door opened (old settings: a 5 s pulse) ...
        t_term = time.time()
        p.proc.send_signal(signal.SIGTERM)  # ... and the service is stopped in the middle of it
        until("STOPPING=1")
        assert p.proc.wait(timeout=30) == 0
    finally:
        sock.close()
        p.kill()
    after = relay_lines(journal, t_on)
    t_off = next(t for t, v in after if v == "0")
    assert t_off - t_term < 0.2, (t_term, after)
    assert after[-1][1] == "released"  # clean exit: the pin handed back (the pull-down holds it off)
    log = "".join(p.drain())
    assert "SIGTERM: stopping" in log and "gate stopped" in log
    # a reload or a stop asked for is routine: info, kept out of `journalctl -p warning`
    assert "INFO maskgate.daemon: SIGTERM: stopping" in log


@pytest.mark.parametrize("kind", BUNDLE_FAULTS)
def test_a_broken_model_is_refused_with_its_path_and_the_relay_is_never_energized(
        kind: str, tmp_path: Path, faces_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    bundle = broken_bundle(kind, tmp_path / f"bundle-{kind}")
    with pytest.raises(ModelError, match=str(bundle)):
        Classifier(bundle)
    journal = tmp_path / "pins.journal"
    monkeypatch.setenv(JOURNAL_ENV, str(journal))
    cfg = write_config(tmp_path / "m.toml", faces_dir, extra=f'[classifier]\nmodel = "{bundle}"\n')
    assert cli.main(["run", "--config", str(cfg)]) == 2
    assert str(bundle) in capsys.readouterr().err
    values = [v for _t, v in relay_lines(journal)]
    assert values[0] == "0" and "1" not in values and values[-1] == "released"  # driven off first, never on


def test_the_event_stream_on_a_full_disk_is_logged_once_counted_and_the_gate_goes_on(
        faces_dir: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.INFO):
        rc = cli.main(["demo", "--source", "synthetic", "--faces", str(faces_dir), "--fast", "--frames", "30",
                       "--seed", "3", "--events", "/dev/full"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().err.split("demo summary: ")[1])
    assert summary["frames"] == 30 and summary["errors"] == 0
    errors = [r.getMessage() for r in caplog.records if r.name == "maskgate.events" and r.levelno >= logging.ERROR]
    assert errors == ["events: cannot write to /dev/full (No space left on device); lines are dropped and "
                      "counted until it works again"]
    w = EventWriter("/dev/full")
    try:
        result = FrameResult(0, 0.0, (), Decision(0.0, "idle"), {"green": False, "red": False, "buzzer": False,
                                                                "relay": False})
        for _ in range(3):
            w(result)
        assert w.errors == 3 and w.written == 0 and "errors=3" in repr(w)
    finally:
        w.close()
        w.close()


def test_an_unset_wall_clock_changes_no_decision(faces_dir: Path, yunet_path: Path) -> None:
    """A Pi without a real-time clock boots in 1970 until NTP answers. Decisions follow frame time and
    the relay's timer the monotonic clock, so the door behaves the same; only a schedule, which needs
    local time, keeps the gate inactive (door locked) until the clock is right."""
    det, clf = make_models(yunet_path)
    script = [["with_mask"], ["without_mask"]]
    unset = Gate(settings(), door(faces_dir, script, seed=1, start_wall=0.0), det, clf).run()
    synced = Gate(settings(), door(faces_dir, script, seed=1, start_wall=time.time()), det, clf).run()
    assert unset.recorder.triggers() == synced.recorder.triggers() == ["open", "alarm"]
    scheduled = settings(schedule={"enabled": True, "hours": ("08:00-20:00",)})
    dark = Gate(scheduled, door(faces_dir, script[:1], seed=1, start_wall=0.0), det, clf).run()
    assert dark.recorder.triggers() == [] and dark.factory.pin(RELAY).states[-1].state is False
    assert all(not e.result.decision.active for e in dark.recorder.events)

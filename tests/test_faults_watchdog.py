"""The watchdog judges outcomes: a stage stuck past its limit, or no frame processed for too long,
stops the systemd watchdog feed (a real Unix datagram socket here) and makes the door safe;
camera reopen attempts are healthy for ``health.fault_grace`` seconds."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fault_helpers import RED, RELAY, Gate, door, high_periods, make_models, settings
from maskgate.classifier import Classifier
from maskgate.config import HealthSettings, OutputSettings, SourceSettings
from maskgate.daemon import warn_if_watchdog_outlasts_relay
from maskgate.detector import FaceDetector
from maskgate.errors import SourceError
from maskgate.faults import FaultyCamera, FaultyClassifier, FaultyDetector, Injector
from maskgate.health import MAX_STUCK_READS, Health, HealthMonitor, watched
from maskgate.sdnotify import Notifier

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_health_verdict_judges_outcomes_on_an_injected_clock() -> None:
    clock = FakeClock()
    h = Health(HealthSettings(detect_timeout=2.0, loop_timeout=1.0, fault_grace=10.0),
               SourceSettings(frame_timeout=5.0, reopen_max_delay=3.0), clock=clock)
    assert h.verdict().ok
    with h.stage("loop"):
        clock.now += 0.5
        with h.stage("detect"):
            clock.now += 1.9
            assert h.verdict().ok  # a slow detection within its limit; the loop's own limit waits
            clock.now += 0.2
            v = h.verdict()
            assert not v.ok and v.reason == "stage detect running for 2.1 s (limit 2 s)"
        assert h.verdict().ok  # detection returned: the loop's own time starts again
        clock.now += 1.1
        assert h.verdict().reason.startswith("stage loop running for 1.1 s")
        h.frame_done()
    with h.stage("capture"):
        clock.now += 6.9  # frame_timeout + margin
        assert h.verdict().ok
    with h.stage("backoff"):
        clock.now += 5.1  # reopen_max_delay + margin
        assert h.verdict().reason.startswith("stage backoff")
    # out of every stage, but no frame processed for longer than fault_grace
    assert h.verdict().reason.startswith("no frame processed for 12 s (limit health.fault_grace 10 s)")
    h.frame_done()
    assert h.verdict().ok
    h.note_stuck_reads(MAX_STUCK_READS + 1)
    assert "camera reads stuck" in h.verdict().reason


def test_watched_parts_mark_every_call_as_their_stage() -> None:
    clock = FakeClock()
    h = Health(clock=clock)
    seen: list[list[str]] = []

    class Part:
        label = "attribute"

        def work(self) -> str:
            seen.append([name for name, _ in h.stages()])
            return "done"

    w = watched(Part(), h, "classify")
    assert w.work() == "done" and w.label == "attribute" and seen == [["classify"]]
    w.label = "changed"
    assert w.unwrapped.label == "changed" and h.stages() == []
    assert watched(w, h, "detect").unwrapped is w.unwrapped  # re-wrapping replaces the mark


@pytest.fixture(scope="module")
def models(yunet_path: Path) -> tuple[FaceDetector, Classifier]:
    return make_models(yunet_path)


class Listener:
    """systemd's side of the notify socket: every datagram with the time it arrived."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.path = path
        self.got: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.got.append((time.monotonic(), data.decode()))

    def pings(self, after: float = float("-inf"), before: float = float("inf")) -> list[float]:
        return [t for t, m in list(self.got) if m == "WATCHDOG=1\n" and after <= t <= before]

    def statuses(self) -> list[str]:
        return [m for _t, m in list(self.got) if m.startswith("STATUS=")]

    def wait_ping(self, after: float, timeout: float = 10.0) -> float:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            p = self.pings(after)
            if p:
                return p[0]
            time.sleep(0.02)
        raise AssertionError(f"no WATCHDOG=1 after {after:.2f}; got {self.got[-5:]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lst = Listener(tmp_path / "notify.sock")
    yield lst
    lst.close()


def wait_until(pred, timeout: float) -> float:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return time.monotonic()
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("stuck", ["classify", "detect", "loop"])
def test_a_stuck_stage_stops_the_watchdog_feed_and_turns_the_relay_off(stuck: str, listener: Listener,
                                                                      faces_dir: Path, models: tuple) -> None:
    det, clf = models
    inj = Injector()
    limit = 0.5
    s = settings(health={"classify_timeout": limit, "detect_timeout": limit, "loop_timeout": limit},
                 source={"frame_timeout": 2.0})
    scene = door(faces_dir, [["with_mask"]], seed=7, loop=True)
    cam = FaultyCamera(scene.frame, 10, injector=inj, frame_timeout=2.0)
    cam.open()
    gate = Gate(s, cam, FaultyDetector(det, inj), FaultyClassifier(clf, inj))
    stall, release = threading.Event(), threading.Event()
    if stuck == "loop":  # an observer (say, a status page) that blocks the loop outside any model stage
        gate.recorder.hooks.append(lambda r: stall.is_set() and release.wait(30) and None)
    notifier = Notifier(str(listener.path), watchdog_usec=400_000)
    monitor = HealthMonitor(gate.health, notifier=notifier, on_unhealthy=lambda _why: gate.outputs.show_fault())
    fault = {"classify": "inference_hang", "detect": "detect_hang"}.get(stuck)
    with gate, monitor:
        gate.recorder.wait_for(lambda r: r.faces != (), 20)
        listener.wait_ping(time.monotonic())
        gate.outputs.pulse(duration=10.0)  # the door is open when the stage gets stuck
        t_stuck = time.monotonic()
        if fault:
            inj.start(fault)
        else:
            stall.set()
        t_bad = wait_until(lambda: monitor.unhealthy is not None, 10)
        assert f"stage {stuck} running for" in str(monitor.unhealthy)
        assert t_bad - t_stuck < limit + 3.0
        assert not gate.outputs.relay_on and gate.outputs.fault_shown  # unhealthy: relay off, fault blink
        time.sleep(0.7)
        assert listener.pings(t_bad + 0.3, time.monotonic()) == []  # systemd would restart us now
        assert any(f"unhealthy: stage {stuck} running for" in m for m in listener.statuses())
        t_release = time.monotonic()
        if fault:
            inj.stop(fault)
        else:
            stall.clear()
            release.set()
        listener.wait_ping(t_release)  # healthy again (it was slow, not dead): feeding resumes
    notifier.close()
    relay = high_periods(gate.factory.pin(RELAY))
    assert relay and relay[0] < t_bad - t_stuck + 1.0  # ended by the monitor, not by the 10 s pulse
    assert any(m.startswith("STATUS=healthy") for m in listener.statuses())


def test_camera_retries_count_as_healthy_only_within_fault_grace(listener: Listener, faces_dir: Path,
                                                                 models: tuple) -> None:
    grace = 1.5
    s = settings(health={"fault_grace": grace}, source={"frame_timeout": 1.0, "reopen_delay": 0.1,
                                                         "reopen_max_delay": 0.3})
    inj = Injector()
    inj.start("camera_down")
    scene = door(faces_dir, [["with_mask"]], seed=8, loop=True)
    cam = FaultyCamera(scene.frame, 10, injector=inj, frame_timeout=1.0)
    t0 = time.monotonic()
    gate = Gate(s, cam, *models)
    gate.pipeline.source_failed(SourceError("camera not found"))
    notifier = Notifier(str(listener.path), watchdog_usec=400_000)
    monitor = HealthMonitor(gate.health, notifier=notifier, on_unhealthy=lambda _why: gate.outputs.show_fault())
    with gate, monitor:
        t_bad = wait_until(lambda: monitor.unhealthy is not None, 10)
        assert "no frame processed for" in str(monitor.unhealthy)
        assert grace <= t_bad - t0 < grace + 2.0
        time.sleep(0.6)
        fed = listener.pings(t0, time.monotonic())
        assert fed and max(fed) < t_bad + 0.3  # fed while retrying within the grace, then not
        assert len(cam.open_attempts) >= 3  # the retries went on all along
        inj.stop("camera_down")
        gate.recorder.wait_for(lambda r: r.frame >= 0, 10)
        listener.wait_ping(time.monotonic())
    notifier.close()
    assert high_periods(gate.factory.pin(RED))  # the red LED blinked the fault pattern meanwhile
    assert gate.factory.pin(RELAY).states[-1].state is False


def test_unit_restart_policy_is_safe_and_visible() -> None:
    """systemd restarts a gate whose watchdog stopped; the start limit then leaves it stopped (door
    locked by the relay's pull-down, `systemctl status` failed). The defaults fit that policy."""
    unit = (REPO / "systemd" / "maskgate.service").read_text()

    def value(key: str) -> str:
        m = re.search(rf"^{key}=(.*)$", unit, re.M)
        assert m, key
        return m.group(1).strip()

    assert value("Type") == "notify" and value("Restart") == "on-failure"
    watchdog, interval, burst = float(value("WatchdogSec")), float(value("StartLimitIntervalSec")), \
        int(value("StartLimitBurst"))
    h, src = HealthSettings(), SourceSettings()
    # an unplugged camera restarts the service at most once per fault_grace + WatchdogSec: never
    # often enough to exhaust the start limit, so it is picked up when plugged back in
    assert h.fault_grace + watchdog > interval / burst
    # a frozen process (its relay timer frozen with it) is killed, and its relay turned off by
    # ExecStopPost=, before the relay has been on longer than relay_max_on; a stuck stage is the health
    # monitor's to catch (a thread of its own, feeding the watchdog every WatchdogSec / 2 until then)
    assert watchdog <= OutputSettings().relay_max_on
    assert "maskgate failsafe --off" in value("ExecStopPost")
    assert max(h.detect_timeout, h.classify_timeout, h.output_timeout, h.loop_timeout,
               src.frame_timeout + 2) <= watchdog
    # SIGTERM: the loop notices within a frame timeout, a stuck capture thread is given up after
    # 2 s; the process is out well before systemd's SIGKILL
    assert src.frame_timeout + 2 + 5 < float(value("TimeoutStopSec"))
    assert "given up on" in unit and "reset-failed" in unit
    # given up on: the failsafe unit shows it on the LEDs (test_failsafe.py checks what it does)
    assert value("OnFailure") == "maskgate-failsafe.service"
    assert (REPO / "systemd" / value("OnFailure")).is_file()


def test_a_relay_limit_under_the_watchdog_timeout_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """A frozen process cannot end a pulse: only the watchdog's kill does, so relay_max_on set below
    WatchdogSec is named at start with the fix."""
    assert not warn_if_watchdog_outlasts_relay(15.0, Notifier(None, watchdog_usec=10_000_000))
    assert not warn_if_watchdog_outlasts_relay(5.0, None)  # not under systemd, or no watchdog
    assert not warn_if_watchdog_outlasts_relay(5.0, Notifier(None))
    assert warn_if_watchdog_outlasts_relay(5.0, Notifier(None, watchdog_usec=10_000_000))
    assert "outputs.relay_max_on (5 s) is shorter than the service's WatchdogSec (10 s)" in caplog.text
    assert "systemctl edit maskgate" in caplog.text


def test_the_daemon_starts_without_its_camera_reports_ready_and_picks_it_up(listener: Listener, faces_dir: Path,
                                                                            yunet_path: Path) -> None:
    """run_gate (what `maskgate run` calls): a camera missing at start is not a start failure. The
    relay is driven off, READY=1 says the camera is missing, the watchdog is fed while it retries,
    and the gate runs once the camera appears."""
    from gpiozero.pins.mock import MockFactory

    from maskgate.daemon import run_gate

    s = settings(source={"frame_timeout": 1.0, "reopen_delay": 0.1, "reopen_max_delay": 0.3},
                 detector={"model": str(yunet_path)})
    inj = Injector()
    inj.start("camera_down")
    scene = door(faces_dir, [["with_mask"]], seed=5, loop=True)
    cam = FaultyCamera(scene.frame, 10, injector=inj, frame_timeout=1.0)
    factory = MockFactory()
    notifier = Notifier(str(listener.path), watchdog_usec=400_000)
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(run_gate(s, pin_factory=factory, source=cam, notifier=notifier,
                                                          max_frames=5)))
    t0 = time.monotonic()
    t.start()
    try:
        wait_until(lambda: any(m.startswith("READY=1") for _t, m in listener.got), 30)
        ready = next(m for _t, m in listener.got if m.startswith("READY=1"))
        assert "camera missing (retrying)" in ready
        listener.wait_ping(t0)
        time.sleep(0.5)
        assert len(cam.open_attempts) >= 2 and factory.pin(RELAY).state is False
    finally:
        inj.stop("camera_down")
        t.join(timeout=30)
    notifier.close()
    assert rc == [0] and cam.opens == 1
    assert any(m.startswith("STOPPING=1") for _t, m in listener.got)

"""`maskgate failsafe`: what the door shows once systemd has given up on the gate (the OnFailure=
unit). Relay driven off, red and green blinking together, no buzzer, the staff button left alone;
the pins come from the config's [outputs] even when the rest of the config is broken; as a process
under a real notify socket it says READY, and SIGTERM ends it with every pin off. `--off` (systemd's
ExecStopPost= after every end of the gate) drives every output off, the relay first, and exits."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from maskgate.cmd_failsafe import hold, output_settings, switch_off
from maskgate.config import DEFAULT_PINS, OutputSettings
from maskgate.errors import GpioError
from maskgate.faults import JOURNAL_ENV, read_journal
from maskgate.outputs import GIVEN_UP_BLINK


def states(factory: MockFactory, gpio: int) -> list[bool]:
    return [bool(s.state) for s in factory.pin(gpio).states]


def test_relay_held_off_and_both_leds_blink_together_until_stopped() -> None:
    factory = MockFactory()
    p = DEFAULT_PINS
    factory.pin(p["relay"]).drive_high()  # as a killed gate may have left it (the pull-down's job on a Pi)
    stop = threading.Event()
    on, off = GIVEN_UP_BLINK
    threading.Timer(2 * (on + off) + on / 2, stop.set).start()  # two full blinks and half a third
    button = factory.pin(p["button"])
    threading.Timer(0.3, button.drive_low).start()  # staff press it: the door must stay locked
    threading.Timer(0.5, button.drive_high).start()
    assert hold(OutputSettings(button=True), stop, factory) == 0
    relay = states(factory, p["relay"])
    green, red = states(factory, p["green"]), states(factory, p["red"])
    assert relay[:2] == [False, True] and not any(relay[2:])  # its first write turned it off; never on again
    assert green == red  # the same writes in the same order: the two LEDs blink as one
    assert green[0] is False and green[-1] is False and green.count(True) >= 2  # blinked, and dark at the end
    assert all(a != b for a, b in zip(green, green[1:], strict=False))  # each write a change: on, off, on, ...
    assert not any(states(factory, p["buzzer"]))


def test_pins_come_from_outputs_even_when_the_rest_of_the_config_is_broken(tmp_path: Path) -> None:
    cfg = tmp_path / "maskgate.toml"
    cfg.write_text('[outputs.pins]\nrelay = 5\ngreen = 6\n\n[decision]\nvotez = 3\n')
    s = output_settings(cfg)
    assert (s.pins.relay, s.pins.green, s.pins.red) == (5, 6, DEFAULT_PINS["red"])
    cfg.write_text('[outputs\nrelay = 5\n')  # not TOML at all: the default pins (hardware/pinmap.csv)
    assert output_settings(cfg) == OutputSettings()
    cfg.write_text('[outputs]\nrelay_pulse = -1\n')  # [outputs] itself invalid: the defaults too
    assert output_settings(cfg) == OutputSettings()
    cfg.write_text('[outputs]\nrelay_active_high = false\n')  # a valid config is used whole
    assert output_settings(cfg).relay_active_high is False


def test_as_a_service_ready_then_sigterm_leaves_every_pin_off(tmp_path: Path) -> None:
    journal = tmp_path / "pins.journal"
    relay = DEFAULT_PINS["relay"]
    journal.write_text(f"{time.time():.6f} {relay} 1\n")  # the gate died with the door open
    cfg = tmp_path / "maskgate.toml"
    cfg.write_text('[outputs]\npin_factory = "journal"\n')
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    env = dict(os.environ, **{JOURNAL_ENV: str(journal), "NOTIFY_SOCKET": str(sock_path)})
    proc = subprocess.Popen([sys.executable, "-m", "maskgate", "failsafe", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready = sock.recv(4096).decode()
        assert "READY=1" in ready and "given up" in ready, ready
        end = time.monotonic() + 30
        while time.monotonic() < end:  # wait for a blink: the green LED on, then off again
            green = [v for _t, pin, v in read_journal(journal) if pin == DEFAULT_PINS["green"]]
            if "1" in green and "0" in green[green.index("1"):]:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "STOPPING=1" in sock.recv(4096).decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    _, err = proc.communicate()
    assert "has given up after repeated failures: the door stays locked" in err
    lines = read_journal(journal)
    relay_writes = [v for _t, pin, v in lines if pin == relay][1:]  # after the line written above
    assert relay_writes[0] == "0" and "1" not in relay_writes
    for name in ("green", "red", "buzzer", "relay"):
        writes = [v for _t, pin, v in lines if pin == DEFAULT_PINS[name] and v != "released"]
        assert writes[-1] == "0", (name, writes)  # everything off before the pins were released
    green = [v for _t, pin, v in lines if pin == DEFAULT_PINS["green"]]
    red = [v for _t, pin, v in lines if pin == DEFAULT_PINS["red"]]
    assert "1" in green and "1" in red


class _Refusing(MockFactory):
    """A pin factory whose pins cannot be had (another program holds them, or there is no GPIO)."""

    def pin(self, spec: object, **kwargs: object) -> object:
        raise OSError("no GPIO here")


def test_off_after_the_gate_was_killed_turns_every_output_off_relay_first(caplog: pytest.LogCaptureFixture) -> None:
    factory = MockFactory()
    p = DEFAULT_PINS
    for name in ("relay", "green", "buzzer"):
        factory.pin(p[name]).drive_high()  # as the killed gate left them
    killed = {"SERVICE_RESULT": "signal", "EXIT_CODE": "killed", "EXIT_STATUS": "KILL"}
    with caplog.at_level(logging.INFO, logger="maskgate.cmd_failsafe"):
        assert switch_off(OutputSettings(button=True), factory, killed) == 0
    for name in ("relay", "green", "buzzer", "red"):
        assert not states(factory, p[name])[-1], name
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "the gate ended (signal: killed KILL): relay, LEDs and buzzer driven off" in caplog.text
    # the pins are released for the restarted gate (or the fail-safe) to set up again
    assert switch_off(OutputSettings(), factory, {"SERVICE_RESULT": "success"}) == 0
    assert caplog.records[-1].levelname == "WARNING"  # a clean stop adds no warning
    # no pins to be had (the installed default config on a machine without GPIO): said as such
    with pytest.raises(GpioError, match=r"after the gate ended \(exit-code\), the outputs could not be switched "
                       r"off: outputs.pins.relay: cannot set up GPIO 22"):
        switch_off(OutputSettings(), _Refusing(), {"SERVICE_RESULT": "exit-code"})


def test_off_as_systemd_runs_it_after_a_kill(tmp_path: Path) -> None:
    journal = tmp_path / "pins.journal"
    journal.write_text(f"{time.time():.6f} {DEFAULT_PINS['relay']} 1\n{time.time():.6f} {DEFAULT_PINS['red']} 1\n")
    cfg = tmp_path / "maskgate.toml"
    cfg.write_text('[outputs]\npin_factory = "journal"\n')
    env = dict(os.environ, **{JOURNAL_ENV: str(journal), "SERVICE_RESULT": "watchdog", "EXIT_CODE": "dumped",
                              "EXIT_STATUS": "ABRT"})
    done = subprocess.run([sys.executable, "-m", "maskgate", "failsafe", "--off", "--config", str(cfg)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "the gate ended (watchdog: dumped ABRT): relay, LEDs and buzzer driven off" in done.stderr
    lines = read_journal(journal)[2:]
    relay = DEFAULT_PINS["relay"]
    assert lines[0][1:] == (relay, "0")  # the relay first
    for name in ("green", "red", "buzzer", "relay"):
        writes = [v for _t, pin, v in lines if pin == DEFAULT_PINS[name]]
        assert writes[-2:] == ["0", "released"], (name, writes)
    assert "cv2" not in subprocess.run(
        [sys.executable, "-c", "import sys; from maskgate.cli import build_parser, named_command; "
         "build_parser(named_command(['failsafe', '--off'])); print(sorted(sys.modules))"],
        capture_output=True, text=True, check=True).stdout.split("'")

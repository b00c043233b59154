"""gpiozero outputs on MockFactory: pins, relay pulse and safety timer, buzzer patterns, staff button."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero import OutputDevice
from gpiozero.pins.mock import MockFactory

from maskgate.config import DEFAULT_PINS, OutputSettings, PinSettings, Settings
from maskgate.decider import Plan
from maskgate.errors import ConfigError, GpioError
from maskgate.outputs import Outputs, make_pin_factory


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def states(factory: MockFactory, pin: int) -> list[bool]:
    return [bool(s.state) for s in factory.pin(pin).states]


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.close()


def test_devices_on_the_default_pins_start_off(factory: MockFactory) -> None:
    out = Outputs(OutputSettings(button=True), factory)
    try:
        for name, pin in DEFAULT_PINS.items():
            if name != "button":
                assert states(factory, pin) == [False], name
        assert out.snapshot() == {"green": False, "red": False, "buzzer": False, "relay": False}
        assert "relay=off" in repr(out)
    finally:
        out.close()


def test_relay_active_low_is_off_high_at_start(factory: MockFactory) -> None:
    out = Outputs(OutputSettings(relay_active_high=False), factory)
    try:
        assert factory.pin(DEFAULT_PINS["relay"]).state is True  # off for an active-low board
        out.pulse()
        assert factory.pin(DEFAULT_PINS["relay"]).state is False
    finally:
        out.close()
    assert factory.pin(DEFAULT_PINS["relay"]).states[-1].state is True


def test_pulse_length_on_an_injected_clock(factory: MockFactory) -> None:
    clock = FakeClock()
    out = Outputs(OutputSettings(relay_pulse=5.0, relay_max_on=15.0), factory, clock=clock)
    try:
        out.apply(Plan(green=True, pulse=True))
        assert out.relay_on
        clock.now += 4.9
        out.safety_check()
        assert out.relay_on
        clock.now += 0.2
        out.safety_check()
        assert not out.relay_on
        assert states(factory, DEFAULT_PINS["relay"]) == [False, True, False]
        assert states(factory, DEFAULT_PINS["green"]) == [False, True]
    finally:
        out.close()


def test_repeated_pulses_never_exceed_the_maximum_on_time(factory: MockFactory) -> None:
    clock = FakeClock()
    out = Outputs(OutputSettings(relay_pulse=5.0, relay_max_on=8.0), factory, clock=clock)
    try:
        out.pulse()
        after_check = []
        for _ in range(4):  # someone keeps re-triggering every 2 s
            clock.now += 2.0
            out.safety_check()
            after_check.append(out.relay_on)
            out.pulse()
        # on at 2, 4, 6 s; forced off at 8 s of continuous on-time; a later trigger is a new pulse
        assert after_check == [True, True, True, False]
        assert states(factory, DEFAULT_PINS["relay"]) == [False, True, False, True]
    finally:
        out.close()


def test_safety_timer_turns_the_relay_off_without_any_frames(factory: MockFactory) -> None:
    out = Outputs(OutputSettings(relay_pulse=0.3, relay_max_on=0.3), factory)
    try:
        out.pulse(duration=100.0)  # asks for far more than the maximum
        start = time.monotonic()
        while out.relay_on and time.monotonic() - start < 5.0:
            time.sleep(0.01)
        pin = factory.pin(DEFAULT_PINS["relay"])
        assert not out.relay_on
        on, off = pin.states[1], pin.states[2]
        assert on.state is True and off.state is False
        assert 0.25 <= off.timestamp - on.timestamp < 2.0
    finally:
        out.close()


def test_close_turns_the_relay_off_and_is_idempotent(factory: MockFactory) -> None:
    out = Outputs(OutputSettings(), factory)
    out.pulse()
    out.close()
    out.close()
    assert states(factory, DEFAULT_PINS["relay"]) == [False, True, False]
    assert repr(out) == "<Outputs closed>"
    out.pulse()  # ignored after close
    assert states(factory, DEFAULT_PINS["relay"]) == [False, True, False]


def test_fault_plan_forces_the_relay_off(factory: MockFactory) -> None:
    out = Outputs(OutputSettings(), factory)
    try:
        out.pulse()
        out.apply(Plan(red=True, relay_off=True))
        assert out.snapshot() == {"green": False, "red": True, "buzzer": False, "relay": False}
    finally:
        out.close()


def _beeps(factory: MockFactory, reason: str) -> list[float]:
    out = Outputs(OutputSettings(), factory)
    try:
        out.apply(Plan(red=True, buzz=reason))
        time.sleep(1.6)
        st = factory.pin(DEFAULT_PINS["buzzer"]).states
        return [b.timestamp - a.timestamp for a, b in zip(st, st[1:], strict=False) if a.state]
    finally:
        out.close()


def test_buzzer_patterns_differ_by_reason_and_mute_silences() -> None:
    short = _beeps(MockFactory(), "without_mask")
    long = _beeps(MockFactory(), "incorrect_mask")
    assert len(short) == 3 and len(long) == 2
    assert max(short) < min(long)
    f = MockFactory()
    out = Outputs(OutputSettings(buzzer_mute=True), f)
    try:
        out.apply(Plan(red=True, buzz="without_mask"))
        time.sleep(0.1)
        assert states(f, DEFAULT_PINS["buzzer"]) == [False]
        assert states(f, DEFAULT_PINS["red"]) == [False, True]
    finally:
        out.close()


def test_staff_button_pulses_the_relay_in_enforce_mode_only(factory: MockFactory) -> None:
    out = Outputs(OutputSettings(button=True, relay_pulse=5.0), factory, mode="enforce")
    seen: list[int] = []
    out.on_button.append(lambda: seen.append(1))
    try:
        btn = factory.pin(DEFAULT_PINS["button"])
        btn.drive_low()
        time.sleep(0.1)
        btn.drive_high()
        assert out.relay_on and out.button_presses == 1 and seen == [1]
        out.relay_off()
        out.mode = "advisory"
        time.sleep(0.1)
        btn.drive_low()
        time.sleep(0.1)
        btn.drive_high()
        assert not out.relay_on and out.button_presses == 2
    finally:
        out.close()


def test_custom_pins(factory: MockFactory) -> None:
    pins = PinSettings(green=5, red=6, buzzer=13, relay=19, button=26)
    out = Outputs(OutputSettings(pins=pins), factory)
    try:
        out.apply(Plan(green=True, pulse=True))
        assert factory.pin(5).state is True and factory.pin(19).state is True
    finally:
        out.close()


def test_pin_factory_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_pin_factory("mock"), MockFactory)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    assert isinstance(make_pin_factory(""), MockFactory)
    with pytest.raises(ConfigError, match="outputs.pin_factory: unknown gpiozero pin factory"):
        make_pin_factory("banana")


class NoAccessFactory(MockFactory):
    """A pin library that cannot open one pin, as RPi.GPIO without access to /dev/gpiomem."""

    def __init__(self, bad: int) -> None:
        super().__init__()
        self.bad = bad

    def pin(self, name: Any, pin_class: Any = None, **kwargs: Any) -> Any:
        if name == self.bad:
            raise RuntimeError("No access to /dev/mem.  Try running as root!")
        return super().pin(name, pin_class, **kwargs)


def test_a_pin_that_cannot_be_set_up_is_a_gpio_error_naming_it_and_the_relay_is_released_off() -> None:
    factory = NoAccessFactory(DEFAULT_PINS["buzzer"])
    with pytest.raises(GpioError) as err:
        Outputs(OutputSettings(), factory)
    msg = str(err.value)
    assert msg.startswith(f"outputs.pins.buzzer: cannot set up GPIO {DEFAULT_PINS['buzzer']} with NoAccessFactory")
    assert "No access to /dev/mem" in msg and "python3-lgpio" in msg and "group gpio" in msg
    assert isinstance(err.value, OSError)
    relay = factory.pin(DEFAULT_PINS["relay"])
    assert [s.state for s in relay.states] == [False]  # driven off at start, never on
    for name in ("relay", "green", "red"):  # released: a later gate (or the failsafe) can take the pins
        OutputDevice(DEFAULT_PINS[name], pin_factory=factory).close()


def _default_factory_after(fallbacks: list[str], result: Any) -> Any:
    """A stand-in for gpiozero's default pin factory search: a fallback warning per library that
    will not load (as off a Pi), then ``result`` (a factory, or an exception to raise)."""
    import warnings

    from gpiozero.exc import PinFactoryFallback

    def search() -> Any:
        for f in fallbacks:
            warnings.warn(PinFactoryFallback(f"Falling back from {f}"), stacklevel=2)
        if isinstance(result, Exception):
            raise result
        return result
    return staticmethod(search)


def test_gpiozeros_fallback_warnings_become_log_lines_and_the_error_lists_what_was_tried(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import warnings

    from gpiozero import Device
    from gpiozero.exc import BadPinFactory

    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(Device, "pin_factory", None)
    tried = ["lgpio: No module named 'lgpio'", "rpigpio: No module named 'RPi'"]
    monkeypatch.setattr(Device, "_default_pin_factory",
                        _default_factory_after(tried, BadPinFactory("Unable to load any default pin factory!")))
    caplog.set_level("INFO", logger="maskgate.outputs")
    with warnings.catch_warnings(record=True) as caught, pytest.raises(GpioError) as err:
        warnings.simplefilter("always")
        Outputs(OutputSettings())
    assert not caught  # before: two-line warnings on stderr (the journal) at every start
    assert str(err.value).startswith("outputs.pins.relay: cannot set up GPIO 22 with no pin factory (BadPinFactory: "
                                     "Unable to load any default pin factory!; tried lgpio: No module named "
                                     "'lgpio'; rpigpio: No module named 'RPi')")
    assert [r.getMessage() for r in caplog.records if r.name == "maskgate.outputs"] == \
        [f"gpiozero pin factory: Falling back from {t}" for t in tried]

    # a library further down the list loads: the gate runs, the fallbacks are logged, nothing warns
    caplog.clear()
    monkeypatch.setattr(Device, "_default_pin_factory", _default_factory_after(tried[:1], MockFactory()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = Outputs(OutputSettings())
    try:
        assert not caught and isinstance(out.relay.pin_factory, MockFactory) and not out.relay.value
        assert any("Falling back from lgpio" in r.getMessage() for r in caplog.records)
    finally:
        out.close()


def test_the_self_test_reports_a_gpio_it_cannot_use_and_still_checks_camera_and_models(scenes_dir: Path) -> None:
    from maskgate.cmd_check import FAIL, PASS, run_checks
    from maskgate.config import replace

    s = replace(Settings(), source={"type": "replay", "device": str(scenes_dir / "images" / "maksssksksss15.jpg")})
    res = {r.name: r for r in run_checks(s, pin_factory=NoAccessFactory(DEFAULT_PINS["relay"]), blink=0.01)}
    assert res["GPIO"].result == FAIL and "outputs.pins.relay" in res["GPIO"].detail, res["GPIO"]
    assert res["GPIO"].fix and "python3-lgpio" in res["GPIO"].fix
    assert [res[n].result for n in ("camera", "face detector", "classifier")] == [PASS] * 3

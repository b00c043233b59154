"""LEDs, buzzer, door relay and staff button as gpiozero devices on a configurable pin factory.

The relay is off at start, goes off on every exit path (``close``), on a fault (``relay_off``,
``show_fault``), and after its pulse or its hard maximum on-time. The maximum is enforced by a
thread on the monotonic clock, so it holds even when no frame ever arrives again. The relay has a
lock of its own: a stuck or failing LED or buzzer write never delays the relay going off.

A pin write that raises (a pin busy, a driver error) is logged once per device, counted in
``write_errors`` and skipped; the other devices are still driven. That holds inside gpiozero's
background blink and beep threads too (the fault blink, the deny beeps): a failed step is counted
and the pattern goes on, so the LED blinks again once the pin works. A relay that cannot be
switched off is retried by the safety thread every 50 ms until it can.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from .config import OutputSettings
from .decider import Plan
from .errors import ConfigError, GpioError

log = logging.getLogger(__name__)

BUZZ_PATTERNS: dict[str, tuple[float, float, int]] = {
    "without_mask": (0.1, 0.1, 3),  # three short beeps: no mask
    "incorrect_mask": (0.4, 0.2, 2),  # two long beeps: mask worn wrongly
}
"""Buzzer (on seconds, off seconds, repeats) per deny reason."""

FAULT_BLINK: tuple[float, float] = (0.3, 1.7)
"""Red LED (on seconds, off seconds) while the gate is faulted: a slow blink, unlike deny's steady red."""

GIVEN_UP_BLINK: tuple[float, float] = (0.5, 0.5)
"""Red and green LEDs together (on seconds, off seconds) once systemd has given up on the gate
(``maskgate failsafe``): a pattern the running gate never shows."""


def make_pin_factory(name: str = "") -> Any:
    """A gpiozero pin factory by name (config, else ``$GPIOZERO_PIN_FACTORY``); None: gpiozero's default."""
    name = name or os.environ.get("GPIOZERO_PIN_FACTORY", "")
    if not name:
        return None
    if name == "mock":
        from gpiozero.pins.mock import MockFactory
        return MockFactory()
    found = [ep for ep in entry_points(group="gpiozero_pin_factories") if ep.name == name.lower()]
    if not found:
        names = sorted(ep.name for ep in entry_points(group="gpiozero_pin_factories"))
        raise ConfigError(f"outputs.pin_factory: unknown gpiozero pin factory; expected one of "
                          f"{', '.join(names)} (got {name!r})")
    try:
        return found[0].load()()
    except Exception as exc:  # each backend fails its own way off a Pi
        raise ConfigError(f"outputs.pin_factory: cannot start {name!r} ({exc})") from exc


@contextlib.contextmanager
def _fallbacks_logged(tried: list[str]) -> Any:
    """gpiozero's default pin factory tries lgpio, rpigpio, pigpio and native in turn and warns
    (``PinFactoryFallback``) for each that will not load; off a Pi, or on one without python3-lgpio,
    that is four two-line warnings in the journal at every start. They become one log line each,
    and ``tried`` collects them for the error if none loads. Other warnings pass through."""
    from gpiozero.exc import PinFactoryFallback

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, PinFactoryFallback):
                    tried.append(str(w.message).removeprefix("Falling back from "))
                    log.info("gpiozero pin factory: %s", w.message)
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


class _BlinkGuard:
    """Mixin for gpiozero output devices: a write that raises inside the device's own background
    blink thread goes to ``on_blink_error`` and the pattern goes on (gpiozero would end the thread
    with an uncaught exception, and the LED would stop blinking for good). Writes from any other
    thread raise as usual."""

    on_blink_error: Callable[[BaseException], None] | None = None

    def _write(self, value: Any) -> None:
        try:
            super()._write(value)  # type: ignore[misc]
        except Exception as exc:
            thread = getattr(self, "_blink_thread", None)
            if self.on_blink_error is None or thread is None or threading.current_thread() is not thread:
                raise
            self.on_blink_error(exc)


def _guarded(cls: type) -> type:
    return type(f"Guarded{cls.__name__}", (_BlinkGuard, cls), {})


class Outputs:
    """The gate's physical outputs. Thread-safe; ``close()`` is safe to call twice."""

    def __init__(self, settings: OutputSettings | None = None, pin_factory: Any = None, *,
                 clock: Callable[[], float] = time.monotonic, mode: str = "enforce") -> None:
        from gpiozero import LED, Button, Buzzer, OutputDevice

        settings = settings or OutputSettings()
        self.settings = settings
        self.factory = pin_factory if pin_factory is not None else make_pin_factory(settings.pin_factory)
        self.mode = mode
        self._clock = clock
        self._lock = threading.RLock()
        """Guards the relay and its timer only."""
        self._led_lock = threading.RLock()
        """Guards the LEDs and the buzzer."""
        self._deadline: float | None = None
        self._on_since: float | None = None
        self._closed = False
        self.last_pulse: float | None = None
        """Clock time of the last relay pulse request."""
        self.write_errors = 0
        self._failing: set[str] = set()
        self.fault_shown = False
        """True while the red LED shows the fault pattern."""
        self.button_presses = 0
        self.on_button: list[Callable[[], None]] = []
        self.pulses = 0
        self.on_pulse: list[Callable[[], None]] = []
        """Called (outside the lock) each time a relay pulse starts (the relay goes from off to on)."""
        p, f = settings.pins, self.factory
        self.button = None
        made: list[Any] = []
        name, pin = "relay", p.relay
        tried: list[str] = []
        try:
            with _fallbacks_logged(tried):  # the first device picks gpiozero's default factory, if none is set
                self.relay = OutputDevice(p.relay, active_high=settings.relay_active_high, initial_value=False,
                                          pin_factory=f)
            made.append(self.relay)
            led = _guarded(LED)
            name, pin = "green", p.green
            self.green = led(p.green, initial_value=False, pin_factory=f)
            made.append(self.green)
            name, pin = "red", p.red
            self.red = led(p.red, initial_value=False, pin_factory=f)
            made.append(self.red)
            name, pin = "buzzer", p.buzzer
            self.buzzer = _guarded(Buzzer)(p.buzzer, initial_value=False, pin_factory=f)
            made.append(self.buzzer)
            if settings.button:
                name, pin = "button", p.button
                self.button = Button(p.button, pull_up=True, bounce_time=settings.button_bounce or None,
                                     pin_factory=f)
        except Exception as exc:  # each pin library fails its own way: no /dev/gpiomem access, a pin in use, ...
            for dev in reversed(made):  # released for whoever comes next; the relay was driven off first
                with contextlib.suppress(Exception):
                    dev.close()
            from gpiozero import Device

            chosen = f if f is not None else Device.pin_factory  # gpiozero's default: the first that loads
            used = type(chosen).__name__ if chosen is not None else "no pin factory"
            why = f"{type(exc).__name__}: {exc}" + (f"; tried {'; '.join(tried)}" if tried else "")
            raise GpioError(f"outputs.pins.{name}: cannot set up GPIO {pin} with {used} "
                            f"({why}). On a Pi: `sudo apt install python3-lgpio` (the "
                            "venv sees it with --system-site-packages), the service user in group gpio, and "
                            "no other program holding the pin") from exc
        for name in ("green", "red", "buzzer"):
            getattr(self, name).on_blink_error = lambda exc, name=name: self._blink_failed(name, exc)
        if self.button is not None:
            self.button.when_pressed = self._pressed
        self._wake = threading.Event()
        self._safety = threading.Thread(target=self._safety_loop, name="relay-safety", daemon=True)
        self._safety.start()
        log.info("outputs on %s: green %d, red %d, buzzer %d, relay %d (active %s)%s",
                 type(self.relay.pin_factory).__name__, p.green, p.red, p.buzzer, p.relay,
                 "high" if settings.relay_active_high else "low",
                 f", staff button {p.button}" if self.button else "")

    def __repr__(self) -> str:
        if self._closed:
            return "<Outputs closed>"
        s = self.snapshot()
        extra = " FAULT" if self.fault_shown else ""
        extra += f" write_errors={self.write_errors}" if self.write_errors else ""
        return ("<Outputs " + " ".join(f"{k}={'on' if v else 'off'}" for k, v in s.items())
                + f" mode={self.mode}{extra}>")

    def _write(self, name: str, action: Callable[[], object]) -> bool:
        """Run one device write; a raising write is logged once per device, counted and skipped."""
        try:
            action()
        except Exception as exc:  # gpiozero and its backends raise many kinds
            self.write_errors += 1
            if name not in self._failing:
                self._failing.add(name)
                log.error("%s: pin write failed (%s: %s); skipped and retried on the next update", name,
                          type(exc).__name__, exc)
            return False
        if name in self._failing:
            self._failing.discard(name)
            log.warning("%s: pin writes work again", name)
        return True

    def _blink_failed(self, name: str, exc: BaseException) -> None:
        self.write_errors += 1
        if name not in self._failing:
            self._failing.add(name)
            log.error("%s: pin write failed in its blink pattern (%s: %s); the pattern goes on", name,
                      type(exc).__name__, exc)

    def configure(self, settings: OutputSettings, mode: str) -> None:
        """Apply timing, mute and mode changes; pins and pin factory need a restart."""
        with self._lock:
            if settings.pins != self.settings.pins or settings.pin_factory != self.settings.pin_factory \
                    or settings.relay_active_high != self.settings.relay_active_high \
                    or settings.button != self.settings.button:
                log.warning("outputs: pin, pin factory, relay polarity and button changes apply after a restart")
            old = self.settings
            self.settings = dataclasses.replace(settings, pins=old.pins, pin_factory=old.pin_factory,
                                                relay_active_high=old.relay_active_high, button=old.button)
            self.mode = mode
            if self._on_since is not None and self._deadline is not None:
                self._deadline = min(self._deadline, self._on_since + settings.relay_max_on)
            self._wake.set()

    # -- relay ------------------------------------------------------------------------------------
    @property
    def relay_on(self) -> bool:
        return bool(self.relay.value)

    def pulse(self, duration: float | None = None) -> None:
        """Open the door for ``duration`` (default ``relay_pulse``), never past ``relay_max_on``."""
        started = False
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            self.last_pulse = now
            if not self.relay.value:
                if not self._write("relay", self.relay.on):
                    return
                self._on_since = now
                started = True
                self.pulses += 1
            if self._on_since is None:
                self._on_since = now
            d = self.settings.relay_pulse if duration is None else duration
            self._deadline = min(now + d, self._on_since + self.settings.relay_max_on)
            log.info("relay on until +%.1f s", self._deadline - now)
        self._wake.set()
        if started:
            self._notify_pulse()

    def _notify_pulse(self) -> None:
        for cb in list(self.on_pulse):
            try:
                cb()
            except Exception:
                log.exception("relay pulse observer failed")

    def relay_off(self) -> None:
        with self._lock:
            if self._closed:
                return
            was_on = bool(self.relay.value)
            if self._write("relay", self.relay.off):
                if was_on:
                    log.info("relay off")
                self._deadline = self._on_since = None
            else:  # still on: the safety thread retries at once and keeps retrying
                self._deadline = self._clock()
                self._wake.set()

    def safety_check(self) -> None:
        """Turn the relay off if its time is up (called by the safety thread; tests may call it)."""
        with self._lock:
            if self._closed or not self.relay.value:
                return
            now = self._clock()
            if self._on_since is None:
                self._on_since = now
            limit = self._on_since + self.settings.relay_max_on
            deadline = limit if self._deadline is None else min(self._deadline, limit)
            if now >= deadline:
                if self._write("relay", self.relay.off):
                    log.info("relay off after %.2f s", now - self._on_since)
                    self._deadline = self._on_since = None

    def _safety_loop(self) -> None:
        while not self._closed:
            with self._lock:
                deadline = self._deadline
            timeout = 0.5 if deadline is None else min(0.05, max(0.0, deadline - self._clock()))
            self._wake.wait(timeout)
            self._wake.clear()
            try:
                self.safety_check()
            except Exception:  # the safety thread must outlive any device hiccup
                log.exception("relay safety check failed")

    # -- lights, buzzer, button ------------------------------------------------------------------
    def apply(self, plan: Plan) -> None:
        """Show a decision's plan. Each device is written on its own: one failing pin skips only itself."""
        if self._closed:
            return
        if plan.relay_off:
            self.relay_off()
        with self._led_lock:
            if self._closed:
                return
            self.fault_shown = False
            self._write("green", lambda: setattr(self.green, "value", plan.green))
            self._write("red", lambda: setattr(self.red, "value", plan.red))
            if plan.buzz and not self.settings.buzzer_mute:
                on, off, n = BUZZ_PATTERNS.get(plan.buzz, BUZZ_PATTERNS["without_mask"])
                self._write("buzzer", lambda: self.buzzer.beep(on_time=on, off_time=off, n=n, background=True))
        if plan.pulse:
            self.pulse()

    def show_fault(self, active: bool = True) -> None:
        """The gate cannot decide: relay off first, green and buzzer off, the red LED's slow fault blink
        (all dark when the gate is inactive). Safe to call repeatedly and from any thread."""
        self.relay_off()
        if not self._led_lock.acquire(timeout=1.0):  # a stuck LED write must not stall the caller
            log.error("LEDs busy for 1 s; fault pattern not shown")
            return
        try:
            if self._closed or (self.fault_shown and active):
                return
            self._write("green", self.green.off)
            self._write("buzzer", self.buzzer.off)
            if active:
                on, off = FAULT_BLINK
                self._write("red", lambda: self.red.blink(on_time=on, off_time=off, background=True))
            else:
                self._write("red", self.red.off)
            self.fault_shown = active
        finally:
            self._led_lock.release()

    def show_given_up(self, lit: bool) -> None:
        """One step of the given-up pattern (``maskgate failsafe``): relay off, buzzer off, red and
        green both ``lit``."""
        self.relay_off()
        with self._led_lock:
            if self._closed:
                return
            self._write("buzzer", self.buzzer.off)
            self._write("green", lambda: setattr(self.green, "value", lit))
            self._write("red", lambda: setattr(self.red, "value", lit))

    def safe(self) -> None:
        """Everything off: relay first."""
        self.relay_off()
        with self._led_lock:
            if not self._closed:
                self.fault_shown = False
                self._write("buzzer", self.buzzer.off)
                self._write("green", self.green.off)
                self._write("red", self.red.off)

    def _pressed(self) -> None:
        self.button_presses += 1
        log.info("staff button pressed (mode %s)", self.mode)
        if self.mode == "enforce":
            self.pulse()
        for cb in list(self.on_button):
            try:
                cb()
            except Exception:
                log.exception("staff button observer failed")

    def snapshot(self) -> dict[str, bool]:
        return {"green": bool(self.green.value), "red": bool(self.red.value),
                "buzzer": bool(self.buzzer.value), "relay": bool(self.relay.value)}

    def close(self) -> None:
        """Relay off first, then release every device. Safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            try:
                for _ in range(3):  # a busy pin gets two more tries before the devices are released
                    if self._write("relay", self.relay.off):
                        break
                    time.sleep(0.02)
            finally:
                self._closed = True
                self._deadline = self._on_since = None
        self._wake.set()
        self._safety.join(timeout=1.0)
        for dev in (self.relay, self.buzzer, self.green, self.red, self.button):
            if dev is not None:
                try:
                    dev.close()
                except Exception:
                    log.exception("closing %r failed", dev)

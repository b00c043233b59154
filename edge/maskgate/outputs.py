"""LEDs, buzzer, door relay and staff button as gpiozero devices on a configurable pin factory.

The relay is off at start, goes off on every exit path (``close``), on a fault (``relay_off``),
and after its pulse or its hard maximum on-time. The maximum is enforced by a thread on the
monotonic clock, so it holds even when no frame ever arrives again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from .config import OutputSettings
from .decider import Plan
from .errors import ConfigError

log = logging.getLogger(__name__)

BUZZ_PATTERNS: dict[str, tuple[float, float, int]] = {
    "without_mask": (0.1, 0.1, 3),  # three short beeps: no mask
    "incorrect_mask": (0.4, 0.2, 2),  # two long beeps: mask worn wrongly
}
"""Buzzer (on seconds, off seconds, repeats) per deny reason."""


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
        self._deadline: float | None = None
        self._on_since: float | None = None
        self._closed = False
        self.button_presses = 0
        self.on_button: list[Callable[[], None]] = []
        self.pulses = 0
        self.on_pulse: list[Callable[[], None]] = []
        """Called (outside the lock) each time a relay pulse starts (the relay goes from off to on)."""
        p, f = settings.pins, self.factory
        self.relay = OutputDevice(p.relay, active_high=settings.relay_active_high, initial_value=False,
                                  pin_factory=f)
        self.green = LED(p.green, initial_value=False, pin_factory=f)
        self.red = LED(p.red, initial_value=False, pin_factory=f)
        self.buzzer = Buzzer(p.buzzer, initial_value=False, pin_factory=f)
        self.button = None
        if settings.button:
            self.button = Button(p.button, pull_up=True, bounce_time=settings.button_bounce or None,
                                 pin_factory=f)
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
        return "<Outputs " + " ".join(f"{k}={'on' if v else 'off'}" for k, v in s.items()) + f" mode={self.mode}>"

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
            if not self.relay.value:
                self._on_since = now
                self.relay.on()
                started = True
                self.pulses += 1
            assert self._on_since is not None
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
            if self.relay.value:
                log.info("relay off")
            self.relay.off()
            self._deadline = self._on_since = None

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
                log.info("relay off after %.2f s", now - self._on_since)
                self.relay.off()
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
        with self._lock:
            if self._closed:
                return
            if plan.relay_off:
                self.relay_off()
            self.green.value = plan.green
            self.red.value = plan.red
            if plan.buzz and not self.settings.buzzer_mute:
                on, off, n = BUZZ_PATTERNS.get(plan.buzz, BUZZ_PATTERNS["without_mask"])
                self.buzzer.beep(on_time=on, off_time=off, n=n, background=True)
            if plan.pulse:
                self.pulse()

    def safe(self) -> None:
        """Everything off: relay first."""
        with self._lock:
            self.relay_off()
            if not self._closed:
                self.buzzer.off()
                self.green.off()

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
                self.relay.off()
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

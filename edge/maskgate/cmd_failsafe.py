"""``maskgate failsafe``: what the door shows once systemd has given up on the gate.

systemd starts it (``maskgate-failsafe.service``, the ``OnFailure=`` unit of ``maskgate.service``)
when the gate failed more often than the unit's start limit allows. It drives the door relay off (on
top of the hardware pull-down that already holds it off) and blinks the red and green LEDs together,
a pattern the running gate never shows, until it is stopped: by systemd when ``maskgate.service``
starts again (the two units conflict), or by SIGTERM. It loads no model and opens no camera, so
whatever broke the gate (a camera stack, a model, a bad setting outside ``[outputs]``) cannot break it.

``maskgate failsafe --off`` drives every output off (the relay first), releases the pins and exits.
``maskgate.service`` runs it after the gate's process has ended for any reason (``ExecStopPost=``): a
gate killed (SIGKILL, the out-of-memory killer, the watchdog) or crashed never ran its own relay-off,
and whether a pin it drove keeps its level after the process is gone depends on the pin library and
the kernel (RPi.GPIO and the native factory leave it driven). Without this the door could stay open
until the restarted gate, seconds later, sets up its pins.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import threading
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import DEFAULT_CONFIG_PATH, OutputSettings, resolve_config, settings_from_dict
from .errors import ConfigError, GpioError
from .outputs import GIVEN_UP_BLINK, Outputs
from .sdnotify import Notifier

log = logging.getLogger(__name__)

GIVEN_UP_MESSAGE = ("maskgate.service has given up after repeated failures: the door stays locked. "
                    "`journalctl -u maskgate` shows why; after fixing it, `systemctl reset-failed maskgate "
                    "&& systemctl start maskgate` re-arms the gate (and ends this blink)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("failsafe", help="hold the door locked and blink both LEDs: the gate service has "
                                        "given up (systemd runs this)")
    p.add_argument("--config", type=Path, default=None, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    p.add_argument("--seconds", type=float, default=None, metavar="S", help="stop after S seconds "
                   "(default: until SIGTERM)")
    p.add_argument("--off", action="store_true", help="drive the relay, LEDs and buzzer off, release the pins "
                   "and exit (systemd runs this after the gate's process ends, however it ended)")
    p.set_defaults(func=run)


def output_settings(path: Path | None) -> OutputSettings:
    """The ``[outputs]`` of the config; only that table when the rest is broken, else the defaults.

    The gate may have failed because of its config: the pins are still worth reading from it."""
    try:
        return resolve_config(path)[0].outputs
    except ConfigError as exc:
        log.error("the config cannot be used (%s); reading only its [outputs]", exc)
    file = path or DEFAULT_CONFIG_PATH
    try:
        data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
        outputs = data.get("outputs", {})
        return settings_from_dict({"outputs": outputs} if isinstance(outputs, dict) else {}, str(file)).outputs
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ConfigError) as exc:
        log.error("[outputs] of %s unusable too (%s); using the default pins (hardware/pinmap.csv)", file, exc)
        return OutputSettings()


def hold(settings: OutputSettings, stop: threading.Event, pin_factory: Any = None,
         notifier: Notifier | None = None) -> int:
    """Relay off, both LEDs blinking together until ``stop`` is set; everything off at the end."""
    out = Outputs(dataclasses.replace(settings, button=False), pin_factory)  # the staff button opens nothing now
    try:
        log.error(GIVEN_UP_MESSAGE)
        if notifier is not None:
            notifier.ready("gate given up: door locked, red and green LEDs blinking")
        on, off = GIVEN_UP_BLINK
        lit = True
        while True:
            out.show_given_up(lit)
            if stop.wait(on if lit else off):
                break
            lit = not lit
    finally:
        if notifier is not None:
            notifier.stopping()
        out.safe()
        out.close()
    return 0


def switch_off(settings: OutputSettings, pin_factory: Any = None,
               environ: Mapping[str, str] | None = None) -> int:
    """Every output off, the relay first (setting the devices up drives them off), then the pins
    released. ``environ``: systemd's ``$SERVICE_RESULT``, ``$EXIT_CODE`` and ``$EXIT_STATUS`` for the
    gate that ended; anything but a clean exit is logged as a warning naming how it ended."""
    env = os.environ if environ is None else environ
    result = env.get("SERVICE_RESULT")
    try:
        Outputs(dataclasses.replace(settings, button=False), pin_factory).close()
    except GpioError as exc:
        raise GpioError(f"after the gate ended ({result or 'not under systemd'}), the outputs could not be "
                        f"switched off: {exc}") from exc
    if result and result != "success":
        how = " ".join(filter(None, (env.get("EXIT_CODE"), env.get("EXIT_STATUS"))))
        log.warning("the gate ended (%s%s): relay, LEDs and buzzer driven off, pins released",
                    result, f": {how}" if how else "")
    else:
        log.info("relay, LEDs and buzzer driven off, pins released")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.off:
        return switch_off(output_settings(args.config))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.seconds is not None:
        timer = threading.Timer(args.seconds, stop.set)
        timer.daemon = True
        timer.start()
    settings = output_settings(args.config)
    with Notifier.from_env(unset=True) as notifier:
        return hold(settings, stop, notifier=notifier)

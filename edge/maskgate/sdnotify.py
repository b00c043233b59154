"""The systemd notify protocol without libsystemd: one datagram per message to ``$NOTIFY_SOCKET``.

``Type=notify`` units tell systemd they are up (``READY=1``), alive (``WATCHDOG=1``), reloading
(``RELOADING=1`` with ``MONOTONIC_USEC``), stopping (``STOPPING=1``), and what they are doing
(``STATUS=...``). Each message is newline-separated ``KEY=VALUE`` assignments sent as one datagram
to the Unix socket named in ``$NOTIFY_SOCKET``: a file-system path, or an abstract socket written
with a leading ``@``. When the variable is unset (a laptop, a test, ``maskgate demo``) every call is
a no-op that returns ``False``.

``$WATCHDOG_USEC`` (set by ``WatchdogSec=``) is the watchdog timeout; systemd recommends pinging at
half of it, which :meth:`Notifier.watchdog_interval` returns. ``$WATCHDOG_PID``, when set, names
the one process the watchdog is meant for.

A failed send (no listener, or a full queue for longer than ``SEND_TIMEOUT``; later sends do not wait
until one succeeds again) is logged (not raised): the frame loop must not die because the service manager's
socket went away. A malformed ``$NOTIFY_SOCKET`` or ``$WATCHDOG_USEC`` raises :class:`NotifyError`
at :meth:`Notifier.from_env`, because a unit that can never report ready would only time out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, MutableMapping
from types import TracebackType

from .errors import MaskgateError

log = logging.getLogger(__name__)

__all__ = ["SEND_TIMEOUT", "NotifyError", "Notifier"]

#: Longest a send may wait when the manager's queue is full (seconds); then it counts as failed.
SEND_TIMEOUT = 0.5


class NotifyError(MaskgateError, OSError):
    """``$NOTIFY_SOCKET`` or ``$WATCHDOG_USEC`` is malformed, or a message cannot be encoded."""


def _socket_address(value: str) -> str | bytes:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value (path or ``@abstract``)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    raise NotifyError(f"NOTIFY_SOCKET={value!r}: expected an absolute socket path or an @abstract "
                      "socket name")


def _watchdog_usec(environ: Mapping[str, str]) -> int | None:
    raw = environ.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        log.debug("WATCHDOG_PID=%s is not this process (%d); watchdog not ours", pid, os.getpid())
        return None
    try:
        usec = int(raw)
    except ValueError:
        raise NotifyError(f"WATCHDOG_USEC={raw!r}: expected a whole number of microseconds") from None
    if usec <= 0:
        raise NotifyError(f"WATCHDOG_USEC={raw!r}: expected a positive number of microseconds")
    return usec


class Notifier:
    """Sends notify messages to the service manager; every method is a no-op without a socket.

    ``Notifier.from_env()`` is the usual way in. All public methods are safe to call from any
    thread, and ``close()`` is safe to call twice.
    """

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self._address_text = address or None
        self._address = _socket_address(address) if address else None
        if watchdog_usec is not None and watchdog_usec <= 0:
            raise NotifyError(f"watchdog_usec={watchdog_usec}: must be positive")
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._failed = False
        self._closed = False

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None, *,
                 unset: bool = False) -> Notifier:
        """Build from ``$NOTIFY_SOCKET`` / ``$WATCHDOG_USEC`` (``os.environ`` by default).

        With ``unset=True`` the variables are removed afterwards so child processes (a camera
        helper, a shell-out) do not inherit them and talk to systemd on our behalf.
        """
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        notifier = cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=_watchdog_usec(env))
        if unset:
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(key, None)
        return notifier

    @property
    def enabled(self) -> bool:
        """True when a notify socket is configured (running under a ``Type=notify`` unit)."""
        return self._address is not None and not self._closed

    def watchdog_timeout(self) -> float | None:
        """The watchdog timeout in seconds (``WatchdogSec=``), or None when no watchdog is armed."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 1e6

    def watchdog_interval(self) -> float | None:
        """How often to send ``WATCHDOG=1``: half the timeout, as systemd recommends; else None."""
        timeout = self.watchdog_timeout()
        return None if timeout is None else timeout / 2

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram. True if sent, False if disabled or failed."""
        for a in assignments:
            if "=" not in a or "\n" in a:
                raise NotifyError(f"{a!r}: a notify assignment is one KEY=VALUE line")
        if not self.enabled or not assignments:
            return False
        payload = ("\n".join(assignments) + "\n").encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # A receiver whose queue is full blocks a datagram sender: wait at most SEND_TIMEOUT,
                # and not at all while failing, so a stuck manager never stalls the frame loop.
                self._sock.settimeout(0.0 if self._failed else SEND_TIMEOUT)
                assert self._address is not None
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                # Log the first failure loudly, then quietly: a gone manager must not flood the journal.
                level = logging.DEBUG if self._failed else logging.WARNING
                log.log(level, "cannot notify systemd at %s: %s", self._address_text, exc)
                self._failed = True
                return False
        if self._failed:
            log.info("notifying systemd at %s works again", self._address_text)
            self._failed = False
        log.debug("sd_notify %s", payload.decode().strip().replace("\n", " "))
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: config, models and outputs are up (relay off). Also sent after a reload."""
        return self.notify("READY=1", *self._status_line(status))

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC``; send :meth:`ready` when the reload is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *self._status_line(status))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutting down (relay already off)."""
        return self.notify("STOPPING=1", *self._status_line(status))

    def status(self, text: str) -> bool:
        """``STATUS=...``: a one-line state shown by ``systemctl status``."""
        return self.notify(*self._status_line(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the frame loop is alive. Sent only when a watchdog is armed."""
        if self._watchdog_usec is None:
            return False
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket; later calls are no-ops. Safe to call twice."""
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("enabled" if self._address else "disabled")
        wd = self.watchdog_timeout()
        return (f"<Notifier {state} socket={self._address_text!r} "
                f"watchdog={'off' if wd is None else f'{wd:g}s'}>")

    @staticmethod
    def _status_line(text: str | None) -> tuple[str, ...]:
        if text is None:
            return ()
        return ("STATUS=" + " ".join(text.splitlines()),)

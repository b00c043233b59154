"""Is the wall clock known to be set? A Raspberry Pi has no real-time clock: until NTP has answered,
its time is whatever ``fake-hwclock`` saved at the last shutdown, so event times may be wrong.

``clock_synced()`` asks these sources in order; the first that knows answers:

1. ``/run/systemd/timesync/synchronized``: systemd-timesyncd creates it once it has synchronised
   the clock. Its presence means yes; its absence says nothing (another daemon may keep time).
2. ``adjtimex(2)``, read-only (``modes = 0``) through ctypes: the kernel's own flag, cleared by
   timesyncd, chrony and ntpd alike when they discipline the clock: unsynchronised when the call
   returns ``TIME_ERROR`` or ``STA_UNSYNC`` is set. Under the shipped systemd unit
   (``ProtectClock=yes``, ``SystemCallFilter=~@privileged``) the call is refused with EPERM and
   this source says nothing.
3. ``chronyc -n tracking`` (chrony, over its unprivileged local socket): ``Leap status : Normal``
   means yes, ``Not synchronised`` means no.
4. ``ntpstat`` (ntpd): exit status 0 means yes, 1 means no.

No answer from any source means False: not *known* to be set. The answer is cached for
``ttl`` seconds (60 by default) on the monotonic clock. ``clock_synced()`` never makes its caller
wait once it has answered once: a stale answer is returned while a background thread asks the
sources again (``chronyc`` may take a moment), so the frame loop is never held up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
TIME_ERROR = 5
STA_UNSYNC = 0x0040

Source = Callable[[], bool | None]
"""A clock source: True (synchronised), False (known not to be), None (cannot tell)."""


def timesyncd_flag(path: Path = TIMESYNCD_FLAG) -> bool | None:
    """True when systemd-timesyncd's flag file exists; None otherwise (absence proves nothing)."""
    try:
        return True if path.exists() else None
    except OSError:
        return None


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """glibc's ``struct timex`` (sys/timex.h), with room to spare at the end."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
                ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
                ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
                ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_spare", ctypes.c_int * 32)]


_libc: ctypes.CDLL | None = None


def kernel_adjtimex() -> bool | None:
    """The kernel's synchronisation flag via read-only ``adjtimex``; None when refused or missing."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fn = _libc.adjtimex
    except (OSError, AttributeError, TypeError):
        return None
    tx = _Timex()  # modes = 0: read only
    state = fn(ctypes.byref(tx))
    if state < 0:  # EPERM under seccomp (ProtectClock=yes), ENOSYS elsewhere
        log.debug("adjtimex refused: errno %d", ctypes.get_errno())
        return None
    return state != TIME_ERROR and not tx.status & STA_UNSYNC


def parse_chrony_tracking(text: str) -> bool | None:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "leap status":
            value = value.strip().lower()
            if value == "not synchronised":
                return False
            return value in ("normal", "insert second", "delete second") or None
    return None


def chrony(timeout: float = 2.0) -> bool | None:
    """``chronyc -n tracking``'s leap status; None without chrony or when it does not answer."""
    exe = shutil.which("chronyc")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-n", "tracking"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_chrony_tracking(out.stdout) if out.returncode == 0 else None


def ntpstat(timeout: float = 2.0) -> bool | None:
    """``ntpstat``'s exit status (0 synchronised, 1 not, 2 cannot tell); None without it."""
    exe = shutil.which("ntpstat")
    if exe is None:
        return None
    try:
        rc = subprocess.run([exe], capture_output=True, timeout=timeout).returncode
    except (OSError, subprocess.SubprocessError):
        return None
    return {0: True, 1: False}.get(rc)


DEFAULT_SOURCES: tuple[tuple[str, Source], ...] = (
    ("timesyncd", timesyncd_flag), ("adjtimex", kernel_adjtimex), ("chrony", chrony), ("ntpstat", ntpstat))


class ClockCheck:
    """``check()`` -> bool, asking ``sources`` in order at most every ``ttl`` seconds.

    ``source`` is the name of the source that gave the last answer (``none`` when none knew)."""

    def __init__(self, sources: Sequence[tuple[str, Source]] = DEFAULT_SOURCES, *, ttl: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic, background: bool = False) -> None:
        self.sources = tuple(sources)
        self.ttl = ttl
        self.background = background
        """True: once there is an answer, refresh a stale one in a thread and return the old one."""
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._checked_at: float | None = None
        self.synced: bool | None = None
        self.source = "none"

    def __repr__(self) -> str:
        return f"<ClockCheck synced={self.synced} source={self.source} ttl={self.ttl}s>"

    def __call__(self) -> bool:
        return self.check()

    def check(self) -> bool:
        with self._lock:
            now = self._monotonic()
            if self._checked_at is not None and self.synced is not None:
                if now - self._checked_at < self.ttl:
                    return self.synced
                if self.background:
                    if self._refreshing.acquire(blocking=False):
                        threading.Thread(target=self._refresh, name="maskgate-clock", daemon=True).start()
                    return self.synced
        return self._ask()

    def _refresh(self) -> None:
        try:
            self._ask()
        finally:
            self._refreshing.release()

    def _ask(self) -> bool:
        """Ask the sources (outside the lock: a subprocess may take a moment), then store."""
        synced, source = False, "none"
        for name, fn in self.sources:
            try:
                answer = fn()
            except Exception:
                log.exception("clock source %s failed", name)
                answer = None
            if answer is not None:
                synced, source = answer, name
                break
        with self._lock:
            if synced != self.synced:
                if synced:
                    log.info("wall clock is synchronised (source: %s)", source)
                else:
                    log.warning("wall clock not known to be synchronised (source: %s); events say so", source)
            self.synced, self.source, self._checked_at = synced, source, self._monotonic()
            return synced


_default = ClockCheck(background=True)


def clock_synced() -> bool:
    """Is the wall clock known to be set? (Cached for a minute; see the module docstring.)"""
    return _default.check()

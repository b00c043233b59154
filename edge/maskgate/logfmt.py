"""Log lines for a terminal, or for systemd's journal.

Under systemd the daemon's stderr is a stream into the journal (``$JOURNAL_STREAM`` names it). The
journal stamps each line with the time itself and reads a ``<N>`` prefix as the line's syslog
priority, so there the lines carry the priority instead of a time: ``journalctl -u maskgate -p
warning`` then shows the warnings and errors only, in colour.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level: 3 err, 4 warning, 6 info, 7 debug (2 crit)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    return 6 if levelno >= logging.INFO else 7


class JournalFormatter(logging.Formatter):
    """Each line of a record (a traceback too) prefixed with its priority, ``<4>...``."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def to_journal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is the journal stream systemd connected (``$JOURNAL_STREAM``,
    "device:inode"); False outside systemd, or when the output was redirected elsewhere."""
    try:
        dev, ino = (int(v) for v in os.environ["JOURNAL_STREAM"].split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (KeyError, ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup(level: int) -> bool:
    """Configure the root logger on stderr for a terminal or the journal; True for the journal."""
    journal = to_journal()
    handler = logging.StreamHandler()
    handler.setFormatter(JournalFormatter(JOURNAL_FORMAT) if journal else logging.Formatter(TERMINAL_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    return journal


def error_line(message: str, journal: bool) -> str:
    """A ``maskgate: error: ...`` line for stderr, with the error priority in the journal."""
    line = f"maskgate: error: {message}"
    return "\n".join("<3>" + part for part in line.splitlines()) if journal else line

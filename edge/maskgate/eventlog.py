"""The event log: one JSON line per decision (``DecisionEvent.to_json``) in the state directory,
rotated by size with a cap on the total.

``events.jsonl`` is the current file; when the next line would take it past ``max_bytes`` it is
renamed ``events-000001.jsonl`` (then ``-000002`` ...; numbered, not dated, because the clock may
be wrong) and the oldest rotated files are deleted until all files fit in ``max_total_bytes``.

Writing never stops the frame loop: each line is one ``write(2)`` on a file opened for appending;
a failure (disk full, folder gone) is logged once, the event is counted in ``lost`` and the file is
reopened on the next event, so writing resumes by itself when the disk has room again.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from .config import EventSettings
from .events import DecisionEvent

log = logging.getLogger(__name__)

CURRENT = "events.jsonl"
_ROTATED_RE = re.compile(r"^events-(\d{6,})\.jsonl$")


def state_dir() -> Path:
    """Where the daemon keeps state: ``$STATE_DIRECTORY`` under systemd (``StateDirectory=maskgate``:
    /var/lib/maskgate), else ``$XDG_STATE_HOME/maskgate`` (default ``~/.local/state/maskgate``)."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "maskgate"


def events_dir(settings: EventSettings | None = None) -> Path:
    """The event log folder: ``events.dir`` if set, else ``events`` in the state directory."""
    if settings is not None and settings.dir:
        return Path(settings.dir)
    return state_dir() / "events"


def rotated_files(directory: Path) -> list[tuple[int, Path]]:
    """Rotated event files, oldest first, as (number, path)."""
    out = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    for p in entries:
        m = _ROTATED_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def log_files(directory: Path) -> list[Path]:
    """Every event file in ``directory``, oldest first (rotated ones, then the current one)."""
    files = [p for _, p in rotated_files(directory)]
    if (directory / CURRENT).is_file():
        files.append(directory / CURRENT)
    return files


class EventLog:
    """A DecisionEvents sink writing JSON lines to ``directory/events.jsonl`` (see the module doc).

    ``written``: lines written; ``lost``: events that could not be written; ``errors``: failed
    writes (each logged only when writing starts failing, then again when it works again)."""

    def __init__(self, directory: str | Path, *, max_bytes: int = 1_048_576,
                 max_total_bytes: int = 10_485_760, filename: str = CURRENT) -> None:
        self.directory = Path(directory)
        self.path = self.directory / filename
        self.max_bytes = max_bytes
        self.max_total_bytes = max(max_total_bytes, max_bytes)
        self.written = 0
        self.lost = 0
        self.errors = 0
        self.rotations = 0
        self._fd: int | None = None
        self._size = 0
        self._regular = True
        self._failing = False
        self._partial = False
        self._closed = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.prune()
        except OSError as exc:
            log.error("event log %s: cannot prepare the folder (%s); will retry on each event", self.directory,
                      exc.strerror or exc)

    @classmethod
    def from_settings(cls, settings: EventSettings) -> EventLog:
        return cls(events_dir(settings), max_bytes=settings.max_bytes, max_total_bytes=settings.max_total_bytes)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "failing" if self._failing else "ok"
        return (f"<EventLog {self.path} {state} written={self.written} lost={self.lost} size={self._size} "
                f"rotations={self.rotations}>")

    def __call__(self, event: DecisionEvent) -> None:
        self.write(event.to_json())

    def write(self, record: dict[str, Any]) -> bool:
        """Append one record; False (counted, logged once) when it could not be written."""
        if self._closed:
            self.lost += 1
            return False
        line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        try:
            if self._fd is None:
                self._open()
            if self._regular and self._size > 0 and self._size + len(line) > self.max_bytes:
                self._rotate()
            if self._partial:  # finish a line cut short by an earlier failure
                self._write_all(b"\n")
                self._partial = False
            self._write_all(line)
        except OSError as exc:
            self.lost += 1
            self.errors += 1
            if not self._failing:
                self._failing = True
                log.error("event log %s: cannot write (%s); events are counted as lost until writing works "
                          "again", self.path, exc.strerror or exc)
            self._close_fd()
            return False
        self.written += 1
        if self._failing:
            self._failing = False
            log.warning("event log %s: writing again (%d event(s) lost so far)", self.path, self.lost)
        return True

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        st = os.fstat(fd)
        self._fd, self._size, self._regular = fd, st.st_size, stat.S_ISREG(st.st_mode)

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            if n <= 0:
                raise OSError(errno.EIO, "short write")
            if n < len(view):
                self._partial = True
            self._size += n
            view = view[n:]
        self._partial = False

    def _rotate(self) -> None:
        self._close_fd()
        existing = rotated_files(self.directory)
        number = existing[-1][0] + 1 if existing else 1
        os.replace(self.path, self.directory / f"events-{number:06d}.jsonl")
        self.rotations += 1
        self.prune()
        self._open()

    def prune(self) -> list[Path]:
        """Delete the oldest rotated files until they and a full current file fit the cap."""
        removed = []
        rotated = []
        for _, p in rotated_files(self.directory):
            try:
                rotated.append((p, p.stat().st_size))
            except OSError:
                continue
        total = sum(size for _, size in rotated)
        while rotated and total + self.max_bytes > self.max_total_bytes:
            p, size = rotated.pop(0)
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:
                pass
            total -= size
        if removed:
            log.info("event log: removed %d old file(s) to stay under %d bytes", len(removed),
                     self.max_total_bytes)
        return removed

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        self._close_fd()
        self._closed = True


@dataclass
class LogRead:
    """What ``read_events`` found: the records, and lines that were not valid event records."""

    records: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    bad_lines: int = 0


def iter_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from f


def read_events(directory: Path) -> LogRead:
    """Every record of every event file in ``directory`` (rotated files too), oldest file first.

    A line that is not a JSON object with ``ts`` and ``outcome`` (a line cut short by a power cut
    or a full disk) is counted in ``bad_lines`` and skipped."""
    out = LogRead(files=log_files(directory))
    for path in out.files:
        try:
            lines = list(iter_lines(path))
        except OSError as exc:
            log.warning("%s: cannot read (%s)", path, exc.strerror or exc)
            continue
        for raw in lines:
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                out.bad_lines += 1
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("ts"), str) or "outcome" not in rec:
                out.bad_lines += 1
                continue
            out.records.append(rec)
    return out


def parse_ts(ts: str) -> datetime | None:
    """An event's ``ts`` (ISO 8601 UTC, ``...Z``) as an aware datetime; None if malformed."""
    try:
        t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _bucket() -> dict[str, Any]:
    return {"allow": 0, "deny": 0, "fault": 0, "deny_reasons": {}, "fault_reasons": {}, "inactive": 0,
            "unsynced": 0}


def _add(b: dict[str, Any], rec: dict[str, Any]) -> None:
    outcome = rec.get("outcome")
    if outcome not in ("allow", "deny", "fault"):
        return
    b[outcome] += 1
    if outcome in ("deny", "fault"):
        reasons = b[f"{outcome}_reasons"]
        why = str(rec.get("reason") or "unknown")
        reasons[why] = reasons.get(why, 0) + 1
    if rec.get("active") is False:
        b["inactive"] += 1
    if rec.get("clock_synced") is False:
        b["unsynced"] += 1


def summarise(records: list[dict[str, Any]], tz: ZoneInfo, *, since: datetime | None = None,
              now: datetime | None = None) -> dict[str, Any]:
    """Counts per local day and hour (in ``tz``), a total and today's, of events at or after ``since``.

    Each bucket: ``allow``, ``deny``, ``fault``, ``deny_reasons`` and ``fault_reasons`` (reason ->
    count), ``inactive`` (decided while the gate was off or outside its schedule: nothing was
    driven) and ``unsynced`` (recorded before the clock was known to be set: the time may be wrong)."""
    now = now or datetime.now(UTC)
    today = now.astimezone(tz).date().isoformat()
    days: dict[str, dict[str, Any]] = {}
    total = _bucket()
    skipped = 0
    for rec in records:
        t = parse_ts(rec["ts"])
        if t is None:
            skipped += 1
            continue
        if since is not None and t < since:
            continue
        local = t.astimezone(tz)
        day = days.setdefault(local.date().isoformat(), {**_bucket(), "hours": {}})
        hour = day["hours"].setdefault(local.hour, _bucket())
        for b in (total, day, hour):
            _add(b, rec)
    out_days = []
    for key in sorted(days):
        d = days[key]
        d["hours"] = [{"hour": h, **d["hours"][h]} for h in sorted(d["hours"])]
        out_days.append({"date": key, **d})
    today_bucket = next((d for d in out_days if d["date"] == today), None)
    return {"timezone": str(tz), "today": today, "since": since.isoformat() if since else None,
            "total": total, "today_counts": {k: v for k, v in (today_bucket or _bucket()).items() if k != "hours"},
            "days": out_days, "bad_timestamps": skipped}

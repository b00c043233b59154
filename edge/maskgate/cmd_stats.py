"""``maskgate stats [--since DATE|DURATION] [--dir DIR] [--json]``: the event log per day and hour."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from .config import NO_ACCESS_FIX, Settings, may_exist, resolve_config
from .errors import ConfigError
from .eventlog import events_dir, read_events, summarise

log = logging.getLogger(__name__)

SYSTEMD_EVENTS = Path("/var/lib/maskgate/events")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="summarise the event log per day and hour (allow, deny by reason, faults)")
    p.add_argument("--since", default=None, metavar="DATE|DURATION",
                   help="only events from then on: 2024-05-01, '2024-05-01 14:00' (local time), today, "
                        "yesterday, or a duration back from now: 90m, 12h, 7d, 2w")
    p.add_argument("--dir", type=Path, default=None,
                   help="event log folder (default: events.dir from the config, else the daemon's "
                        "/var/lib/maskgate/events when it exists, else the state directory's events/)")
    p.add_argument("--config", type=Path, default=None,
                   help="config file for schedule.timezone and events.dir (default /etc/maskgate/maskgate.toml "
                        "if it exists)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def parse_since(text: str, tz: ZoneInfo, now: datetime) -> datetime:
    """A ``--since`` value as an aware datetime: a duration back from ``now``, or a local date/time."""
    t = text.strip().lower()
    m = _DURATION_RE.match(t)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    local_today = now.astimezone(tz).date()
    if t in ("today", "yesterday"):
        day = local_today - timedelta(days=1 if t == "yesterday" else 0)
        return datetime.combine(day, time(0), tz)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--since: not a date, time or duration (got {text!r}); use 2024-05-01, "
                          "'2024-05-01 14:00', today, yesterday, 90m, 12h, 7d or 2w") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=tz)


def default_dir(settings: Settings) -> Path:
    if settings.events.dir or os.environ.get("STATE_DIRECTORY"):
        return events_dir(settings.events)
    if may_exist(SYSTEMD_EVENTS):  # the service's (/var/lib/maskgate is 0750: may_exist, not is_dir)
        return SYSTEMD_EVENTS
    return events_dir(settings.events)


def run(args: argparse.Namespace) -> int:
    settings = resolve_config(args.config, quiet=True)[0]
    tz = ZoneInfo(settings.schedule.timezone)
    now = datetime.now(UTC)
    since = parse_since(args.since, tz, now) if args.since else None
    directory = args.dir or default_dir(settings)
    try:
        found_dir = directory.is_dir()
    except PermissionError:
        found_dir = True  # a parent this user may not search: the access check below says so
    if not found_dir:
        raise ConfigError(f"{directory}: no event log folder here; pass --dir DIR (the daemon writes to "
                          "$STATE_DIRECTORY/events, /var/lib/maskgate/events under systemd)")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise ConfigError(f"{directory}: permission denied; {NO_ACCESS_FIX}")
    found = read_events(directory)
    summary = summarise(found.records, tz, since=since, now=now)
    summary["dir"] = str(directory)
    summary["files"] = [p.name for p in found.files]
    summary["bad_lines"] = found.bad_lines
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0


def _row(label: str, b: dict[str, Any]) -> str:
    dr = b["deny_reasons"]
    faults = ", ".join(f"{k} {v}" for k, v in sorted(b["fault_reasons"].items()))
    mark = "*" if b["unsynced"] else " "
    return (f"{label:<12}{mark}{b['allow']:>7}{b['deny']:>7}{dr.get('without_mask', 0):>9}"
            f"{dr.get('incorrect_mask', 0):>11}{b['fault']:>7}{b['inactive']:>10}"
            + (f"  ({faults})" if faults else ""))


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"event log {s['dir']} ({len(s['files'])} file(s)); times in {s['timezone']}, today is {s['today']}"
             + (f"; since {s['since']}" if s["since"] else "")]
    if not s["days"]:
        lines.append("no events" + (" in that period" if s["since"] else ""))
    else:
        lines.append(f"{'day / hour':<13}{'allow':>7}{'deny':>7}{'no mask':>9}{'worn wrong':>11}{'fault':>7}"
                     f"{'inactive':>10}")
        for day in s["days"]:
            lines.append(_row(day["date"], day) + ("  <- today" if day["date"] == s["today"] else ""))
            for h in day["hours"]:
                lines.append(_row(f"  {h['hour']:02d}:00", h))
        lines.append(_row("total", s["total"]))
    t = s["today_counts"]
    lines.append(f"today: {t['allow']} allowed, {t['deny']} denied, {t['fault']} fault(s)")
    if s["total"]["unsynced"]:
        lines.append(f"* {s['total']['unsynced']} event(s) were recorded before the clock was synchronised: "
                     "their day and hour may be wrong")
    if s["total"]["inactive"]:
        lines.append("inactive: decided while the gate was off or outside its schedule (nothing was driven)")
    if s["bad_lines"] or s["bad_timestamps"]:
        lines.append(f"{s['bad_lines'] + s['bad_timestamps']} unreadable line(s) skipped")
    return "\n".join(lines)

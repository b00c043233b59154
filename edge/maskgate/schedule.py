"""Active hours: is the gate on at a given wall-clock time, in the configured time zone?"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from .config import DAYS, ScheduleSettings


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class Schedule:
    def __init__(self, settings: ScheduleSettings) -> None:
        self.settings = settings
        self._tz = ZoneInfo(settings.timezone)
        self._windows = [(_minutes(w.split("-")[0]), _minutes(w.split("-")[1])) for w in settings.hours]
        self._days = {DAYS.index(d) for d in settings.days}

    def __repr__(self) -> str:
        s = self.settings
        return f"<Schedule enabled={s.enabled} {list(s.hours)} {list(s.days)} {s.timezone}>"

    def active(self, wall: float) -> bool:
        """True when the gate should act at epoch time ``wall`` (always, when disabled)."""
        if not self.settings.enabled:
            return True
        t = datetime.fromtimestamp(wall, self._tz)
        minute = t.hour * 60 + t.minute
        day = t.weekday()
        for start, end in self._windows:
            if start <= end:
                if day in self._days and start <= minute < end:
                    return True
            elif (day in self._days and minute >= start) or ((day - 1) % 7 in self._days and minute < end):
                return True
        return False

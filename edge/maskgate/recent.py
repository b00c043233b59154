"""The recent DecisionEvents kept in memory (a ring buffer) and today's counts, for the status page and
``/api/events``. A sink of :class:`maskgate.events.DecisionEvents`; nothing is written to disk."""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from datetime import date, datetime
from zoneinfo import ZoneInfo

from .events import DecisionEvent

log = logging.getLogger(__name__)

OUTCOMES = ("allow", "deny", "fault")


class RecentEvents:
    """The last ``capacity`` DecisionEvents, and per-outcome counts for the current local day in
    ``timezone`` (the schedule's time zone). Thread-safe; readers get copies."""

    def __init__(self, capacity: int = 200, timezone: str = "UTC") -> None:
        self.capacity = capacity
        self._events: deque[DecisionEvent] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._tz = ZoneInfo(timezone)
        self._day: date | None = None
        self._today: Counter[str] = Counter()
        self.total = 0

    def __repr__(self) -> str:
        return f"<RecentEvents {len(self._events)}/{self.capacity} total={self.total} today={dict(self._today)}>"

    def set_timezone(self, timezone: str) -> None:
        with self._lock:
            self._tz = ZoneInfo(timezone)

    def __call__(self, event: DecisionEvent) -> None:
        day = datetime.fromtimestamp(event.wall, self._tz).date()
        with self._lock:
            self._events.append(event)
            self.total += 1
            if self._day is None or day > self._day:
                self._day, self._today = day, Counter()
            if day == self._day:
                self._today[event.outcome] += 1

    def events(self, limit: int | None = None) -> list[DecisionEvent]:
        """Newest first."""
        with self._lock:
            out = list(self._events)
        out.reverse()
        return out if limit is None else out[:max(0, limit)]

    def today(self, now: float) -> tuple[str, dict[str, int]]:
        """(local date as ISO text, counts per outcome) for the day containing ``now``."""
        day = datetime.fromtimestamp(now, self._tz).date()
        with self._lock:
            counts = self._today if self._day == day else Counter()
            return day.isoformat(), {k: int(counts.get(k, 0)) for k in OUTCOMES}

"""Follows faces across frames (greedy IoU matching against a constant-velocity prediction) and keeps
each track's recent votes."""

from __future__ import annotations

import itertools
import logging
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Observation:
    """One classified face in one frame."""

    box: Box
    label: str
    score: float
    in_roi: bool = True


@dataclass
class Track:
    id: int
    box: Box
    first_ts: float
    last_ts: float
    window: int
    label: str = ""
    score: float = 0.0
    in_roi: bool = True
    vx: float = 0.0
    vy: float = 0.0
    """Smoothed velocity of the box (pixels per second of frame time)."""
    votes: deque[tuple[str, float]] = field(default_factory=deque)
    triggered: dict[str, float] = field(default_factory=dict)
    """Frame time at which this track last triggered each action (``open``, ``alarm``)."""

    def predict(self, ts: float) -> Box:
        """Where the box should be at ``ts`` if the person keeps walking at the same speed."""
        dt = ts - self.last_ts
        x, y, w, h = self.box
        return (int(round(x + self.vx * dt)), int(round(y + self.vy * dt)), w, h)

    def add(self, obs: Observation, ts: float) -> None:
        dt = ts - self.last_ts
        if dt > 0 and self.votes:
            vx = ((obs.box[0] + obs.box[2] / 2) - (self.box[0] + self.box[2] / 2)) / dt
            vy = ((obs.box[1] + obs.box[3] / 2) - (self.box[1] + self.box[3] / 2)) / dt
            self.vx, self.vy = 0.5 * self.vx + 0.5 * vx, 0.5 * self.vy + 0.5 * vy
        self.box, self.label, self.score, self.in_roi, self.last_ts = obs.box, obs.label, obs.score, obs.in_roi, ts
        self.votes.append((obs.label, obs.score))
        while len(self.votes) > self.window:
            self.votes.popleft()

    def __repr__(self) -> str:
        return f"<Track {self.id} {self.label} {self.score:.2f} box={self.box} votes={len(self.votes)}>"


def iou(a: Box, b: Box) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = min(ax1, bx1) - max(a[0], b[0])
    ih = min(ay1, by1) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


ALLOW_LABEL = "with_mask"
"""The only verdict that may open the door."""

NESTED = 0.7
"""Two boxes are one face when their overlap covers this share of the smaller one (see :func:`one_per_face`)."""


def nested(a: Box, b: Box) -> bool:
    """Whether boxes ``a`` and ``b`` overlap by at least :data:`NESTED` of the smaller one's area."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return iw > 0 and ih > 0 and iw * ih >= NESTED * min(a[2] * a[3], b[2] * b[3])


def one_per_face(observations: list[Observation], face_labels: frozenset[str]) -> list[Observation]:
    """Drop the weaker of two nested boxes that say the same about one face.

    YuNet sometimes adds a weak, larger box around a face (hair, neck) that its non-maximum suppression
    keeps, their IoU being low. Tracked on its own it was a second person in the doorway whom the
    classifier could not call masked, and the door waited a second or two for it to go away. A box
    nested with one judged a face (a label in ``face_labels``) is dropped when the classifier calls it
    ``no_face`` (below the ignore threshold), or gives it the same label with a lower score, or
    calls it ``with_mask`` while the other box is a bare or wrongly masked face: a bare verdict is
    never argued away, and a masked verdict beside it would be a second person who cannot change the
    door's answer. Nested boxes with two different deny labels are both kept."""
    drop: set[int] = set()
    for i, a in enumerate(observations):
        if a.label not in face_labels or i in drop:
            continue
        for j, b in enumerate(observations):
            if j == i or j in drop or not nested(a.box, b.box):
                continue
            if (b.label == "no_face" or (b.label == a.label and (b.score, -j) < (a.score, -i))
                    or (b.label == ALLOW_LABEL and a.label != ALLOW_LABEL)):
                drop.add(j)
    return [o for k, o in enumerate(observations) if k not in drop]


MAX_SPEED = 8.0
"""Face widths per second a person may move sideways between two detections: someone walking across
the doorway at 1.3 m/s covers about eight face widths (16 cm) a second. The reach is capped at two
face widths however long the gap."""


def _near(a: Box, b: Box, dt: float) -> bool:
    """Similar sizes and centres close enough for a walker ``dt`` seconds apart.

    Sizes are similar when the widths or the heights are: a face coming in at the frame's side is
    first found cut off by the edge, narrower than the whole face found a frame later but as tall."""
    dx = (a[0] + a[2] / 2) - (b[0] + b[2] / 2)
    dy = (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
    w = max(a[2], b[2])
    reach = w * min(2.0, 0.6 + MAX_SPEED * max(dt, 0.0))
    similar = 0.6 < a[2] / max(b[2], 1) < 1.67 or 0.6 < a[3] / max(b[3], 1) < 1.67
    return (dx * dx + dy * dy) ** 0.5 < reach and similar


class Tracker:
    """Greedy IoU tracker on frame time; a track ends after ``timeout`` seconds unseen."""

    def __init__(self, iou_threshold: float = 0.3, timeout: float = 1.0, window: int = 5) -> None:
        self.iou_threshold = iou_threshold
        self.timeout = timeout
        self.window = window
        self.tracks: list[Track] = []
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"<Tracker {len(self.tracks)} track(s) iou>={self.iou_threshold} timeout={self.timeout}s>"

    def configure(self, iou_threshold: float, timeout: float, window: int) -> None:
        self.iou_threshold, self.timeout, self.window = iou_threshold, timeout, window
        for t in self.tracks:
            t.window = window

    def rescale(self, fx: float, fy: float) -> None:
        """Carry the tracks over to frames resized by ``fx`` across and ``fy`` down (the camera's
        stream size changed): boxes and velocities scale, identities and votes stay."""
        for t in self.tracks:
            x, y, w, h = t.box
            t.box = (int(round(x * fx)), int(round(y * fy)), max(1, int(round(w * fx))), max(1, int(round(h * fy))))
            t.vx, t.vy = t.vx * fx, t.vy * fy

    def expire(self, ts: float) -> None:
        self.tracks = [t for t in self.tracks if ts - t.last_ts <= self.timeout]

    def update(self, ts: float, observations: list[Observation]) -> list[Track]:
        """Match observations to tracks, start new tracks, drop stale ones; return live tracks."""
        self.expire(ts)
        pairs = []
        for ti, t in enumerate(self.tracks):
            pred = t.predict(ts)
            for oi, o in enumerate(observations):
                v = max(iou(pred, o.box), iou(t.box, o.box))
                if v >= self.iou_threshold:
                    pairs.append((v, ti, oi))
                elif _near(pred, o.box, 0.0) or _near(t.box, o.box, ts - t.last_ts):
                    pairs.append((v * 0.5 + 1e-3, ti, oi))
        pairs.sort(reverse=True)
        used_t: set[int] = set()
        used_o: set[int] = set()
        for _, ti, oi in pairs:
            if ti in used_t or oi in used_o:
                continue
            used_t.add(ti)
            used_o.add(oi)
            self.tracks[ti].add(observations[oi], ts)
        for oi, o in enumerate(observations):
            if oi not in used_o:
                t = Track(next(self._ids), o.box, ts, ts, self.window)
                t.add(o, ts)
                self.tracks.append(t)
                log.debug("track %d started at %s", t.id, o.box)
        return list(self.tracks)

"""Which work a frame gets: search the whole doorway, follow the faces already tracked, or nothing.

A door is mostly empty, and a person at it stays for seconds, so the whole-frame face detector (the
gate's dearest stage) need not run on every frame:

- ``detect``: the doorway is searched. On the first frame; while faces are followed, on every
  ``every``-th frame (to find newcomers); on the frame after ``search_next()`` (a followed face was
  lost, or the door may open: it opens only on a searched frame, so nobody who walked in meanwhile is
  missed); and while nobody is followed, on every ``moving_every``-th frame as long as the frame
  changed since the detector last searched it (``MotionGate``: someone may be coming; then only
  around the change, ``region``, which the pipeline searches at full size so a face walking in is
  found sooner), and on every ``idle_every``-th frame anyway.
- with ``every_around``, the ``every``-th search and the search after a followed face was lost look
  only in windows around the followed faces (``windows``, at full size), unless the frame changed
  away from the followed people since the last search: a newcomer moves, and is searched for over
  the whole doorway. The search before the door opens always covers the whole doorway.
- ``follow``: the faces seen on the previous frame are found again near their predicted places
  (``follow.FaceFollower``) and classified again, so every frame still votes.
- ``skip``: nobody is followed and nothing moved: no detection, no classification (the pipeline
  still follows a tracked face the last search missed, on this kind of frame and on ``follow`` ones).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from .motion import MotionGate

log = logging.getLogger(__name__)

DETECT, FOLLOW, SKIP = "detect", "follow", "skip"


Box = tuple[int, int, int, int]


def face_window(box: Box) -> Box:
    """A followed face's box (x, y, w, h) widened by half its size on every side, as (x0, y0, x1, y1):
    where a search finds that face again at full size."""
    x, y, w, h = box
    return int(x - w / 2), int(y - h / 2), int(x + 1.5 * w), int(y + 1.5 * h)


def person_zone(box: Box, height: int) -> Box:
    """Where a followed person's own movement shows, as (x0, y0, x1, y1): a band three faces wide from
    half a face above the head to the bottom of the frame (the body below the face)."""
    x, y, w, h = box
    return int(x - w), int(y - h / 2), int(x + 2 * w), height


class Cadence:
    """Plans each frame's work; ``every=1``, ``moving_every=1`` and ``motion=0`` detect on every frame."""

    def __init__(self, every: int = 1, moving_every: int = 1, idle_every: int = 1, motion: float = 0.0,
                 every_around: bool = False) -> None:
        self.every = max(1, every)
        self.every_around = every_around
        self.moving_every = max(1, moving_every)
        self.idle_every = max(1, idle_every)
        self.motion = MotionGate(motion) if motion > 0 else None
        self.since: int | None = None
        """Frames since the last ``detect`` (None before the first)."""
        self.region: Box | None = None
        """On a ``detect`` frame planned because the frame changed: where it changed (x0, y0, x1, y1
        in frame pixels); searching around there is enough. None: search the whole doorway."""
        self.windows: list[Box] = []
        """On an ``every``-th ``detect`` frame with ``every_around`` where nothing changed away from the
        followed people: the windows (x0, y0, x1, y1) around their faces, the only places to search."""
        self._looked: list[Box] = []
        """The faces (x, y, w, h) found on the last searched frame, the motion gate's reference."""
        self._force = False
        self._force_around: list[Box] | None = None
        """With ``_force``: the faces (x, y, w, h) the forced search may look around only (a lost face);
        None: it searches the whole doorway."""

    def __repr__(self) -> str:
        return (f"<Cadence every={self.every} every_around={self.every_around} moving_every={self.moving_every} "
                f"idle_every={self.idle_every} motion={self.motion!r} since={self.since}>")

    def found(self, faces: Sequence[Box]) -> None:
        """The faces (x, y, w, h) the search of this frame found: their people were in the reference frame."""
        self._looked = list(faces)

    def search_next(self, around: Sequence[Box] | None = None) -> None:
        """Search the whole doorway on the next frame (a followed face was lost, or the door would open);
        with ``around`` (faces, x, y, w, h) and ``every_around``, only around them unless something changed
        away from them. Any call without ``around`` before the next frame asks for the whole doorway."""
        if around is None or not self.every_around:
            self._force_around = None
        elif not self._force or self._force_around is not None:
            self._force_around = [*(self._force_around or []), *around]
        self._force = True

    def _windows(self, frame_bgr: np.ndarray, faces: Sequence[Box]) -> list[Box]:
        """With ``every_around``: the windows around ``faces`` to search instead of the whole doorway, or
        [] (search it all) when the frame changed away from them. A newcomer moves: where the followed
        people are now and where they were on the reference frame, change is theirs; elsewhere it may
        be someone new."""
        if not self.every_around or self.motion is None or not faces:
            return []
        h = frame_bgr.shape[0]
        zones = [person_zone(b, h) for b in (*faces, *self._looked)]
        if self.motion.changed(frame_bgr, outside=zones):
            return []
        return [face_window(b) for b in faces]

    def plan(self, frame_bgr: np.ndarray, following: bool, faces: Sequence[Box] = ()) -> str:
        """The work for this frame; ``following`` says whether any face was seen on the previous frame,
        ``faces`` where those faces are expected now (x, y, w, h)."""
        since = self.since
        self.region = None
        self.windows = []
        if since is None or self._force:
            due = True
            if since is not None and self._force_around is not None:
                self.windows = self._windows(frame_bgr, [*faces, *self._force_around])
        elif following:
            due = since + 1 >= self.every
            if due:
                self.windows = self._windows(frame_bgr, faces)
        elif self.motion is None or since + 1 >= self.idle_every:
            due = True
        elif since + 1 < self.moving_every:
            due = False
        else:
            due = self.motion.changed(frame_bgr)
            self.region = self.motion.box if due else None
        if due:
            self.since, self._force, self._force_around, self._looked = 0, False, None, []
            if self.motion is not None:
                self.motion.look(frame_bgr)
            return DETECT
        self.since = (self.since or 0) + 1
        return FOLLOW if following else SKIP

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
- ``follow``: the faces seen on the previous frame are found again near their predicted places
  (``follow.FaceFollower``) and classified again, so every frame still votes.
- ``skip``: nobody is followed and nothing moved: no detection, no classification.
"""

from __future__ import annotations

import logging

import numpy as np

from .motion import MotionGate

log = logging.getLogger(__name__)

DETECT, FOLLOW, SKIP = "detect", "follow", "skip"


class Cadence:
    """Plans each frame's work; ``every=1``, ``moving_every=1`` and ``motion=0`` detect on every frame."""

    def __init__(self, every: int = 1, moving_every: int = 1, idle_every: int = 1, motion: float = 0.0) -> None:
        self.every = max(1, every)
        self.moving_every = max(1, moving_every)
        self.idle_every = max(1, idle_every)
        self.motion = MotionGate(motion) if motion > 0 else None
        self.since: int | None = None
        """Frames since the last ``detect`` (None before the first)."""
        self.region: tuple[int, int, int, int] | None = None
        """On a ``detect`` frame planned because the frame changed: where it changed (x0, y0, x1, y1
        in frame pixels); searching around there is enough. None: search the whole doorway."""
        self._force = False

    def __repr__(self) -> str:
        return (f"<Cadence every={self.every} moving_every={self.moving_every} idle_every={self.idle_every} "
                f"motion={self.motion!r} since={self.since}>")

    def search_next(self) -> None:
        """Search the whole doorway on the next frame (a followed face was lost, or the door would open)."""
        self._force = True

    def plan(self, frame_bgr: np.ndarray, following: bool) -> str:
        """The work for this frame; ``following`` says whether any face was seen on the previous frame."""
        since = self.since
        self.region = None
        if since is None or self._force:
            due = True
        elif following:
            due = since + 1 >= self.every
        elif self.motion is None or since + 1 >= self.idle_every:
            due = True
        elif since + 1 < self.moving_every:
            due = False
        else:
            due = self.motion.changed(frame_bgr)
            self.region = self.motion.box if due else None
        if due:
            self.since, self._force = 0, False
            if self.motion is not None:
                self.motion.look(frame_bgr)
            return DETECT
        self.since = (self.since or 0) + 1
        return FOLLOW if following else SKIP

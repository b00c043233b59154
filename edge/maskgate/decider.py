"""From tracks to one decision per frame, and from a decision to what the outputs should do.

Each track votes over its last ``window`` verdicts: ``votes`` masked votes allow it, ``votes``
bare or wrongly-worn votes deny it, and a full window with neither is ``uncertain`` (that band
neither opens nor alarms). Low-score verdicts, faces the classifier only half-heartedly calls
``no_face``, and faces seen without colour (gray frames: not judged) are uncertain votes. The scene
is allowed only when every track in the doorway is allowed; one denied track denies, and a face too
small to be tracked (under ``detector.min_face``) judged bare on the searched frame keeps the door
waiting (``vetoes``). An action
(``open`` the door, sound the ``alarm``) fires once per person and again only after ``cooldown``
seconds of frame time. The door opens only on a frame whose whole
doorway was searched for faces (``searched``): on a frame where only the tracked faces were followed,
an allow waits as ``checking`` with ``confirm`` set, so a newcomer who walked in since the last search
is seen first; ``confirm`` is also set one masked vote ahead, so that search usually comes in time.
An undecided (``checking``) track that a search of the whole doorway did not find, that has not been
seen since, and that was never called bare or wrongly masked, no longer holds the door (:func:`gone`).
A denied or ``uncertain`` track, or one with a bare vote, holds the door until it times out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .config import DecisionSettings, ScheduleSettings
from .schedule import Schedule
from .tracker import Track

log = logging.getLogger(__name__)

BAD_LABELS = ("without_mask", "incorrect_mask")

VETO_DETAIL = "a smaller face in the doorway is not masked"
"""Why the door waits when everyone at it is masked but a face too small to be tracked is not."""


@dataclass(frozen=True)
class TrackView:
    """A track as seen by observers (immutable snapshot)."""

    id: int
    box: tuple[int, int, int, int]
    label: str
    score: float
    state: str
    reason: str | None
    in_roi: bool


@dataclass(frozen=True)
class Decision:
    ts: float
    state: str
    """idle | checking | uncertain | allow | deny | fault"""
    reason: str | None = None
    """Set on deny (without_mask, incorrect_mask) and fault (camera, model, frames; ``detail`` may say more)."""
    tracks: tuple[TrackView, ...] = ()
    trigger: str | None = None
    """``open`` or ``alarm`` on the frame where an action fires, else None."""
    active: bool = True
    """False when the mode is ``off`` or the schedule is outside its hours."""
    mode: str = "enforce"
    confirm: bool = False
    """Search the whole doorway on the next frame: the door would open (or may open with one more
    masked vote), and this frame's doorway was not searched."""
    detail: str | None = None
    """A fault's particulars in words, when its reason alone would mislead (a camera that delivers
    frames, but without colour: ``no colour in the picture``); on ``checking``, why a door that would
    open waits (:data:`VETO_DETAIL`)."""


@dataclass(frozen=True)
class Plan:
    """What the outputs should show for a decision."""

    green: bool = False
    red: bool = False
    pulse: bool = False
    buzz: str | None = None
    """``without_mask`` or ``incorrect_mask``: the buzzer pattern to play."""
    relay_off: bool = False
    """Force the relay off now (fault)."""


def vote(track: Track, s: DecisionSettings) -> tuple[str, str | None]:
    """A track's own state and reason from its recent votes."""
    mask = bare = incorrect = 0
    latest_masked = False
    for label, score in track.votes:
        latest_masked = label == "with_mask" and score >= s.mask_score
        if latest_masked:
            mask += 1
        elif label == "without_mask" and score >= s.bare_score:
            bare += 1
        elif label == "incorrect_mask" and score >= s.bare_score:
            incorrect += 1
    # allowing also needs the newest verdict to be masked: a track never opens the door on old votes
    # (a mask pulled down, or another person taking over a track)
    if mask >= s.votes and latest_masked:
        return "allow", None
    if bare + incorrect >= s.votes:
        return "deny", "incorrect_mask" if incorrect > bare else "without_mask"
    if len(track.votes) >= s.window:
        return "uncertain", None
    return "checking", None


def unsure(label: str, score: float, s: DecisionSettings) -> bool:
    """Whether a face verdict votes neither way in :func:`vote`: masked under ``mask_score``, bare or
    wrongly masked under ``bare_score``."""
    if label == "with_mask":
        return score < s.mask_score
    return label in ("without_mask", "incorrect_mask") and score < s.bare_score


def one_vote_from_allow(track: Track, s: DecisionSettings) -> bool:
    """Whether one more masked vote would allow the track (its newest vote is masked already)."""
    masked = [label == "with_mask" and score >= s.mask_score for label, score in track.votes]
    kept = masked[-(s.window - 1):] if s.window > 1 else []
    return bool(masked) and masked[-1] and sum(kept) + 1 >= s.votes


def gone(track: Track, state: str, searched_ts: float) -> bool:
    """Whether an undecided track no longer holds the door: a search of the whole doorway (at
    ``searched_ts``) did not find it, it has not been seen since, and none of its verdicts was bare or
    wrongly masked: a box found once that later searches do not repeat (a weak box beside a face, a
    face glimpsed for a frame); it would only make the door wait for its timeout. A face ever called
    bare holds the door until its track ends, however briefly a search missed it."""
    return (state == "checking" and track.last_ts < searched_ts
            and not any(label in BAD_LABELS for label, _ in track.votes))


class Decider:
    """Turns live tracks into a Decision; the clock is the frames' own timestamps."""

    def __init__(self, settings: DecisionSettings | None = None,
                 schedule: ScheduleSettings | None = None) -> None:
        self.settings = settings or DecisionSettings()
        self.schedule = Schedule(schedule or ScheduleSettings())
        self._searched_ts = float("-inf")
        """Frame time of the last frame whose whole doorway was searched."""

    def __repr__(self) -> str:
        s = self.settings
        return f"<Decider mode={s.mode} {s.votes}/{s.window} cooldown={s.cooldown}s {self.schedule!r}>"

    def configure(self, settings: DecisionSettings, schedule: ScheduleSettings) -> None:
        self.settings = settings
        self.schedule = Schedule(schedule)

    def is_active(self, wall: float) -> bool:
        return self.settings.mode != "off" and self.schedule.active(wall)

    def fault(self, ts: float, reason: str, wall: float, detail: str | None = None) -> Decision:
        return Decision(ts, "fault", reason, (), None, self.is_active(wall), self.settings.mode, detail=detail)

    def decide(self, ts: float, tracks: list[Track], wall: float, *, searched: bool = True,
               vetoes: tuple[str, ...] = ()) -> Decision:
        """The decision for a frame; ``searched`` says whether the whole doorway was searched for faces
        on it (False on frames where only the tracked faces were followed). ``vetoes``: the verdicts
        (bare or wrongly masked) of faces on this frame too small to be tracked (narrower than
        ``detector.min_face``: a step behind, a child): the door that would open waits instead."""
        s = self.settings
        if searched:
            self._searched_ts = ts
        views = []
        states: list[tuple[Track, str, str | None]] = []
        left: list[Track] = []  # in the doorway but gone: they hold nothing, and an opening counts for them
        for t in tracks:
            st, why = vote(t, s)
            views.append(TrackView(t.id, t.box, t.label, t.score, st, why, t.in_roi))
            if t.in_roi:
                if gone(t, st, self._searched_ts):
                    left.append(t)
                else:
                    states.append((t, st, why))
        active = self.is_active(wall)
        state, reason, trigger, confirm, detail = "idle", None, None, False, None
        if states:
            denied = [(t, why) for t, st, why in states if st == "deny"]
            if denied:
                state = "deny"
                reasons = [why for _, why in denied]
                reason = "without_mask" if "without_mask" in reasons else "incorrect_mask"
                fresh = [t for t, _ in denied if self._ready(t, "alarm", ts)]
                if fresh and active:
                    trigger = "alarm"
                    for t in fresh:
                        t.triggered["alarm"] = ts
            elif all(st == "allow" for _, st, _ in states):
                state = "allow"
                if active and any(self._ready(t, "open", ts) for t, _, _ in states):
                    if not searched:
                        state, confirm = "checking", True
                    elif vetoes:  # everyone at the door is masked, but a smaller face in the doorway is not
                        state, confirm, detail = "checking", True, VETO_DETAIL
                    else:
                        trigger = "open"
                        # a track left out as gone that is found again (a second box on the same
                        # face) must not open the door a second time for the same person
                        for t in [*(t for t, _, _ in states), *left]:
                            t.triggered["open"] = ts
            elif any(st == "checking" for _, st, _ in states):
                state = "checking"
                # one more masked vote may open the door: have the next frame searched, so the door
                # opens on time instead of a frame later
                confirm = not searched and active and all(
                    st == "allow" or (st == "checking" and one_vote_from_allow(t, s))
                    for t, st, _ in states) and any(self._ready(t, "open", ts) for t, _, _ in states)
            else:
                state = "uncertain"
        return Decision(ts, state, reason, tuple(views), trigger, active, s.mode, confirm, detail)

    def _ready(self, track: Track, action: str, ts: float) -> bool:
        last = track.triggered.get(action)
        return last is None or ts - last >= self.settings.cooldown


def plan(decision: Decision, buzzer_mute: bool = False) -> Plan:
    """What the lights, buzzer and relay should do for ``decision`` (mode and schedule applied)."""
    if decision.state == "fault":
        return Plan(red=decision.active, relay_off=True)
    if not decision.active:
        return Plan()
    if decision.state == "allow":
        return Plan(green=True, pulse=decision.trigger == "open" and decision.mode == "enforce")
    if decision.state == "deny":
        buzz = decision.reason if decision.trigger == "alarm" and not buzzer_mute else None
        return Plan(red=True, buzz=buzz)
    return Plan()

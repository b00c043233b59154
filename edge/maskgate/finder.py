"""Finding and judging the faces in one frame: the gate's eyes, without its loop or its memory.

:class:`FaceFinder` searches the doorway region (all of it, only near where the picture changed, or
windows around the followed faces), keeps weak boxes on faces already tracked, follows faces between
searches by their templates, classifies each face (gray faces are seen but not judged), takes a
second look at full size at unsure verdicts and at verdicts that turn a face's answer round, and
judges the faces too small to track. :class:`~maskgate.pipeline.Pipeline` decides when each runs.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from .classifier import FaceClassifier, Verdict
from .config import LABELS, Settings
from .crop import colourless, face_input
from .decider import BAD_LABELS, unsure
from .detector import Face, FaceDetector
from .follow import FaceFollower
from .second_opinion import combine
from .stats import Stats
from .tracker import ALLOW_LABEL, Observation, Track, Tracker, iou, nested, one_per_face

log = logging.getLogger(__name__)


def roi_pixels(roi: tuple[float, ...], width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = roi
    return int(x0 * width), int(y0 * height), int(round(x1 * width)), int(round(y1 * height))


def in_roi(box: tuple[int, int, int, int], r: tuple[int, int, int, int]) -> bool:
    cx, cy = box[0] + box[2] / 2.0, box[1] + box[3] / 2.0
    return r[0] <= cx < r[2] and r[1] <= cy < r[3]


UNJUDGED = ""
"""The label of a face seen but not judged (no colour): an uncertain vote that keeps its track going."""
AROUND_MARGIN = 0.15
"""A search around a change reaches this share of the frame's longer side beyond it (a face only
partly changed, e.g. a head turning, is still searched whole)."""
AROUND_MAX_SHARE = 0.7
"""A search around a change that would cover more than this share of the doorway searches all of it."""
REFINE_IOU = 0.3
"""A box found at full size in the window replaces an unsure face's box only when they overlap at least
this much (IoU), so a second look never jumps to another person's face."""


class FaceFinder:
    """Finds the faces of a frame and judges them, with the gate's current settings, detector and
    classifier (:meth:`configure` swaps them on a reload). The tracker and the template follower are
    the gate's, shared: searches keep weak boxes on tracked faces, and follow by their templates."""

    def __init__(self, settings: Settings, detector: FaceDetector, classifier: FaceClassifier, tracker: Tracker,
                 follower: FaceFollower, stats: Stats) -> None:
        self.settings = settings
        self.detector = detector
        self.classifier = classifier
        self.tracker = tracker
        self.follower = follower
        self.stats = stats

    def configure(self, settings: Settings, detector: FaceDetector, classifier: FaceClassifier) -> None:
        self.settings = settings
        self.detector = detector
        self.classifier = classifier

    def detect(self, img: np.ndarray, around: tuple[int, int, int, int] | None = None, *,
               keep_low: bool = False, narrowest: int | None = None) -> list[Face]:
        """Faces whose centre lies in the doorway region; only that region (plus a margin) is searched,
        and with ``around`` (x0, y0, x1, y1: where the frame changed) only its part near there, at full
        size (no ``face_px`` downscale) when ``detector.moving_full_size`` is on. ``keep_low``: boxes
        down to ``detector.track_threshold`` too (see :meth:`keep_tracked`); ``narrowest``: boxes down
        to this width too (see :meth:`judge_small`)."""
        h, w = img.shape[:2]
        r = roi_pixels(self.settings.detector.roi, w, h)
        mx, my = int(0.1 * w), int(0.1 * h)
        x0, y0, x1, y1 = max(0, r[0] - mx), max(0, r[1] - my), min(w, r[2] + mx), min(h, r[3] + my)
        full = False
        if around is not None:
            m = int(AROUND_MARGIN * max(w, h))
            a = (max(x0, around[0] - m), max(y0, around[1] - m), min(x1, around[2] + m), min(y1, around[3] + m))
            if a[2] - a[0] < 2 or a[3] - a[1] < 2:
                return []
            if (a[2] - a[0]) * (a[3] - a[1]) < AROUND_MAX_SHARE * (x1 - x0) * (y1 - y0):
                x0, y0, x1, y1 = a
                # someone may be walking in: the full-size picture finds a moving face a frame or two sooner
                full = self.settings.detector.moving_full_size
        if (x0, y0, x1, y1) == (0, 0, w, h):
            faces = self.detector.detect(img, full_size=full, keep_low=keep_low, narrowest=narrowest)
        else:
            faces = self.detector.detect(img[y0:y1, x0:x1], full_size=full, keep_low=keep_low, narrowest=narrowest)
        out = []
        for f in faces:
            box = (f.box[0] + x0, f.box[1] + y0, f.box[2], f.box[3])
            if in_roi(box, r):
                out.append(Face(box, f.score))
        return out

    def detect_windows(self, img: np.ndarray, windows: list[tuple[int, int, int, int]], *,
                       keep_low: bool = False) -> list[Face]:
        """Faces found at full size inside each window (x0, y0, x1, y1) whose centre lies in the doorway
        region; where windows overlap, a face found twice keeps its higher-scoring box (a window that
        cuts a face finds it with a worse box and a lower score)."""
        h, w = img.shape[:2]
        r = roi_pixels(self.settings.detector.roi, w, h)
        out: list[Face] = []
        for wx0, wy0, wx1, wy1 in windows:
            x0, y0, x1, y1 = max(0, wx0), max(0, wy0), min(w, wx1), min(h, wy1)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            for f in self.detector.detect(img[y0:y1, x0:x1], full_size=True, keep_low=keep_low):
                box = (f.box[0] + x0, f.box[1] + y0, f.box[2], f.box[3])
                if not in_roi(box, r):
                    continue
                same = [i for i, o in enumerate(out) if iou(box, o.box) >= 0.5]
                if not same:
                    out.append(Face(box, f.score))
                elif all(f.score > out[i].score for i in same):
                    out[same[0]] = Face(box, f.score)
                    out = [o for i, o in enumerate(out) if i not in same[1:]]
        return out

    def keep_tracked(self, faces: list[Face], ts: float) -> list[Face]:
        """The faces scoring ``detector.score_threshold`` or more, and those scoring less (found with
        ``keep_low``) that overlap a tracked face's predicted box by ``decision.track_iou``.

        A face the gate already follows keeps being found when YuNet's confidence in it dips under the
        threshold for a few frames (a turned head, a mask that hides the landmarks YuNet scores on),
        so its votes go on; a low box alone never starts a track (hysteresis, as in ByteTrack)."""
        s = self.settings
        expected = [t.predict(ts) for t in self.tracker.tracks]
        return [f for f in faces if f.score >= s.detector.score_threshold
                or any(iou(f.box, b) >= s.decision.track_iou for b in expected)]

    def follow(self, img: np.ndarray, ts: float, tracks: list[Track]) -> tuple[list[Face], bool]:
        """Find each followed face again near its predicted place (``FaceFollower``).

        Returns the faces found (centre in the doorway region, no duplicates) and whether any
        followed face was lost (not found, or gone out of the region).
        """
        h, w = img.shape[:2]
        r = roi_pixels(self.settings.detector.roi, w, h)
        found: list[Face] = []
        lost = False
        for t in tracks:
            hit = self.follower.find(t.id, img, t.predict(ts), known_speed=len(t.votes) > 1)
            if hit is None or not in_roi(hit[0], r):
                lost = True
            elif all(iou(hit[0], f.box) < 0.5 for f in found):
                found.append(Face(hit[0], hit[1]))
        return found, lost

    def unsure(self, o: Observation) -> bool:
        """A face verdict that votes neither way; unjudged (gray) faces are not unsure."""
        return unsure(o.label, o.score, self.settings.decision)

    def flips(self, o: Observation, tracks: list[Track], ts: float) -> bool:
        """Whether a verdict that votes turns its face's answer round: the track it overlaps most
        last voted the other way (allow against deny)."""
        if o.label not in LABELS or self.unsure(o):
            return False
        overlap, best = max(((iou(t.predict(ts), o.box), t) for t in tracks), key=lambda p: p[0],
                            default=(0.0, None))
        if best is None or overlap < REFINE_IOU:
            return False
        d = self.settings.decision
        last = next((label for label, score in reversed(best.votes)
                     if label in LABELS and not unsure(label, score, d)), None)
        return last is not None and (last == ALLOW_LABEL) != (o.label == ALLOW_LABEL)

    def refine(self, img: np.ndarray, obs: list[Observation],
               which: list[bool] | None = None) -> list[Observation]:
        """A second look at each unsure verdict: YuNet at full size in a window twice the face's size,
        and the classifier on the box it finds there (the verdict stays when it finds none, or no face).

        Between searches a face is classified on the box its template carries forward, and searches
        run at the ``face_px`` scale; on some faces either box sits on the hair or the neck and the
        classifier hesitates for seconds. This costs a few milliseconds on the rare unsure frames.
        ``which``: the verdicts to look at again (default: the unsure ones)."""
        h, w = img.shape[:2]
        if which is None:
            which = [self.unsure(o) for o in obs]
        out = []
        for o, again in zip(obs, which, strict=True):
            if not again:
                out.append(o)
                continue
            x, y, bw, bh = o.box
            x0, y0 = max(0, x - bw // 2), max(0, y - bh // 2)
            x1, y1 = min(w, x + bw + bw // 2), min(h, y + bh + bh // 2)
            boxes = [(f.box[0] + x0, f.box[1] + y0, f.box[2], f.box[3])
                     for f in self.detector.detect(img[y0:y1, x0:x1], full_size=True, keep_low=True)]
            best = max(boxes, key=lambda b: iou(b, o.box), default=None)
            if best is None or iou(best, o.box) < REFINE_IOU:
                out.append(o)
                continue
            v = self.classifier.classify(face_input(img, best, self.classifier.input_spec, self.classifier.crop_rule),
                                         img, best)
            self.stats.score(v.label, v.score)
            out.append(o if v.label == "no_face" else dataclasses.replace(o, box=best, label=v.label, score=v.score))
        return out

    def _track_of(self, o: Observation, tracks: list[Track], ts: float) -> tuple[Track | None, int]:
        """The track this verdict will vote on (the one its box overlaps most at ``decision.track_iou``
        or more; None: a new face), and that track's bare or wrongly masked votes among its last
        ``window - 1``, the ones this vote will be counted with."""
        d = self.settings.decision
        overlap, best = max(((iou(t.predict(ts), o.box), t) for t in tracks), key=lambda p: p[0],
                            default=(0.0, None))
        if best is None or overlap < d.track_iou:
            return None, 0
        recent = list(best.votes)[-(d.window - 1):] if d.window > 1 else []
        return best, sum(label in BAD_LABELS and score >= d.bare_score for label, score in recent)

    def would_deny(self, o: Observation, tracks: list[Track], ts: float) -> bool:
        """Whether this verdict's vote would make its face's track decide ``deny`` (and sound the
        alarm) for the first time: a bare or wrongly masked vote, on a track (the one it overlaps
        most) whose other recent votes lack only this one, and which has not sounded it yet."""
        d = self.settings.decision
        if o.label not in BAD_LABELS or o.score < d.bare_score:
            return False
        track, bad = self._track_of(o, tracks, ts)
        if track is None:
            return d.votes <= 1
        return "alarm" not in track.triggered and bad + 1 >= d.votes

    def may_confirm_mask(self, o: Observation, tracks: list[Track], ts: float) -> bool:
        """Whether the second model may make this verdict a masked vote
        (``classifier.second_opinion = "door"``): a ``with_mask`` verdict under ``decision.mask_score``
        (an uncertain vote), on a new face or a track that has not sounded the alarm and has no bare
        or wrongly masked vote among its recent ones. The second model settles the small one's doubt;
        it never outvotes the small one's bare verdicts."""
        d = self.settings.decision
        if o.label != ALLOW_LABEL or o.score >= d.mask_score:
            return False
        track, bad = self._track_of(o, tracks, ts)
        return track is None or ("alarm" not in track.triggered and bad == 0)

    def second_looks(self, img: np.ndarray, obs: list[Observation], tracks: list[Track], ts: float, *,
                     masks: bool) -> list[Observation]:
        """The second opinion at the door (``classifier.second_opinion`` ``deny``, or ``door`` with
        ``masks``): the second model looks at a face before a vote that would sound the alarm
        (:meth:`would_deny`, then :meth:`_held_alarm`) and, with ``masks``, at a masked verdict too
        weak to vote (:meth:`may_confirm_mask`, then :meth:`_confirmed_mask`). Each verdict gets at
        most one look, chosen on the small model's own verdict, so a vote held back from the alarm
        is never made a masked one."""
        second = getattr(self.classifier, "second_verdict", None)
        if second is None:
            return obs
        out = []
        for o in obs:
            confirm = masks and self.may_confirm_mask(o, tracks, ts)
            if not confirm and not self.would_deny(o, tracks, ts):
                out.append(o)
                continue
            self.stats.count("second_looks")
            w = second(img, o.box)
            out.append(self._confirmed_mask(o, w) if confirm else self._held_alarm(img, o, w))
        return out

    def _confirmed_mask(self, o: Observation, second: Verdict) -> Observation:
        """Where the second model is sure of a mask too (``with_mask`` at ``classifier.second_sure`` or
        more), the weak masked verdict ``o`` becomes a masked vote, scored the second model's score or
        ``decision.mask_score``, whichever is higher; otherwise it stands (an uncertain vote)."""
        sure = second.scores.get(ALLOW_LABEL, 0.0)
        if sure < self.settings.classifier.second_sure:
            return o
        self.stats.count("masks_confirmed")
        return dataclasses.replace(o, score=max(float(sure), self.settings.decision.mask_score))

    def _held_alarm(self, img: np.ndarray, o: Observation, second: Verdict) -> Observation:
        """Only if the second model is sure of a mask (``with_mask`` at ``classifier.second_sure`` or
        more) is the vote ``o`` that would sound the alarm replaced, by the
        average of the two verdicts, which then votes neither way: no alarm, and never the door (a
        ``with_mask`` average is kept under ``mask_score``; with the default thresholds it is at most
        0.7 anyway). Otherwise the small model's vote stands."""
        d = self.settings.decision
        if second.scores.get(ALLOW_LABEL, 0.0) < self.settings.classifier.second_sure:
            return o
        first = self.classifier.classify(face_input(img, o.box, self.classifier.input_spec, self.classifier.crop_rule))
        v = combine(first, second)
        score = min(v.score, float(np.nextafter(d.mask_score, 0.0))) if v.label == ALLOW_LABEL else v.score
        self.stats.count("alarms_held")
        return dataclasses.replace(o, label=v.label, score=float(score))

    def judge_small(self, img: np.ndarray, faces: list[Face], tracks: list[Track], ts: float) -> tuple[str, ...]:
        """The bare or wrongly masked verdicts (at ``decision.bare_score`` or more) of the faces too small
        to be tracked (``detector.veto_face`` wide up to ``min_face``) that this frame's search of the
        whole doorway found: a person a step behind, or a child, whom the door must not let in beside a
        masked one. A box nested in a tracked face's box is part of that face; faces without colour
        are not judged."""
        d = self.settings.decision
        t = time.perf_counter()
        here = [tr.box for tr in tracks if tr.last_ts == ts]
        out = []
        for f in faces:
            if any(nested(f.box, b) for b in here):
                continue
            x = face_input(img, f.box, self.classifier.input_spec, self.classifier.crop_rule)
            if colourless(x, self.classifier.input_spec):
                continue
            v = self.classifier.classify(x, img, f.box)
            self.stats.score(v.label, v.score)
            if v.label in BAD_LABELS and v.score >= d.bare_score:
                out.append(v.label)
        self.stats.stage("veto", time.perf_counter() - t)
        return tuple(out)

    def observe(self, img: np.ndarray, faces: list[Face]) -> list[Observation]:
        """Classify each face (the bundle's crop rule); a confident ``no_face`` is a false detection,
        a face without colour an unjudged (uncertain) vote."""
        s = self.settings
        obs: list[Observation] = []
        t_pre = t_cls = 0.0
        for f in faces:
            t = time.perf_counter()
            x = face_input(img, f.box, self.classifier.input_spec, self.classifier.crop_rule)
            gray = colourless(x, self.classifier.input_spec)
            t_pre += time.perf_counter() - t
            if gray:
                # a gray face: the classifier would guess (often "bare" for a mask); the track goes on
                # with an uncertain vote, so gray frames never open the door or sound the alarm
                self.stats.count("colourless_faces")
                if self.stats.colourless_faces == 1 or self.stats.colourless_faces % 1000 == 0:
                    log.warning("a face without colour (gray frames?) is tracked, not judged (%d so far)",
                                self.stats.colourless_faces)
                obs.append(Observation(f.box, UNJUDGED, 0.0))
                continue
            t = time.perf_counter()
            v = self.classifier.classify(x, img, f.box)
            t_cls += time.perf_counter() - t
            self.stats.score(v.label, v.score)
            if v.label == "no_face" and v.score >= s.decision.no_face_score:
                continue  # a detector false positive
            obs.append(Observation(f.box, v.label, v.score))
        if faces:
            self.stats.stage("preprocess", t_pre)
            self.stats.stage("classify", t_cls)
        return one_per_face(obs, frozenset(LABELS)) if len(obs) > 1 else obs

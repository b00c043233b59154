"""The gate's loop: newest frame → faces in the doorway → verdicts → tracks → decision → outputs.

The loop is the only place that knows every stage. It never dies on one bad frame or one failed
inference (skipped and counted; gray, 4-channel and 16-bit frames are converted), turns a failing
camera or model, or a picture that stays without colour (``source.colourless_fault``), into a
``fault`` decision (relay off, red LED fault pattern), reopens a failed live
camera with exponential backoff, applies a reloaded configuration between frames, calls
``on_alive`` once per frame read, and tells its observers about every processed frame. It marks
each stage it is in on its :class:`~maskgate.health.Health`, which judges whether it is stuck.
It plans each frame's work (search, follow, or nothing: :class:`~maskgate.cadence.Cadence`); the
searching, following and judging of faces is :class:`~maskgate.finder.FaceFinder`'s.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .cadence import DETECT, FOLLOW, Cadence
from .classifier import Classifier, FaceClassifier
from .config import LABELS, Settings
from .crop import colourless_picture, dark_picture, picture_sample
from .decider import VETO_DETAIL, Decider, Decision, plan
from .detector import DetectorSettings, Face, FaceDetector
from .errors import ConfigError, FrameError, MaskgateError, SourceError
from .events import FaceEvent, FrameResult, Observer
from .finder import FaceFinder
from .follow import FaceFollower
from .health import Health, watched
from .imageio import to_bgr
from .outputs import Outputs
from .second_opinion import DENY, DOOR, load_second_opinion
from .sources import Frame, FrameSource, orient
from .stats import Stats
from .tracker import Tracker, iou

log = logging.getLogger(__name__)


SIZE_CHANGE_FRAMES = 3
"""Frames of one new size in a row after which it is the stream's size (fewer are skipped as bad)."""


def detector_settings(s: Settings) -> DetectorSettings:
    d = s.detector
    return DetectorSettings(score_threshold=d.score_threshold, track_threshold=d.track_threshold,
                            nms_threshold=d.nms_threshold,
                            max_side=d.max_side, upscale=d.upscale, min_face=d.min_face, face_px=d.face_px)


def build_cadence(s: Settings) -> Cadence:
    d = s.detector
    return Cadence(d.every, d.moving_every, d.idle_every, d.motion, d.every_around)


def build_detector(s: Settings) -> FaceDetector:
    return FaceDetector(detector_settings(s), s.detector.model or None)


def build_classifier(s: Settings, first: Classifier | None = None) -> FaceClassifier:
    """The configured classifier (``first``, if given, instead of loading ``classifier.model``),
    with its second opinion unless ``classifier.second_opinion`` is ``off``."""
    c = s.classifier
    clf = first or Classifier(c.model or None, threads=c.threads, delegate=c.delegate)
    log.info("classifier %s: runtime %s, delegate %s, %d thread(s)", clf.bundle.name, clf.runtime,
             clf.delegate, c.threads)
    if c.second_opinion == "off":
        return clf
    return load_second_opinion(clf, c.second_model or None, threads=c.threads, delegate=c.delegate,
                               when=c.second_opinion)


NO_COLOUR = "no colour in the picture"
"""The detail of a ``camera`` fault whose camera delivers frames without colour (``source.colourless_fault``)."""
DARK = "picture too dark (lens covered or no light)"
"""The detail of a ``camera`` fault whose picture stays too dark to see anyone (``source.colourless_fault``)."""


class Pipeline:
    """One gate: a source, a detector, a classifier, a tracker, a decider and the outputs."""

    def __init__(self, settings: Settings, source: FrameSource, detector: FaceDetector,
                 classifier: FaceClassifier, outputs: Outputs, *, stats: Stats | None = None,
                 observers: list[Observer] | None = None, on_alive: Callable[[], None] | None = None,
                 reloader: Callable[[], Settings] | None = None, max_frames: int | None = None,
                 keep_images: bool = False, health: Health | None = None,
                 clock: Callable[[], float] = time.monotonic, wait: Callable[[float], bool] | None = None) -> None:
        self.settings = settings
        self.health = health or Health(settings.health, settings.source, clock=clock)
        self.clock = clock
        self.wait = wait or self.stop_wait
        """Waits between camera reopen attempts; True when the gate was stopped meanwhile."""
        self.source = source
        self.outputs = watched(outputs, self.health, "output")
        self.stats = stats or Stats()
        self.observers: list[Observer] = list(observers or [])
        self.on_alive = on_alive
        self.reloader = reloader
        self.max_frames = max_frames
        self.keep_images = keep_images
        self.stop_event = threading.Event()
        self.reload_requested = threading.Event()
        self.tracker = Tracker(settings.decision.track_iou, settings.decision.track_timeout,
                               settings.decision.window)
        self.decider = Decider(settings.decision, settings.schedule)
        self.cadence = build_cadence(settings)
        self.follower = FaceFollower()
        self.finder = FaceFinder(settings, watched(detector, self.health, "detect"),
                                 watched(classifier, self.health, "classify"), self.tracker, self.follower,
                                 self.stats)
        self.outputs.mode = settings.decision.mode
        self.outputs.on_button.append(lambda: self.stats.count("button_presses"))
        self.outputs.on_pulse.append(lambda: self.stats.count("relay_pulses"))
        self.last_decision: Decision | None = None
        self.failure: str | None = None
        """Why a finite run ended early (camera, model), else None."""
        self.faulted: str | None = None
        """The reason of the fault the gate is in (camera, frames, model), else None."""
        self._fault_since = 0.0
        self._reopen = False
        self._bad_streak = 0
        self._error_streak = 0
        self._inferred = False
        """Whether the last processed frame ran a model (the cadence skips some frames)."""
        self._last_ts = 0.0
        self._missed: set[int] = set()
        """Tracks a search missed and nothing found since: followed by their templates all the same."""
        self.frame_size: tuple[int, int] | None = None
        """(height, width) of the stream's frames; a frame of another size is skipped until that size
        has come ``SIZE_CHANGE_FRAMES`` times in a row (then it is the stream's new size)."""
        self._other_size: tuple[tuple[int, int], int] = ((0, 0), 0)
        self._gray_since: float | None = None
        """Frame time of the first frame of the current run of frames without colour, else None."""
        self.gray_fault = False
        """True while the picture has had no colour for ``source.colourless_fault`` seconds (a fault)."""
        self.gray_detail = NO_COLOUR
        """Why the last colourless frame had no colour: ``NO_COLOUR`` (gray) or ``DARK``."""

    def __repr__(self) -> str:
        return f"<Pipeline {self.source!r} {self.decider!r} {self.stats!r}>"

    @property
    def detector(self) -> FaceDetector:
        return self.finder.detector

    @property
    def classifier(self) -> FaceClassifier:
        return self.finder.classifier

    # -- control ---------------------------------------------------------------------------------
    def stop(self) -> None:
        self.stop_event.set()

    def stop_wait(self, seconds: float) -> bool:
        return self.stop_event.wait(seconds)

    def source_failed(self, exc: BaseException) -> None:
        """The source failed before the loop started (a camera missing at boot): fault now, and
        the loop starts by reopening it with backoff."""
        log.error("frame source failed: %s", exc)
        self.fault("camera")
        self._reopen = True

    def request_reload(self) -> None:
        self.reload_requested.set()

    def apply_settings(self, new: Settings) -> None:
        """Swap in new settings between frames; parts that need a restart are logged and kept."""
        old = self.settings
        if new.source != old.source:
            log.warning("reload: [source] changes apply after a restart")
        detector, classifier = self.detector, self.classifier
        if new.detector.model != old.detector.model or detector_settings(new) != detector_settings(old):
            detector = watched(FaceDetector(detector_settings(new), new.detector.model or None),
                               self.health, "detect")
        if new.detector != old.detector:
            self.cadence = build_cadence(new)
        if new.classifier != old.classifier:
            try:
                classifier = watched(build_classifier(new), self.health, "classify")
            except MaskgateError as exc:
                log.error("reload: classifier not changed: %s", exc)
                new = dataclasses.replace(new, classifier=old.classifier)
        d = new.decision
        self.tracker.configure(d.track_iou, d.track_timeout, d.window)
        self.decider.configure(d, new.schedule)
        self.outputs.configure(new.outputs, d.mode)
        self.health.configure(new.health, old.source)
        self.finder.configure(new, detector, classifier)
        self.settings = new
        log.info("configuration reloaded: mode %s, votes %d/%d, cooldown %.1f s",
                 d.mode, d.votes, d.window, d.cooldown)

    def _reload(self) -> None:
        if self.reloader is None:
            return
        try:
            new = self.reloader()
        except (ConfigError, OSError) as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)
            return
        try:
            self.apply_settings(new)
            self.stats.count("reloads")
        except MaskgateError as exc:
            log.error("reload failed, keeping the running configuration: %s", exc)

    # -- loop ------------------------------------------------------------------------------------
    def run(self) -> Stats:
        """Run until the source ends, ``max_frames`` frames, or ``stop()``; the relay ends off."""
        try:
            while not self.stop_event.is_set():
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    with self.health.stage("reload"):
                        self._reload()
                if self._reopen and not self._recover_source():
                    break
                with self.health.stage("loop"):
                    if not self.step():
                        break
                if self.max_frames is not None and self.stats.frames >= self.max_frames:
                    break
        finally:
            self.outputs.safe()
        return self.stats

    def _alive(self) -> None:
        if self.on_alive is not None:
            try:
                self.on_alive()
            except Exception:
                log.exception("on_alive callback failed")

    def step(self) -> bool:
        """Read and process one frame; False when a finite source has ended or failed for good.

        A live source that fails is marked for reopening (``run`` does it before the next step)."""
        t0 = time.perf_counter()
        try:
            with self.health.stage("capture"):
                frame = self.source.read()
            if frame is not None:
                frame = self._usable(frame)
        except SourceError as exc:
            self._alive()
            log.error("frame source failed: %s", exc)
            self.fault("camera")
            if not getattr(self.source, "live", False):
                self.failure = "camera"
                return False
            self._reopen = True
            return True
        except Exception as exc:  # FrameError, or a source bug: one frame, never the gate
            self._alive()
            self._bad_frame(exc)
            return True
        finally:
            self.stats.dropped = int(getattr(self.source, "dropped", 0))
        self.stats.stage("capture", time.perf_counter() - t0)
        if frame is None:
            return False
        if self._bad_streak:
            log.warning("frames readable again after %d bad frame(s)", self._bad_streak)
            self._bad_streak = 0
        try:
            self.process(frame)
        except Exception as exc:  # one frame must never kill the gate
            self._failed_frame(frame, exc)
        else:
            self.health.frame_done()
            if not self._inferred and self._error_streak:
                self._alive()  # a frame the cadence let pass without a model proves nothing about them
                return True
            if self._error_streak:
                log.warning("processing works again after %d failed frame(s)", self._error_streak)
                self._error_streak = 0
            if self.faulted is not None:
                log.warning("fault (%s) over after %.1f s: deciding again", self.faulted,
                            self.clock() - self._fault_since)
                self.faulted = None
        self._alive()
        return True

    def _usable(self, frame: Frame) -> Frame:
        """The frame as 3-channel BGR uint8 (gray, 4-channel and 16-bit converted), or FrameError."""
        img = frame.image
        if not isinstance(img, np.ndarray) or img.size == 0 or img.ndim not in (2, 3) or min(img.shape[:2]) < 8:
            shape = getattr(img, "shape", None)
            raise FrameError(f"frame {frame.index}: empty or not an image (shape {shape})")
        self._check_size(frame.index, img.shape[:2])
        if img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
            return frame
        try:
            bgr = to_bgr(img)
        except Exception as exc:  # cv2.error for dtypes it cannot convert
            raise FrameError(f"frame {frame.index}: cannot convert a {img.dtype} image of shape {img.shape} "
                             f"to BGR ({exc})") from exc
        if bgr.ndim != 3 or bgr.shape[2] != 3:
            raise FrameError(f"frame {frame.index}: not a color or gray image (shape {img.shape})")
        self.stats.count("converted_frames")
        return dataclasses.replace(frame, image=bgr)

    def _check_size(self, index: int, size: tuple[int, int]) -> None:
        """FrameError for a frame whose size is not the stream's (a torn or misread buffer: its face
        boxes would not match the tracks and start new ones), unless the new size has persisted. A
        source of photos of any size (``mixed_sizes``) is not checked."""
        if getattr(self.source, "mixed_sizes", False):
            return
        if self.frame_size is None or size == self.frame_size:
            self.frame_size = size
            self._other_size = ((0, 0), 0)
            return
        seen, count = self._other_size
        count = count + 1 if seen == size else 1
        self._other_size = (size, count)
        old_h, old_w = self.frame_size
        if count < SIZE_CHANGE_FRAMES:
            raise FrameError(f"frame {index}: {size[1]}x{size[0]} pixels, the stream's frames are {old_w}x{old_h} "
                             f"(a new size is followed after {SIZE_CHANGE_FRAMES} frames in a row)")
        log.warning("frame size changed from %dx%d to %dx%d (%d frames in a row): following the new size",
                    old_w, old_h, size[1], size[0], count)
        self.tracker.rescale(size[1] / old_w, size[0] / old_h)
        self.follower.clear()
        self.cadence.search_next()
        self.frame_size = size
        self._other_size = ((0, 0), 0)
        self.stats.count("size_changes")

    def _bad_frame(self, exc: BaseException) -> None:
        self.stats.count("bad_frames")
        self._bad_streak += 1
        if self._bad_streak == 1 or self._bad_streak % 100 == 0:
            if isinstance(exc, FrameError):
                log.warning("skipping frame: %s (%d in a row)", exc, self._bad_streak)
            else:
                log.error("skipping frame: the source raised %s: %s (%d in a row)", type(exc).__name__, exc,
                          self._bad_streak)
        if self._bad_streak >= self.settings.source.max_bad_frames:
            self.fault("frames")
            if getattr(self.source, "live", False) and self._bad_streak == self.settings.source.max_bad_frames:
                self._reopen = True  # a camera that only sends garbage may recover when reopened

    def _failed_frame(self, frame: Frame, exc: BaseException) -> None:
        if isinstance(exc, FrameError):
            self.stats.count("bad_frames")
            log.warning("skipping frame: %s", exc)
            return
        self.stats.count("errors")
        self._error_streak += 1
        self.cadence.search_next()  # the tracks missed this frame: search the whole doorway next
        if self._error_streak == 1 or self._error_streak % 100 == 0:
            log.error("frame %d: processing failed (%s: %s); skipped (%d in a row)", frame.index,
                      type(exc).__name__, exc, self._error_streak)
            if self._error_streak == 1:
                log.debug("traceback of the failed frame", exc_info=exc)
        if self._error_streak >= self.settings.health.max_errors:
            self.fault("model")

    def _recover_source(self) -> bool:
        """Reopen the live source with exponential backoff until it opens or the gate stops.

        The relay stays off and the red LED shows the fault pattern meanwhile (``fault`` did that).
        Each attempt is a marked stage (backoff wait, open), so a reopen that hangs is judged stuck;
        attempts that fail quickly are progress, healthy for ``health.fault_grace`` seconds."""
        self._reopen = False
        s = self.settings.source
        delay = s.reopen_delay
        attempts = 0
        down_since = self.clock()
        while not self.stop_event.is_set():
            with self.health.stage("open"):
                try:
                    self.source.close()
                except Exception:
                    log.exception("closing the frame source failed")
            self.health.note_stuck_reads(int(getattr(self.source, "abandoned", 0)))
            with self.health.stage("backoff"):
                if self.wait(delay):
                    return False
            attempts += 1
            try:
                with self.health.stage("open"):
                    self.source.open()
            except Exception as exc:  # SourceError, or whatever a camera stack raises
                if attempts == 1 or attempts % 10 == 0:
                    log.warning("frame source still failing after %d attempt(s) (%s); next try in %.1f s",
                                attempts, exc, min(delay * 2, s.reopen_max_delay))
                delay = min(delay * 2, s.reopen_max_delay)
                continue
            self.stats.count("camera_reconnects")
            self.frame_size = None  # a reopened camera may come back at another size
            log.warning("frame source reopened after %d attempt(s), %.1f s", attempts, self.clock() - down_since)
            return True
        return False

    def colour_gone(self, img: np.ndarray, ts: float) -> bool:
        """Whether the picture has been unusable (no colour, or too dark to see anyone) for
        ``source.colourless_fault`` seconds of frame time.

        Each frame is judged on a tiny copy (a few microseconds). Faces without colour are never judged
        (:meth:`FaceFinder.observe`), so a camera that stays gray (mono or night mode, an IR camera at night) would
        leave everyone uncertain for good, and in a dark picture no one is even found: after that long
        it is a ``camera`` fault, shown like any other, with the cause (``NO_COLOUR`` or ``DARK``), and
        the first usable frame ends it. A gray-input model judges gray faces: only darkness faults it."""
        limit = self.settings.source.colourless_fault
        problem = None
        if limit > 0:
            small = picture_sample(img)
            if dark_picture(img, small):
                problem = DARK
            elif self.classifier.input_spec.color == "rgb" and colourless_picture(img, small):
                problem = NO_COLOUR
        if problem is None:
            if self.gray_fault and self._gray_since is not None:
                log.warning("fault (camera: %s) over: the picture is usable again after %.1f s of frame time; "
                            "deciding again", self.gray_detail, ts - self._gray_since)
                self.gray_fault = False
            self._gray_since = None
            return False
        self.stats.count("colourless_frames")
        self.gray_detail = problem
        if self._gray_since is None:
            self._gray_since = ts
        if not self.gray_fault and ts - self._gray_since >= limit:
            self.gray_fault = True
            self.stats.count("faults")
            log.error("fault (camera: %s for %.1f s, limit source.colourless_fault %g s): relay off, red LED "
                      "fault pattern", self.gray_detail, ts - self._gray_since, limit)
        return self.gray_fault

    def fault(self, reason: str) -> None:
        """Make the outputs safe (relay off, red LED fault pattern) and report a fault decision once
        per fault (a repeated call only re-asserts the safe outputs)."""
        active = self.decider.is_active(time.time())
        self.outputs.show_fault(active)
        if self.faulted == reason:
            return
        wall = time.time()
        if self.faulted is None:
            self._fault_since = self.clock()
        self.faulted = reason
        decision = self.decider.fault(self._last_ts, reason, wall)
        self.stats.fault()
        log.error("fault (%s): relay off, red LED fault pattern", reason)
        self._publish(FrameResult(-1, wall, (), decision, self.outputs.snapshot()))
        self.last_decision = decision

    def process(self, frame: Frame) -> FrameResult:
        s = self.settings
        ts, wall = frame.ts, frame.wall if frame.wall is not None else time.time()
        img = orient(frame.image, s.source.rotation, s.source.flip)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or img.size == 0:
            raise FrameError(f"frame {frame.index}: not a BGR uint8 image (shape {img.shape}, {img.dtype})")
        gray = self.colour_gone(img, ts)
        self.tracker.expire(ts)
        followed = [tr for tr in self.tracker.tracks if tr.last_ts == self._last_ts]
        missed = [tr for tr in self.tracker.tracks if tr.id in self._missed and tr.last_ts != self._last_ts]
        self._last_ts = ts
        t = time.perf_counter()
        expected = [tr.predict(ts) for tr in followed] if s.detector.every_around else []
        work = self.cadence.plan(img, bool(followed), expected)
        self.stats.stage("motion", time.perf_counter() - t)
        # the whole doorway is searched (not only around a change or around the followed faces)
        whole = work == DETECT and self.cadence.region is None and not self.cadence.windows
        small: list[Face] = []
        if work == DETECT:
            t = time.perf_counter()
            low = bool(self.tracker.tracks) and s.detector.track_threshold < s.detector.score_threshold
            veto = whole and s.detector.veto_face < s.detector.min_face
            found = (self.finder.detect_windows(img, self.cadence.windows, keep_low=low) if self.cadence.windows
                     else self.finder.detect(img, self.cadence.region, keep_low=low,
                                      narrowest=s.detector.veto_face if veto else None))
            if veto:
                small = [f for f in found if f.width < s.detector.min_face and f.score >= s.detector.score_threshold]
                found = [f for f in found if f.width >= s.detector.min_face]
            if low:
                found = self.finder.keep_tracked(found, ts)
            self.stats.stage("detect", time.perf_counter() - t)
        elif work == FOLLOW or missed:
            # tracked faces the last search missed (a score dipped for a frame) are followed too, but
            # losing them asks for no search: the motion gate and the every-Nth search still look
            t = time.perf_counter()
            found, lost = self.finder.follow(img, ts, followed) if work == FOLLOW else ([], False)
            if missed:
                found += [f for f in self.finder.follow(img, ts, missed)[0]
                          if all(iou(f.box, o.box) < 0.5 for o in found)]
            self.stats.stage("follow", time.perf_counter() - t)
        else:
            found, lost = [], False
        self._inferred = work == DETECT or bool(found)
        obs = self.finder.observe(img, found)
        again = [(s.detector.refine_unsure and self.finder.unsure(o))
                 or (s.detector.refine_flips and self.finder.flips(o, self.tracker.tracks, ts)) for o in obs]
        if any(again):
            t = time.perf_counter()
            obs = self.finder.refine(img, obs, again)
            self.stats.stage("refine", time.perf_counter() - t)
        if s.classifier.second_opinion in (DENY, DOOR):
            t = time.perf_counter()
            obs = self.finder.second_looks(img, obs, self.tracker.tracks, ts,
                                           masks=s.classifier.second_opinion == DOOR)
            self.stats.stage("confirm", time.perf_counter() - t)
        if work == FOLLOW and (lost or len(obs) < len(found)):
            self.cadence.search_next(around=expected)  # around the followed faces (with every_around)
        t = time.perf_counter()
        tracks = self.tracker.update(ts, obs)
        if work == DETECT:  # templates come from the detector's boxes only
            for tr in tracks:
                if tr.last_ts == ts:
                    self.follower.remember(tr.id, img, tr.box)
            self.follower.keep({tr.id for tr in tracks})
            self.cadence.found([tr.box for tr in tracks if tr.last_ts == ts])
            # a tracked face this search missed (its score dipped, a head turned) is still followed by its
            # template on the next frames, until found or its track ends: otherwise a still picture
            # would not be searched, nor the face judged, again for idle_every frames
            self._missed = {tr.id for tr in tracks if tr.last_ts != ts}
        else:
            self._missed = {tr.id for tr in missed if tr.last_ts != ts}
        faces = [FaceEvent(tr.box, tr.label, tr.score, tr.id) for tr in tracks
                 if tr.last_ts == ts and tr.label in LABELS]
        if gray:  # tracked on, never decided: the faces have no colour
            decision = self.decider.fault(ts, "camera", wall, self.gray_detail)
        else:
            vetoes = self.finder.judge_small(img, small, tracks, ts) if small else ()
            decision = self.decider.decide(ts, tracks, wall, searched=whole, vetoes=vetoes)
            if decision.detail == VETO_DETAIL:
                self.stats.count("vetoes")
                if self.last_decision is None or self.last_decision.detail != VETO_DETAIL:
                    log.info("frame %d: the door waits: %s", frame.index, VETO_DETAIL)
        if decision.confirm:
            self.cadence.search_next()
        self.stats.stage("decide", time.perf_counter() - t)
        t = time.perf_counter()
        if gray:
            self.outputs.show_fault(decision.active)
        else:
            self.outputs.apply(plan(decision, s.outputs.buzzer_mute))
        snapshot = self.outputs.snapshot()
        self.stats.stage("output", time.perf_counter() - t)
        self.stats.frame_done(len(faces), decision.state, decision.trigger)
        if decision.trigger:
            log.info("frame %d: %s%s -> %s", frame.index, decision.state,
                     f" ({decision.reason})" if decision.reason else "", decision.trigger)
        result = FrameResult(frame.index, wall, tuple(faces), decision, snapshot,
                             img if self.keep_images else None)
        self.last_decision = decision
        self._publish(result)
        return result

    def _publish(self, result: FrameResult) -> None:
        for obs in list(self.observers):
            try:
                obs(result)
            except Exception:
                log.exception("observer %r failed", obs)


def describe_runtime(p: Pipeline) -> dict[str, Any]:
    return {"detector": repr(p.detector), "classifier": repr(p.classifier), "source": repr(p.source),
            "outputs": repr(p.outputs)}

"""Tracking, voting, the uncertain band, cooldown, modes, schedule and the output plan."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from maskgate.config import DecisionSettings, ScheduleSettings
from maskgate.decider import VETO_DETAIL, Decider, Decision, plan, unsure
from maskgate.schedule import Schedule
from maskgate.tracker import Observation, Tracker, iou, nested, one_per_face

FPS = 10.0
BOX = (100, 100, 80, 80)


class Door:
    """Feeds one or more faces frame by frame into a tracker and decider, on frame time."""

    def __init__(self, **decision: object) -> None:
        self.settings = DecisionSettings(**decision)  # type: ignore[arg-type]
        self.tracker = Tracker(self.settings.track_iou, self.settings.track_timeout, self.settings.window)
        self.decider = Decider(self.settings, ScheduleSettings())
        self.n = 0

    def frame(self, *faces: tuple[tuple[int, int, int, int], str, float]) -> Decision:
        ts = self.n / FPS
        self.n += 1
        tracks = self.tracker.update(ts, [Observation(b, lab, sc) for b, lab, sc in faces])
        return self.decider.decide(ts, tracks, wall=0.0)

    def run(self, frames: int, *faces: tuple[tuple[int, int, int, int], str, float]) -> list[Decision]:
        return [self.frame(*faces) for _ in range(frames)]


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert abs(iou((0, 0, 10, 10), (5, 0, 10, 10)) - 50 / 150) < 1e-9


def test_one_observation_per_face_when_boxes_nest() -> None:
    faces = frozenset({"with_mask", "without_mask", "incorrect_mask"})
    face, around = (100, 100, 80, 90), (80, 40, 130, 220)  # YuNet's weak box with hair and neck
    assert nested(face, around) and nested(around, face) and not nested(face, (300, 100, 80, 90))
    best = Observation(face, "with_mask", 0.99)
    # the same verdict at a lower score, or no_face (kept below the ignore threshold): one face
    assert one_per_face([best, Observation(around, "with_mask", 0.72)], faces) == [best]
    assert one_per_face([Observation(around, "no_face", 0.66), best], faces) == [best]
    # the larger box may be the better one: the score decides, not the size
    big = Observation(around, "without_mask", 0.97)
    assert one_per_face([Observation(face, "without_mask", 0.8), big], faces) == [big]
    # a bare verdict is never argued away: a masked one nested with it goes, whichever is stronger
    bare = Observation(around, "without_mask", 0.7)
    assert one_per_face([best, bare], faces) == [bare]
    assert one_per_face([bare, best], faces) == [bare]
    assert one_per_face([Observation(face, "incorrect_mask", 0.6), best], faces) == [
        Observation(face, "incorrect_mask", 0.6)]
    # two different deny verdicts are both kept, as are faces side by side and two no_face boxes
    mixed = [Observation(face, "incorrect_mask", 0.9), bare]
    assert one_per_face(mixed, faces) == mixed
    apart = [best, Observation((300, 100, 80, 90), "with_mask", 0.7)]
    assert one_per_face(apart, faces) == apart
    junk = [Observation(face, "no_face", 0.6), Observation(around, "no_face", 0.5)]
    assert one_per_face(junk, faces) == junk


def test_tracker_follows_a_walking_face_and_ends_it_after_timeout() -> None:
    t = Tracker(0.3, timeout=0.5, window=5)
    ids = set()
    for i in range(10):
        tracks = t.update(i / FPS, [Observation((100 + 30 * i, 100, 90, 90), "with_mask", 0.9)])
        ids |= {tr.id for tr in tracks}
    assert len(ids) == 1 and len(t.tracks[0].votes) == 5
    assert len(t.update(1.2, [])) == 1
    assert t.update(1.5, []) == []
    new = t.update(2.1, [Observation((100, 100, 90, 90), "with_mask", 0.9)])
    assert new[0].id not in ids


def test_three_of_five_votes_allow_and_open_once() -> None:
    d = Door()
    out = d.run(6, (BOX, "with_mask", 0.95))
    assert [x.state for x in out[:3]] == ["checking", "checking", "allow"]
    assert [x.trigger for x in out] == [None, None, "open", None, None, None]
    assert out[2].tracks[0].state == "allow"


def test_votes_tolerate_a_flickering_verdict() -> None:
    d = Door()
    seq = ["with_mask", "without_mask", "with_mask", "with_mask"]
    out = [d.frame((BOX, lab, 0.95)) for lab in seq]
    assert [x.state for x in out] == ["checking", "checking", "checking", "allow"]


def test_bare_face_denies_with_reason_and_alarm() -> None:
    d = Door()
    out = d.run(4, (BOX, "without_mask", 0.9))
    assert out[2].state == "deny" and out[2].reason == "without_mask" and out[2].trigger == "alarm"
    assert out[3].trigger is None
    d2 = Door()
    out2 = d2.run(3, (BOX, "incorrect_mask", 0.9))
    assert out2[2].state == "deny" and out2[2].reason == "incorrect_mask"


def test_low_scores_fall_in_the_uncertain_band() -> None:
    d = Door(mask_score=0.8, bare_score=0.6)
    out = d.run(6, (BOX, "with_mask", 0.7))
    assert [x.state for x in out] == ["checking"] * 4 + ["uncertain"] * 2
    assert all(x.trigger is None for x in out)
    d2 = Door(bare_score=0.6)
    assert all(x.trigger is None for x in d2.run(6, (BOX, "without_mask", 0.5)))


def test_every_face_must_be_masked_and_one_bare_face_denies() -> None:
    d = Door()
    other = (300, 100, 80, 80)
    out = d.run(4, (BOX, "with_mask", 0.95), (other, "without_mask", 0.95))
    assert [x.state for x in out][-1] == "deny"
    assert all(x.trigger != "open" for x in out)
    d2 = Door()
    out2 = d2.run(4, (BOX, "with_mask", 0.95), (other, "with_mask", 0.6))
    assert all(x.state != "allow" for x in out2)


def test_a_small_bare_face_makes_the_door_wait_instead_of_opening() -> None:
    """``vetoes``: verdicts of faces too small to be tracked, judged on a searched frame. They only
    stop an opening: no alarm, no deny, and nothing when nobody at the door is allowed."""
    d = Door()
    masked = (BOX, "with_mask", 0.95)
    tracks = d.tracker.update(0.0, [Observation(*masked)])
    for k in (1, 2):
        tracks = d.tracker.update(k / FPS, [Observation(*masked)])
    held = d.decider.decide(0.2, tracks, 0.0, vetoes=("without_mask",))
    assert (held.state, held.trigger, held.confirm, held.detail) == ("checking", None, True, VETO_DETAIL)
    assert plan(held) == plan(Decision(0.2, "checking"))  # no light, no buzzer, no relay
    opened = d.decider.decide(0.2, tracks, 0.0)
    assert (opened.state, opened.trigger, opened.detail) == ("allow", "open", None)
    # after the door opened (cooldown), a small bare face changes nothing
    assert d.decider.decide(0.3, tracks, 0.0, vetoes=("without_mask",)).state == "allow"
    # a bare person at the door is denied with the alarm as before
    d2 = Door()
    out = d2.run(3, (BOX, "without_mask", 0.95))
    assert d2.decider.decide(0.3, d2.tracker.tracks, 0.0, vetoes=("incorrect_mask",)).state == "deny"
    assert out[2].trigger == "alarm"


def test_a_face_the_last_search_did_not_find_stops_holding_the_door() -> None:
    """A box found once and never again (a face glimpsed at the doorway's other side, or a weak box
    the next searches do not repeat) leaves a one-vote track behind until its timeout. Once a search
    of the whole doorway has not found it, an undecided track no longer holds the door (it would
    only have made the door wait for its timeout); before that search it does, and the door asks for
    one. A track with a bare vote, or a denied one, keeps the door shut however it was last seen."""
    d = Door()
    edge, walker = (0, 167, 57, 78), (518, 136, 100, 125)
    ghost = d.tracker.update(0.0, [Observation(edge, "with_mask", 0.95)])[0]
    masked = Observation(walker, "with_mask", 0.95)
    for k in (1, 2):
        tracks = d.tracker.update(k / FPS, [masked])
        assert d.decider.decide(k / FPS, tracks, 0.0, searched=False).state == "checking"
    tracks = d.tracker.update(0.3, [masked])
    assert ghost in tracks and len(tracks) == 2  # the glimpse is not the walker
    held = d.decider.decide(0.3, tracks, 0.0, searched=False)
    assert (held.state, held.trigger, held.confirm) == ("checking", None, False)  # nothing says it left
    searched = d.decider.decide(0.3, tracks, 0.0, searched=True)  # this frame's search did not find it
    assert (searched.state, searched.trigger) == ("allow", "open")
    assert {v.id: v.state for v in searched.tracks} == {ghost.id: "checking", tracks[1].id: "allow"}
    # found again later (a second box on the same face) and masked: it opened with the door, so no
    # second opening for the same person
    back = d.tracker.update(0.4, [masked, Observation(edge, "with_mask", 0.95)])
    assert ghost in back
    for k in (5, 6):
        back = d.tracker.update(k / FPS, [masked, Observation(edge, "with_mask", 0.95)])
    again = d.decider.decide(0.6, back, 0.0, searched=True)
    assert (again.state, again.trigger) == ("allow", None)
    assert {v.id: v.state for v in again.tracks}[ghost.id] == "allow"
    # a search after the ghost's last sighting counts on the frames after it too: the door asks for
    # the search it opens on; a search before that sighting does not count
    d2 = Door()
    d2.decider.decide(0.0, [], 0.0, searched=True)
    ghost = d2.tracker.update(0.05, [Observation(edge, "with_mask", 0.95)])[0]
    tracks = d2.tracker.update(0.1, [masked])
    assert d2.decider.decide(0.1, tracks, 0.0, searched=False).confirm is False
    tracks = d2.tracker.update(0.2, [masked])
    assert d2.decider.decide(0.2, tracks, 0.0, searched=True).state == "checking"
    tracks = d2.tracker.update(0.3, [masked])
    later = d2.decider.decide(0.3, tracks, 0.0, searched=False)
    assert ghost in tracks and (later.state, later.trigger, later.confirm) == ("checking", None, True)
    assert d2.decider.decide(0.4, d2.tracker.update(0.4, [masked]), 0.0, searched=True).trigger == "open"
    # an undecided face with a bare vote holds the door however a search missed it
    d4 = Door()
    d4.tracker.update(0.0, [Observation(edge, "without_mask", 0.95)])
    tracks = d4.tracker.update(0.05, [Observation(edge, "with_mask", 0.95)])
    for k in (1, 2, 3):
        tracks = d4.tracker.update(k / FPS, [masked])
    held = d4.decider.decide(0.3, tracks, 0.0, searched=True)
    assert (held.state, held.trigger) == ("checking", None)
    # a bare face the search missed still denies
    d3 = Door()
    for k in range(3):
        d3.tracker.update(k / FPS, [Observation(edge, "without_mask", 0.95)])
    for k in range(3, 6):
        tracks = d3.tracker.update(k / FPS, [Observation((100, 100, 90, 90), "with_mask", 0.95)])
    out = d3.decider.decide(0.5, tracks, 0.0, searched=True)
    assert (out.state, out.reason) == ("deny", "without_mask")


def test_cooldown_follows_frame_time() -> None:
    d = Door(cooldown=2.0)
    out = d.run(50, (BOX, "with_mask", 0.95))
    opens = [i for i, x in enumerate(out) if x.trigger == "open"]
    # allowed at frame 2, then again only after 2.0 s of frame time: frames 22 and 42
    assert opens == [2, 22, 42]


def test_a_new_person_opens_again_within_the_cooldown() -> None:
    d = Door(cooldown=30.0)
    d.run(5, (BOX, "with_mask", 0.95))
    out = d.run(5, (BOX, "with_mask", 0.95), ((400, 100, 80, 80), "with_mask", 0.95))
    assert [x.trigger for x in out].count("open") == 1


def test_off_mode_and_schedule_make_the_gate_inactive() -> None:
    d = Door(mode="off")
    out = d.run(4, (BOX, "with_mask", 0.95))
    assert out[-1].state == "allow" and not out[-1].active
    assert all(x.trigger is None for x in out)
    assert plan(out[-1]).green is False


def test_plan_by_mode_and_mute() -> None:
    allow = Decision(1.0, "allow", trigger="open", mode="enforce")
    assert plan(allow).pulse and plan(allow).green
    advisory = Decision(1.0, "allow", trigger="open", mode="advisory")
    assert plan(advisory).green and not plan(advisory).pulse
    deny = Decision(1.0, "deny", "incorrect_mask", trigger="alarm")
    assert plan(deny).red and plan(deny).buzz == "incorrect_mask"
    assert plan(deny, buzzer_mute=True).buzz is None and plan(deny, buzzer_mute=True).red
    fault = Decision(1.0, "fault", "camera")
    assert plan(fault).relay_off and plan(fault).red and not plan(fault).pulse
    assert plan(Decision(1.0, "uncertain")) == plan(Decision(1.0, "idle"))


def _epoch(y: int, mo: int, d: int, h: int, mi: int, tz: str) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz)).timestamp()


def test_schedule_hours_days_and_time_zone() -> None:
    s = Schedule(ScheduleSettings(enabled=True, timezone="Europe/Berlin", hours=("08:00-20:00",),
                                  days=("mon", "tue", "wed", "thu", "fri")))
    assert s.active(_epoch(2026, 11, 23, 9, 0, "Europe/Berlin"))  # Monday 09:00 Berlin
    assert not s.active(_epoch(2026, 11, 23, 7, 59, "Europe/Berlin"))
    assert not s.active(_epoch(2026, 11, 23, 20, 0, "Europe/Berlin"))
    assert not s.active(_epoch(2026, 11, 22, 12, 0, "Europe/Berlin"))  # Sunday
    assert s.active(_epoch(2026, 11, 23, 7, 30, "UTC"))  # 08:30 in Berlin (CET)
    assert not s.active(_epoch(2026, 11, 23, 19, 30, "UTC"))  # 20:30 in Berlin
    night = Schedule(ScheduleSettings(enabled=True, hours=("22:00-06:00",)))
    assert night.active(_epoch(2026, 11, 23, 23, 0, "UTC")) and night.active(_epoch(2026, 11, 23, 5, 0, "UTC"))
    assert not night.active(_epoch(2026, 11, 23, 12, 0, "UTC"))
    assert Schedule(ScheduleSettings()).active(0.0)


def test_schedule_follows_frame_wall_time() -> None:
    sched = ScheduleSettings(enabled=True, timezone="UTC", hours=("08:00-20:00",))
    dec = Decider(DecisionSettings(), sched)
    t = Tracker()
    tracks = t.update(0.0, [Observation(BOX, "with_mask", 0.99)])
    for i in range(3):
        tracks = t.update(i / FPS, [Observation(BOX, "with_mask", 0.99)])
    closed = dec.decide(0.2, tracks, wall=_epoch(2026, 11, 23, 21, 0, "UTC"))
    assert closed.state == "allow" and not closed.active and closed.trigger is None
    opened = dec.decide(0.3, tracks, wall=_epoch(2026, 11, 23, 9, 0, "UTC"))
    assert opened.active and opened.trigger == "open"


def test_tracker_predicts_a_fast_walker_between_sparse_detections() -> None:
    t = Tracker(0.3, timeout=1.0, window=5)
    ids = set()
    for i in range(0, 12, 2):  # detections every 2nd frame, 40 px per frame: no overlap between them
        tracks = t.update(i / FPS, [Observation((40 * i, 100, 80, 80), "with_mask", 0.9)])
        ids |= {tr.id for tr in tracks}
    assert len(ids) == 1 and len(t.tracks[0].votes) == 5
    # two people side by side keep their own tracks
    t2 = Tracker(0.3, timeout=1.0, window=5)
    for i in range(5):
        t2.update(i / FPS, [Observation((100, 100, 80, 80), "with_mask", 0.9),
                            Observation((300, 100, 80, 80), "without_mask", 0.9)])
    assert sorted(len(x.votes) for x in t2.tracks) == [5, 5]
    assert {x.votes[0][0] for x in t2.tracks} == {"with_mask", "without_mask"}
    assert all(len({v[0] for v in x.votes}) == 1 for x in t2.tracks)


def test_tracker_continues_a_face_first_found_cut_off_by_the_frame_edge() -> None:
    # the benchmark's test door, seed 0, fm12k_02242: YuNet's first box is cut by the right edge of
    # the 640-wide frame (57 x 78), the next one holds the whole face (100 x 125): one person, one track
    t = Tracker(0.3, timeout=1.0, window=5)
    t.update(0.0, [Observation((583, 150, 57, 78), "with_mask", 0.99)])
    tracks = t.update(0.1, [Observation((510, 140, 100, 125), "with_mask", 0.99)])
    assert len(tracks) == 1 and len(tracks[0].votes) == 2
    # a face of another size nearby is still somebody else
    tracks = t.update(0.2, [Observation((500, 140, 100, 125), "with_mask", 0.99),
                            Observation((400, 150, 50, 60), "without_mask", 0.99)])
    assert len(tracks) == 2 and sorted(len(x.votes) for x in tracks) == [1, 3]


def test_old_votes_never_open_the_door() -> None:
    d = Door()
    d.run(3, (BOX, "with_mask", 0.95))
    # the mask comes down: the newest verdict is bare, the window still holds 3 masked votes
    out = d.frame((BOX, "without_mask", 0.95))
    assert out.state != "allow" and out.trigger is None
    out = d.frame((BOX, "without_mask", 0.95))
    assert out.state == "uncertain"  # 3 masked, 2 bare in a full window: neither opens nor alarms
    out = d.frame((BOX, "without_mask", 0.95))
    assert out.state == "deny" and out.trigger == "alarm"


def test_unsure_is_a_verdict_that_votes_neither_way() -> None:
    s = DecisionSettings()  # masked votes from 0.9, bare and wrongly worn from 0.6
    assert unsure("with_mask", 0.89, s) and not unsure("with_mask", 0.9, s)
    assert unsure("without_mask", 0.59, s) and not unsure("incorrect_mask", 0.6, s)
    assert not unsure("no_face", 0.5, s) and not unsure("", 0.0, s)  # "": a face seen without colour

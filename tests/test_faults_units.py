"""The fault-injection parts themselves (maskgate.faults): schedules, the virtual-clock camera, the
wrapping source, the journal pin backend, a capture thread stuck in a read; and the new config keys."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gpiozero import OutputDevice

from maskgate.config import parse_config
from maskgate.errors import ConfigFileError, FrameError, SourceError
from maskgate.faults import (
    BAD_FRAME_KINDS,
    SOAK_FAULTS,
    FaultyCamera,
    FaultySource,
    Injector,
    JournalFactory,
    ScheduledFault,
    SimCamera,
    VirtualClock,
    bad_frame,
    random_schedule,
    read_journal,
)
from maskgate.sources import Frame

IMG = np.full((48, 64, 3), 100, np.uint8)


def scene(i: int) -> Frame:
    return Frame(IMG, i / 10, i)


def test_random_schedule_is_seeded_and_the_injector_follows_it_on_a_virtual_clock() -> None:
    a, b = random_schedule(3, 3600.0, every=20.0), random_schedule(3, 3600.0, every=20.0)
    assert a == b and [f.params for f in a] == [f.params for f in b]
    assert 120 < len(a) < 250 and {f.kind for f in a} == set(SOAK_FAULTS)
    assert all(SOAK_FAULTS[f.kind][0] <= f.end - f.start <= SOAK_FAULTS[f.kind][1] for f in a)
    assert {f.params["kind"] for f in a if f.kind == "bad_frame"} <= set(BAD_FRAME_KINDS)
    clock = VirtualClock()
    inj = Injector(clock, [ScheduledFault("camera_down", 1.0, 2.0), ScheduledFault("gpio_busy", 1.5, 3.0, {"pin": 22})])
    seen = []
    for t in (0.5, 1.0, 1.7, 2.0, 2.9, 3.0):
        clock.advance_to(t)
        seen.append(sorted(inj.active_kinds()))
    assert seen == [[], ["camera_down"], ["camera_down", "gpio_busy"], ["gpio_busy"], ["gpio_busy"], []]
    inj.start("bad_frame", kind="grayscale", count=2)
    assert [inj.take("bad_frame") is not None for _ in range(3)] == [True, True, False]
    assert inj.hits["bad_frame"] == 2


def test_bad_frames_look_like_what_a_camera_delivers() -> None:
    shapes = {kind: bad_frame(kind, IMG).shape for kind in BAD_FRAME_KINDS if kind != "corrupt"}
    assert shapes == {"empty": (0, 0, 3), "truncated": (16, 64, 3), "wrong_size": (72, 85, 3),
                      "grayscale": (48, 64), "garbage": (48, 64, 3)}
    with pytest.raises(FrameError, match="undecodable"):
        bad_frame("corrupt", IMG, index=7)


def test_the_virtual_camera_drops_stale_frames_hangs_and_disconnects_in_frame_time() -> None:
    clock = VirtualClock()
    inj = Injector(clock, [ScheduledFault("camera_hang", 1.0, 1.35), ScheduledFault("camera_hang", 2.0, 9.0),
                           ScheduledFault("camera_down", 12.0, 14.0)])
    cam = SimCamera(scene, clock, 10, injector=inj, frame_timeout=5.0)
    cam.open()
    assert [cam.read().index for _ in range(3)] == [0, 1, 2]  # type: ignore[union-attr]
    clock.sleep(0.55)  # a slow frame: the camera moved on, the loop gets the newest
    f = cam.read()
    assert f is not None and f.index == 7 and cam.dropped == 4
    clock.advance_to(0.95)
    assert cam.read().index == 9 and cam.dropped == 5  # type: ignore[union-attr]
    f = cam.read()  # a short hang: no frames until 1.35 s, shorter than the frame timeout
    assert f is not None and f.index == 14 and clock.now == pytest.approx(1.4)
    clock.advance_to(1.95)
    cam.read()
    with pytest.raises(SourceError, match="no frame for 5.0 s"):  # a long one: the frame timeout fires
        cam.read()
    assert clock.now == pytest.approx(6.95)
    clock.advance_to(11.95)
    cam.read()
    with pytest.raises(SourceError, match="disconnected"):
        cam.read()
    with pytest.raises(SourceError, match="not open"):
        cam.read()
    with pytest.raises(SourceError, match="not found"):
        cam.open()
    clock.advance_to(14.0)
    cam.open()
    assert cam.read().index == 140 and cam.opens == 2  # type: ignore[union-attr]


def test_the_wrapping_source_fails_hangs_and_breaks_frames_on_demand() -> None:
    class Seq:
        live, dropped = False, 0

        def __init__(self) -> None:
            self.i = 0

        def open(self) -> None:
            self.i = 0

        def read(self) -> Frame:
            self.i += 1
            return scene(self.i)

        def close(self) -> None:
            pass

    inj = Injector()
    src = FaultySource(Seq(), bad={2: "grayscale"}, injector=inj, live=True)
    assert src.live
    inj.start("camera_down")
    with pytest.raises(SourceError, match="not found"):
        src.open()
    with pytest.raises(SourceError, match="disconnected"):
        src.read()
    inj.stop("camera_down")
    src.open()
    assert src.read().image.ndim == 3 and src.read().image.ndim == 2  # type: ignore[union-attr]
    inj.start("camera_hang")
    got: list[Frame | None] = []
    t = threading.Thread(target=lambda: got.append(src.read()))
    t.start()
    time.sleep(0.2)
    assert t.is_alive() and not got  # blocked inside read, as a hung driver would be
    inj.stop("camera_hang")
    t.join(2)
    assert got and got[0] is not None and got[0].index == 3


def test_the_journal_pin_backend_outlives_the_process_and_restores_the_last_level(tmp_path: Path) -> None:
    path = tmp_path / "pins.journal"
    first = JournalFactory(path)
    relay = OutputDevice(22, initial_value=False, pin_factory=first)
    relay.on()  # then the process is killed: nothing switches the relay off or releases it
    assert [(p, v) for _t, p, v in read_journal(path)] == [(22, "0"), (22, "1")]
    second = JournalFactory(path)
    assert second.pin(22).state is True  # the level the journal last recorded
    relay2 = OutputDevice(22, initial_value=False, pin_factory=second)
    assert second.pin(22).state is False
    relay2.close()
    second.close()
    relay.close()
    first.close()
    lines = read_journal(path)
    assert [(p, v) for _t, p, v in lines[2:4]] == [(22, "0"), (22, "released")]
    assert all(a[0] <= b[0] for a, b in zip(lines, lines[1:], strict=False))
    with pytest.raises(ValueError, match="MASKGATE_PIN_JOURNAL"):
        JournalFactory(None)


def test_a_capture_thread_stuck_in_a_read_is_abandoned_and_never_feeds_the_next_open() -> None:
    inj = Injector()
    cam = FaultyCamera(lambda i: IMG, 20, injector=inj, frame_timeout=0.3, join_timeout=0.2)
    cam.open()
    assert cam.read() is not None
    inj.start("camera_hang")
    with pytest.raises(SourceError, match="no frame for 0.3 s"):
        for _ in range(5):
            cam.read()
    t = time.monotonic()
    cam.close()
    assert cam.abandoned == 1 and time.monotonic() - t < 2.0
    inj.stop("camera_hang")  # the old thread wakes up, sees its own stop flag, and leaves
    cam.frame_timeout = 5.0  # from here on only the order of frames matters, not how late they are
    cam.open()
    frames = [cam.read() for _ in range(5)]
    assert all(f is not None for f in frames)
    indices = [f.index for f in frames if f is not None]
    assert indices == sorted(set(indices))  # one capture thread feeding the slot, in order
    cam.close()
    assert cam.abandoned == 1 and cam.opens == 2


def test_reopen_keys_are_validated() -> None:
    s = parse_config("[source]\nreopen_delay = 1.0\nreopen_max_delay = 8\n[health]\nfault_grace = 0\n")
    assert s.source.reopen_max_delay == 8.0 and s.health.fault_grace == 0.0
    with pytest.raises(ConfigFileError) as info:
        parse_config("[source]\nreopen_delay = 10\n")
    assert info.value.problems == ["source.reopen_delay: must not exceed source.reopen_max_delay (1.0) (got 10.0)"]
    with pytest.raises(ConfigFileError, match="health.bogus: unknown key"):
        parse_config("[health]\nbogus = 1\n")

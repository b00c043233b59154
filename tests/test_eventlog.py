"""The event log (JSON lines of DecisionEvents, rotated, capped, surviving a full disk) and the clock
check that stamps each event."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from conftest import SYNTH_FACES
from maskgate import clock
from maskgate.clock import ClockCheck, parse_chrony_tracking, timesyncd_flag
from maskgate.config import Settings
from maskgate.daemon import run_gate
from maskgate.eventlog import EventLog, events_dir, log_files, read_events, state_dir
from maskgate.events import DecisionEvent
from maskgate.stats import Stats
from maskgate.synthetic import SyntheticDoor


def event(i: int, outcome: str = "deny", **kw: object) -> DecisionEvent:
    base = dict(wall=1_700_000_000.0 + i, outcome=outcome, reason="without_mask" if outcome == "deny" else None,
                confidence=0.9, faces=1, track=i, mode="enforce", active=True, clock_synced=True)
    base.update(kw)
    return DecisionEvent(**base)  # type: ignore[arg-type]


# -- clock ---------------------------------------------------------------------------------------------

def test_clock_sources_in_order_first_answer_wins_and_is_cached() -> None:
    calls: list[str] = []
    now = [0.0]

    def src(name: str, answer: bool | None):
        def f() -> bool | None:
            calls.append(name)
            return answer
        return (name, f)

    check = ClockCheck([src("flag", None), src("kernel", False), src("chrony", True)], ttl=60,
                       monotonic=lambda: now[0])
    assert check() is False and check.source == "kernel"
    assert calls == ["flag", "kernel"]
    assert check() is False and calls == ["flag", "kernel"]  # cached
    now[0] = 61.0
    check()
    assert calls == ["flag", "kernel"] * 2
    assert "synced=False source=kernel" in repr(check)
    # nobody knows: not known to be set
    assert ClockCheck([src("a", None)])() is False


def test_clock_source_that_raises_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> bool | None:
        raise OSError("boom")

    check = ClockCheck([("broken", broken), ("ok", lambda: True)])
    with caplog.at_level(logging.INFO, "maskgate.clock"):
        assert check() is True
    assert check.source == "ok"
    assert "clock source broken failed" in caplog.text and "synchronised (source: ok)" in caplog.text


def test_timesyncd_flag_file(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    assert timesyncd_flag(flag) is None  # absence says nothing
    flag.touch()
    assert timesyncd_flag(flag) is True


def test_chrony_tracking_parser() -> None:
    synced = "Reference ID    : C0A80001 (gw)\nStratum         : 3\nLeap status     : Normal\n"
    assert parse_chrony_tracking(synced) is True
    assert parse_chrony_tracking(synced.replace("Normal", "Not synchronised")) is False
    assert parse_chrony_tracking("506 Cannot talk to daemon\n") is None


def test_adjtimex_reads_the_kernel_flag_without_privileges() -> None:
    """The real read-only syscall: this machine allows it (a bool); under seccomp it would be None."""
    answer = clock.kernel_adjtimex()
    assert answer in (True, False)
    assert isinstance(clock.clock_synced(), bool)


# -- the event log -------------------------------------------------------------------------------------

def test_state_dir_follows_systemd_then_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir() == tmp_path / "xdg" / "maskgate"
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'var'}:{tmp_path / 'other'}")
    assert state_dir() == tmp_path / "var"
    assert events_dir(Settings().events) == tmp_path / "var" / "events"
    custom = dataclasses.replace(Settings().events, dir=str(tmp_path / "mine"))
    assert events_dir(custom) == tmp_path / "mine"


def test_event_log_writes_one_json_line_per_decision(tmp_path: Path) -> None:
    log_ = EventLog(tmp_path / "ev")
    events = [event(0, "allow"), event(1), event(2, "fault", reason="camera", confidence=None, faces=0,
                                                 track=None, clock_synced=False)]
    for e in events:
        log_(e)
    log_.close()
    log_.close()
    lines = (tmp_path / "ev" / "events.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [e.to_json() for e in events]
    assert json.loads(lines[2])["clock_synced"] is False
    assert oct((tmp_path / "ev" / "events.jsonl").stat().st_mode & 0o777) == "0o640"
    assert "closed written=3 lost=0" in repr(log_)
    assert log_.write({"ts": "x", "outcome": "allow"}) is False  # closed: counted, not written
    assert log_.lost == 1


def test_rotation_by_size_keeps_the_total_under_the_cap(tmp_path: Path) -> None:
    d = tmp_path / "ev"
    log_ = EventLog(d, max_bytes=4096, max_total_bytes=4096 * 3)
    n = 300  # ~190 bytes a line: about 14 files' worth
    for i in range(n):
        assert log_(event(i)) is None
    log_.close()
    files = log_files(d)
    sizes = [p.stat().st_size for p in files]
    assert files[-1].name == "events.jsonl" and all(p.name.startswith("events-") for p in files[:-1])
    assert all(s <= 4096 for s in sizes)
    assert sum(sizes) <= 4096 * 3
    assert log_.rotations >= 10
    # rotated files are numbered on: the oldest were deleted, the newest events are all there, in order
    got = read_events(d).records
    tracks = [r["track"] for r in got]
    assert tracks == list(range(n - len(tracks), n))
    assert len(tracks) >= 2 * 4096 // 200
    # a new log over the same folder continues the numbering and respects a smaller cap at once
    EventLog(d, max_bytes=4096, max_total_bytes=4096).close()
    assert [p.name for p in log_files(d)] == ["events.jsonl"]


def test_a_full_disk_is_logged_once_counted_and_writing_resumes(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """/dev/full answers every write with ENOSPC, like a full SD card."""
    d = tmp_path / "ev"
    d.mkdir()
    (d / "events.jsonl").symlink_to("/dev/full")
    log_ = EventLog(d)
    with caplog.at_level(logging.WARNING, "maskgate.eventlog"):
        for i in range(5):
            log_(event(i))
        assert log_.lost == 5 and log_.errors == 5 and log_.written == 0
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "No space left on device" in errors[0].getMessage()
        assert "failing" in repr(log_)
        (d / "events.jsonl").unlink()  # room again: the next event reopens the file
        log_(event(5))
        log_(event(6))
    assert log_.written == 2 and log_.lost == 5
    assert "writing again (5 event(s) lost so far)" in caplog.text
    assert [r["track"] for r in read_events(d).records] == [5, 6]


def test_read_events_skips_cut_lines(tmp_path: Path) -> None:
    d = tmp_path / "ev"
    log_ = EventLog(d)
    log_(event(0))
    with open(d / "events.jsonl", "a") as f:
        f.write('{"ts": "2024-01-01T00:00:00Z", "outc')  # a power cut mid-line
    log_.close()
    log_ = EventLog(d)
    log_(event(1))
    log_.close()
    found = read_events(d)
    assert [r["track"] for r in found.records] == [0] and found.bad_lines == 1


def test_the_loop_runs_on_when_the_event_log_cannot_be_written(tmp_path: Path, faces_dir: Path, yunet_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """The real gate (detector, classifier, mock pins) with its event log on /dev/full."""
    d = tmp_path / "ev"
    d.mkdir()
    (d / "events.jsonl").symlink_to("/dev/full")
    s = Settings()
    s = dataclasses.replace(s, events=dataclasses.replace(s.events, dir=str(d)),
                            detector=dataclasses.replace(s.detector, model=str(yunet_path)))
    door = SyntheticDoor(faces_dir, 480, 360, 10, script=[["without_mask"], ["with_mask"], ["incorrect_mask"]],
                         images=SYNTH_FACES, realtime=False, start_wall=0.0, enter_s=0.8, stand_s=1.5,
                         leave_s=0.8, gap_s=0.6, seed=3)
    seen: list[DecisionEvent] = []
    stats = Stats()
    with caplog.at_level(logging.WARNING):
        rc = run_gate(s, pin_factory=MockFactory(), source=door, stats=stats, decision_sinks=[seen.append],
                      clock_synced=lambda: False)
    assert rc == 0
    assert stats.frames == door.total_frames and stats.errors == 0
    assert len(seen) >= 2 and all(e.clock_synced is False for e in seen)
    assert sum("cannot write" in r.getMessage() for r in caplog.records) == 1
    assert os.readlink(d / "events.jsonl") == "/dev/full"


def test_event_log_config_errors() -> None:
    from maskgate.config import parse_config
    from maskgate.errors import ConfigFileError

    with pytest.raises(ConfigFileError) as info:
        parse_config("[events]\nmax_bytes = 100\n")
    assert info.value.problems == ["events.max_bytes: must be at least 4096 bytes (got 100)"]
    with pytest.raises(ConfigFileError) as info:
        parse_config("[events]\nmax_bytes = 8192\nmax_total_bytes = 4096\n")
    assert info.value.problems[0].startswith("events.max_total_bytes: must be at least events.max_bytes (8192)")


def test_a_stale_answer_is_refreshed_in_the_background_without_waiting() -> None:
    """The frame loop asks per event: once answered, it never waits for a slow source."""
    import threading

    gate = threading.Event()
    answers = iter([False, True])
    now = [0.0]

    def slow() -> bool:
        if now[0] > 0:
            gate.wait(10)  # a chronyc that takes its time
        return next(answers)

    check = ClockCheck([("slow", slow)], ttl=60, monotonic=lambda: now[0], background=True)
    assert check() is False  # the first answer is awaited
    now[0] = 61.0
    assert check() is False  # stale: returned at once while a thread asks again
    gate.set()
    for _ in range(100):
        if check.synced:
            break
        threading.Event().wait(0.05)
    assert check.synced is True and check.source == "slow"


def test_demo_writes_an_event_log_only_when_asked(tmp_path: Path, faces_dir: Path, yunet_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from maskgate import cli

    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    cfg = tmp_path / "maskgate.toml"
    cfg.write_text(f'[detector]\nmodel = "{yunet_path}"\n[source]\nwidth = 480\nheight = 360\n')
    args = ["demo", "--config", str(cfg), "--source", "synthetic", "--faces", str(faces_dir), "--fast",
            "--visits", "2", "--seed", "1"]
    assert cli.main(args) == 0
    assert not state.exists()  # a demo's decisions are not the door's: no event log by default
    assert cli.main([*args, "--event-log", str(tmp_path / "ev")]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if "->" in line]
    records = read_events(tmp_path / "ev").records
    assert printed and len(records) == len(printed) // 2  # two identical runs, one of them logged
    assert not state.exists()

"""``maskgate stats``: the event log per local day and hour, rotated files included, unsynchronised
events flagged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from maskgate import cli
from maskgate.cmd_stats import parse_since
from maskgate.errors import ConfigError
from maskgate.eventlog import EventLog, log_files
from maskgate.events import DecisionEvent

BERLIN = ZoneInfo("Europe/Berlin")


def ev(when: datetime, outcome: str, reason: str | None = None, **kw: object) -> DecisionEvent:
    base = dict(wall=when.timestamp(), outcome=outcome, reason=reason, confidence=None if outcome == "fault" else 0.95,
                faces=0 if outcome == "fault" else 1, track=None if outcome == "fault" else 1, mode="enforce",
                active=True, clock_synced=True)
    base.update(kw)
    return DecisionEvent(**base)  # type: ignore[arg-type]


@pytest.fixture()
def log_dir(tmp_path: Path) -> Path:
    """Two local days in Berlin (UTC+1 in January), in a log small enough to have rotated."""
    d = tmp_path / "events"
    log = EventLog(d, max_bytes=4096, max_total_bytes=1 << 20)
    day1 = datetime(2024, 1, 15, 8, 5, tzinfo=UTC)  # 09:05 in Berlin
    events = [ev(day1 + timedelta(minutes=i), "allow") for i in range(20)]  # 09:05-09:24
    events += [ev(day1 + timedelta(hours=1, minutes=i), "deny", "without_mask") for i in range(3)]  # 10:xx
    events += [ev(day1 + timedelta(hours=1, minutes=10), "deny", "incorrect_mask")]
    events += [ev(day1 + timedelta(hours=2), "fault", "camera"),
               ev(day1 + timedelta(hours=2, minutes=1), "allow", active=False)]
    # 23:30 UTC on the 15th is 00:30 on the 16th in Berlin
    events += [ev(datetime(2024, 1, 15, 23, 30, tzinfo=UTC), "deny", "without_mask", clock_synced=False)]
    events += [ev(datetime(2024, 1, 16, 9, 0, tzinfo=UTC), "allow") for _ in range(10)]
    for e in events:
        log(e)
    log.close()
    with open(d / "events.jsonl", "a") as f:
        f.write('{"ts": "2024-01-16T10:00:00Z", "outco\n')
    assert len(log_files(d)) >= 2  # rotated files are read too
    return d


def config(tmp_path: Path, tz: str = "Europe/Berlin") -> Path:
    p = tmp_path / "maskgate.toml"
    p.write_text(f'[schedule]\ntimezone = "{tz}"\n')
    return p


def stats_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert cli.main(["stats", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_per_day_and_hour_in_the_configured_time_zone(tmp_path: Path, log_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    s = stats_json(capsys, "--dir", str(log_dir), "--config", str(config(tmp_path)))
    assert s["timezone"] == "Europe/Berlin" and s["bad_lines"] == 1
    days = {d["date"]: d for d in s["days"]}
    assert list(days) == ["2024-01-15", "2024-01-16"]
    d15, d16 = days["2024-01-15"], days["2024-01-16"]
    assert (d15["allow"], d15["deny"], d15["fault"]) == (21, 4, 1)
    assert d15["deny_reasons"] == {"without_mask": 3, "incorrect_mask": 1}
    assert d15["fault_reasons"] == {"camera": 1} and d15["inactive"] == 1 and d15["unsynced"] == 0
    hours = {h["hour"]: h for h in d15["hours"]}
    assert sorted(hours) == [9, 10, 11]
    assert hours[9]["allow"] == 20 and hours[10]["deny"] == 4 and hours[11]["fault"] == 1
    assert (d16["allow"], d16["deny"], d16["unsynced"]) == (10, 1, 1)
    assert [h["hour"] for h in d16["hours"]] == [0, 10]
    assert s["total"]["allow"] == 31 and s["total"]["unsynced"] == 1
    # the same log in UTC: the late deny stays on the 15th
    s_utc = stats_json(capsys, "--dir", str(log_dir), "--config", str(config(tmp_path, "UTC")))
    assert {d["date"]: d["deny"] for d in s_utc["days"]} == {"2024-01-15": 5, "2024-01-16": 0}


def test_since_filters_by_local_date_and_duration(tmp_path: Path, log_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(config(tmp_path))
    s = stats_json(capsys, "--dir", str(log_dir), "--config", cfg, "--since", "2024-01-16")
    assert [d["date"] for d in s["days"]] == ["2024-01-16"] and s["total"]["allow"] == 10
    s = stats_json(capsys, "--dir", str(log_dir), "--config", cfg, "--since", "2024-01-15 10:10")
    assert s["total"]["deny"] == 2 and s["total"]["fault"] == 1
    s = stats_json(capsys, "--dir", str(log_dir), "--config", cfg, "--since", "1h")
    assert s["days"] == [] and s["total"]["allow"] == 0


def test_today_uses_the_time_zone() -> None:
    now = datetime(2024, 1, 15, 23, 30, tzinfo=UTC)
    assert parse_since("today", BERLIN, now) == datetime(2024, 1, 16, 0, 0, tzinfo=BERLIN)
    assert parse_since("yesterday", ZoneInfo("UTC"), now) == datetime(2024, 1, 14, tzinfo=UTC)
    assert parse_since("90m", BERLIN, now) == now - timedelta(minutes=90)
    assert parse_since("2w", BERLIN, now) == now - timedelta(days=14)
    with pytest.raises(ConfigError, match="--since: not a date, time or duration"):
        parse_since("last tuesday", BERLIN, now)


def test_text_output_flags_unsynchronised_events(tmp_path: Path, log_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["stats", "--dir", str(log_dir), "--config", str(config(tmp_path))]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "times in Europe/Berlin" in lines[0]
    row = next(line for line in lines if line.startswith("2024-01-16"))
    assert row.split()[:4] == ["2024-01-16", "*", "10", "1"]
    assert "  09:00" in out and "(camera 1)" in out
    assert "* 1 event(s) were recorded before the clock was synchronised" in out
    assert "1 unreadable line(s) skipped" in out


def test_today_row_and_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "ev"
    log = EventLog(d)
    log(ev(datetime.now(UTC), "deny", "incorrect_mask"))
    log.close()
    s = stats_json(capsys, "--dir", str(d), "--config", str(config(tmp_path)))
    assert s["today_counts"]["deny"] == 1 and s["days"][0]["date"] == s["today"]
    assert cli.main(["stats", "--dir", str(d), "--config", str(config(tmp_path))]) == 0
    assert "<- today" in capsys.readouterr().out
    assert cli.main(["stats", "--dir", str(tmp_path / "nope")]) == 2
    assert "no event log folder here" in capsys.readouterr().err
    assert cli.main(["stats", "--dir", str(d), "--since", "soon"]) == 2


class _NoAccess(type(Path())):  # type: ignore[misc]
    """A path inside a folder this user may not search, as /etc/maskgate and /var/lib/maskgate (0750,
    group maskgate) are for the shop owner's own login (the tests run as root, who may read anything)."""

    def exists(self, **_: object) -> bool:
        raise PermissionError(13, "Permission denied", str(self))

    def is_dir(self, **_: object) -> bool:
        raise PermissionError(13, "Permission denied", str(self))

    def read_text(self, *_: object, **__: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))


def test_a_user_outside_the_maskgate_group_gets_the_fix_not_a_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import maskgate.cmd_stats
    import maskgate.config

    # the service's config, in /etc/maskgate (0750): before, `maskgate stats` died on a PermissionError
    monkeypatch.setattr(maskgate.config, "DEFAULT_CONFIG_PATH", _NoAccess("/etc/maskgate/maskgate.toml"))
    assert cli.main(["stats"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maskgate: error: /etc/maskgate/maskgate.toml: 1 problem(s)")
    assert "(file): permission denied; run as root (sudo), or as a member of the maskgate group" in err
    assert "Traceback" not in err
    with pytest.raises(ConfigError, match=r"\(file\): permission denied; run as root \(sudo\)"):
        maskgate.config.load_config(_NoAccess("/etc/maskgate/maskgate.toml"))  # `maskgate config check`, `run`

    # the config readable, the service's event log not (/var/lib/maskgate is 0750)
    monkeypatch.setattr(maskgate.config, "DEFAULT_CONFIG_PATH", tmp_path / "none.toml")
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    hidden = _NoAccess("/var/lib/maskgate/events")
    monkeypatch.setattr(maskgate.cmd_stats, "SYSTEMD_EVENTS", hidden)
    monkeypatch.setattr(maskgate.cmd_stats.os, "access", lambda p, mode: str(p) != str(hidden))
    assert cli.main(["stats"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maskgate: error: /var/lib/maskgate/events: permission denied; run as root (sudo)")

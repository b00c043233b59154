"""The daemon's TOML config: defaults, the shipped example, errors as key.path: message (got value)."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from maskgate import cli
from maskgate.config import (
    DEFAULT_PINS,
    PinSettings,
    Settings,
    example_path,
    iter_keys,
    load_config,
    parse_config,
)
from maskgate.errors import ConfigError, ConfigFileError


def test_example_config_loads_to_the_defaults_and_documents_every_key() -> None:
    path = example_path()
    assert path.is_file()
    assert load_config(path) == Settings()
    data = tomllib.loads(path.read_text())
    text = path.read_text()
    for key, _default, doc in iter_keys():
        node = data
        for part in key.split("."):
            assert part in node, f"example config lacks {key}"
            node = node[part]
        assert doc, f"{key} has no description"
        # the key's line is preceded by a comment line
        lines = text.splitlines()
        leaf = key.split(".")[-1]
        idx = [i for i, line in enumerate(lines) if line.startswith(f"{leaf} = ")]
        assert idx and all(lines[i - 1].startswith("#") for i in idx), key


def test_pin_defaults_live_in_one_place() -> None:
    assert dataclasses.asdict(PinSettings()) == DEFAULT_PINS
    assert DEFAULT_PINS == {"green": 17, "red": 27, "buzzer": 18, "relay": 22, "button": 23}


def test_partial_config_keeps_defaults(tmp_path: Path) -> None:
    p = tmp_path / "m.toml"
    p.write_text('[decision]\nmode = "advisory"\ncooldown = 3\n[outputs.pins]\nrelay = 5\n')
    s = load_config(p)
    assert s.decision.mode == "advisory"
    assert s.decision.cooldown == 3.0 and isinstance(s.decision.cooldown, float)
    assert s.outputs.pins.relay == 5 and s.outputs.pins.green == 17
    assert s.source == Settings().source
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.decision.mode = "off"  # type: ignore[misc]


@pytest.mark.parametrize(("text", "line"), [
    ('[decision]\nmod = "enforce"\n', "decision.mod: unknown key; did you mean 'mode'? expected one of"),
    ('[detector]\nscore_treshold = 0.5\n', "detector.score_treshold: unknown key; did you mean 'score_threshold'? "
                                           "expected one of model, score_threshold,"),
    ('[decison]\nmode = "enforce"\n', "decison: unknown key; did you mean 'decision'?"),
    ('[nonsense]\na = 1\n', "nonsense: unknown key"),
    ('[decision]\nmode = "lockdown"\n',
     "decision.mode: must be one of 'enforce', 'advisory', 'off' (got 'lockdown')"),
    ('[decision]\nwindow = "5"\n', "decision.window: must be an integer (got '5')"),
    ('[decision]\nwindow = true\n', "decision.window: must be an integer (got True)"),
    ('[outputs]\nrelay_pulse = -1\n', "outputs.relay_pulse: must be >= 0.1 (got -1.0)"),
    ('[source]\ncolourless_fault = -1\n', "source.colourless_fault: must be >= 0.0 (got -1.0)"),
    ('[outputs.pins]\nred = 40\n', "outputs.pins.red: must be a BCM GPIO number 0..27 (got 40)"),
    ('[detector]\nroi = [0.5, 0.0, 0.4, 1.0]\n', "detector.roi: must be fractions"),
    ('[schedule]\ntimezone = "Mars/Olympus"\n', "schedule.timezone: unknown time zone"),
    ('[schedule]\nhours = ["8-20"]\n', "schedule.hours: '8-20' is not HH:MM-HH:MM"),
    ('[decision]\nwindow = 3\nvotes = 4\n', "decision.votes: must not exceed decision.window (3) (got 4)"),
    ('[detector]\nscore_threshold = 0.3\ntrack_threshold = 0.5\n',
     "detector.track_threshold: must not exceed detector.score_threshold (0.3) (got 0.5)"),
    ('[outputs]\nrelay_pulse = 20.0\nrelay_max_on = 10.0\n', "outputs.relay_pulse: must not exceed"),
    ('[outputs.pins]\nred = 17\n', "outputs.pins.red: pin already used by outputs.pins.green (got 17)"),
    ('outputs = 3\n', "outputs: must be a table (got 3)"),
    ('[decision\n', "(file): not valid TOML"),
])
def test_config_errors_name_key_message_and_value(text: str, line: str) -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config(text, "x.toml")
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)
    assert any(p.startswith(line) for p in info.value.problems), info.value.problems


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config('[decision]\nmode = 1\nwindow = 0\nbogus = 2\n')
    assert len(info.value.problems) == 3


def test_config_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(example_path().read_text())
    assert cli.main(["config", "check", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[outputs]\nrelay_pulse = "long"\n[source]\nfps = 0\n')
    assert cli.main(["config", "check", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert "outputs.relay_pulse: must be a number (got 'long')" in err
    assert "source.fps: must be > 0.0 (got 0.0)" in err
    assert cli.main(["config", "check", str(tmp_path / "missing.toml")]) == 1
    assert "(file): not found" in capsys.readouterr().err


def test_config_example_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "example"]) == 0
    assert parse_config(capsys.readouterr().out) == Settings()

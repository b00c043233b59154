"""Log lines under systemd: the journal's priority prefix instead of a time stamp."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maskgate.logfmt import JournalFormatter, syslog_priority, to_journal


def test_levels_map_to_syslog_priorities() -> None:
    assert [syslog_priority(lv) for lv in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR,
                                           logging.CRITICAL)] == [7, 6, 4, 3, 2]


def test_every_line_of_a_record_carries_its_priority() -> None:
    try:
        raise ValueError("bad frame")
    except ValueError:
        record = logging.LogRecord("maskgate.pipeline", logging.ERROR, __file__, 1, "frame %d failed", (7,),
                                   sys.exc_info())
    text = JournalFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    lines = text.splitlines()
    assert lines[0] == "<3>ERROR maskgate.pipeline: frame 7 failed"
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)  # the traceback too


def test_the_journal_is_recognised_only_on_the_stream_systemd_named(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "stream", "w") as stream, open(tmp_path / "other", "w") as other:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert to_journal(stream) and not to_journal(other)  # output redirected elsewhere: a plain log
        monkeypatch.setenv("JOURNAL_STREAM", "not-a-stream")
        assert not to_journal(stream)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not to_journal(stream)


def test_under_the_journal_an_error_exit_is_an_err_priority_line_without_a_time(tmp_path: Path) -> None:
    err = tmp_path / "stderr"
    with open(err, "w") as stream:
        st = os.fstat(stream.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        proc = subprocess.run([sys.executable, "-m", "maskgate", "run", "--config", str(tmp_path / "none.toml")],
                              stderr=stream, stdout=subprocess.PIPE, env=env, timeout=120)
    assert proc.returncode == 2
    lines = err.read_text().splitlines()
    assert lines[0].startswith("<3>maskgate: error: ") and "none.toml" in lines[0], lines
    assert all(line.startswith("<3>") for line in lines) and lines[-1] == "<3>  (file): not found"
    # and on a terminal (any other stderr), as before
    proc = subprocess.run([sys.executable, "-m", "maskgate", "run", "--config", str(tmp_path / "none.toml")],
                          capture_output=True, text=True, env={**os.environ, "JOURNAL_STREAM": "1:1"}, timeout=120)
    assert proc.returncode == 2 and proc.stderr.splitlines()[0].startswith("maskgate: error: ")
    assert "<3>" not in proc.stderr

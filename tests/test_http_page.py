"""The status page in headless Debian Chromium against a real running gate, all traffic on loopback:
the JavaScript fills it in and keeps it updating, and a screenshot shows the state light's colour."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from http_gate import live_gate, settings, standing_door, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-extensions",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
TIMEOUT = 45.0
ALLOW_BGR = (0x3A, 0x9D, 0x1F)
"""#1f9d3a, the page's allow light."""


def chromium(tmp_path: Path, url: str, *args: str) -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install the Debian package chromium (.ci/run does)")
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, url]
    env = dict(os.environ, HOME=str(tmp_path))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr or "")
        pytest.fail(f"chromium did not finish within {TIMEOUT:g} s: {' '.join(cmd)}\n{err[-2000:]}")
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}"
    return proc.stdout


def element(dom: str, ident: str) -> tuple[str, str]:
    """(attributes, text) of the element with ``id=ident`` in a --dump-dom."""
    m = re.search(rf'<(\w+) ([^>]*\bid="{ident}"[^>]*)>(.*?)</\1>', dom, flags=re.S)
    assert m, f"no #{ident} in the page"
    return m.group(2), html.unescape(re.sub(r"<[^>]+>", " ", m.group(3))).strip()


def test_status_page_in_chromium(tmp_path: Path, yunet_path: Path, faces_dir: Path) -> None:
    s = settings(yunet=yunet_path, http={"enabled": True, "port": 0}, decision={"cooldown": 3600.0},
                 outputs={"relay_pulse": 0.5})
    with live_gate(s, standing_door(faces_dir), clock_synced=lambda: False) as gate:
        wait_until(lambda: gate.stats.relay_pulses >= 1, what="the masked visitor to be let in")
        url = gate.server.url

        shot = tmp_path / "status.png"
        dom = chromium(tmp_path, url, "--virtual-time-budget=2500", "--window-size=1200,900", f"--screenshot={shot}",
                       "--dump-dom")
        polls = int(re.search(r'data-polls="(\d+)"', dom).group(1))  # type: ignore[union-attr]
        assert polls >= 2, "the page did not poll /api/status repeatedly"
        assert element(dom, "state")[1] == "allow"
        assert 'class="allow"' in element(dom, "light")[0]
        assert element(dom, "runtime")[1].endswith("/ cpu, 1 thread(s)")
        assert element(dom, "camera")[1] == "ok"
        assert float(element(dom, "fps")[1]) > 0
        assert int(element(dom, "count-allow")[1]) >= 1
        assert "allow" in element(dom, "events")[1]
        assert "detect" in element(dom, "stages")[1]
        assert "hidden" not in element(dom, "clock")[0]  # told the clock is not synchronised
        assert "Clock not synchronised" in element(dom, "clock")[1]
        assert "preview = true" in element(dom, "preview-off")[1]
        frames_1 = int(element(dom, "frames")[1])

        wait_until(lambda: gate.stats.frames > frames_1 + 5, what="more frames")
        dom2 = chromium(tmp_path, url, "--virtual-time-budget=1200", "--dump-dom")
        assert int(element(dom2, "frames")[1]) > frames_1  # a later read shows the gate moving on

        img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[:2] == (900, 1200)
        assert img.std() > 20 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50, "the screenshot looks blank"
        green = np.all(np.abs(img.astype(np.int16) - np.array(ALLOW_BGR, np.int16)) <= 12, axis=2)
        assert green.sum() > 0.6 * np.pi * 100 ** 2, "no big green light in the screenshot"
        ys, xs = np.nonzero(green)
        assert 150 <= xs.max() - xs.min() <= 230 and 150 <= ys.max() - ys.min() <= 230  # one round light

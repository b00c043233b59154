"""The HTTP server of a real running gate: token on every path, login cookie, read-only, /healthz,
/api/status and /api/events, config errors, a busy port, and `maskgate run` serving it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest

from http_gate import TOKEN, FakeCamera, basic, live_gate, request, settings, standing_door, wait_until
from maskgate.config import HttpSettings, parse_config
from maskgate.daemon import run_gate
from maskgate.errors import ConfigError, ConfigFileError
from maskgate.httpd import CREDENTIAL, HttpServer, is_loopback, resolve_token, start_http
from maskgate.stats import Stats
from maskgate.status import StatusBoard

PATHS = ["/", "/index.html", "/api/status", "/api/events", "/healthz", "/metrics", "/preview.mjpg", "/nope"]


def test_loopback_and_token_resolution(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.8.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20") and not is_loopback("door.local")
    assert resolve_token(HttpSettings(), {}) is None
    assert resolve_token(HttpSettings(token=TOKEN, host="0.0.0.0"), {}) == TOKEN
    with pytest.raises(ConfigError) as info:
        resolve_token(HttpSettings(host="0.0.0.0"), {})
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    for part in ("http.host", "'0.0.0.0'", "http.token", CREDENTIAL, '"127.0.0.1"'):
        assert part in msg, (part, msg)
    # the systemd credential (LoadCredential=maskgate-http-token), trailing newline stripped
    (tmp_path / CREDENTIAL).write_text(TOKEN + "\n")
    assert resolve_token(HttpSettings(host="0.0.0.0"), {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == TOKEN
    (tmp_path / CREDENTIAL).write_text("short\n")
    with pytest.raises(ConfigError, match="credential must be at least 16 characters"):
        resolve_token(HttpSettings(host="0.0.0.0"), {"CREDENTIALS_DIRECTORY": str(tmp_path)})


@pytest.mark.parametrize(("text", "line"), [
    ('[http]\nport = 70000\n', "http.port: must be <= 65535 (got 70000)"),
    ('[http]\ntoken = "abc"\n', "http.token: must be at least 16 characters"),
    ('[http]\nhost = "0.0.0.0/8"\n', "http.host: must be an IP address or host name"),
    ('[http]\npreview_fps = 0\n', "http.preview_fps: must be > 0.0 (got 0.0)"),
    ('[http]\nbind = "x"\n', "http.bind: unknown key; expected one of enabled, host, port, token"),
])
def test_http_config_errors_name_the_key(text: str, line: str) -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config(text, "x.toml")
    assert any(p.startswith(line) for p in info.value.problems), info.value.problems


def test_non_loopback_bind_without_token_fails_the_start_with_the_relay_off(yunet_path: Path) -> None:
    from gpiozero.pins.mock import MockFactory

    from maskgate.config import DEFAULT_PINS
    s = settings(yunet=yunet_path, http={"enabled": True, "host": "0.0.0.0", "port": 0})
    factory = MockFactory()
    with pytest.raises(ConfigError, match="http.host: binding '0.0.0.0' .not loopback. requires a token"):
        run_gate(s, pin_factory=factory, source=None)
    assert [bool(x.state) for x in factory.pin(DEFAULT_PINS["relay"]).states] == [False]


def test_busy_port_is_a_clear_error_naming_host_and_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        s = parse_config(f'[http]\nenabled = true\nport = {port}\n')
        with pytest.raises(ConfigError) as info:
            start_http(s, Stats())
    assert f"http.port: cannot listen on 127.0.0.1:{port}" in str(info.value)


def test_token_on_every_path_basic_bearer_and_login_cookie(yunet_path: Path, faces_dir: Path) -> None:
    s = settings(yunet=yunet_path, http={"enabled": True, "port": 0, "token": TOKEN, "preview": True},
                 source={"frame_timeout": 2.0})
    with live_gate(s, standing_door(faces_dir)) as gate:
        wait_until(lambda: gate.stats.frames > 0, what="the first frame")
        for path in PATHS:
            r = gate.get(path)
            assert r.status == 401, (path, r.status)
            assert r.headers["www-authenticate"].startswith('Basic realm="maskgate"'), path
            for wrong in (basic("x" * 26), basic(TOKEN[:-1]), {"Authorization": "Bearer " + TOKEN + "x"},
                          {"Cookie": "maskgate_session=" + "0" * 64}, {"Authorization": "Basic !!notbase64"}):
                assert gate.get(path, headers=wrong).status == 401, (path, wrong)
        # a browser asking for HTML gets the login form with the challenge
        r = gate.get("/", headers={"Accept": "text/html"})
        assert r.status == 401 and b'<form method="post" action="login">' in r.body
        assert gate.get("/login").status == 200
        # Basic (any user name) and Bearer are accepted
        for headers in (basic(TOKEN), basic(TOKEN, user=""), {"Authorization": "Bearer " + TOKEN}):
            r = gate.get("/api/status", headers=headers)
            assert r.status == 200 and json.loads(r.body)["phase"] == "running"
        # the login form: a wrong token is refused, the right one sets an HttpOnly SameSite=Strict cookie
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        r = request(gate.address, "POST", "/login", headers=form, body=urlencode({"token": "nope"}).encode())
        assert r.status == 401 and b"Wrong token." in r.body and "set-cookie" not in r.headers
        r = request(gate.address, "POST", "/login", headers=form, body=urlencode({"token": TOKEN}).encode())
        assert r.status == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        attrs = [a.strip().lower() for a in cookie.split(";")]
        assert "httponly" in attrs and "samesite=strict" in attrs, cookie
        value = cookie.split(";")[0]
        assert TOKEN not in value  # the cookie is derived from the token, not the token
        assert gate.get("/metrics", headers={"Cookie": value}).status == 200
        assert gate.get("/healthz", headers={"Cookie": "other=1; " + value}).status == 200
        # the preview stream accepts the cookie (an <img> sends it)
        conn = socket.create_connection(gate.address, timeout=10)
        try:
            conn.sendall(f"GET /preview.mjpg HTTP/1.1\r\nHost: x\r\nCookie: {value}\r\n\r\n".encode())
            head = conn.recv(4096)
        finally:
            conn.close()
        assert head.startswith(b"HTTP/1.0 200") and b"multipart/x-mixed-replace" in head
        assert gate.server.refused >= len(PATHS) * 6


def test_no_endpoint_changes_anything(yunet_path: Path, faces_dir: Path) -> None:
    # one pulse for the visitor (a long cooldown: no second pulse while the requests run)
    s = settings(yunet=yunet_path, http={"enabled": True, "port": 0, "preview": True},
                 decision={"cooldown": 3600.0}, outputs={"relay_pulse": 0.5})
    with live_gate(s, standing_door(faces_dir)) as gate:
        wait_until(lambda: gate.stats.relay_pulses >= 1, what="the masked visitor's door pulse")
        wait_until(lambda: not gate.pin("relay")[-1], 15, "the pulse to end")
        relay, green = gate.pin("relay"), gate.pin("green")
        mode = gate.server.board.pipeline.settings.decision.mode
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in [*PATHS, "/open", "/relay", "/api/open", "/api/relay", "/api/config"]:
                r = request(gate.address, method, path, body=b"on=1", headers={"Content-Length": "4"})
                assert r.status == 405, (method, path, r.status)
                assert "GET" in r.headers["allow"] and "read-only" in r.text
        assert gate.pin("relay") == relay and gate.pin("green")[:len(green)] == green
        assert gate.server.board.pipeline.settings.decision.mode == mode
        assert gate.stats.relay_pulses == 1


def test_healthz_follows_the_camera(yunet_path: Path, faces_dir: Path) -> None:
    cam = FakeCamera(standing_door(faces_dir), mode="hang")
    s = settings(yunet=yunet_path, http={"enabled": True, "port": 0}, source={"frame_timeout": 0.5})
    with live_gate(s, cam) as gate:
        wait_until(gate.running, 60, "the gate to run")
        r = gate.get("/healthz")
        assert r.status == 503 and r.text.startswith("no frame processed yet"), r.text
        cam.mode = "ok"
        r = wait_until(lambda: (x := gate.get("/healthz")).status == 200 and x, what="200 once frames flow")
        assert r.text.startswith("ok: last frame processed")
        cam.mode = "fail"  # unplugged: fault, relay off, reopen attempts fail
        r = wait_until(lambda: (x := gate.get("/healthz")).status == 503 and x, what="503 after the camera fails")
        assert r.text.startswith("fault: camera"), r.text
        status = json.loads(gate.get("/api/status").body)
        assert status["light"] == "fault" and status["health"]["ok"] is False
        assert status["camera"]["state"] == "failed, reopening"
        cam.mode = "ok"  # plugged back in: reopened and counted
        wait_until(lambda: gate.get("/healthz").status == 200, 30, "200 after the camera is back")
        assert gate.stats.camera_reconnects == 1
        cam.mode = "hang"  # a read that never returns: stale after source.frame_timeout
        r = wait_until(lambda: (x := gate.get("/healthz")).text.startswith("stale") and x, what="stale")
        assert r.status == 503 and "source.frame_timeout is 0.5 s" in r.text
        # past the read's own limit (frame_timeout plus a margin) the watchdog's judge calls it stuck
        r = wait_until(lambda: (x := gate.get("/healthz")).text.startswith("stuck") and x, what="stuck")
        assert r.status == 503 and "stage capture running" in r.text, r.text
        cam.mode = "ok"


def test_health_before_the_models_are_loaded_and_after_stop(yunet_path: Path) -> None:
    s = settings(yunet=yunet_path)
    board = StatusBoard(s, Stats())
    assert board.health() == (False, "starting: models and camera not ready yet")
    server = HttpServer(s.http, board, None).start()
    try:
        r = request(server.address, path="/healthz")
        assert r.status == 503 and r.text.startswith("starting")
        assert json.loads(request(server.address, path="/api/status").body)["phase"] == "starting"
        board.detach()
        assert request(server.address, path="/healthz").text == "stopped\n"
    finally:
        server.close()
        server.close()
    assert "closed" in repr(server)


def test_api_status_and_events_in_the_daemons_vocabulary(yunet_path: Path, faces_dir: Path) -> None:
    s = settings(yunet=yunet_path, http={"enabled": True, "port": 0}, schedule={"timezone": "Europe/Berlin"},
                 decision={"cooldown": 3600.0})
    with live_gate(s, standing_door(faces_dir)) as gate:
        wait_until(lambda: gate.stats.relay_pulses >= 1, what="a door pulse")
        st = json.loads(gate.get("/api/status").body)
        assert st["decision"]["state"] in ("allow", "checking", "uncertain", "idle", "deny", "fault")
        assert all(f["label"] in ("with_mask", "without_mask", "incorrect_mask") for f in st["decision"]["faces"])
        assert st["light"] == "allow" and st["decision"]["state"] == "allow"
        assert st["runtime"]["runtime"] in ("ai-edge-litert", "tflite-runtime") and st["runtime"]["delegate"] == "cpu"
        assert st["today"]["timezone"] == "Europe/Berlin" and st["today"]["allow"] >= 1
        assert st["counters"]["relay_pulses"] == 1 and st["camera"]["state"] == "ok"
        assert set(st["stages_ms"]) >= {"capture", "detect", "preprocess", "classify", "decide", "output"}
        assert st["preview"]["enabled"] is False and "preview = true" in st["preview"]["how"]
        assert st["clock_synced"] is True and st["config_problems"] == []
        ev = json.loads(gate.get("/api/events").body)
        assert ev["count"] >= 1 and ev["capacity"] == 200
        first = ev["events"][-1]
        assert first["outcome"] == "allow" and first["reason"] is None and 0.9 <= first["confidence"] <= 1.0
        assert set(first) == {"ts", "outcome", "reason", "confidence", "faces", "track", "mode", "active",
                              "clock_synced"}
        assert json.loads(gate.get("/api/events?limit=0").body)["events"] == []
        assert gate.get("/api/events?limit=x").status == 400
        text = gate.get("/").text
        assert "<title>maskgate door status</title>" in text and "api/status" in text
        r = gate.get("/")
        csp = r.headers["content-security-policy"]
        assert "script-src 'sha256-" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp


def test_clock_not_synchronised_and_reload_problems_reach_the_status(yunet_path: Path, tmp_path: Path) -> None:
    s = settings(yunet=yunet_path)
    board = StatusBoard(s, Stats(), clock_synced=lambda: False)
    cfg = tmp_path / "maskgate.toml"
    cfg.write_text('[decision]\nmode = "lockdown"\n')
    from maskgate.daemon import reloader_for
    reload = board.watch_reloads(reloader_for(cfg))
    with pytest.raises(ConfigFileError):
        reload()
    st = board.status()
    assert st["clock_synced"] is False
    assert st["config_problems"] == [f"{cfg}: decision.mode: must be one of 'enforce', 'advisory', 'off' "
                                     "(got 'lockdown')"]
    cfg.write_text('[decision]\nmode = "advisory"\n')
    assert reload().decision.mode == "advisory"
    assert board.status()["config_problems"] == []


def test_maskgate_run_serves_the_status_page(tmp_path: Path, faces_dir: Path, yunet_path: Path) -> None:
    cfg = tmp_path / "maskgate.toml"
    cfg.write_text(f'[source]\ntype = "synthetic"\nfaces = "{faces_dir}"\nfps = 10\nwidth = 320\nheight = 240\n'
                   f'[detector]\nmodel = "{yunet_path}"\n[outputs]\npin_factory = "mock"\n'
                   '[http]\nenabled = true\nhost = "127.0.0.1"\nport = 0\n')
    log = tmp_path / "run.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "maskgate", "-v", "run", "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=err, text=True, env=dict(os.environ))
    try:
        def address() -> tuple[str, int] | None:
            m = re.search(r"status page on http://127\.0\.0\.1:(\d+)/", log.read_text())
            assert proc.poll() is None, log.read_text()
            return ("127.0.0.1", int(m.group(1))) if m else None
        url = wait_until(address, 60, "the 'status page on' log line")
        wait_until(lambda: request(url, path="/healthz").status == 200, 60, "/healthz 200")
        assert "maskgate_frames_total" in request(url, path="/metrics").text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        with pytest.raises(OSError):
            request(url, path="/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_demo_http_flag(faces_dir: Path, yunet_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from maskgate import cli
    from maskgate.cmd_demo import http_address
    assert http_address("127.0.0.1:8080") == ("127.0.0.1", 8080) and http_address("[::1]:0") == ("::1", 0)
    for bad in ("8080", "host:", ":80", "h:99999"):
        with pytest.raises(Exception, match="is not HOST:PORT"):
            http_address(bad)
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'[detector]\nmodel = "{yunet_path}"\n')
    rc = cli.main(["demo", "--config", str(cfg), "--source", "synthetic", "--faces", str(faces_dir), "--fast",
                   "--frames", "10", "--http", "127.0.0.1:0", "--preview"])
    assert rc == 0
    assert re.search(r"status page: http://127\.0\.0\.1:\d+/", capsys.readouterr().err)
    rc = cli.main(["demo", "--config", str(cfg), "--source", "synthetic", "--faces", str(faces_dir), "--fast",
                   "--frames", "10", "--http", "0.0.0.0:0"])
    assert rc == 2 and "requires a token" in capsys.readouterr().err

"""MQTT against a real Mosquitto broker (Debian ``mosquitto``) started here on loopback: decisions,
state, counts, Home Assistant discovery, passwords, TLS, a broker restart under a running gate and
the last will after the gate is killed."""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from gpiozero.pins.mock import MockFactory

from conftest import SYNTH_FACES
from maskgate.config import MqttSettings, Settings
from maskgate.daemon import run_gate
from maskgate.eventlog import EventLog
from maskgate.events import DecisionEvent
from maskgate.mqtt import MqttPublisher, discovery_messages
from maskgate.stats import Stats
from maskgate.synthetic import SyntheticDoor

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A private mosquitto on 127.0.0.1 with a temp config; ``stop()`` and ``start()`` again."""

    def __init__(self, root: Path, *, users: dict[str, str] | None = None, tls: dict[str, Path] | None = None) -> None:
        if not Path(MOSQUITTO).exists():
            pytest.fail("mosquitto not installed (Debian package mosquitto; .ci/run installs it)")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = root / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"log_dest file {self.log_path}",
                 "log_type all", f"user {getpass.getuser()}"]
        if users:
            pw = root / "passwords"
            for i, (user, password) in enumerate(users.items()):
                subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(pw), user, password],
                               check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        self.conf = root / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"mosquitto exited: {err}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture()
def brokers():
    """Start brokers with ``brokers(root, **options)``; every one is stopped after the test, pass or fail."""
    started: list[Broker] = []

    def make(root: Path, **kw: Any) -> Broker:
        b = Broker(root, **kw)
        started.append(b)
        return b.start()

    yield make
    for b in started:
        b.stop()


@pytest.fixture()
def broker(tmp_path: Path, brokers: Callable[..., Broker]) -> Broker:
    return brokers(tmp_path / "broker")


class Listener:
    """Another MQTT client that subscribes to everything and keeps what it receives."""

    def __init__(self, port: int, *, auth: tuple[str, str] | None = None, topic: str = "#") -> None:
        self.name = f"test-listener-{uuid.uuid4().hex[:6]}"
        self.messages: list[tuple[str, str, bool]] = []
        self._cond = threading.Condition()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.name)
        if auth:
            c.username_pw_set(*auth)
        self.subscribed = threading.Event()
        c.on_connect = lambda cl, _u, _f, rc, _p: cl.subscribe(topic, qos=1) if not rc.is_failure else None
        c.on_subscribe = lambda *_: self.subscribed.set()
        c.on_message = self._on_message
        c.reconnect_delay_set(1, 1)
        c.connect_async("127.0.0.1", port, keepalive=10)
        c.loop_start()
        self.client = c
        assert self.subscribed.wait(20), "the listener could not subscribe"

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain)))
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[str, str, bool], bool], timeout: float = 20.0, start: int = 0) -> int:
        """Index of the first message at or after ``start`` matching ``pred``."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.messages)):
                    if pred(*self.messages[i]):
                        return i
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"not received; got {self.messages[-20:]}")
                self._cond.wait(left)

    def on(self, topic: str) -> list[str]:
        with self._cond:
            return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_settings(port: int, **kw: Any) -> MqttSettings:
    fields: dict[str, Any] = {"enabled": True, "host": "127.0.0.1", "port": port, "client_id": "maskgate-door1",
                              "keepalive": 5, **kw}
    return dataclasses.replace(MqttSettings(), **fields)


def gate_settings(tmp_path: Path, yunet: Path, mqtt: MqttSettings) -> Settings:
    s = Settings()
    return dataclasses.replace(s, mqtt=mqtt, events=dataclasses.replace(s.events, dir=str(tmp_path / "events")),
                               detector=dataclasses.replace(s.detector, model=str(yunet)))


def door(faces_dir: Path, script: list[list[str]], **kw: Any) -> SyntheticDoor:
    return SyntheticDoor(faces_dir, 480, 360, 10, script=script, images=SYNTH_FACES, enter_s=0.8, stand_s=1.5,
                         leave_s=0.8, gap_s=0.6, seed=4, **kw)


def test_gate_publishes_decisions_state_counts_and_discovery(tmp_path: Path, broker: Broker, faces_dir: Path,
                                                             yunet_path: Path) -> None:
    listener = Listener(broker.port)
    s = gate_settings(tmp_path, yunet_path, mqtt_settings(broker.port))
    # today's counts survive a restart: two allows already in today's event log
    old = EventLog(tmp_path / "events")
    for _ in range(2):
        old(DecisionEvent(time.time(), "allow", None, 0.99, 1, 1, "enforce", True))
    old.close()
    seen: list[DecisionEvent] = []
    rc = run_gate(s, pin_factory=MockFactory(), source=door(faces_dir, [["with_mask"], ["without_mask"]],
                                                            realtime=False),
                  decision_sinks=[seen.append], clock_synced=lambda: True)
    assert rc == 0
    assert [e.outcome for e in seen] == ["allow", "deny"]
    listener.wait_for(lambda t, p, _r: t == "maskgate/availability" and p == "offline")
    assert listener.on("maskgate/availability") == ["online", "offline"]  # clean shutdown says offline
    assert [json.loads(p) for p in listener.on("maskgate/event")] == [e.to_json() for e in seen]
    counts = json.loads(listener.on("maskgate/counts")[-1])
    today = datetime.now(UTC).date().isoformat()
    assert counts == {"date": today, "timezone": "UTC", "allow": 3, "deny": 1, "fault": 0}
    states = [json.loads(p)["state"] for p in listener.on("maskgate/state")]
    assert {"allow", "deny"} <= set(states) and states[0] == "idle"
    discovery = {t: json.loads(p) for t, p, retain in listener.messages if t.startswith("homeassistant/")}
    assert set(discovery) == set(discovery_messages(s.mqtt))
    assert {t.split("/")[1] for t in discovery} == {"sensor", "binary_sensor"}
    for cfg in discovery.values():  # read-only entities: nothing to command, nothing opens the door
        assert not any("command" in k for k in cfg), cfg
        assert cfg["availability_topic"] == "maskgate/availability"
        assert cfg["device"]["identifiers"] == ["maskgate-door1"]
    # the gate never subscribed to anything (the listener did, so the broker does log subscriptions)
    log = broker.log()
    assert f"Received SUBSCRIBE from {listener.name}" in log
    assert "Received SUBSCRIBE from maskgate-door1" not in log
    listener.close()
    # a client arriving later gets the retained picture: offline, last state, today's counts, discovery
    late = Listener(broker.port)
    late.wait_for(lambda t, p, r: t == "maskgate/counts" and r)
    late.wait_for(lambda t, p, r: t == "maskgate/availability" and p == "offline" and r)
    late.wait_for(lambda t, p, r: t == "homeassistant/binary_sensor/maskgate-door1/fault/config" and r)
    late.close()


def test_username_and_password_from_the_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture,
                                                           brokers: Callable[..., Broker]) -> None:
    b = brokers(tmp_path / "broker", users={"gate": "s3cret pass", "reader": "r"})
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "maskgate-mqtt-password").write_text("s3cret pass\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    listener = Listener(b.port, auth=("reader", "r"))
    good = MqttPublisher(mqtt_settings(b.port, username="gate")).start()
    bad = MqttPublisher(mqtt_settings(b.port, username="gate", password="wrong", client_id="maskgate-bad")).start()
    try:
        assert good.connected.wait(15)
        good(DecisionEvent(time.time(), "deny", "without_mask", 0.97, 1, 7, "enforce", True))
        listener.wait_for(lambda t, p, _r: t == "maskgate/event" and json.loads(p)["track"] == 7)
        end = time.monotonic() + 20
        while "refused the connection: Not authorized" not in caplog.text and time.monotonic() < end:
            time.sleep(0.1)
        assert "refused the connection: Not authorized" in caplog.text
        assert not bad.connected.is_set()
        assert "connected" in repr(good) and "disconnected" in repr(bad)
    finally:
        good.close()
        good.close()
        bad.close()
        listener.close()
        b.stop()


def make_certs(d: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 'localhost' (not for 127.0.0.1), with openssl."""
    d.mkdir()
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl not installed (.ci/run installs it)")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=maskgate test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return {"ca": d / "ca.crt", "cert": d / "server.crt", "key": d / "server.key"}


def test_tls_checks_the_broker_certificate_and_host_name(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                        brokers: Callable[..., Broker]) -> None:
    certs = make_certs(tmp_path / "certs")
    b = brokers(tmp_path / "broker", tls=certs)
    base = dict(tls=True, ca_file=str(certs["ca"]))
    good = MqttPublisher(dataclasses.replace(mqtt_settings(b.port, **base), host="localhost")).start()
    wrong_name = MqttPublisher(mqtt_settings(b.port, **base, client_id="maskgate-n")).start()  # 127.0.0.1
    insecure = MqttPublisher(mqtt_settings(b.port, **base, tls_insecure=True, client_id="maskgate-i")).start()
    untrusted = MqttPublisher(dataclasses.replace(mqtt_settings(b.port, tls=True, client_id="maskgate-u"),
                                                  host="localhost")).start()
    try:
        assert good.connected.wait(15) and insecure.connected.wait(15)
        time.sleep(1.0)
        assert not wrong_name.connected.is_set() and not untrusted.connected.is_set()
        assert "host name is not checked" in caplog.text
    finally:
        for p in (good, wrong_name, insecure, untrusted):
            p.close()
        b.stop()


class Stoppable:
    """A frame source that ends when ``stop`` is set (the gate runs in a thread here, without signals)."""

    live = False

    def __init__(self, inner: SyntheticDoor) -> None:
        self.inner = inner
        self.stop = threading.Event()

    @property
    def dropped(self) -> int:
        return self.inner.dropped

    def open(self) -> None:
        self.inner.open()

    def read(self) -> Any:
        return None if self.stop.is_set() else self.inner.read()

    def close(self) -> None:
        self.inner.close()


def test_a_broker_restart_never_slows_the_gate_and_messages_resume(tmp_path: Path, faces_dir: Path, yunet_path: Path,
                                                                  brokers: Callable[..., Broker]) -> None:
    b = brokers(tmp_path / "broker")
    listener = Listener(b.port)
    s = gate_settings(tmp_path, yunet_path, mqtt_settings(b.port))
    src = Stoppable(door(faces_dir, [["with_mask"], ["without_mask"], ["incorrect_mask"]], loop=True,
                         realtime=True))
    stats = Stats()
    seen: list[DecisionEvent] = []
    result: dict[str, Any] = {}

    def run() -> None:
        result["rc"] = run_gate(s, pin_factory=MockFactory(), source=src, stats=stats, decision_sinks=[seen.append])

    gate = threading.Thread(target=run, daemon=True)
    gate.start()
    try:
        listener.wait_for(lambda t, p, _r: t == "maskgate/availability" and p == "online")
        listener.wait_for(lambda t, _p, _r: t == "maskgate/event")
        f_, t_ = stats.frames, time.monotonic()
        time.sleep(3.0)
        f0, t0 = stats.frames, time.monotonic()
        before = len(seen)
        b.stop()  # the broker goes away
        time.sleep(4.0)
        f1, t1 = stats.frames, time.monotonic()
        during = len(seen)
        b.start()  # the same port, and empty: nothing retained
        mark = len(listener.messages)
        listener.wait_for(lambda t, p, _r: t == "maskgate/availability" and p == "online", timeout=40, start=mark)
        n = len(seen)
        end = time.monotonic() + 40
        while len(seen) <= n and time.monotonic() < end:
            time.sleep(0.1)
        assert len(seen) > n, "no decision after the broker came back"
        after = seen[n].to_json()
        listener.wait_for(lambda t, p, _r: t == "maskgate/event" and json.loads(p) == after, timeout=20, start=mark)
    finally:
        src.stop.set()
        gate.join(30)
    assert result.get("rc") == 0
    # the loop kept its pace while the broker was away: frames/s against the seconds just before, same run
    # (a 10 fps door; a generous bound, as other work shares this machine)
    rate_up, rate_down = (f0 - f_) / (t0 - t_), (f1 - f0) / (t1 - t0)
    assert rate_down >= 0.6 * rate_up and rate_down > 0, (rate_up, rate_down)
    # decisions made while the broker was away were kept and delivered once it was back
    got = [json.loads(p) for p in listener.on("maskgate/event")]
    assert during > before, "no decision while the broker was away"
    assert all(e.to_json() in got for e in seen[:during])
    # and the clean shutdown said so (delivered to the listener a moment after the broker acknowledged it)
    listener.wait_for(lambda t, p, _r: t == "maskgate/availability" and p == "offline", start=mark)
    listener.close()
    b.stop()


def test_last_will_when_the_daemon_is_killed(tmp_path: Path, broker: Broker, faces_dir: Path,
                                             yunet_path: Path) -> None:
    """``maskgate run`` as systemd would start it, then SIGKILL: the broker publishes its last will."""
    cfg = tmp_path / "maskgate.toml"
    cfg.write_text(f'[source]\ntype = "synthetic"\nfaces = "{faces_dir}"\nwidth = 320\nheight = 240\n'
                   f'[detector]\nmodel = "{yunet_path}"\n[outputs]\npin_factory = "mock"\n'
                   f'[events]\ndir = "{tmp_path / "events"}"\n'
                   f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\nclient_id = "maskgate-k"\n'
                   f'keepalive = 5\n')
    listener = Listener(broker.port)
    proc = subprocess.Popen([sys.executable, "-m", "maskgate", "run", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        listener.wait_for(lambda t, p, _r: t == "maskgate/availability" and p == "online", timeout=60)
        mark = len(listener.messages)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        t0 = time.monotonic()
        listener.wait_for(lambda t, p, _r: t == "maskgate/availability" and p == "offline", timeout=15, start=mark)
        assert time.monotonic() - t0 < 10  # the broker saw the socket close; no keep-alive wait needed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
    assert "Received SUBSCRIBE from maskgate-k" not in broker.log()


@pytest.mark.parametrize(("text", "line"), [
    ('[mqtt]\ncert_file = "c.pem"\ntls = true\n', "mqtt.key_file: a client certificate needs both"),
    ('[mqtt]\nca_file = "ca.pem"\n', "mqtt.ca_file: only used with mqtt.tls = true"),
    ('[mqtt]\ntls_insecure = true\n', "mqtt.tls_insecure: only used with mqtt.tls = true"),
    ('[mqtt]\ntopic_prefix = "shop/#"\n', "mqtt.topic_prefix: must be a non-empty MQTT topic without wildcards"),
    ('[mqtt]\nport = 0\n', "mqtt.port: must be >= 1 (got 0)"),
    ('[mqtt]\ncommand_topic = "x"\n', "mqtt.command_topic: unknown key"),
])
def test_mqtt_config_errors_name_the_key(text: str, line: str) -> None:
    from maskgate.config import parse_config
    from maskgate.errors import ConfigFileError

    with pytest.raises(ConfigFileError) as info:
        parse_config(text)
    assert any(p.startswith(line) for p in info.value.problems), info.value.problems


def test_a_bad_tls_file_is_refused_with_its_key(tmp_path: Path) -> None:
    from maskgate.errors import ConfigError

    with pytest.raises(ConfigError, match="mqtt.ca_file: cannot load CA certificates"):
        MqttPublisher(mqtt_settings(1883, tls=True, ca_file=str(tmp_path / "missing.pem")))


def test_paho_is_imported_only_when_mqtt_is_enabled() -> None:
    code = ("import sys, maskgate.cli, maskgate.daemon, maskgate.mqtt; from maskgate.cli import build_parser; "
            "build_parser(); print('paho' in ' '.join(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

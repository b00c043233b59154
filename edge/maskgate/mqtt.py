"""MQTT (optional, off by default): tell a broker, and Home Assistant through it, what the door does.

Topics under ``topic_prefix`` (default ``maskgate``):

- ``PREFIX/availability``: ``online`` / ``offline``, retained; ``offline`` is also the last will,
  which the broker publishes when the gate vanishes without saying goodbye.
- ``PREFIX/event``: one message per decision (``DecisionEvent.to_json``: allow, deny, fault start).
- ``PREFIX/state``: the current decision (idle, checking, uncertain, allow, deny, fault), retained.
- ``PREFIX/counts``: today's allow/deny/fault counts in the configured time zone, retained.
- ``DISCOVERY/.../config``: Home Assistant discovery (sensors and a problem binary sensor), retained.

It publishes only: the client subscribes to nothing and there is no command topic, so nothing
received over MQTT can open the door. paho-mqtt runs the connection in its own thread and
reconnects on its own. The frame loop only puts messages in a bounded queue (never waits), a
worker thread hands them to paho; while the broker is away paho keeps up to ``queue_size`` events
for later, and anything beyond is dropped and counted. paho is imported here only, when MQTT is
enabled.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from . import __version__
from .config import MqttSettings
from .errors import ConfigError
from .events import DecisionEvent, FrameResult

log = logging.getLogger(__name__)

CREDENTIAL = "maskgate-mqtt-password"
OUTCOMES = ("allow", "deny", "fault")


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def client_id(settings: MqttSettings) -> str:
    return settings.client_id or f"maskgate-{socket.gethostname()}"


def password(settings: MqttSettings) -> str | None:
    """The configured password, else the systemd credential, else None."""
    if settings.password:
        return settings.password
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        path = Path(creds) / CREDENTIAL
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the MQTT password credential ({exc.strerror or exc})") from exc
    return None


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """An SSLContext from the [mqtt] TLS keys; a bad file is a ConfigError naming the key."""
    try:
        ctx = ssl.create_default_context(cafile=settings.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"mqtt.ca_file: cannot load CA certificates ({exc}) (got {settings.ca_file!r})") from exc
    if settings.cert_file:
        try:
            ctx.load_cert_chain(settings.cert_file, settings.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"mqtt.cert_file/mqtt.key_file: cannot load the client certificate ({exc}) "
                              f"(got {settings.cert_file!r}, {settings.key_file!r})") from exc
    if settings.tls_insecure:
        ctx.check_hostname = False
    return ctx


def discovery_messages(settings: MqttSettings, *, version: str = __version__) -> dict[str, dict[str, Any]]:
    """Home Assistant discovery: topic -> config. Sensors and a binary sensor only; no command topic."""
    cid = client_id(settings)
    node = re.sub(r"[^A-Za-z0-9_-]", "_", cid)
    p = settings.topic_prefix
    device = {"identifiers": [node], "name": f"maskgate {cid.removeprefix('maskgate-')}".strip(),
              "manufacturer": "maskgate", "model": "face-mask door gate", "sw_version": version}
    common = {"availability_topic": f"{p}/availability", "payload_available": "online",
              "payload_not_available": "offline", "device": device}
    entities: list[tuple[str, str, dict[str, Any]]] = [
        ("sensor", "decision", {"name": "Decision", "state_topic": f"{p}/state",
                                "value_template": "{{ value_json.state }}", "json_attributes_topic": f"{p}/state",
                                "icon": "mdi:door"}),
        ("binary_sensor", "fault", {"name": "Fault", "device_class": "problem", "state_topic": f"{p}/state",
                                    "value_template": "{{ 'ON' if value_json.state == 'fault' else 'OFF' }}"}),
        ("sensor", "last_event", {"name": "Last decision", "state_topic": f"{p}/event",
                                  "value_template": "{{ value_json.outcome }}",
                                  "json_attributes_topic": f"{p}/event", "icon": "mdi:account-check"}),
    ]
    for outcome, name in (("allow", "Allowed today"), ("deny", "Denied today"), ("fault", "Faults today")):
        entities.append(("sensor", f"{outcome}_today", {
            "name": name, "state_topic": f"{p}/counts", "value_template": f"{{{{ value_json.{outcome} }}}}",
            "state_class": "total_increasing", "json_attributes_topic": f"{p}/counts"}))
    out = {}
    for component, key, cfg in entities:
        out[f"{settings.discovery_prefix}/{component}/{node}/{key}/config"] = {
            **cfg, "unique_id": f"{node}_{key}", **common}
    return out


class MqttPublisher:
    """A DecisionEvents sink (``publisher(event)``) and a frame observer (``publisher.observe``) that
    publish to MQTT without ever blocking the caller. ``start()`` connects (in the background),
    ``close()`` says ``offline`` and disconnects; both safe to call twice."""

    def __init__(self, settings: MqttSettings, *, timezone: str = "UTC",
                 counts: dict[str, int] | None = None, now: Callable[[], float] = time.time) -> None:
        import paho.mqtt.client as paho  # only when MQTT is enabled

        self.settings = settings
        self.prefix = settings.topic_prefix
        self.client_id = client_id(settings)
        self._tz = ZoneInfo(timezone)
        self._now = now
        self._lock = threading.Lock()
        self.day: date = datetime.fromtimestamp(now(), self._tz).date()
        self.counts: dict[str, int] = {k: int((counts or {}).get(k, 0)) for k in OUTCOMES}
        self.state: dict[str, Any] = {"state": "idle", "reason": None, "ts": None}
        self.published = 0
        self.dropped = 0
        self.connects = 0
        self.connected = threading.Event()
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=settings.queue_size)
        self._dropping = False
        self._worker: threading.Thread | None = None
        self._closed = False
        self._started = False
        self._last_refusal: str | None = None

        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv311,
                        clean_session=True)
        if settings.username:
            c.username_pw_set(settings.username, password(settings))
        elif password(settings) is not None:
            log.warning("mqtt: a password is set but mqtt.username is empty; connecting without credentials")
        if settings.tls:
            c.tls_set_context(tls_context(settings))
            if settings.tls_insecure:
                c.tls_insecure_set(True)
                log.warning("mqtt.tls_insecure = true: the broker's host name is not checked against its "
                            "certificate")
        c.will_set(self.topic("availability"), "offline", qos=1, retain=True)
        c.reconnect_delay_set(1, 30)
        c.max_queued_messages_set(settings.queue_size)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        self._client = c
        self._paho = paho

    def __repr__(self) -> str:
        s = self.settings
        return (f"<MqttPublisher {self.client_id}@{s.host}:{s.port} tls={s.tls} "
                f"{'connected' if self.connected.is_set() else 'disconnected'} published={self.published} "
                f"dropped={self.dropped} queued={self._queue.qsize()} counts={self.counts}>")

    def topic(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> MqttPublisher:
        if self._started or self._closed:
            return self
        self._started = True
        s = self.settings
        log.info("mqtt: connecting to %s:%d as %s (tls %s)", s.host, s.port, self.client_id, s.tls)
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive)
        self._client.loop_start()
        self._worker = threading.Thread(target=self._work, name="maskgate-mqtt", daemon=True)
        self._worker.start()
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Publish ``offline`` (waiting up to ``timeout`` s for the broker), disconnect, stop threads."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        self._queue_put(("stop", None), force=True)
        if self._worker is not None:
            self._worker.join(timeout)
        if self.connected.is_set():
            try:
                info = self._client.publish(self.topic("availability"), "offline", qos=1, retain=True)
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("mqtt: could not say offline: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()
        log.info("mqtt: disconnected (%d published, %d dropped)", self.published, self.dropped)

    # -- what the gate calls (never blocks) ---------------------------------------------------------
    def __call__(self, event: DecisionEvent) -> None:
        self._queue_put(("event", event))

    def observe(self, result: FrameResult) -> None:
        """A frame observer: publish the current decision when it changes."""
        d = result.decision
        if d.state != self.state["state"] or d.reason != self.state["reason"]:
            new = {"state": d.state, "reason": d.reason, "ts": _iso(result.wall), "mode": d.mode,
                   "active": d.active}
            self.state = new
            self._queue_put(("state", new))

    def _queue_put(self, item: tuple[str, Any], *, force: bool = False) -> None:
        try:
            self._queue.put(item, timeout=0.5) if force else self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning("mqtt: queue full (%d); dropping messages until the broker keeps up",
                            self.settings.queue_size)

    # -- worker thread -----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            try:
                kind, item = self._queue.get(timeout=30.0)
            except queue.Empty:
                kind, item = "tick", None
            try:
                if kind == "stop":
                    return
                if kind == "event":
                    self._publish_event(item)
                elif kind == "state":
                    if self.connected.is_set():
                        self._publish("state", item, retain=True)
                self._roll_day()
            except Exception:
                log.exception("mqtt: publishing failed")

    def _roll_day(self) -> bool:
        today = datetime.fromtimestamp(self._now(), self._tz).date()
        if today == self.day:
            return False
        with self._lock:
            self.day = today
            self.counts = dict.fromkeys(OUTCOMES, 0)
        if self.connected.is_set():
            self._publish("counts", self.counts_payload(), retain=True)
        return True

    def counts_payload(self) -> dict[str, Any]:
        with self._lock:
            return {"date": self.day.isoformat(), "timezone": str(self._tz), **self.counts}

    def _publish_event(self, event: DecisionEvent) -> None:
        event_day = datetime.fromtimestamp(event.wall, self._tz).date()
        self._roll_day()
        with self._lock:
            if event_day == self.day and event.outcome in self.counts:
                self.counts[event.outcome] += 1
        self._publish("event", event.to_json())
        if self.connected.is_set():
            self._publish("counts", self.counts_payload(), retain=True)

    def _publish(self, name: str, payload: Any, *, retain: bool = False, topic: str | None = None) -> bool:
        body = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        info = self._client.publish(topic or self.topic(name), body, qos=1, retain=retain)
        if info.rc == self._paho.MQTT_ERR_QUEUE_SIZE:
            with self._lock:
                self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.warning("mqtt: %d messages wait for the broker; dropping more until it is back",
                            self.settings.queue_size)
            return False
        self._dropping = False
        with self._lock:
            self.published += 1
        return True

    # -- paho callbacks (paho's network thread) ----------------------------------------------------
    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            msg = str(reason_code)
            if msg != self._last_refusal:
                self._last_refusal = msg
                log.error("mqtt: %s:%d refused the connection: %s", self.settings.host, self.settings.port, msg)
            return
        self._last_refusal = None
        self.connects += 1
        log.info("mqtt: connected to %s:%d", self.settings.host, self.settings.port)
        self._publish("availability", "online", retain=True)
        if self.settings.discovery:
            for topic, cfg in discovery_messages(self.settings).items():
                self._publish("discovery", cfg, retain=True, topic=topic)
        self._publish("state", self.state, retain=True)
        self._publish("counts", self.counts_payload(), retain=True)
        self.connected.set()

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was and not self._closed:
            log.warning("mqtt: connection to %s:%d lost (%s); reconnecting", self.settings.host,
                        self.settings.port, reason_code)

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        log.debug("mqtt: cannot reach %s:%d; retrying", self.settings.host, self.settings.port)

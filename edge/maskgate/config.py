"""The daemon's configuration: one TOML file validated at load into frozen, typed settings.

Every field carries its description and check in its dataclass metadata, so validation, the
example config and ``maskgate config check`` share one source. Unknown keys are rejected and every
problem is reported as ``key.path: message (got value)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigFileError

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("/etc/maskgate/maskgate.toml")

DEFAULT_PINS: dict[str, int] = {"green": 17, "red": 27, "buzzer": 18, "relay": 22, "button": 23}
"""BCM pin numbers; ``hardware/`` is wired to match these."""

LABELS = ("with_mask", "without_mask", "incorrect_mask")
DECISIONS = ("idle", "checking", "uncertain", "allow", "deny", "fault")
MODES = ("enforce", "advisory", "off")
SOURCE_TYPES = ("picamera2", "opencv", "replay", "synthetic")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")

Check = Callable[[Any], str | None]


def _opt(default: Any, doc: str, check: Check | None = None) -> Any:
    if isinstance(default, list | dict):
        raise TypeError("use tuples for defaults")
    return field(default=default, metadata={"doc": doc, "check": check})


def _one_of(*values: Any) -> Check:
    return lambda v: None if v in values else "must be one of " + ", ".join(repr(x) for x in values)


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"must be {'>' if lo_open else '>='} {lo}"
        if hi is not None and v > hi:
            return f"must be <= {hi}"
        return None
    return check


def _pin(v: int) -> str | None:
    return None if 0 <= v <= 27 else "must be a BCM GPIO number 0..27"


def _tz(v: str) -> str | None:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        return "unknown time zone (use an IANA name such as 'Europe/Berlin' or 'UTC')"
    return None


def _hours(v: tuple[str, ...]) -> str | None:
    for item in v:
        if not _HOURS_RE.match(item):
            return f"{item!r} is not HH:MM-HH:MM"
    return None


def _days(v: tuple[str, ...]) -> str | None:
    bad = [d for d in v if d not in DAYS]
    return f"unknown day(s) {bad}; use {', '.join(DAYS)}" if bad else None


def _size(v: int) -> str | None:
    return None if v >= 4096 else "must be at least 4096 bytes"


def _topic(v: str) -> str | None:
    if not v or v.startswith("/") or v.endswith("/") or any(c in v for c in "+#\0"):
        return "must be a non-empty MQTT topic without wildcards (+, #) or a leading/trailing '/'"
    return None


def _roi(v: tuple[float, ...]) -> str | None:
    if len(v) != 4:
        return "must be [x0, y0, x1, y1]"
    x0, y0, x1, y1 = v
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        return "must be fractions of the frame with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1"
    return None


@dataclass(frozen=True)
class SourceSettings:
    """Where frames come from."""

    type: str = _opt("picamera2", "frame source: picamera2 | opencv | replay | synthetic",
                     _one_of(*SOURCE_TYPES))
    device: str = _opt("", "opencv: device index ('0'), video file or RTSP/HTTP URL; "
                           "replay: folder of images or a video file")
    width: int = _opt(640, "frame width for inference (picamera2 low-res stream, opencv request, "
                           "synthetic frames)", _range(32, 4096))
    height: int = _opt(480, "frame height for inference", _range(32, 4096))
    fps: float = _opt(10.0, "frames per second (camera request; replay and synthetic playback rate)",
                      _range(0.0, 120.0, lo_open=True))
    rotation: int = _opt(0, "rotate frames clockwise by 0, 90, 180 or 270 degrees", _one_of(0, 90, 180, 270))
    flip: str = _opt("none", "mirror frames (after rotation): none | horizontal | vertical | both",
                     _one_of("none", "horizontal", "vertical", "both"))
    hold: int = _opt(1, "replay: how many frames each image of a folder is shown", _range(1, 10_000))
    loop: bool = _opt(False, "replay: start again at the end instead of stopping")
    frame_timeout: float = _opt(5.0, "live sources: seconds without a frame before the gate faults "
                                     "(reason camera) and reopens the camera", _range(0.1, 600.0))
    max_bad_frames: int = _opt(10, "consecutive unreadable frames before the gate faults (a live camera is then "
                                   "reopened)", _range(1, 10_000))
    colourless_fault: float = _opt(
        10.0, "seconds of frame time the picture may stay without colour (a camera in mono or night mode, an IR "
              "camera at night, gray frames) or too dark to see anyone (lights off, a covered lens) before the gate "
              "faults (reason camera, with the cause): faces without colour are tracked but never judged, so a gray "
              "camera would leave every visitor uncertain; a shorter run only gives uncertain votes. A usable "
              "picture ends the fault on that frame. 0: never fault",
        _range(0.0, 86_400.0))
    reopen_delay: float = _opt(0.5, "live sources: seconds before the first attempt to reopen a failed camera; "
                                    "the wait doubles after each failed attempt", _range(0.01, 600.0))
    reopen_max_delay: float = _opt(1.0, "live sources: longest wait between camera reopen attempts, so a camera "
                                        "that comes back is picked up at most this long after (keep it well under "
                                        "the few seconds a visitor spends at the door)", _range(0.01, 600.0))
    faces: str = _opt("", "synthetic: folder with with_mask/, without_mask/, incorrect_mask/ face crops")
    people: int = _opt(1, "synthetic: at most this many people at the door at once", _range(1, 8))
    seed: int = _opt(0, "synthetic: random seed (same seed, same sequence)")


@dataclass(frozen=True)
class DetectorConfig:
    """Face detection (YuNet) and which faces count."""

    model: str = _opt("", "YuNet .onnx path; empty: the model cache, downloaded once if missing")
    score_threshold: float = _opt(0.3, "detector score threshold", _range(0.0, 1.0, lo_open=True))
    track_threshold: float = _opt(0.15, "a box scoring this or more (but under score_threshold) counts only "
                                        "where it overlaps a face the gate already tracks (by decision.track_iou): "
                                        "a face once found is not lost when the detector's score dips; a new face "
                                        "still needs score_threshold (equal to score_threshold: off)",
                                  _range(0.0, 1.0, lo_open=True))
    nms_threshold: float = _opt(0.3, "detector non-maximum suppression threshold", _range(0.0, 1.0))
    max_side: int = _opt(640, "frames are downscaled to this longer side before detection",
                         _range(64, 4096))
    face_px: int = _opt(40, "frames are also downscaled so a face of min_face pixels is this many pixels "
                            "wide for the detector (0: only max_side limits the size); smaller is faster "
                            "but misses more masked faces near min_face and moves boxes more", _range(0, 4096))
    upscale: float = _opt(1.0, "also search at this scale for small faces (1 disables)", _range(1.0, 4.0))
    min_face: int = _opt(48, "faces narrower than this many frame pixels neither open the door nor sound "
                             "the alarm", _range(0, 4096))
    veto_face: int = _opt(32, "faces at least this wide but narrower than min_face are not tracked, but are "
                              "judged on the search before the door opens, and one judged bare or wrongly "
                              "masked makes the door wait (checking: no light, no buzzer) while the people at "
                              "the door are masked: the door opens only when every face in the doorway is "
                              "masked, a child's or one a step behind too (min_face or more: off)",
                          _range(0, 4096))
    roi: tuple[float, ...] = _opt((0.0, 0.0, 1.0, 1.0),
                                  "doorway region [x0, y0, x1, y1] as fractions of the frame; "
                                  "a face counts when its centre is inside", _roi)
    every: int = _opt(10, "while faces are tracked, search the whole frame on every Nth frame (a newcomer "
                          "is found within N frames; the door opens only on a searched frame) and in "
                          "between follow the tracked faces, classifying them on every frame (1: search "
                          "the whole frame on every frame)", _range(1, 30))
    every_around: bool = _opt(True, "those every-Nth searches, and the search after a followed face "
                                      "was lost, cover only windows twice the tracked faces' size, at full "
                                      "size, unless the frame changed away from the tracked people since "
                                      "the last search (a newcomer moves); the search before the door "
                                      "opens always covers the whole doorway")
    moving_every: int = _opt(1, "while no face is tracked and the frame changes (see motion), search "
                                "around the change on every Nth frame", _range(1, 30))
    moving_full_size: bool = _opt(True, "those searches around a change run at full size (no face_px "
                                        "downscale): a face walking in is found a frame or two sooner")
    idle_every: int = _opt(10, "while no face is tracked and nothing changes, search the whole frame "
                               "on every Nth frame anyway", _range(1, 1000))
    refine_unsure: bool = _opt(True, "an unsure verdict (a face's score below decision.mask_score or "
                                     "decision.bare_score) gets a second look: the detector at full size in "
                                     "a window twice the face's size, and the classifier on the box it finds")
    refine_flips: bool = _opt(True, "a verdict that turns a tracked face's answer round (masked after "
                                    "bare, or bare after masked) gets the same second look before it votes")
    motion: float = _opt(0.002, "the frame changed when more than this share of a tiny grayscale copy "
                                "differs from the last searched frame (0: always; every frame is then "
                                "searched while no face is tracked)", _range(0.0, 1.0))


@dataclass(frozen=True)
class ClassifierConfig:
    """The int8 mask classifier."""

    model: str = _opt("", "bundle directory (model.tflite + manifest.json); empty: the shipped model")
    threads: int = _opt(1, "interpreter threads", _range(1, 8))
    delegate: str = _opt("cpu", "cpu | edgetpu (Coral; falls back to CPU with a warning)",
                         _one_of("cpu", "edgetpu"))
    second_opinion: str = _opt("door", "a larger classifier (a pretrained face network, about 60 times the small "
                                       "one's cost per face) as a second opinion. deny: it looks at a face before "
                                       "a vote that would sound the alarm, and where it sees a mask the vote turns "
                                       "uncertain (a masked face misread as bare is not buzzed; never opens the "
                                       "door); door: as deny, and it also looks at masked votes under "
                                       "decision.mask_score on a face without a bare vote: where it is sure of a "
                                       "mask too, the vote counts as masked; unsure: averaged on faces whose "
                                       "with_mask score lies in the second bundle's band (what `maskgate classify` "
                                       "does); off: the small one alone",
                               _one_of("off", "unsure", "deny", "door"))
    second_model: str = _opt("", "second-opinion bundle directory; empty: the one shipped with maskgate")
    second_sure: float = _opt(0.8, "at the door (second_opinion deny or door), the second model counts as sure of "
                                   "a mask at this with_mask score or more: only then does it hold back an alarm "
                                   "or (door) make a weak masked verdict a masked vote", _range(0.5, 1.0))


@dataclass(frozen=True)
class DecisionSettings:
    """Tracking, voting and the gate's mode."""

    mode: str = _opt("enforce", "enforce: lights, buzzer and door relay; advisory: lights and buzzer "
                                "only, the door is never driven; off: nothing is driven",
                     _one_of(*MODES))
    window: int = _opt(5, "votes are counted over a track's last N classified frames", _range(1, 50))
    votes: int = _opt(3, "a track decides when this many of its last `window` votes agree", _range(1, 50))
    mask_score: float = _opt(0.9, "a with_mask verdict votes 'masked' only at or above this score; "
                                  "lower scores are uncertain votes", _range(0.0, 1.0))
    bare_score: float = _opt(0.6, "a without_mask or incorrect_mask verdict votes 'deny' only at or "
                                  "above this score; lower scores are uncertain votes", _range(0.0, 1.0))
    no_face_score: float = _opt(0.75, "a detection the classifier calls no_face is ignored only at or "
                                      "above this score; below it the face blocks the door as uncertain",
                                _range(0.0, 1.0))
    cooldown: float = _opt(10.0, "seconds before the same person can trigger the door or the "
                                 "buzzer again", _range(0.0, 3600.0))
    track_timeout: float = _opt(1.0, "seconds a track survives without a matching face", _range(0.05, 60.0))
    track_iou: float = _opt(0.3, "minimum overlap (IoU) to match a face to an existing track",
                            _range(0.0, 1.0))


@dataclass(frozen=True)
class ScheduleSettings:
    """When the gate is active; outside these hours it drives nothing (the staff button still works)."""

    enabled: bool = _opt(False, "false: active at all times")
    timezone: str = _opt("UTC", "IANA time zone for hours and days", _tz)
    hours: tuple[str, ...] = _opt(("08:00-20:00",), "active windows in local time, HH:MM-HH:MM", _hours)
    days: tuple[str, ...] = _opt(DAYS, "active days", _days)


@dataclass(frozen=True)
class PinSettings:
    """BCM pin numbers (defaults match hardware/)."""

    green: int = _opt(DEFAULT_PINS["green"], "green LED (allowed)", _pin)
    red: int = _opt(DEFAULT_PINS["red"], "red LED (denied, fault)", _pin)
    buzzer: int = _opt(DEFAULT_PINS["buzzer"], "active buzzer", _pin)
    relay: int = _opt(DEFAULT_PINS["relay"], "door relay", _pin)
    button: int = _opt(DEFAULT_PINS["button"], "staff button (to ground)", _pin)


@dataclass(frozen=True)
class OutputSettings:
    """LEDs, buzzer, door relay and the staff button through gpiozero."""

    pin_factory: str = _opt("", "gpiozero pin factory (lgpio, rpigpio, pigpio, native, mock; journal: mock pins "
                                "that append every write to $MASKGATE_PIN_JOURNAL, for fault tests); "
                                "empty: $GPIOZERO_PIN_FACTORY, else gpiozero's default")
    relay_active_high: bool = _opt(True, "false for relay boards that switch on a low input")
    relay_pulse: float = _opt(5.0, "seconds the relay opens the door for", _range(0.1, 60.0))
    relay_max_on: float = _opt(15.0, "hard limit on continuous relay on-time, enforced by a "
                                     "monotonic timer independent of frames", _range(0.1, 300.0))
    buzzer_mute: bool = _opt(False, "true: never sound the buzzer")
    button: bool = _opt(False, "enable the staff button (opens the door for one pulse)")
    button_bounce: float = _opt(0.05, "staff button debounce time in seconds", _range(0.0, 1.0))
    pins: PinSettings = field(default_factory=PinSettings, metadata={"doc": "BCM pins"})


def _http_host(v: str) -> str | None:
    if not v or any(c.isspace() for c in v) or "/" in v:
        return "must be an IP address or host name to bind to, e.g. '127.0.0.1' or '0.0.0.0'"
    return None


HTTP_TOKEN_MIN = 16


def check_token(v: str) -> str | None:
    """Why ``v`` is not an acceptable HTTP token (None: it is, or it is empty)."""
    if v and (len(v) < HTTP_TOKEN_MIN or any(c.isspace() for c in v)):
        return (f"must be at least {HTTP_TOKEN_MIN} characters without spaces "
                "(make one with `openssl rand -hex 16`)")
    return None


@dataclass(frozen=True)
class HttpSettings:
    """The status page, live preview, /healthz, /metrics and JSON API (read-only; nothing here opens
    the door). Changes apply after a restart."""

    enabled: bool = _opt(False, "serve the status page and API")
    host: str = _opt("127.0.0.1", "address to bind; anything but loopback (127.0.0.1, ::1, localhost) "
                                  "requires a token", _http_host)
    port: int = _opt(8080, "TCP port (0: any free port, logged at start)", _range(0, 65535))
    token: str = _opt("", "access token (Basic auth password, or the login form); empty: read "
                          "$CREDENTIALS_DIRECTORY/maskgate-http-token (systemd LoadCredential=), "
                          "else no token, allowed only on loopback", check_token)
    preview: bool = _opt(False, "serve /preview.mjpg, the live annotated camera view for aiming the "
                                "camera (frames stay in memory, never on disk)")
    preview_fps: float = _opt(5.0, "preview frames per second at most (JPEG encoding happens only while "
                                   "someone watches)", _range(0.0, 30.0, lo_open=True))
    preview_quality: int = _opt(70, "preview JPEG quality", _range(10, 95))
    preview_clients: int = _opt(2, "preview viewers at once; more are refused (503)", _range(1, 16))


@dataclass(frozen=True)
class EventSettings:
    """The event log: one JSON line per decision (allow, deny, fault start) in the state directory.
    No images, no boxes: time, outcome, reason, confidence, face count and a per-run track number."""

    enabled: bool = _opt(True, "write the event log (`maskgate run` only; `maskgate demo` writes one "
                               "only with --event-log DIR)")
    dir: str = _opt("", "event log folder; empty: $STATE_DIRECTORY/events under systemd "
                        "(/var/lib/maskgate/events), else $XDG_STATE_HOME/maskgate/events "
                        "(~/.local/state/maskgate/events)")
    max_bytes: int = _opt(1_048_576, "rotate the current file (events.jsonl) when it would grow past this "
                                     "size in bytes", _size)
    max_total_bytes: int = _opt(10_485_760, "delete the oldest rotated files while all event files together "
                                            "exceed this size in bytes", _size)


@dataclass(frozen=True)
class SnapshotSettings:
    """Snapshot-on-deny (off by default): a JPEG of the frame that sounded the buzzer, faces blurred.
    These are images of people: enable only when your privacy notice says so."""

    enabled: bool = _opt(False, "keep a JPEG of each deny frame (personal data: see the privacy notice)")
    dir: str = _opt("", "snapshot folder; empty: 'snapshots' in the state directory "
                        "($STATE_DIRECTORY, else $XDG_STATE_HOME/maskgate)")
    blur_faces: bool = _opt(True, "blur every face found in the frame before saving; false keeps faces "
                                  "recognisable (a warning is logged at start)")
    keep_days: float = _opt(7.0, "delete snapshots older than this many days (checked at start and every "
                                 "10 minutes)", _range(0.0, 3650.0, lo_open=True))
    keep_count: int = _opt(100, "keep at most this many snapshots (the oldest go first)", _range(1, 100_000))
    quality: int = _opt(80, "JPEG quality", _range(10, 100))


@dataclass(frozen=True)
class MqttSettings:
    """MQTT (off by default): availability with a last will, one message per decision, state and
    today's counts, Home Assistant discovery. Publishes only: subscribes to nothing, no command
    topic, nothing can open the door through it."""

    enabled: bool = _opt(False, "connect to an MQTT broker and publish")
    host: str = _opt("localhost", "broker host name or address")
    port: int = _opt(1883, "broker port (usually 1883, or 8883 with TLS)", _range(1, 65535))
    username: str = _opt("", "user name; empty: connect without one")
    password: str = _opt("", "password; empty: read $CREDENTIALS_DIRECTORY/maskgate-mqtt-password (systemd "
                             "LoadCredential=) when it exists. Prefer the credential: this file is "
                             "readable by the maskgate group")
    tls: bool = _opt(False, "connect with TLS")
    ca_file: str = _opt("", "TLS: CA certificate file (PEM); empty: the system's trusted CAs")
    cert_file: str = _opt("", "TLS: client certificate (PEM), with key_file")
    key_file: str = _opt("", "TLS: client private key (PEM), with cert_file")
    tls_insecure: bool = _opt(False, "TLS: do not check the broker's host name against its certificate "
                                     "(unsafe; a warning is logged)")
    topic_prefix: str = _opt("maskgate", "topics: PREFIX/availability, PREFIX/event, PREFIX/state, "
                                         "PREFIX/counts", _topic)
    client_id: str = _opt("", "MQTT client id and Home Assistant device id; empty: maskgate-HOSTNAME")
    discovery: bool = _opt(True, "publish Home Assistant discovery so the door shows up as entities")
    discovery_prefix: str = _opt("homeassistant", "Home Assistant discovery prefix", _topic)
    keepalive: int = _opt(30, "seconds between keep-alive pings; the broker sends the last will "
                              "('offline') after 1.5 times this without a word", _range(5, 3600))
    queue_size: int = _opt(1000, "messages waiting while the broker is away; more are dropped and counted",
                           _range(10, 1_000_000))


@dataclass(frozen=True)
class HealthSettings:
    """How the gate judges that it works. When a stage runs past its limit or no frame is processed
    for too long, the relay goes off, the red LED shows the fault pattern and the systemd watchdog
    is no longer fed, so systemd restarts the service."""

    open_timeout: float = _opt(30.0, "seconds opening the camera may take", _range(0.1, 600.0))
    detect_timeout: float = _opt(10.0, "seconds one face detection may take", _range(0.1, 600.0))
    classify_timeout: float = _opt(5.0, "seconds one face classification may take", _range(0.1, 600.0))
    output_timeout: float = _opt(2.0, "seconds one update of the LEDs, buzzer and relay may take", _range(0.1, 600.0))
    loop_timeout: float = _opt(10.0, "seconds the rest of one loop iteration (decision, event observers, "
                                     "config reload) may take", _range(0.1, 600.0))
    fault_grace: float = _opt(300.0, "seconds without a processed frame (camera missing, every frame "
                                     "unreadable, every inference failing) that still count as healthy while "
                                     "the gate retries in-process; then the watchdog is no longer fed and "
                                     "systemd restarts the service (0: retry in-process forever). Keep it above "
                                     "StartLimitIntervalSec / StartLimitBurst (120 s in the shipped unit) so "
                                     "an unplugged camera never exhausts systemd's start limit",
                              _range(0.0, 86_400.0))
    max_errors: int = _opt(10, "consecutive frames whose detection or classification failed before the gate "
                               "faults (reason model)", _range(1, 10_000))


@dataclass(frozen=True)
class Settings:
    """The whole configuration."""

    source: SourceSettings = field(default_factory=SourceSettings, metadata={"doc": "frame source"})
    detector: DetectorConfig = field(default_factory=DetectorConfig, metadata={"doc": "face detector"})
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig, metadata={"doc": "classifier"})
    decision: DecisionSettings = field(default_factory=DecisionSettings, metadata={"doc": "decision"})
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings, metadata={"doc": "schedule"})
    outputs: OutputSettings = field(default_factory=OutputSettings, metadata={"doc": "outputs"})
    http: HttpSettings = field(default_factory=HttpSettings, metadata={"doc": "status page and API"})
    events: EventSettings = field(default_factory=EventSettings, metadata={"doc": "event log"})
    snapshots: SnapshotSettings = field(default_factory=SnapshotSettings, metadata={"doc": "snapshot-on-deny"})
    mqtt: MqttSettings = field(default_factory=MqttSettings, metadata={"doc": "MQTT"})
    health: HealthSettings = field(default_factory=HealthSettings, metadata={"doc": "health and watchdog"})


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return "a list of " + {bool: "booleans", int: "integers", float: "numbers", str: "strings"}[
            typing.get_args(tp)[0]]
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _coerce(tp: Any, value: Any) -> tuple[bool, Any]:
    """Return (ok, value) with TOML values checked against a field type (ints accepted as floats)."""
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list):
            return False, value
        inner = typing.get_args(tp)[0]
        out = []
        for item in value:
            ok, v = _coerce(inner, item)
            if not ok:
                return False, value
            out.append(v)
        return True, tuple(out)
    raise TypeError(f"unsupported config type {tp!r}")


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def _build(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(data, dict):
        problems.append(f"{path}: must be a table (got {_fmt(data)})")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            where = f"{path}.{key}" if path else key
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.75)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(f"{where}: unknown key; {hint}expected one of {', '.join(fields)} (got {_fmt(data[key])})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            continue
        where = f"{path}.{name}" if path else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(typing.cast(type, tp), data[name], where, problems)
            continue
        ok, value = _coerce(tp, data[name])
        if not ok:
            problems.append(f"{where}: must be {_type_name(tp)} (got {_fmt(data[name])})")
            continue
        check = f.metadata.get("check")
        msg = check(value) if check else None
        if msg:
            problems.append(f"{where}: {msg} (got {_fmt(value)})")
            continue
        kwargs[name] = value
    return cls(**kwargs)


def _cross_checks(s: Settings, problems: list[str]) -> None:
    d, o = s.decision, s.outputs
    if s.detector.track_threshold > s.detector.score_threshold:
        problems.append(f"detector.track_threshold: must not exceed detector.score_threshold "
                        f"({s.detector.score_threshold}) (got {s.detector.track_threshold})")
    if d.votes > d.window:
        problems.append(f"decision.votes: must not exceed decision.window ({d.window}) (got {d.votes})")
    if o.relay_pulse > o.relay_max_on:
        problems.append(f"outputs.relay_pulse: must not exceed outputs.relay_max_on ({o.relay_max_on}) "
                        f"(got {o.relay_pulse})")
    pins = dataclasses.asdict(o.pins)
    if not o.button:
        pins.pop("button")
    seen: dict[int, str] = {}
    for name, pin in pins.items():
        if pin in seen:
            problems.append(f"outputs.pins.{name}: pin already used by outputs.pins.{seen[pin]} (got {pin})")
        seen[pin] = name
    if s.events.max_total_bytes < s.events.max_bytes:
        problems.append(f"events.max_total_bytes: must be at least events.max_bytes ({s.events.max_bytes}) "
                        f"(got {s.events.max_total_bytes})")
    m = s.mqtt
    if bool(m.cert_file) != bool(m.key_file):
        problems.append(f"mqtt.{'key_file' if m.cert_file else 'cert_file'}: a client certificate needs both "
                        f"mqtt.cert_file and mqtt.key_file (got '')")
    if not m.tls:
        for key in ("ca_file", "cert_file", "key_file", "tls_insecure"):
            if getattr(m, key):
                problems.append(f"mqtt.{key}: only used with mqtt.tls = true; set tls = true or remove it "
                                f"(got {_fmt(getattr(m, key))})")
    if s.source.reopen_delay > s.source.reopen_max_delay:
        problems.append(f"source.reopen_delay: must not exceed source.reopen_max_delay ({s.source.reopen_max_delay}) "
                        f"(got {s.source.reopen_delay})")
    if s.source.type == "replay" and not s.source.device:
        problems.append("source.device: a replay source needs a folder or video file (got '')")


def settings_from_dict(data: dict[str, Any], source: str = "<config>") -> Settings:
    """Validate a parsed TOML document; raise ConfigFileError listing every problem."""
    problems: list[str] = []
    settings = _build(Settings, data, "", problems)
    if not problems:
        _cross_checks(settings, problems)
    if problems:
        raise ConfigFileError(source, problems)
    return typing.cast(Settings, settings)


def parse_config(text: str, source: str = "<config>") -> Settings:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(source, [f"(file): not valid TOML: {exc}"]) from exc
    return settings_from_dict(data, source)


NO_ACCESS_FIX = (  # what a user outside the service's group reads
    "run as root (sudo), or as a member of the maskgate group (install.sh makes /etc/maskgate "
    "and /var/lib/maskgate readable by that group only)")


def load_config(path: str | Path) -> Settings:
    """Read and validate a TOML config file."""
    p = path if isinstance(path, Path) else Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigFileError(str(p), ["(file): not found"]) from exc
    except PermissionError as exc:
        raise ConfigFileError(str(p), [f"(file): permission denied; {NO_ACCESS_FIX}"]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(str(p), [f"(file): cannot read ({exc})"]) from exc
    return parse_config(text, str(p))


def may_exist(path: Path) -> bool:
    """Whether ``path`` exists, or might: a folder this user may not search (/etc/maskgate is 0750)
    hides it, and reading it then says so (rather than a traceback, or quietly using defaults)."""
    try:
        return path.exists()
    except PermissionError:
        return True


def resolve_config(path: str | Path | None, *, quiet: bool = False) -> tuple[Settings, Path | None]:
    """Settings from ``path``; without one, the default file if it exists, else built-in defaults
    (``quiet``: without the warning that says so)."""
    if path is not None:
        return load_config(path), Path(path)
    if may_exist(DEFAULT_CONFIG_PATH):
        return load_config(DEFAULT_CONFIG_PATH), DEFAULT_CONFIG_PATH
    if not quiet:
        log.warning("no config file at %s; using built-in defaults", DEFAULT_CONFIG_PATH)
    return Settings(), None


def replace(settings: Settings, **sections: dict[str, Any]) -> Settings:
    """A copy of ``settings`` with some fields of some sections replaced (validated again)."""
    new = {name: dataclasses.replace(getattr(settings, name), **vals) for name, vals in sections.items()}
    out = dataclasses.replace(settings, **new)
    problems: list[str] = []
    _cross_checks(out, problems)
    if problems:
        raise ConfigFileError("<overrides>", problems)
    return out


def iter_keys(cls: type = Settings, prefix: str = "") -> list[tuple[str, Any, str]]:
    """Every leaf key as (dotted path, default, description), for docs and the example-config test."""
    out: list[tuple[str, Any, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out.extend(iter_keys(typing.cast(type, hints[f.name]), key + "."))
        else:
            out.append((key, f.default, str(f.metadata.get("doc", ""))))
    return out


def example_path() -> Path:
    from importlib import resources
    return Path(str(resources.files("maskgate") / "data" / "maskgate.example.toml"))

"""The read-only HTTP server: status page, live preview, /healthz, /metrics and the JSON API.

Stdlib ``ThreadingHTTPServer`` in daemon threads, bound to 127.0.0.1 by default. Bound to anything
else it needs a token (``http.token`` or the systemd credential ``maskgate-http-token``), checked
in constant time on every request, the preview stream included: as the password of HTTP Basic auth,
as a Bearer token, or through the login form, which sets an HttpOnly, SameSite=Strict session
cookie (an ``<img>`` cannot send a header). The login POST is the only request that is not a GET,
and nothing here drives an output: there is no endpoint that opens the door.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import ipaddress
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import metrics
from .config import HttpSettings, Settings, check_token
from .errors import ConfigError
from .preview import CONTENT_TYPE as PREVIEW_TYPE
from .preview import Preview, part
from .stats import Stats
from .status import StatusBoard

log = logging.getLogger(__name__)

CREDENTIAL = "maskgate-http-token"
"""The systemd credential name (``LoadCredential=maskgate-http-token`` in the unit)."""
COOKIE = "maskgate_session"
COOKIE_MAX_AGE = 30 * 24 * 3600
MAX_FORM = 4096
EVENTS_LIMIT = 200


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; a name or ``0.0.0.0``/``""`` is not loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(http: HttpSettings, environ: Mapping[str, str] | None = None) -> str | None:
    """The access token: ``http.token``, else ``$CREDENTIALS_DIRECTORY/maskgate-http-token``, else None
    (allowed only on loopback). A non-loopback bind without a token is a ConfigError naming the fix."""
    env = os.environ if environ is None else environ
    token = http.token
    if not token and env.get("CREDENTIALS_DIRECTORY"):
        path = Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL
        if path.exists():
            try:
                token = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: cannot read the HTTP token credential ({exc})") from exc
            problem = check_token(token) if token else "is empty"
            if problem:
                raise ConfigError(f"{path}: the HTTP token credential {problem}")
            log.info("http: token from the %s credential", CREDENTIAL)
    if token:
        return token
    if not is_loopback(http.host):
        raise ConfigError(
            f"http.host: binding {http.host!r} (not loopback) requires a token and none is set (got "
            f"http.token = ''); set http.token, or put one in /etc/credstore/{CREDENTIAL} for the systemd "
            f"unit's LoadCredential={CREDENTIAL} (e.g. `openssl rand -hex 16`), or bind "
            f"http.host = \"127.0.0.1\"")
    return None


def _page(name: str) -> str:
    return (resources.files("maskgate") / "data" / name).read_text(encoding="utf-8")


def _csp(page: str) -> str:
    """A Content-Security-Policy allowing exactly the page's inline script and style (by hash)."""
    def hashes(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S)
        return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
                        for s in found) or "'none'"
    return (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
            "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: HttpServer) -> None:
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class HttpServer:
    """The gate's HTTP side. ``start()`` binds (a busy port is a ConfigError naming host:port) and
    serves in a daemon thread; ``close()`` is safe to call twice."""

    def __init__(self, settings: HttpSettings, board: StatusBoard, token: str | None) -> None:
        self.settings = settings
        self.board = board
        self.token = token
        self.session = hmac.new(token.encode(), b"maskgate-session-v1", hashlib.sha256).hexdigest() \
            if token else None
        self.preview = Preview(board, settings.preview_fps, settings.preview_quality, settings.preview_clients) \
            if settings.preview else None
        self.status_page = _page("status.html").encode("utf-8")
        self.status_csp = _csp(_page("status.html"))
        self.login_page = Template(_page("login.html"))
        self.login_csp = _csp(_page("login.html"))
        self.requests = 0
        self.refused = 0
        self._count_lock = threading.Lock()
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        where = self.url if self._server is not None else f"{self.settings.host}:{self.settings.port}"
        state = "closed" if self._closed else ("serving" if self._server is not None else "not started")
        return (f"<HttpServer {where} {state} token={'yes' if self.token else 'no'} requests={self.requests} "
                f"refused={self.refused} preview={self.preview!r}>")

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the HTTP server is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def start(self) -> HttpServer:
        s = self.settings
        try:
            self._server = _Server((s.host, s.port), self)
        except OSError as exc:
            raise ConfigError(f"http.port: cannot listen on {s.host}:{s.port} ({exc.strerror or exc}); "
                              f"choose another http.port or http.host, or stop what uses it") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="http", daemon=True)
        self._thread.start()
        log.info("status page on %s (token %s, preview %s)", self.url, "required" if self.token else "not required",
                 "on" if self.preview else "off")
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def count(self, refused: bool = False) -> None:
        with self._count_lock:
            if refused:
                self.refused += 1
            else:
                self.requests += 1

    # -- auth ------------------------------------------------------------------------------------
    def authorized(self, headers: Any) -> bool:
        """Basic (any user name, the token as password), Bearer, or the session cookie; constant time."""
        if self.token is None or self.session is None:
            return True
        token = self.token.encode()
        given = b""
        auth = headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                given = b""
        elif scheme.lower() == "bearer":
            given = value.strip().encode("utf-8", "replace")
        ok_header = hmac.compare_digest(given, token)
        cookie = b""
        raw = headers.get("Cookie")
        if raw:
            try:
                jar = SimpleCookie(raw)
            except CookieError:
                jar = SimpleCookie()
            if COOKIE in jar:
                cookie = jar[COOKIE].value.encode("utf-8", "replace")
        ok_cookie = hmac.compare_digest(cookie, self.session.encode())
        return ok_header or ok_cookie

    def login(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode())

    def session_cookie(self) -> str:
        return f"{COOKIE}={self.session}; Path=/; Max-Age={COOKIE_MAX_AGE}; HttpOnly; SameSite=Strict"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "maskgate"

    def version_string(self) -> str:
        return self.server_version
    timeout = 30

    @property
    def app(self) -> HttpServer:
        return self.server.app

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- responses -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, status: int, text: str, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, text.encode("utf-8"), "text/plain; charset=utf-8", headers)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, (json.dumps(data, indent=1) + "\n").encode("utf-8"), "application/json")

    def _login_form(self, status: int, message: str, extra: Mapping[str, str] | None = None) -> None:
        body = self.app.login_page.substitute(message=html.escape(message)).encode("utf-8")
        headers = {"Content-Security-Policy": self.app.login_csp, **(extra or {})}
        self._send(status, body, "text/html; charset=utf-8", headers)

    def _refuse(self) -> None:
        self.app.count(refused=True)
        challenge = {"WWW-Authenticate": 'Basic realm="maskgate", charset="UTF-8"'}
        if "text/html" in self.headers.get("Accept", ""):
            self._login_form(HTTPStatus.UNAUTHORIZED, "Sign in to see the door status.", challenge)
        else:
            self._text(HTTPStatus.UNAUTHORIZED, "401 unauthorized: send the token (Basic auth password, "
                       "Bearer, or sign in at /login)\n", challenge)

    def _not_allowed(self) -> None:
        allow = "GET, POST" if urlsplit(self.path).path == "/login" else "GET"
        self._text(HTTPStatus.METHOD_NOT_ALLOWED, f"405 method not allowed: maskgate's HTTP side is read-only "
                   f"(allowed: {allow})\n", {"Allow": allow})

    # -- methods ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self.app.count()
        url = urlsplit(self.path)
        path = url.path
        if path == "/login":
            if self.app.token is None:
                self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/"})
            else:
                self._login_form(HTTPStatus.OK, "")
            return
        if not self.app.authorized(self.headers):
            self._refuse()
            return
        board = self.app.board
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.app.status_page, "text/html; charset=utf-8",
                       {"Content-Security-Policy": self.app.status_csp})
        elif path == "/api/status":
            self._json(HTTPStatus.OK, board.status())
        elif path == "/api/events":
            self._events(parse_qs(url.query))
        elif path == "/healthz":
            ok, why = board.health()
            self._text(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, why + "\n")
        elif path == "/metrics":
            self._send(HTTPStatus.OK, metrics.render(board).encode("utf-8"), metrics.CONTENT_TYPE)
        elif path == "/preview.mjpg":
            self._preview()
        else:
            self._text(HTTPStatus.NOT_FOUND, "404 not found: try /, /healthz, /metrics, /api/status, "
                       "/api/events, /preview.mjpg\n")

    def do_POST(self) -> None:
        self.app.count()
        if urlsplit(self.path).path != "/login":
            self._not_allowed()
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_FORM:
            self._text(HTTPStatus.BAD_REQUEST, f"400 bad request: a login form of 0..{MAX_FORM} bytes\n")
            return
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0]
        if self.app.token is None:
            self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/"})
        elif self.app.login(given):
            log.info("http: sign-in from %s", self.client_address[0])
            self._send(HTTPStatus.SEE_OTHER, b"", "text/plain",
                       {"Location": "/", "Set-Cookie": self.app.session_cookie()})
        else:
            self.app.count(refused=True)
            log.warning("http: wrong token from %s", self.client_address[0])
            self._login_form(HTTPStatus.UNAUTHORIZED, "Wrong token.")

    def _method_not_allowed(self) -> None:
        self.app.count()
        self._not_allowed()

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _method_not_allowed

    # -- endpoints -------------------------------------------------------------------------------
    def _events(self, query: dict[str, list[str]]) -> None:
        try:
            limit = int((query.get("limit") or [str(EVENTS_LIMIT)])[0])
        except ValueError:
            self._text(HTTPStatus.BAD_REQUEST, "400 bad request: limit must be a whole number\n")
            return
        recent = self.app.board.recent
        events = recent.events(min(max(limit, 0), recent.capacity))
        self._json(HTTPStatus.OK, {"events": [e.to_json() for e in events], "count": len(events),
                                   "capacity": recent.capacity, "total": recent.total})

    def _preview(self) -> None:
        preview = self.app.preview
        if preview is None:
            self._text(HTTPStatus.NOT_FOUND, "404 the live preview is off. To aim the camera, set preview = true "
                       "in the [http] section of the config and restart maskgate.\n")
            return
        if not preview.join():
            self._text(HTTPStatus.SERVICE_UNAVAILABLE, f"503 the preview already has {preview.max_clients} "
                       "viewer(s) (http.preview_clients)\n")
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", PREVIEW_TYPE)
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.close_connection = True
            for jpeg in preview.frames(self.app.stopping.is_set):
                self.wfile.write(part(jpeg))
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            log.debug("preview viewer %s left", self.client_address[0])
        finally:
            preview.leave()


def start_http(settings: Settings, stats: Stats, *, clock_synced: Callable[[], bool] | None = None,
               environ: Mapping[str, str] | None = None) -> HttpServer:
    """Resolve the token (refusing a non-loopback bind without one), bind and serve; the board starts in
    phase ``starting`` until the daemon attaches its pipeline."""
    token = resolve_token(settings.http, environ)
    board = StatusBoard(settings, stats, clock_synced=clock_synced)
    return HttpServer(settings.http, board, token).start()

"""Helpers for the HTTP tests: a real gate (YuNet, the shipped classifier, gpiozero MockFactory) running
``run_gate`` in a thread with its HTTP server on a free loopback port, a plain HTTP client, and a fake
live camera (there is no camera here) that can hang, fail and come back."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from maskgate.config import DEFAULT_PINS, Settings
from maskgate.daemon import run_gate
from maskgate.errors import SourceError
from maskgate.httpd import HttpServer
from maskgate.sources import Frame
from maskgate.stats import Stats
from maskgate.synthetic import SyntheticDoor

TOKEN = "test-token-0123456789abcdef"

MASKED = {"with_mask": ["c7_00441.jpg"]}
"""A masked face crop the shipped model allows steadily when the person stands at the door (checked:
allow from about 1.3 s after entering, every frame after)."""
VISITORS = {
    "with_mask": ["c7_00441.jpg", "fm12k_03454.jpg", "fm12k_05717.jpg"],
    "without_mask": ["fm12k_06993.jpg", "c7_02447.jpg", "fm12k_06921.jpg"],
}

W, H = 480, 360


def settings(*, yunet: Path, **sections: dict[str, Any]) -> Settings:
    s = Settings()
    s = dataclasses.replace(s, detector=dataclasses.replace(s.detector, model=str(yunet)))
    return dataclasses.replace(s, **{k: dataclasses.replace(getattr(s, k), **v) for k, v in sections.items()})


def standing_door(faces: Path, seconds: float = 600.0, *, realtime: bool = True) -> SyntheticDoor:
    """One masked person who walks in and stays."""
    return SyntheticDoor(faces, W, H, 10, script=[["with_mask"]], images=MASKED, realtime=realtime,
                         enter_s=0.3, stand_s=seconds, leave_s=0.3, gap_s=0.2)


def visitors_door(faces: Path, n: int, *, realtime: bool = False, seed: int = 3) -> SyntheticDoor:
    script = [["with_mask" if i % 2 == 0 else "without_mask"] for i in range(n)]
    return SyntheticDoor(faces, W, H, 10, script=script, images=VISITORS, realtime=realtime, seed=seed,
                         enter_s=0.5, stand_s=2.0, leave_s=0.5, gap_s=0.5, start_wall=None)


class FakeCamera:
    """A live camera made of synthetic-door frames. ``mode``: ``ok``; ``hang`` (a read blocks until the
    mode changes); ``fail`` (reads and opens raise SourceError, as an unplugged camera)."""

    live = True

    def __init__(self, door: SyntheticDoor, mode: str = "ok") -> None:
        self.door = door
        self.mode = mode
        self.opens = 0
        self.closed = threading.Event()

    def __repr__(self) -> str:
        return f"<FakeCamera {self.mode}>"

    @property
    def dropped(self) -> int:
        return self.door.dropped

    def open(self) -> None:
        if self.mode == "fail":
            raise SourceError("fake camera: unplugged")
        self.opens += 1
        if self.opens == 1:
            self.door.open()

    def read(self) -> Frame | None:
        while self.mode == "hang" and not self.closed.is_set():
            time.sleep(0.01)
        if self.mode == "fail":
            raise SourceError("fake camera: unplugged")
        return self.door.read()

    def close(self) -> None:
        pass

    def release(self) -> None:
        self.closed.set()


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def request(address: tuple[str, int], method: str = "GET", path: str = "/", headers: dict[str, str] | None = None,
            body: bytes | None = None, timeout: float = 20.0) -> Response:
    conn = http.client.HTTPConnection(address[0], address[1], timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def basic(token: str, user: str = "admin") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


def wait_until(pred: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@dataclasses.dataclass
class LiveGate:
    server: HttpServer
    stats: Stats
    factory: MockFactory
    thread: threading.Thread
    rc: list[int]
    errors: list[BaseException]

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def get(self, path: str, **kw: Any) -> Response:
        return request(self.address, "GET", path, **kw)

    def pin(self, name: str) -> list[bool]:
        return [bool(s.state) for s in self.factory.pin(DEFAULT_PINS[name]).states]

    def running(self) -> bool:
        return self.server.board.phase == "running"

    def stop(self) -> None:
        board = self.server.board
        if board.pipeline is None and self.thread.is_alive() and not self.errors:
            wait_until(lambda: board.pipeline is not None or not self.thread.is_alive(), 60, "the gate to start")
        if board.pipeline is not None:
            board.pipeline.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the gate did not stop"


@contextlib.contextmanager
def live_gate(s: Settings, source: Any, **run_kw: Any) -> Iterator[LiveGate]:
    """``run_gate`` in a thread (as ``maskgate run`` runs it, minus signals) with mock pins."""
    factory = MockFactory()
    stats = Stats()
    run_kw.setdefault("clock_synced", lambda: True)  # this machine's clock may not say it is synchronised
    servers: queue.Queue[HttpServer] = queue.Queue()
    rc: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            rc.append(run_gate(s, pin_factory=factory, source=source, stats=stats, on_http=servers.put, **run_kw))
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run, name="gate", daemon=True)
    thread.start()
    try:
        server = servers.get(timeout=60)
    except queue.Empty:
        thread.join(timeout=5)
        raise AssertionError(f"the HTTP server did not start: {errors}") from None
    gate = LiveGate(server, stats, factory, thread, rc, errors)
    try:
        yield gate
    finally:
        if isinstance(source, FakeCamera):
            source.release()
        gate.stop()
    assert not errors, errors

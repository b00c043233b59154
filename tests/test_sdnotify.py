"""The notify protocol against a real Unix datagram socket, path and abstract."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_data
from maskgate.errors import MaskgateError
from maskgate.sdnotify import SEND_TIMEOUT, Notifier, NotifyError


def _fields(datagram: bytes) -> dict[str, str]:
    text = datagram.decode()  # systemd's own tools omit the final newline; we send one
    return dict(line.split("=", 1) for line in text.splitlines())


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield sock, str(path)
    sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[tuple[socket.socket, str]]:
    name = f"maskgate-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    yield sock, "@" + name
    sock.close()


def test_ready_status_watchdog_stopping_on_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"}
    with Notifier.from_env(env) as n:
        assert n.enabled
        assert n.watchdog_timeout() == 10.0
        assert n.watchdog_interval() == 5.0
        assert n.ready("gate up")
        assert _fields(sock.recv(4096)) == {"READY": "1", "STATUS": "gate up"}
        assert n.status("camera: retrying in 4 s\nsecond line")
        assert _fields(sock.recv(4096)) == {"STATUS": "camera: retrying in 4 s second line"}
        assert n.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1\n"
        assert n.stopping()
        assert sock.recv(4096) == b"STOPPING=1\n"
    assert not n.enabled
    assert not n.ready()  # closed: a no-op


def test_reloading_carries_monotonic_usec(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier(path)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading("reloading config")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fields = _fields(sock.recv(4096))
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after
    assert fields["STATUS"] == "reloading config"
    n.close()
    n.close()  # twice is fine


def test_abstract_socket(abstract_listener: tuple[socket.socket, str]) -> None:
    sock, name = abstract_listener
    n = Notifier.from_env({"NOTIFY_SOCKET": name})
    assert n.ready()
    assert sock.recv(4096) == b"READY=1\n"
    assert n.watchdog_interval() is None
    assert not n.watchdog()  # no watchdog armed: nothing sent
    n.notify("EXTEND_TIMEOUT_USEC=5000000")
    assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=5000000\n"
    n.close()


def test_unset_is_a_no_op() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.status("x") and not n.stopping()
    assert not n.reloading()
    assert n.watchdog_interval() is None
    assert "disabled" in repr(n)


def test_unset_removes_the_variables(listener: tuple[socket.socket, str]) -> None:
    _, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid()), "X": "1"}
    n = Notifier.from_env(env, unset=True)
    assert env == {"X": "1"}
    assert n.enabled and n.watchdog_timeout() == 2.0
    n.close()


def test_watchdog_for_another_pid_is_not_ours(listener: tuple[socket.socket, str]) -> None:
    _, path = listener
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval() is None
    assert not n.watchdog()
    n.close()


@pytest.mark.parametrize("env", [
    {"NOTIFY_SOCKET": "relative/path"},
    {"NOTIFY_SOCKET": "@"},
    {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "ten"},
    {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "0"},
])
def test_malformed_environment_raises(env: dict[str, str]) -> None:
    with pytest.raises(NotifyError) as info:
        Notifier.from_env(env)
    assert isinstance(info.value, MaskgateError) and isinstance(info.value, OSError)


def test_assignments_are_validated(listener: tuple[socket.socket, str]) -> None:
    _, path = listener
    n = Notifier(path)
    with pytest.raises(NotifyError):
        n.notify("READY")
    with pytest.raises(NotifyError):
        n.notify("STATUS=a\nREADY=1")
    n.close()


def test_gone_socket_is_logged_once_then_recovers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "gone.sock"
    n = Notifier(str(path))
    with caplog.at_level(logging.DEBUG, logger="maskgate.sdnotify"):
        assert not n.watchdog() and not n.ready()
        assert not n.status("a") and not n.status("b")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot notify systemd" in warnings[0].getMessage()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    try:
        assert n.ready()
        assert sock.recv(4096) == b"READY=1\n"
    finally:
        sock.close()
        n.close()


def test_many_threads_one_datagram_each(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier(path, watchdog_usec=1_000_000)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(sock.recv(4096) for _ in range(80)))
    reader.start()
    threads = [threading.Thread(target=lambda: [n.watchdog() for _ in range(20)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reader.join(timeout=10)
    assert len(got) == 80 and set(got) == {b"WATCHDOG=1\n"}
    n.close()
    assert "closed" in repr(n)


def test_a_full_queue_does_not_stall_the_caller(listener: tuple[socket.socket, str]) -> None:
    """A stuck manager (nobody reading) makes a ping fail after SEND_TIMEOUT instead of hanging."""
    _, path = listener
    n = Notifier(path, watchdog_usec=1_000_000)
    start = time.monotonic()
    results = [n.watchdog() for _ in range(600)]  # far beyond any receive queue
    elapsed = time.monotonic() - start
    assert results[0] is True and results[-1] is False
    assert elapsed < 2 * SEND_TIMEOUT + 2  # one wait, then non-blocking until it works again
    n.close()


def test_systemd_notify_parses_the_same_wire_format(listener: tuple[socket.socket, str]) -> None:
    """systemd's own client writes what we parse; our datagrams use the same framing."""
    import shutil
    import subprocess

    tool = shutil.which("systemd-notify")
    if tool is None:
        if require_data():
            pytest.fail("systemd-notify not installed (apt-get install systemd)")
        pytest.skip("systemd-notify not installed")
    sock, path = listener
    subprocess.run([tool, "--no-block", "--status=hello"], env={**os.environ, "NOTIFY_SOCKET": path}, check=True)
    theirs = sock.recv(4096)
    Notifier(path).status("hello")
    ours = sock.recv(4096)
    assert _fields(theirs)["STATUS"] == _fields(ours)["STATUS"] == "hello"

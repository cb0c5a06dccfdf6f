"""systemd's notifications (outbound_router/sdnotify.py): READY, the watchdog, STOPPING."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from outbound_router import sdnotify
from outbound_router.local_redis import free_port
from tests.service_process import service_process


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A socket standing for systemd's NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def test_nothing_is_sent_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.notify("READY=1")


def test_a_state_reaches_the_notify_socket(notify_socket: socket.socket) -> None:
    assert sdnotify.notify("READY=1")
    assert notify_socket.recv(100) == b"READY=1"


def test_an_abstract_notify_socket_is_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"outbound-router-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("STOPPING=1")
        assert sock.recv(100) == b"STOPPING=1"


@pytest.mark.parametrize(("usec", "pid", "interval"), [
    ("10000000", None, 5.0),
    ("10000000", "self", 5.0),
    ("10000000", "1", None),  # another process's watchdog
    ("0", None, None),
    ("", None, None),
    ("ten", None, None),
])
def test_the_watchdog_is_fed_at_half_its_timeout(monkeypatch: pytest.MonkeyPatch, usec: str,
                                                 pid: str | None, interval: float | None) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)
    assert sdnotify.watchdog_interval() == interval


@pytest.mark.parametrize("service", ["agi", "ari"])
def test_a_service_says_ready_feeds_the_watchdog_and_says_it_stops(
        service: str, notify_socket: socket.socket) -> None:
    # A service stuck on its event loop held every call in silence (neither Stasis() nor AGI()
    # times out) for as long as it was not killed: under systemd's watchdog it is, once it
    # stops feeding it. Redis and Asterisk are away: the service serves all the same.
    env = {**os.environ, "WATCHDOG_USEC": "200000", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
           "AGI_LISTEN": f"127.0.0.1:{free_port()}", "ARI_URL": f"http://127.0.0.1:{free_port()}",
           "ARI_USERNAME": "u", "ARI_PASSWORD": "p", "ROUTES_CACHE": ""}
    env.pop("WATCHDOG_PID", None)
    with service_process(service, env, stdout=subprocess.DEVNULL) as proc:
        assert notify_socket.recv(100) == b"READY=1"
        assert [notify_socket.recv(100) for _ in range(3)] == [b"WATCHDOG=1"] * 3
        proc.send_signal(signal.SIGTERM)
        states = []
        while (state := notify_socket.recv(100)) != b"STOPPING=1":
            states.append(state)
        assert set(states) <= {b"WATCHDOG=1"}
        assert proc.wait(timeout=20) == 0

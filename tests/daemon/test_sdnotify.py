"""sd_notify over a real unix datagram socket, as systemd listens for it."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from daemon.sdnotify import Notifier


def _listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    return sock


def test_ready_status_and_stopping(tmp_path: Path) -> None:
    with _listener(tmp_path / "notify") as sock:
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert notifier.enabled
        notifier.ready("serving")
        assert sock.recv(256) == b"READY=1\nSTATUS=serving"
        notifier.stopping()
        assert sock.recv(256) == b"STOPPING=1"


def test_abstract_socket_names() -> None:
    name = f"rapport-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        Notifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
        assert sock.recv(64) == b"STATUS=hello"


def test_without_systemd_nothing_happens() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False


async def test_watchdog_pings_at_half_the_interval(tmp_path: Path) -> None:
    with _listener(tmp_path / "notify") as sock:
        sock.setblocking(False)
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "100000"}
        notifier = Notifier(env)
        assert notifier.watchdog_interval_s == 0.05
        task = asyncio.create_task(notifier.watchdog())
        await asyncio.sleep(0.18)
        task.cancel()
        pings = []
        while True:
            try:
                pings.append(sock.recv(64))
            except BlockingIOError:
                break
        assert 3 <= len(pings) <= 5 and set(pings) == {b"WATCHDOG=1"}


def test_watchdog_meant_for_another_process_is_ignored(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "n"), "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"}
    assert Notifier(env).watchdog_interval_s is None

"""Small things every test and benchmark of a service needs: a free port, a status to watch."""

from __future__ import annotations

import asyncio
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WatchedStatus:
    """A ``ServiceStatus`` for running one service by hand: ``is_ready`` is set when it is."""

    def __init__(self) -> None:
        self.is_ready = asyncio.Event()
        self.notes: list[str] = []

    def ready(self, detail: str = "") -> None:
        self.is_ready.set()

    def progress(self, detail: str) -> None:
        self.notes.append(detail)

    def degraded(self, detail: str) -> None:
        self.notes.append(detail)

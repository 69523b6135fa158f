"""The contract between a long-running service and the supervisor that runs it.

It lives in ``store`` because every part (scanner, asterisk, tracking, web)
implements it and none of them may import ``daemon``.  A service is a noun
with a ``name`` and an ``async def run(status)`` that acquires what it needs
with ``async with``, calls ``status.ready()`` once it serves, and runs until
cancelled.  It raises ``TransientError`` (or any unexpected exception) to be
restarted with backoff, ``AuthError`` or ``ConfigError`` to be stopped and
shown to a human.
"""

from __future__ import annotations

from typing import Protocol


class ServiceStatus(Protocol):
    """What a running service tells the supervisor about itself."""

    def ready(self, detail: str = "") -> None:
        """The service now does its job (listening, connected, synced)."""

    def progress(self, detail: str) -> None:
        """A human-readable note on long work, e.g. ``sync INBOX 500/20000``."""

    def degraded(self, detail: str) -> None:
        """The service runs but its peer is away (it keeps retrying itself)."""


class Service(Protocol):
    """A long-running part of the daemon."""

    name: str

    async def run(self, status: ServiceStatus) -> None:
        """Serve until cancelled."""

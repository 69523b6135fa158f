"""An aiohttp application served as a supervised service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from store.errors import TransientError
from store.service import ServiceStatus

log = logging.getLogger(__name__)
# In-flight requests get this long to finish when the daemon stops.
HTTP_SHUTDOWN_GRACE_S = 1.5


class HttpListener:
    """Serves one aiohttp application on one address until cancelled.

    The application is made afresh by ``make_app`` at every (re)start: an aiohttp
    application cannot be started again once it was cleaned up.
    """

    def __init__(
        self, name: str, make_app: Callable[[], web.Application], host: str, port: int
    ) -> None:
        self.name = name
        self.make_app = make_app
        self.host = host
        self.port = port

    async def run(self, status: ServiceStatus) -> None:
        runner = web.AppRunner(
            self.make_app(),
            access_log=None,
            shutdown_timeout=HTTP_SHUTDOWN_GRACE_S,
            handle_signals=False,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            try:
                await site.start()
            except OSError as err:
                raise TransientError(
                    f"cannot listen on {self.host}:{self.port}: {err.strerror}"
                ) from err
            status.ready(f"listening on http://{self.host}:{self.port}")
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

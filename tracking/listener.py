"""The tracking listener's aiohttp application: its own port, safe to face the internet."""

from __future__ import annotations

from aiohttp import web

from store.db import Store

STORE_KEY = web.AppKey("store", Store)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


def create_app(store: Store) -> web.Application:
    app = web.Application()
    app[STORE_KEY] = store
    app.router.add_get("/healthz", healthz)
    return app

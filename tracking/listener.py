"""The tracking listener's aiohttp application: its own port, safe to face the internet.

``/o/<token>.gif`` is the open pixel, ``/c/<token>/<n>`` the n-th link of the
mail (only URLs recorded when it was sent: no open redirect), ``/u/<token>``
the unsubscribe page (a GET only shows it, because link scanners follow
links; a POST, the page's button or a mail client's RFC 8058 one-click,
unsubscribes).  Anything not signed by one of our keys is a plain 404 and
counts nothing.  Hits are answered at once and written in batches.
"""

from __future__ import annotations

import base64
import datetime as dt
import html

from aiohttp import hdrs, web
from sqlalchemy import select

from store.base import utcnow
from store.db import Store
from store.dialect import insert_ignoring
from store.models import Email, MailOptOut, SentRecipient, TrackedLink
from tracking.classes import classify_hit
from tracking.hits import HitQueue, HitRow, HitWriter, now_us
from tracking.tokens import PREVIEW, TokenSigner, Verified

STORE_KEY = web.AppKey("store", Store)
SIGNER_KEY = web.AppKey("signer", TokenSigner)
WRITER_KEY = web.AppKey("hit_writer", HitQueue)

# The smallest transparent GIF: 1x1, one colour, 43 bytes.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")
NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
NOT_FOUND = web.Response(status=404, text="not found")


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


def _verified(request: web.Request) -> Verified | None:
    return request.app[SIGNER_KEY].verify(request.match_info["token"])


def _hit(
    request: web.Request, who: Verified, kind: str, *, link_id: int | None = None,
    sent_at: dt.datetime | None = None,
) -> HitRow:  # fmt: skip
    since = (utcnow() - sent_at).total_seconds() if sent_at is not None else None
    ip = request.remote
    headers = request.headers
    agent = headers.get(hdrs.USER_AGENT)
    hit_class = classify_hit(
        method=request.method, headers=headers, ip=ip, kind=kind,
        preview=who.purpose == PREVIEW, seconds_since_sent=since, user_agent=agent or "",
    )  # fmt: skip
    return (
        who.recipient_id, kind, hit_class, now_us(), link_id, ip, agent[:500] if agent else None
    )  # fmt: skip


async def _record(request: web.Request, hit: HitRow) -> None:
    writer = request.app[WRITER_KEY]
    if not writer.add_nowait(hit):
        await writer.add(hit)  # the store is behind: answer when there is room


async def pixel(request: web.Request) -> web.Response:
    who = _verified(request)
    if who is None:
        raise web.HTTPNotFound()
    await _record(request, _hit(request, who, "open"))
    return web.Response(body=PIXEL, content_type="image/gif", headers=NO_CACHE)


async def click(request: web.Request) -> web.Response:
    who = _verified(request)
    position = request.match_info["n"]
    if who is None or not position.isdigit() or len(position) > 6:
        raise web.HTTPNotFound()
    async with request.app[STORE_KEY].session() as session:
        found = (
            await session.execute(
                select(TrackedLink.id, TrackedLink.url, Email.sent_at)
                .join(SentRecipient, SentRecipient.email_id == TrackedLink.email_id)
                .join(Email, Email.id == TrackedLink.email_id)
                .where(SentRecipient.id == who.recipient_id, TrackedLink.position == int(position))
            )
        ).first()
    if found is None:
        raise web.HTTPNotFound()
    link_id, url, sent_at = found
    await _record(request, _hit(request, who, "click", link_id=link_id, sent_at=sent_at))
    raise web.HTTPFound(url, headers=NO_CACHE)


_PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width"><meta name="robots" content="noindex">
<title>{title}</title></head><body style="font-family:sans-serif;max-width:32em;margin:3em auto">
<h1>{title}</h1><p>{text}</p>{form}</body></html>"""


async def unsubscribe_page(request: web.Request) -> web.Response:
    who = _verified(request)
    if who is None:
        raise web.HTTPNotFound()
    address = await _address(request, who)
    if address is None:
        raise web.HTTPNotFound()
    form = '<form method="post"><button type="submit">退订 / Unsubscribe</button></form>'
    text = (
        f"不再向 {html.escape(address)} 发送群发邮件？ / Stop bulk mail to {html.escape(address)}?"
    )
    return web.Response(
        text=_PAGE.format(title="退订 / Unsubscribe", text=text, form=form),
        content_type="text/html", headers=NO_CACHE,
    )  # fmt: skip


async def unsubscribe(request: web.Request) -> web.Response:
    who = _verified(request)
    if who is None or who.purpose == PREVIEW:
        raise web.HTTPNotFound()
    address = await _address(request, who)
    if address is None:
        raise web.HTTPNotFound()
    async with request.app[STORE_KEY].session() as session, session.begin():
        email_id = await session.scalar(
            select(SentRecipient.email_id).where(SentRecipient.id == who.recipient_id)
        )
        await session.execute(
            insert_ignoring(session, MailOptOut, ["address"]),
            [{"address": address, "reason": "unsubscribed", "email_id": email_id}],
        )
    text = f"{html.escape(address)} 已退订。/ {html.escape(address)} is unsubscribed."
    return web.Response(
        text=_PAGE.format(title="已退订 / Unsubscribed", text=text, form=""),
        content_type="text/html", headers=NO_CACHE,
    )  # fmt: skip


async def _address(request: web.Request, who: Verified) -> str | None:
    async with request.app[STORE_KEY].session() as session:
        return await session.scalar(
            select(SentRecipient.address).where(SentRecipient.id == who.recipient_id)
        )


def create_app(
    store: Store, signer: TokenSigner, writer: HitQueue | None = None
) -> web.Application:
    app = web.Application()
    app[STORE_KEY] = store
    app[SIGNER_KEY] = signer
    app[WRITER_KEY] = writer or HitWriter(store)

    async def start_writer(app: web.Application) -> None:
        app[WRITER_KEY].start()

    async def stop_writer(app: web.Application) -> None:
        await app[WRITER_KEY].stop()  # graceful: every queued hit is written

    app.on_startup.append(start_writer)
    app.on_cleanup.append(stop_writer)
    app.router.add_get("/o/{token}.gif", pixel)  # GET also answers HEAD; first: the busiest
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/c/{token}/{n}", click)
    app.router.add_get("/u/{token}", unsubscribe_page)
    app.router.add_post("/u/{token}", unsubscribe)
    return app

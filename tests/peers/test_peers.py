"""The real peers the suite relies on can be started and spoken to here."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from imapclient import IMAPClient

from tests.peers.dovecot import Dovecot


def _imap_roundtrip(server: Dovecot) -> tuple[list[int], bool, bytes]:
    with IMAPClient(server.host, server.port, ssl=False, timeout=10) as client:
        client.login(server.username, server.password)
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        body = client.fetch(uids, ["BODY.PEEK[]"])[uids[0]][b"BODY[]"]
        return list(uids), b"IDLE" in client.capabilities(), body


def test_dovecot_serves_delivered_mail(dovecot: Dovecot) -> None:
    raw = "From: 张三 <zhang@example.cn>\r\nSubject: 你好\r\n\r\n正文\r\n".encode()
    dovecot.deliver(raw)
    uids, has_idle, body = _imap_roundtrip(dovecot)
    assert uids == [1]
    assert has_idle
    assert body == raw


async def test_chromium_renders_a_loopback_page(browser: object, artifacts_dir: Path) -> None:
    async def page(_request: web.Request) -> web.Response:
        return web.Response(
            text="<html><body><h1 id=t>客户关系</h1></body></html>", content_type="text/html"
        )

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        tab = await browser.new_page()  # type: ignore[attr-defined]
        await tab.goto(f"http://127.0.0.1:{port}/")
        assert await asyncio.wait_for(tab.inner_text("#t"), 10) == "客户关系"
        await tab.screenshot(path=str(artifacts_dir / "peer-chromium.png"))
    finally:
        await runner.cleanup()

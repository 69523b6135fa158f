"""The web application's front page and request correlation ids."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from store.db import Store
from store.models import Lead
from tests.web.browsing import make_user, sign_in
from web.app import create_app


async def test_home_counts_live_records_and_tags_requests(store: Store) -> None:
    async with store.session() as session, session.begin():
        session.add_all([Lead(last_name="A"), Lead(last_name="B")])
    await make_user(store, "boss", "admin")
    async with TestClient(TestServer(create_app(store))) as client:
        await sign_in(client, "boss")
        resp = await client.get("/")
        assert resp.status == 200
        assert ">Leads</a>: 2" in await resp.text()
        assert resp.headers["X-Request-Id"].isalnum()
        echoed = await client.get("/", headers={"X-Request-Id": "abc123"})
        assert echoed.headers["X-Request-Id"] == "abc123"
        forged = await client.get("/", headers={"X-Request-Id": "bad id; drop"})
        assert forged.headers["X-Request-Id"] != "bad id; drop"

"""A user's settings: the language switches the UI at once; bad values are shown."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from store.db import Store
from store.users import USERS_CHANGED
from tests.web.browsing import make_user, post_form, sign_in
from web.app import create_app


async def test_switching_to_chinese_and_bad_values_beside_their_fields(store: Store) -> None:
    wang = await make_user(store, "wang", "agent")
    await make_user(store, "zhao", "agent", phone_extension="8001")
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "wang")
        bad = await post_form(client, "/settings", csrf, {
            "display_name": "王伟", "email": "nope", "locale": "zh_CN",
            "timezone": "Mars/Olympus", "phone_extension": "8001"})  # fmt: skip
        text = await bad.text()
        assert bad.status == 422 and 'value="王伟"' in text
        assert "Not an email address." in text and "Not a time zone" in text
        assert "Extension 8001 belongs to zhao." in text
        async with store.bus.subscribe(USERS_CHANGED) as changes:
            good = await post_form(client, "/settings", csrf, {
                "display_name": "王伟", "email": "wang@rapport.test", "locale": "zh_CN",
                "timezone": "Asia/Shanghai", "phone_extension": "8002"})  # fmt: skip
            # The phone service re-reads extensions on this announcement.
            assert (await asyncio.wait_for(changes.get(), 2)).data == {"user_id": wang}
        assert good.status == 200
        page = await good.text()
        assert "已保存。" in page and "线索" in page and "王伟" in page
        assert 'href="/password"' in page and 'href="/settings"' in page
        home = await (await client.get("/")).text()
        assert '<html lang="zh-CN">' in home and "退出" in home

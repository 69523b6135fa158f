"""Signing in and out, sessions, CSRF, password change and login throttling over real HTTP."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select
from yarl import URL

from store.db import Store
from store.models import WebSession
from tests.web.browsing import PASSWORD, csrf_of, make_user, post_form, sign_in
from web.app import create_app
from web.auth import SESSION_COOKIE


async def test_pages_need_a_session_and_login_returns_where_you_were(store: Store) -> None:
    await make_user(store, "wang", "agent")
    async with TestClient(TestServer(create_app(store))) as client:
        away = await client.get("/leads?q=x", allow_redirects=False)
        assert away.status == 303
        assert URL(away.headers["Location"]).query["next"] == "/leads?q=x"
        page = await client.get("/login?next=/password")
        token = csrf_of(await page.text())
        done = await client.post(
            "/login", data={"username": "wang", "password": PASSWORD, "_csrf": token,
                            "next": "/password"}, allow_redirects=False,
        )  # fmt: skip
        assert done.status == 303 and done.headers["Location"] == "/password"
        cookie = done.cookies[SESSION_COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Lax"
        async with store.session() as session:
            kept = await session.scalar(select(WebSession.id_sha256))
        assert kept is not None and cookie.value not in kept  # only the hash is stored


async def test_an_outside_next_is_not_followed(store: Store) -> None:
    await make_user(store, "wang", "agent")
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        async with TestClient(TestServer(create_app(store))) as client:
            token = csrf_of(await (await client.get("/login")).text())
            done = await client.post(
                "/login", data={"username": "wang", "password": PASSWORD, "_csrf": token,
                                "next": target}, allow_redirects=False,
            )  # fmt: skip
            assert done.headers["Location"] == "/"


async def test_forms_without_the_csrf_token_are_refused(store: Store) -> None:
    await make_user(store, "wang", "agent")
    async with TestClient(TestServer(create_app(store))) as client:
        # The login form itself: no double-submit token, no login.
        refused = await client.post("/login", data={"username": "wang", "password": PASSWORD})
        assert refused.status == 403
        csrf = await sign_in(client, "wang")
        forged = await client.post("/logout", data={"_csrf": "forged"})
        assert forged.status == 403
        assert (await client.get("/")).status == 200  # still signed in
        out = await post_form(client, "/logout", csrf, allow_redirects=False)
        assert out.status == 303
        assert (await client.get("/", allow_redirects=False)).status == 303
        async with store.session() as session:
            assert await session.scalar(select(func.count()).select_from(WebSession)) == 0


async def test_a_wrong_password_says_so_and_repeated_failures_are_throttled(store: Store) -> None:
    await make_user(store, "wang", "agent")
    async with TestClient(TestServer(create_app(store))) as client:
        token = csrf_of(await (await client.get("/login")).text())
        for _ in range(5):
            wrong = await client.post(
                "/login", data={"username": "wang", "password": "guess", "_csrf": token}
            )
            assert wrong.status == 401 and "Wrong user name or password" in await wrong.text()
        # Even the right password waits now.
        held = await client.post(
            "/login", data={"username": "wang", "password": PASSWORD, "_csrf": token}
        )
        assert held.status == 429 and "Too many failed sign-ins" in await held.text()
    # Another daemon on the same store (behind the same name) holds the sign-in too.
    async with TestClient(TestServer(create_app(store))) as other:
        token = csrf_of(await (await other.get("/login")).text())
        held = await other.post(
            "/login", data={"username": "wang", "password": PASSWORD, "_csrf": token}
        )
        assert held.status == 429


async def test_changing_the_password_signs_out_other_browsers(store: Store) -> None:
    await make_user(store, "wang", "agent")
    server = TestServer(create_app(store))
    async with TestClient(server) as first, TestClient(server) as second:
        csrf = await sign_in(first, "wang")
        await sign_in(second, "wang")
        short = await post_form(first, "/password", csrf,
                                {"current": PASSWORD, "new": "short", "confirm": "short"})  # fmt: skip
        assert short.status == 422 and "At least 10 characters" in await short.text()
        new = "a much longer secret 密码"
        done = await post_form(first, "/password", csrf,
                               {"current": PASSWORD, "new": new, "confirm": new})  # fmt: skip
        assert done.status == 200
        assert (await first.get("/", allow_redirects=False)).status == 200
        assert (await second.get("/", allow_redirects=False)).status == 303
    async with TestClient(TestServer(create_app(store))) as third:
        await sign_in(third, "wang", new)


async def test_the_ui_speaks_chinese_to_a_chinese_user(store: Store) -> None:
    await make_user(store, "li", "agent", locale="zh_CN")
    async with TestClient(TestServer(create_app(store))) as client:
        login = await client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
        assert "登录" in await login.text()
        await sign_in(client, "li")
        home = await (await client.get("/")).text()
        assert "首页" in home and "线索" in home and 'lang="zh-CN"' in home

"""The web forms admin page over real HTTP: an admin makes, edits, revokes and rotates a form;
a key revoked or rotated away is refused and files nothing; only administrators get in."""

from __future__ import annotations

import html
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from sqlalchemy import func, select

from store.db import Store
from store.models import Lead, WebForm
from tests.web.browsing import make_user, post_form, sign_in
from web.api_webforms import FORM_LIMIT_KEY, FormRateLimit
from web.app import create_app

SITE = "https://www.jinlong.cn"
LEAD = {"name": "陈先生", "email": "chen@jinlong.cn", "message": "请报价"}


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its smallest cost: signing in is not what these tests measure."""
    monkeypatch.setattr(
        "store.users._hasher", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    )


def shown_key(page: str) -> str:
    found = re.search(r'id="new-key">(rpf_[^<]+)<', page)
    assert found, "no key on the page"
    return found.group(1)


async def _leads(store: Store) -> int:
    async with store.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Lead)) or 0)


async def _post_lead(client: TestClient, key: str) -> int:
    answer = await client.post("/forms/lead", headers={"X-Form-Key": key, "Origin": SITE},
                               json=LEAD)  # fmt: skip
    return answer.status


async def test_an_admin_creates_edits_revokes_and_rotates_a_form(store: Store) -> None:
    await make_user(store, "boss", "admin")
    await make_user(store, "sales", "agent")
    await make_user(store, "li", "agent")
    app = create_app(store)
    app[FORM_LIMIT_KEY] = FormRateLimit(most=100)  # the posts below test keys, not the limit
    async with TestClient(TestServer(app)) as client:
        csrf = await sign_in(client, "boss")
        assert 'href="/admin/webforms"' in await (await client.get("/admin")).text()
        made = await post_form(client, "/admin/webforms/new", csrf, {
            "name": "contact-us", "owner": "sales", "origins": f"{SITE}/\nhttp://localhost:8000",
            "thank_you_url": f"{SITE}/thanks.html"})  # fmt: skip
        page = await made.text()
        assert made.status == 200 and made.headers["Cache-Control"] == "no-store"
        key = shown_key(page)
        # The snippet: a form that posts here, the key hidden, the honeypot off the screen.
        snippet = html.unescape(re.search(r'id="webform-snippet"[^>]*>([^<]*)<', page)[1])  # type: ignore[index]
        assert f'action="{client.make_url("/forms/lead")}"' in snippet
        assert f'<input type="hidden" name="_form_key" value="{key}">' in snippet
        assert 'name="homepage"' in snippet and 'name="email"' in snippet
        async with store.session() as session:
            form = await session.scalar(select(WebForm))
        assert form is not None and form.allowed_origins == [SITE, "http://localhost:8000"]

        listing = await (await client.get("/admin/webforms")).text()
        assert "contact-us" in listing and "…" + key[-4:] in listing and key not in listing
        edit_page = await (await client.get(f"/admin/webforms/{form.id}")).text()
        assert key not in edit_page and 'data-confirm="' in edit_page
        assert f'action="/admin/webforms/{form.id}/revoke"' in edit_page

        assert await _post_lead(client, key) == 201
        assert await _leads(store) == 1

        saved = await post_form(client, f"/admin/webforms/{form.id}", csrf, {
            "owner": "li", "origins": SITE, "thank_you_url": ""})  # fmt: skip
        assert saved.status == 200 and "Saved." in await saved.text()

        revoked = await post_form(client, f"/admin/webforms/{form.id}/revoke", csrf)
        assert revoked.status == 200 and "Revoked: its key is refused" in await revoked.text()
        assert await _post_lead(client, key) == 401
        assert await _leads(store) == 1  # nothing stored
        assert "Revoked" in await (await client.get("/admin/webforms")).text()

        rotated = await post_form(client, f"/admin/webforms/{form.id}/rotate", csrf)
        new_key = shown_key(await rotated.text())
        assert new_key != key
        assert await _post_lead(client, key) == 401  # the old key stays dead
        assert await _post_lead(client, new_key) == 201  # the new one switched it on
        again = shown_key(await (await post_form(client, f"/admin/webforms/{form.id}/rotate",
                                                 csrf)).text())  # fmt: skip
        assert await _post_lead(client, new_key) == 401  # rotated away at once
        assert await _post_lead(client, again) == 201
    async with store.session() as session:
        kept = await session.get(WebForm, form.id)
        owners = (await session.scalars(select(Lead.owner_id))).all()
    assert kept is not None and kept.allowed_origins == [SITE] and kept.thank_you_url is None
    assert kept.revoked_at is None and kept.key_hint == again[-4:]
    assert len(owners) == 1  # the same person each time: one lead, later posts are notes


async def test_bad_values_are_shown_beside_their_fields_and_kept(store: Store) -> None:
    await make_user(store, "boss", "admin")
    await make_user(store, "gone", "agent", is_active=False)
    app = create_app(store, public_url="https://crm.jinlong.cn")
    async with TestClient(TestServer(app)) as client:
        csrf = await sign_in(client, "boss")
        first = await post_form(client, "/admin/webforms/new", csrf, {"name": "contact-us"})
        assert first.status == 200
        # With [web] public_url set, the snippet posts there, not to where the admin is.
        assert 'action="https://crm.jinlong.cn/forms/lead"' in html.unescape(await first.text())
        typed = {"name": "contact-us", "owner": "gone",
                 "origins": "https://www.jinlong.cn/contact.html\nwww.jinlong.cn",
                 "thank_you_url": "javascript:alert(1)"}  # fmt: skip
        bad = await post_form(client, "/admin/webforms/new", csrf, typed)
        page = await bad.text()
        assert bad.status == 422
        for field in ("name", "owner", "origins", "thank_you_url"):
            assert f'id="error-{field}"' in page, field
        assert "A form of this name exists." in page
        assert "https://www.jinlong.cn/contact.html, www.jinlong.cn" in page
        assert 'value="contact-us"' in page and 'value="javascript:alert(1)"' in page
        assert "https://www.jinlong.cn/contact.html\nwww.jinlong.cn</textarea>" in page
        unknown = await post_form(client, "/admin/webforms/new", csrf, {"name": "b", "owner": "x"})
        assert unknown.status == 422 and 'id="error-owner"' in await unknown.text()
        async with store.session() as session:
            form_id = await session.scalar(select(WebForm.id))
        edit = await post_form(client, f"/admin/webforms/{form_id}", csrf,
                               {"origins": "ftp://jinlong.cn", "thank_you_url": "/thanks"})  # fmt: skip
        text = await edit.text()
        assert edit.status == 422 and 'id="error-origins"' in text
        assert 'id="error-thank_you_url"' in text and 'value="/thanks"' in text
        in_chinese = await client.get("/admin/webforms?lang=zh_CN")
        assert in_chinese.status == 200
    async with store.session() as session:
        assert await session.scalar(select(func.count()).select_from(WebForm)) == 1


async def test_only_administrators_see_or_change_forms(store: Store) -> None:
    await make_user(store, "boss", "admin")
    await make_user(store, "li", "manager")
    async with TestClient(TestServer(create_app(store))) as client:
        csrf = await sign_in(client, "boss")
        key = shown_key(await (await post_form(client, "/admin/webforms/new", csrf,
                                               {"name": "contact-us"})).text())  # fmt: skip
        client.session.cookie_jar.clear()
        csrf = await sign_in(client, "li")
        async with store.session() as session:
            form_id = await session.scalar(select(WebForm.id))
        for path in ("/admin/webforms", "/admin/webforms/new", f"/admin/webforms/{form_id}"):
            assert (await client.get(path)).status == 403, path
        for path in (
            "/admin/webforms/new",
            f"/admin/webforms/{form_id}",
            f"/admin/webforms/{form_id}/revoke",
            f"/admin/webforms/{form_id}/rotate",
        ):
            answer = await post_form(client, path, csrf, {"name": "x", "origins": ""})
            assert answer.status == 403, path
        # Nor without the CSRF token, even for the admin.
        client.session.cookie_jar.clear()
        await sign_in(client, "boss")
        forged = await client.post(f"/admin/webforms/{form_id}/revoke", data={})
        assert forged.status == 403
        # Still live: a post from a server (no Origin; the form lists no site) is filed.
        filed = await client.post("/forms/lead", headers={"X-Form-Key": key}, json=LEAD)
        assert filed.status == 201
    async with store.session() as session:
        assert await session.scalar(select(func.count()).select_from(WebForm)) == 1

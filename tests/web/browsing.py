"""Signing in over real HTTP for web tests: users with roles and a client that carries CSRF."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from store.db import Store
from store.models import Team
from store.users import create_user

PASSWORD = "correct horse battery"


async def make_user(
    store: Store, username: str, role: str = "agent", *, team: str | None = None,
    **fields: Any,
) -> int:  # fmt: skip
    """A user with ``role`` (and ``team``, made if new); returns their id."""
    from sqlalchemy import select

    async with store.session() as session, session.begin():
        team_id = None
        if team is not None:
            team_id = await session.scalar(select(Team.id).where(Team.name == team))
            if team_id is None:
                row = Team(name=team)
                session.add(row)
                await session.flush()
                team_id = row.id
        user = await create_user(session, username, PASSWORD, role=role, team_id=team_id,
                                 **fields)  # fmt: skip
        await session.flush()
        return user.id


def csrf_of(html: str) -> str:
    found = re.search(r'name="(?:_csrf|csrf-token)"[^>]*(?:value|content)="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Sign in through the login form; returns the session's CSRF token."""
    page = await client.get("/login")
    token = csrf_of(await page.text())
    done = await client.post("/login", data={"username": username, "password": password,
                                             "_csrf": token, "next": "/"})  # fmt: skip
    assert done.status == 200, await done.text()
    return csrf_of(await done.text())


async def post_form(
    client: TestClient, path: str, csrf: str, data: dict[str, Any] | None = None, **kw: Any
) -> ClientResponse:
    return await client.post(path, data={**(data or {}), "_csrf": csrf}, **kw)

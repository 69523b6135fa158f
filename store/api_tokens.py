"""API tokens: integrations and the phone panel authenticate as a user with one.

A token is shown once, when it is made; the store keeps its SHA-256 only.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.base import utcnow
from store.errors import NotFound
from store.models import ApiToken, User

PREFIX = "rpt_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_api_token(session: AsyncSession, username: str, name: str = "") -> str:
    """A new token for ``username``; the only time its text exists outside the caller."""
    user = await session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username!r}")
    token = PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, name=name, token_sha256=_digest(token)))
    await session.flush()
    return token


async def user_for_token(session: AsyncSession, token: str) -> User | None:
    """The active user a live token belongs to, else None (no hint which part was wrong)."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    row = (
        await session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_sha256 == _digest(token), ApiToken.revoked_at.is_(None))
        )
    ).first()
    if row is None:
        return None
    api_token, user = row
    if not user.is_active:
        return None
    api_token.last_used_at = utcnow()
    return user
